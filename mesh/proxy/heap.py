"""The proxy's heap: memory it no longer uses given back (garbage cycles collected and free heap pages returned
to the OS, every MEMORY_RELEASE_INTERVAL_S, as Envoy's memory allocator manager `memory_release_interval`), and
the allocator set at start so that TLS reads stop costing system calls (`tune_allocator`).

Why both. A closed connection was a reference cycle (the protocol and its httptools parser, its transport, its
timer), freed only by Python's cyclic collector; connections now cut those edges as they close
(`DownstreamConnection.released`, `UpstreamConnection.connection_lost`), and this stays as the backstop
for any cycle left elsewhere. The collector runs when the count of live container objects
grows, and a busy proxy frees almost everything by reference counting, so its full collections are rare (the
gw sidecar ran one in a ten-minute soak). Meanwhile each dead TLS connection keeps what Python cannot see:
uvloop's 256 KiB TLS read buffer and OpenSSL's records and session, about 300 KiB. After a stall, when the
ingress opened hundreds of pooled TLS connections and closed them a minute later, a sidecar held 155 dead
TLS connections and 56 MB of malloc'd memory for 21 live ones (RSS +18% over the soak). Collecting the cycles
frees that memory; `malloc_trim(0)` then returns the free pages, wherever they lie in glibc's arenas (a page
below a live allocation is never returned by shrinking the heap's top).

Worked example, that sidecar after the soak: malloc in use 56 MB → 6.4 MB, RSS 57.0 → 46.3 MiB (its
baseline was 46.8).

Cost: a full collection walks the objects made since the first view (`freeze_startup` moves the imports,
classes and first view out of its way; a whole sidecar heap takes 4 to 7 ms), the trim walks the free lists (about 1 ms) plus its
madvise calls when it finds pages. Once every 30 s; never per request. Counted in
`weir_heap_releases_total{result="released"|"nothing"}` and `weir_heap_cycles_collected_total`. On a libc
without `malloc_trim` (musl, macOS) only the collection runs.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

# glibc's mallopt parameters, and the values a proxy sets (`tune_allocator`).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 512 * 1024  # above uvloop's 256 KiB TLS read size: those come from the heap
TRIM_THRESHOLD_BYTES = 1024 * 1024  # the free top of the heap kept between reads instead of given back

MEMORY_RELEASE_INTERVAL_S = 30.0
MIN_MEMORY_RELEASE_INTERVAL_S = 1.0  # below it the full collections would cost more than they save
ALLOCATOR_TUNED = "heap_allocator_tuned"  # gauge: 1 when `tune_allocator` took (glibc), else 0
RELEASES = "heap_releases_total"
COLLECTED = "heap_cycles_collected_total"
FAILURES = "heap_release_failures_total"


def _glibc(name: str, *argtypes: type) -> Callable[..., int] | None:
    """`int name(argtypes...)` from the running process's C library, or None where it has none. Only glibc has
    `malloc_trim`; a libc with `mallopt` but none of glibc's parameters (musl) refuses them (returns 0)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `int malloc_trim(size_t pad)`."""
    return _glibc("malloc_trim", ctypes.c_size_t)


def tune_allocator(mallopt: Callable[[int, int], int] | None = None) -> bool:
    """Keep allocations below MMAP_THRESHOLD_BYTES on the heap; True when the allocator took the settings.

    Why: uvloop reads each TLS record with `SSLObject.read(256 KiB)`, and CPython allocates the whole 256 KiB
    for the answer before shrinking it to the bytes read. Past glibc's mmap threshold (128 KiB until a large
    enough block happens to be freed) that is an mmap, an mremap and a munmap, and a page fault, per read.
    Measured on loopback (1.1 KiB answers, 16 connections), one side's CPU per exchange over TLS: 70-78 µs
    with the default threshold, 22-29 µs with these settings; plaintext costs 13. In the bench's mTLS pair the
    sidecars had mostly raised the threshold on their own (0.44 mappings per request on one, none on the
    other) and the pair's throughput moved within the noise: the setting makes the cheap case certain, whatever
    a process freed before. A fixed threshold also turns
    glibc's adaptive one off, so the trim threshold is raised with it: otherwise each freed read buffer at the
    top of the heap would be returned with brk and faulted back in by the next one. Blocks of 128-512 KiB
    freed below the top now stay in the heap until `HeapReleaser`'s `malloc_trim` every
    MEMORY_RELEASE_INTERVAL_S gives their pages back (never, with `--memory-release-interval 0`); 300 TLS
    connections opened and closed left the same RSS either way once trimmed (31 MiB)."""
    if mallopt is None:
        mallopt = _glibc_mallopt()
        if mallopt is None:
            return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                 TRIM_THRESHOLD_BYTES))


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's `int mallopt(int param, int value)`."""
    return _glibc("mallopt", ctypes.c_int, ctypes.c_int)


def freeze_startup() -> None:
    """Called when the first view is applied: what is alive then (modules, classes, the listeners, the first
    view) is nearly all kept for good, so it moves to the collector's permanent generation and full
    collections only walk what came after. The price: what of it later becomes cyclic garbage (the first
    view's compiled objects, once replaced) is never collected; that is bounded, once, by the first view."""
    gc.collect()
    gc.freeze()


class HeapReleaser:
    """`release()` collects garbage cycles, then returns the free heap pages to the OS. `collect` and `trim`
    are injectable (tests); `for_this_process` uses Python's collector and glibc's `malloc_trim` (None where
    there is none)."""

    __slots__ = ("counters", "_collect", "_trim")

    def __init__(self, counters, collect: Callable[[], int], trim: Callable[[int], int] | None) -> None:
        self.counters = counters
        self._collect = collect
        self._trim = trim

    @classmethod
    def for_this_process(cls, counters) -> HeapReleaser:
        return cls(counters, gc.collect, _glibc_malloc_trim())

    def release(self) -> bool:
        """True when pages went back to the OS."""
        collected = self._collect()
        if collected:
            self.counters.inc(COLLECTED, collected)
        if self._trim is None:
            return False
        released = bool(self._trim(0))
        self.counters.inc(RELEASES, result="released" if released else "nothing")
        return released
