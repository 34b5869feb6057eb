"""DESIGN.md principle 9: the layering rules, checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def project_imports(path: Path) -> set[str]:
    """Every project module a file imports (absolute imports of mesh, infra and bookinfo)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in {"mesh", "infra", "bookinfo"})
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


# (package, forbidden import prefixes, allowed prefixes or None for "anything not forbidden")
RULES = [
    ("mesh.api", None, ("mesh.api",)),
    ("mesh.view", None, ("mesh.view",)),
    ("mesh.proxy", ("mesh.control", "mesh.local", "mesh.cli", "mesh.api", "infra", "bookinfo"), None),
    ("mesh.control", ("mesh.proxy", "mesh.local", "mesh.cli", "infra", "bookinfo"), None),
    ("infra", None, ("infra", "mesh.api", "mesh.manifests")),
    ("mesh.manifests", ("mesh.proxy", "mesh.control", "mesh.local", "mesh.cli", "infra", "bookinfo"), None),
    ("bookinfo", ("mesh", "infra"), None),
]


def _violations(package: str, forbidden, allowed) -> list[str]:
    bad = []
    for path in modules(package):
        for name in project_imports(path):
            if forbidden and name.startswith(forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            if allowed and not name.startswith(allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


@pytest.mark.parametrize(("package", "forbidden", "allowed"), RULES, ids=[r[0] for r in RULES])
def test_layering(package, forbidden, allowed):
    assert modules(package), f"{package} has no modules"
    assert _violations(package, forbidden, allowed) == []


def test_checker_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from mesh.control import push\nimport mesh.proxy.routing\n")
    assert project_imports(bad) >= {"mesh.control", "mesh.control.push", "mesh.proxy.routing"}
