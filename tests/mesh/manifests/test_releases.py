"""Routing releases: content-addressed, immutable, tamper-evident; pins; the resource-level diff."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mesh import cli
from mesh.api import ConfigError
from mesh.manifests import release_diff, releases

ROOT = Path(__file__).resolve().parents[3]
NOW = "2026-11-26T04:00:00Z"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root with the repository's scenarios and stack files, and no release yet."""
    shutil.copytree(ROOT / "stacks" / "routing", tmp_path / "stacks" / "routing")
    return tmp_path


def create(root: Path, scenario: str, **kwargs) -> tuple[releases.Release, bool]:
    store = releases.ReleaseStore(root)
    return store.create(root / "stacks" / "routing" / f"{scenario}.yaml", created=NOW, created_by="ci@test",
                        **kwargs)


def test_create_records_validated_resources_under_a_content_digest(root: Path) -> None:
    release, created = create(root, "ratings-50")
    assert created and release.ref == "ratings-50@v1"
    assert release.digest == releases.digest_of(release.resources) and release.digest.startswith("sha256:")
    path = root / "stacks" / "releases" / "ratings-50" / "v1.yaml"
    record = yaml.safe_load(path.read_text())
    assert (record["release"], record["digest"], record["createdBy"]) == ("ratings-50@v1", release.digest, "ci@test")
    assert record["source"] == "stacks/routing/ratings-50.yaml"
    assert releases.ReleaseStore(root).get("ratings-50@v1") == release


def test_same_content_is_the_same_release_and_new_content_the_next_version(root: Path) -> None:
    first, _ = create(root, "ratings-50")
    again, created = create(root, "ratings-50")
    assert (again, created) == (first, False)
    scenario = root / "stacks" / "routing" / "ratings-50.yaml"
    scenario.write_text(scenario.read_text().replace("weight: 50", "weight: 40", 1))
    second, created = create(root, "ratings-50")
    assert created and second.ref == "ratings-50@v2" and second.digest != first.digest
    assert [r.ref for r in releases.ReleaseStore(root).list()] == ["ratings-50@v1", "ratings-50@v2"]
    assert releases.ReleaseStore(root).get("ratings-50@v1") == first  # the old version is untouched


def test_digest_ignores_yaml_layout_but_not_content() -> None:
    a = [{"kind": "VirtualService", "metadata": {"name": "x", "namespace": "n"}, "spec": {"hosts": ["x"]}}]
    b = [{"spec": {"hosts": ["x"]}, "metadata": {"namespace": "n", "name": "x"}, "kind": "VirtualService"}]
    assert releases.digest_of(a) == releases.digest_of(b)
    assert releases.digest_of(a) != releases.digest_of([{**a[0], "spec": {"hosts": ["y"]}}])


def test_an_edited_release_is_refused_by_every_reader(root: Path) -> None:
    release, _ = create(root, "ratings-50")
    path = root / "stacks" / "releases" / "ratings-50" / "v1.yaml"
    path.write_text(path.read_text().replace("weight: 50", "weight: 90", 1))
    with pytest.raises(releases.ReleaseError, match="edited after it was created"):
        releases.ReleaseStore(root).get("ratings-50@v1")


def test_editing_content_and_recorded_digest_together_is_caught_by_the_pin(root: Path) -> None:
    release, _ = create(root, "ratings-50")
    path = root / "stacks" / "releases" / "ratings-50" / "v1.yaml"
    record = yaml.safe_load(path.read_text())
    record["resources"][-1]["spec"]["http"][0]["route"][0]["weight"] = 90
    record["digest"] = releases.digest_of(record["resources"])
    path.write_text(yaml.safe_dump(record))
    store = releases.ReleaseStore(root)
    assert store.get("ratings-50@v1").digest == record["digest"]  # self-consistent now…
    with pytest.raises(releases.ReleaseError, match="but the stack pins"):
        store.resolve("ratings-50@v1", release.digest, where="Pulumi.dev.yaml")  # …but not what was pinned


def test_a_release_file_is_never_overwritten(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    create(root, "ratings-50")
    store = releases.ReleaseStore(root)
    monkeypatch.setattr(store, "latest", lambda name: None)  # as if a concurrent create raced us
    with pytest.raises(releases.ReleaseError, match="never rewritten"):
        store.create(root / "stacks" / "routing" / "all-v1.yaml", created=NOW, created_by="x", name="ratings-50")


def test_an_invalid_scenario_makes_no_release(root: Path) -> None:
    bad = root / "stacks" / "routing" / "broken.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n"
                   "spec: {hosts: [x], colour: blue}\n")
    with pytest.raises(ConfigError):
        create(root, "broken")
    assert not (root / "stacks" / "releases" / "broken").exists()


