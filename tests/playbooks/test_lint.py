"""The smoke playbooks are valid Ansible (`ansible-playbook --syntax-check`) and clean under `ansible-lint`
at the production profile (.ansible-lint, offline), as `make lint` checks them; here so `make test` does too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))
INVENTORIES = sorted((ROOT / "playbooks" / "inventories").glob("*.yml"))


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in {BIN} (pip install -e '.[test]')")
    return path


CASES = [(p, ROOT / "playbooks" / "inventories" / "local.yml") for p in PLAYBOOKS] + [
    (ROOT / "playbooks" / "smoke.yml", inventory) for inventory in INVENTORIES if inventory.stem != "local"]


@pytest.mark.parametrize(("playbook", "inventory"), CASES, ids=[f"{p.stem}-{i.stem}" for p, i in CASES])
def test_syntax_check(playbook, inventory) -> None:
    result = subprocess.run([str(_tool("ansible-playbook")), "--syntax-check", "-i", str(inventory), str(playbook)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    result = subprocess.run([str(_tool("ansible-lint")), "--nocolor", "playbooks/"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
