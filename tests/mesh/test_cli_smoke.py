"""`meshctl smoke`: prints each check, records the result, exits 1 when a check fails (smoke.run faked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mesh import cli
from mesh.local import smoke

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIR_HOME", str(tmp_path))
    monkeypatch.chdir(REPO)
    seen = {}

    def run(checks):
        def fake(settings, *, scenario=True, release_check=True):
            seen.update(scenario=scenario, release_check=release_check)
            return smoke.SmokeReport(settings.name, "all-v1@v1", "sha256:" + "a" * 64, checks)
        monkeypatch.setattr(smoke, "run", fake)
        return seen
    return run


def test_passing_smoke_is_printed_and_recorded(fake_run, tmp_path) -> None:
    seen = fake_run((smoke.Check("books-contract", True, "200 with 5 books"),))
    result = CliRunner().invoke(cli.main, ["smoke", "--stack", "dev", "--baseline-only"])
    assert result.exit_code == 0, result.output
    assert "PASS  books-contract" in result.output and "smoke passed" in result.output
    assert seen == {"scenario": False, "release_check": True}
    assert json.loads((tmp_path / "dev" / "smoke.json").read_text())["passed"] is True


def test_failing_smoke_exits_1_naming_the_check(fake_run, tmp_path) -> None:
    fake_run((smoke.Check("books-contract", True, "ok"), smoke.Check("split", False, "split versions.ratings = v2")))
    result = CliRunner().invoke(cli.main, ["smoke", "--stack", "dev", "-o", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["passed"] is False and doc["checks"][1]["name"] == "split" and doc["at"]
    assert json.loads((tmp_path / "dev" / "smoke.json").read_text())["checks"] == doc["checks"]
