"""Freed heap memory handed back to the operating system, periodically: Envoy's memory allocator manager
(`memory_release_interval`), for glibc's malloc.

Why: memory a burst leaves behind is freed but not returned. When the ingress stalls for a moment, requests
pile up and it opens hundreds of pooled TLS connections at once, each holding about 300 KiB (uvloop's TLS
read buffer, OpenSSL's record buffers and session). When they close, a minute later, Python and OpenSSL free
all of it, but glibc keeps the pages inside its arenas: a free page sitting below a live allocation cannot be
given back by shrinking the heap, so RSS rises by a step at every burst and never comes down. `malloc_trim(0)`
walks the arenas and returns every whole free page (madvise), wherever it lies.

A release costs a walk of the free lists (about 1 ms on a sidecar's heap) and, when it finds something, the
madvise calls (about 10 ms for 50 MiB); every MEMORY_RELEASE_INTERVAL_S that is negligible, and it never
runs per request. Counted in `weir_heap_releases_total{result="released"|"nothing"}`.

Worked example (docs/reliability.md, the soak): the ingress grew 50.5 → 62.3 MiB over ten minutes at
1000 rps, in steps at each stall; with a release every 30 s its RSS returns to within a few MiB of the
connections actually open.

On a libc without `malloc_trim` (musl, macOS) there is nothing to call and `release` does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

MEMORY_RELEASE_INTERVAL_S = 30.0
COUNTER = "heap_releases_total"


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `int malloc_trim(size_t pad)` from the running process, or None on another libc."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapReleaser:
    """`release()` returns the free heap pages to the OS and counts whether there were any; `trim` is
    glibc's `malloc_trim` (`for_this_process`), a fake in tests, or None where there is none."""

    __slots__ = ("counters", "_trim")

    def __init__(self, counters, trim: Callable[[int], int] | None) -> None:
        self.counters = counters
        self._trim = trim

    @classmethod
    def for_this_process(cls, counters) -> HeapReleaser:
        return cls(counters, _glibc_malloc_trim())

    @property
    def available(self) -> bool:
        return self._trim is not None

    def release(self) -> bool:
        """True when pages went back to the OS."""
        if self._trim is None:
            return False
        released = bool(self._trim(0))
        self.counters.inc(COUNTER, result="released" if released else "nothing")
        if released and log.isEnabledFor(logging.DEBUG):
            log.debug("returned free heap pages to the OS")
        return released
