"""The optional compiled telemetry helpers (`mesh.proxy._speedups`, built from `_speedups.pyx` when the
install had a C compiler), or None: then the pure-Python code runs, which is the reference the compiled
code is tested against. WEIR_NO_EXTENSIONS=1 forces pure Python (as aiohttp's AIOHTTP_NO_EXTENSIONS), to
compare the two or to rule the compiled code out when debugging."""

from __future__ import annotations

import os
from types import ModuleType

NO_EXTENSIONS_ENV = "WEIR_NO_EXTENSIONS"


def load() -> ModuleType | None:
    if os.environ.get(NO_EXTENSIONS_ENV, "") not in ("", "0"):
        return None
    try:
        from mesh.proxy import _speedups
    except ImportError:  # not built (no compiler at install time): pure Python
        return None
    return _speedups


speedups = load()
