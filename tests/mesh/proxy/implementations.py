"""Both implementations of telemetry's per-request work under one test: the compiled helpers
(mesh.proxy._speedups) and the pure-Python reference. `implementation` is an autouse fixture for the
modules that test them (their own tests run once per implementation); a compiled run is skipped when the
helpers are not built, except under CI, where the install must have built them."""

from __future__ import annotations

import os

import pytest

from mesh.proxy import compiled, log_line, tracing

COMPILED, PYTHON = "compiled", "python"


def require_compiled():
    if compiled.speedups is None:
        if os.environ.get("CI") and not os.environ.get(compiled.NO_EXTENSIONS_ENV):
            pytest.fail("the compiled helpers were not built: `pip install -e .` needs a C compiler")
        pytest.skip("the compiled helpers are not built (no C compiler at install time)")
    return compiled.speedups


def use(kind: str):
    """Switch log_line and tracing to one implementation (a Tracer picks its own when it is made)."""
    chosen = require_compiled() if kind == COMPILED else None
    log_line._speedups = tracing._speedups = chosen
    tracing.upstream_lines = tracing._upstream_lines_of(chosen)


@pytest.fixture(scope="module", params=[COMPILED, PYTHON], autouse=True)
def implementation(request):
    use(request.param)
    yield request.param
    use(COMPILED if compiled.speedups is not None else PYTHON)
