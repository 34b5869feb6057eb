"""Returning freed heap to the OS (mesh.proxy.heap): counted per release, a no-op without glibc, and for real
in a child process whose heap is left fragmented the way a burst of closed TLS connections leaves it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mesh.proxy import heap, stats


def test_each_release_is_counted_by_whether_pages_went_back():
    answers = iter([1, 0, 1])
    calls = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return next(answers)

    counters = stats.Counters()
    releaser = heap.HeapReleaser(counters, trim)
    assert [releaser.release() for _ in range(3)] == [True, False, True]
    assert calls == [0, 0, 0]  # pad 0: keep nothing spare at the top of the heap
    assert counters.get(heap.COUNTER, result="released") == 2
    assert counters.get(heap.COUNTER, result="nothing") == 1


def test_without_malloc_trim_nothing_is_called_or_counted():
    counters = stats.Counters()
    releaser = heap.HeapReleaser(counters, None)
    assert not releaser.available and releaser.release() is False
    assert counters.values == {}


# A heap like the ingress's after a burst: many mid-sized blocks freed, every third one still alive, so the
# free pages sit below live allocations and shrinking the heap's top cannot return them.
FRAGMENT = textwrap.dedent("""
    import random
    from mesh.proxy import heap, stats

    def rss_kib():
        with open("/proc/self/status") as status:
            return int(status.read().split("VmRSS:")[1].split()[0])

    rng = random.Random(1)
    blocks = [bytearray(rng.randint(2_000, 60_000)) for _ in range(3_000)]
    alive = blocks[::3]
    del blocks
    before = rss_kib()
    released = heap.HeapReleaser.for_this_process(stats.Counters()).release()
    print(before, rss_kib(), released, len(alive))
""")


@pytest.mark.skipif(heap._glibc_malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_a_release_returns_the_pages_a_burst_left_behind():
    out = subprocess.run([sys.executable, "-c", FRAGMENT], capture_output=True, text=True, check=True, timeout=60)
    before, after, released, _ = out.stdout.split()
    assert released == "True"
    assert int(before) - int(after) > 20 * 1024, f"RSS {before} → {after} KiB: less than 20 MiB returned"