@pytest.mark.parametrize(("ref", "says"), [("all-v1", "NAME@vN"), ("all-v1@v0", "NAME@vN"), ("All@v1", "NAME@vN"),
                                           ("nope@v1", "release nope@v1 not found")])
def test_bad_references_are_named(root: Path, ref: str, says: str) -> None:
    with pytest.raises(releases.ReleaseError, match=says):
        releases.ReleaseStore(root).get(ref)


@pytest.mark.parametrize(("config", "says"), [
    ({"weir:release": "all-v1@v1"}, "`weir:releaseDigest` must be"),
    ({"weir:release": "all-v1@v1", "weir:releaseDigest": "sha256:abc"}, "`weir:releaseDigest` must be"),
    ({"weir:release": 3, "weir:releaseDigest": "sha256:" + "a" * 64}, "`weir:release`"),
])
def test_bad_pins_name_the_key(config: dict, says: str) -> None:
    with pytest.raises(releases.ReleaseError, match=says):
        releases.parse_pin(config, "Pulumi.dev.yaml")


def test_pin_text_moves_only_the_two_pin_lines() -> None:
    text = (ROOT / "stacks" / "Pulumi.staging.yaml").read_text()
    release = releases.Release("ratings-50", 3, "sha256:" + "b" * 64, NOW, "x", "s", ())
    pinned = releases.pin_text(text, release)
    changed = [(a, b) for a, b in zip(text.splitlines(), pinned.splitlines(), strict=True) if a != b]
    assert changed == [(a, b) for a, b in changed]  # same line count (zip strict)
    assert [b for _, b in changed] == ["  weir:release: ratings-50@v3", "  weir:releaseDigest: sha256:" + "b" * 64]
    with pytest.raises(releases.ReleaseError, match="one `weir:release:`"):
        releases.pin_text("config:\n  weir:routing: all-v1\n", release)


def test_diff_is_resource_level_with_a_yaml_diff_for_changes(root: Path) -> None:
    old, _ = create(root, "all-v1")
    new, _ = create(root, "authz-bookinfo")
    changes = {c.key: c for c in release_diff.diff(old.resources, new.resources, a_name="prod", b_name="dev")}
    assert {c.change for c in changes.values()} == {release_diff.ADDED, release_diff.CHANGED}
    added = [k for k, c in changes.items() if c.change == release_diff.ADDED]
    assert added and all(k.startswith(("AuthorizationPolicy/", "RequestAuthentication/")) for k in added)
    assert release_diff.diff(old.resources, old.resources) == []
    removed = release_diff.diff(new.resources, old.resources)
    assert {c.key for c in removed if c.change == release_diff.REMOVED} == set(added)


def test_meshctl_release_create_list_show_and_diff(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for stack in ("dev", "prod"):
        shutil.copy(ROOT / "stacks" / f"Pulumi.{stack}.yaml", root / "stacks")
    monkeypatch.chdir(root)
    runner = CliRunner()
    for scenario in ("round-robin", "all-v1"):  # the releases the copied stack files pin
        result = runner.invoke(cli.main, ["release", "create", scenario])
        assert result.exit_code == 0, result.output
        assert f"release {scenario}@v1 created (sha256:" in result.output
    again = runner.invoke(cli.main, ["release", "create", "all-v1"])
    assert "all-v1@v1 unchanged" in again.output
    listed = runner.invoke(cli.main, ["release", "list"])
    assert listed.exit_code == 0 and "all-v1@v1" in listed.output and "prod" in listed.output
    shown = runner.invoke(cli.main, ["release", "show", "all-v1@v1"])
    assert shown.exit_code == 0 and "kind: VirtualService" in shown.output
    diffed = runner.invoke(cli.main, ["diff", "prod", "dev"])
    assert diffed.exit_code == 0, diffed.output
    assert "prod: all-v1@v1   dev: round-robin@v1" in diffed.output and "~ VirtualService/bookinfo/books" in diffed.output
    missing = runner.invoke(cli.main, ["release", "create", "no-such"])
    assert missing.exit_code == 1 and "no scenario 'no-such'" in missing.output
