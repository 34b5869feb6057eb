"""Promotion preconditions and plan (no environment runs: everything here is refused or planned before I/O)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mesh.local import promotion, smoke
from mesh.local import stack as stack_mod

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    monkeypatch.setenv(stack_mod.HOME_ENV, str(tmp_path / "state"))
    dev = tmp_path / "stacks" / "Pulumi.dev.yaml"
    release = yaml.safe_load((ROOT / "stacks" / "releases" / "ratings-50" / "v1.yaml").read_text())
    text = dev.read_text()
    old = stack_mod.load("dev", ROOT).release
    dev.write_text(text.replace(old.ref, release["release"]).replace(old.digest, release["digest"]))
    return tmp_path


def settings(root: Path, name: str) -> stack_mod.StackSettings:
    return stack_mod.load(name, root)


def passed_smoke(root: Path, name: str, *, passed: bool = True, digest: str | None = None) -> None:
    s = settings(root, name)
    report = smoke.SmokeReport(name, s.routing, digest or s.release.digest, (smoke.Check("books-contract", passed, ""),))
    smoke.record(s, report, at="2026-11-26T05:00:00Z")


def refusal(root: Path, source: str, target: str, approve: bool = False) -> str:
    with pytest.raises(promotion.PromotionRefused) as err:
        promotion.plan(settings(root, source), settings(root, target), approve=approve)
    return str(err.value)


def test_a_source_without_a_smoke_record_is_refused(root: Path) -> None:
    assert "dev has not passed smoke at ratings-50@v1: no smoke run recorded" in refusal(root, "dev", "staging")


def test_a_failed_smoke_is_refused(root: Path) -> None:
    passed_smoke(root, "dev", passed=False)
    assert "last smoke FAILED at ratings-50@v1" in refusal(root, "dev", "staging")


def test_a_smoke_pass_at_another_release_does_not_count(root: Path) -> None:
    passed_smoke(root, "dev", digest="sha256:" + "0" * 64)
    assert "has not passed smoke at ratings-50@v1" in refusal(root, "dev", "staging")


def test_prod_requires_approval(root: Path) -> None:
    passed_smoke(root, "dev")
    assert "prod requires approval" in refusal(root, "dev", "prod")
    the_plan = promotion.plan(settings(root, "dev"), settings(root, "prod"), approve=True)
    assert [b.percent for b in the_plan.blends] == [10, 25, 50, 100]


def test_an_unreleased_source_is_refused(root: Path) -> None:
    dev = root / "stacks" / "Pulumi.dev.yaml"
    doc = yaml.safe_load(dev.read_text())
    del doc["config"]["weir:release"], doc["config"]["weir:releaseDigest"]
    doc["config"]["weir:routing"] = "ratings-50"
    dev.write_text(yaml.safe_dump(doc))
    assert "only a pinned release can be promoted" in refusal(root, "dev", "staging")


def test_the_plan_shows_each_steps_split_and_the_way_back(root: Path) -> None:
    passed_smoke(root, "dev")
    the_plan = promotion.plan(settings(root, "dev"), settings(root, "staging"), approve=False)
    assert (the_plan.old.ref, the_plan.new.ref) == ("all-v1@v1", "ratings-50@v1")
    text = "\n".join(the_plan.describe())
    assert "VirtualService/bookinfo/ratings http[0]: ratings/v1 95%, ratings/v2 5%" in text  # step 10 %
    assert "VirtualService/bookinfo/ratings http[0]: ratings/v1 50%, ratings/v2 50%" in text  # step 100 %
    assert "on failure: staging returns to all-v1@v1; on success: staging pins ratings-50@v1" in text
    assert the_plan.blends[-1].resources == the_plan.new.resources


def test_a_second_promotion_into_the_same_target_is_refused(root: Path) -> None:
    target = settings(root, "staging")
    target.state_dir.mkdir(parents=True, exist_ok=True)
    with promotion._exclusive(target):
        with pytest.raises(promotion.PromotionRefused, match="another promotion into staging is running"):
            with promotion._exclusive(target):
                pass
    with promotion._exclusive(target):  # released: the next one may run
        pass
