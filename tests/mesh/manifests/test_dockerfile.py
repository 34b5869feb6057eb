"""The one image (Dockerfile): no Docker engine here, so its key lines are checked."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _lines() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_two_stages_on_python_311_slim_and_runtime_is_non_root() -> None:
    lines = _lines()
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == ["FROM python:3.11-slim AS build", "FROM python:3.11-slim"]
    runtime = lines[lines.index(froms[1]):]
    user = [line for line in runtime if line.startswith("USER ")]
    assert user == ["USER 10001:10001"]  # matches the pods' runAsUser (mesh.manifests.platform/bookinfo)
    assert runtime.index(user[0]) > max(i for i, line in enumerate(runtime) if line.startswith("RUN "))


def test_runtime_installs_the_project_from_wheels_and_keeps_no_build_tools() -> None:
    lines = _lines()
    runtime = "\n".join(lines[lines.index("FROM python:3.11-slim"):])
    assert "COPY --from=build /wheels /wheels" in runtime
    assert "pip install --no-index --find-links=/wheels" in runtime and "rm -rf /wheels" in runtime
    assert "apt-get" not in runtime and "gcc" not in runtime and "COPY mesh" not in runtime
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime  # the pods run with readOnlyRootFilesystem


def test_build_context_holds_the_mesh_and_bookinfo_only() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*"
    assert {"!pyproject.toml", "!mesh/", "!bookinfo/"} <= set(ignore)
    copied = [line for line in _lines() if line.startswith("COPY ") and "--from" not in line]
    assert copied == ["COPY pyproject.toml setup.py README.md ./", "COPY mesh ./mesh", "COPY bookinfo ./bookinfo"]
    assert "!setup.py" in ignore
    # A local build's compiled helpers are not the image's platform's: the image compiles its own.
    assert {"mesh/**/*.so", "mesh/proxy/_speedups.c"} <= set(ignore)


def test_the_build_stage_has_a_compiler_for_the_telemetry_helpers() -> None:
    lines = _lines()
    build = "\n".join(lines[:lines.index("FROM python:3.11-slim")])
    assert "apt-get install -y --no-install-recommends gcc libc6-dev" in build
    assert build.index("gcc") < build.index("pip wheel")
    runtime = "\n".join(lines[lines.index("FROM python:3.11-slim"):])
    assert 'python -c "import mesh.proxy._speedups"' in runtime  # an image without them fails to build
