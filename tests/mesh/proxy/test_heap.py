"""Returning freed heap to the OS (mesh.proxy.heap): counted per release, a no-op without glibc, and for real
in a child process whose heap is left fragmented the way a burst of closed TLS connections leaves it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from mesh.proxy import heap, runtime, server, stats
from tests.mesh.proxy.fakes import GW, bookinfo_view


def test_each_release_collects_cycles_then_trims_and_counts_both():
    answers = iter([1, 0, 1])
    calls = []

    def collect() -> int:
        calls.append("collect")
        return 40

    def trim(pad: int) -> int:
        calls.append(("trim", pad))
        return next(answers)

    counters = stats.Counters()
    releaser = heap.HeapReleaser(counters, collect, trim)
    assert [releaser.release() for _ in range(3)] == [True, False, True]
    assert calls == ["collect", ("trim", 0)] * 3  # cycles first, so what they held is free when trimming
    assert counters.get(heap.RELEASES, result="released") == 2
    assert counters.get(heap.RELEASES, result="nothing") == 1
    assert counters.get(heap.COLLECTED) == 120


def test_without_malloc_trim_only_the_collection_runs():
    counters = stats.Counters()
    releaser = heap.HeapReleaser(counters, lambda: 3, None)
    assert releaser.release() is False
    assert counters.values == {(heap.COLLECTED, ()): 3}


class Connection:
    """A closed connection as the proxy leaves it: a cycle (protocol ↔ parser callbacks) holding a buffer."""

    def __init__(self) -> None:
        self.parser = self
        self.buffer = bytearray(256 * 1024)


def test_a_release_frees_what_dead_connection_cycles_hold():
    import gc
    import weakref

    gc.disable()  # as a busy proxy: no collection happens on its own
    try:
        dead = [weakref.ref(Connection()) for _ in range(20)]
        assert all(ref() is not None for ref in dead)  # cycles: reference counting alone frees nothing
        heap.HeapReleaser.for_this_process(stats.Counters()).release()
        assert all(ref() is None for ref in dead)
    finally:
        gc.enable()


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


# -- wiring: the proxy server and its flag ------------------------------------------------------------------------

def test_the_flag_defaults_to_30_s_and_refuses_a_busy_loop_of_collections(capsys):
    from mesh.proxy import __main__ as main

    base = ["--id", "x", "--workload", "x", "--bootstrap", "view.json"]
    assert main.parse_args(base).memory_release_interval == heap.MEMORY_RELEASE_INTERVAL_S == 30.0
    assert main.parse_args([*base, "--memory-release-interval", "0"]).memory_release_interval == 0
    with pytest.raises(SystemExit) as exit_info:
        main.parse_args([*base, "--memory-release-interval", "0.01"])
    assert exit_info.value.code == 2 and "--memory-release-interval must be 0 (off) or at least 1 s" in capsys.readouterr().err


async def test_the_server_releases_memory_on_its_interval_and_stops_with_it():
    trims = []

    def trim(pad: int) -> int:
        trims.append(pad)
        if len(trims) == 2:
            raise OSError("a failing release")
        return 1

    proxy = server.ProxyServer(runtime.ProxyRuntime(GW), bind="127.0.0.1", memory_release_interval=0.01)
    proxy.heap = heap.HeapReleaser(proxy.runtime.counters, lambda: 0, trim)
    await proxy.start(0, None, {})
    for _ in range(200):
        if len(trims) >= 4:
            break
        await asyncio.sleep(0.01)
    assert len(trims) >= 4  # the failing second release did not end the ones after it
    assert proxy.runtime.counters.get(heap.FAILURES) == 1
    await proxy.shutdown()
    count = len(trims)
    await asyncio.sleep(0.05)
    assert len(trims) == count  # stopped with the proxy

    off = server.ProxyServer(runtime.ProxyRuntime(GW), bind="127.0.0.1", memory_release_interval=0)
    await off.start(0, None, {})
    assert [task.get_name() for task in off._tasks if task.get_name() == "heap"] == []
    await off.shutdown()


async def test_the_first_view_applied_calls_the_entry_points_hook_once():
    calls = []
    proxy = server.ProxyServer(runtime.ProxyRuntime(GW), bind="127.0.0.1", inbound_port=0, outbound_port=0,
                               on_first_view=lambda: calls.append("freeze"))
    await proxy.apply_view(bookinfo_view(), "v1")
    await proxy.apply_view(bookinfo_view(books=()), "v2")
    assert calls == ["freeze"]
    await proxy.shutdown()


def test_the_allocator_keeps_tls_read_buffers_on_the_heap_and_the_heap_top_between_reads():
    calls = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    assert heap.tune_allocator(mallopt)
    assert calls == [(heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD_BYTES), (heap.M_TRIM_THRESHOLD, heap.TRIM_THRESHOLD_BYTES)]
    assert heap.MMAP_THRESHOLD_BYTES > 256 * 1024  # uvloop's SSL read size, allocated whole by CPython per read
    assert heap.TRIM_THRESHOLD_BYTES > heap.MMAP_THRESHOLD_BYTES
    assert not heap.tune_allocator(lambda param, value: 0)  # an allocator that refuses: reported, not raised


TLS_READS = textwrap.dedent("""
    import resource, ssl, subprocess, sys, tempfile
    from pathlib import Path
    from mesh.proxy import heap
    if sys.argv[1] == "tuned":
        assert heap.tune_allocator()
    d = Path(tempfile.mkdtemp())
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", d / "k.pem", "-out", d / "c.pem", "-days", "1", "-subj", "/CN=x"], capture_output=True, check=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(d / "c.pem", d / "k.pem")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c, s = client.wrap_bio(ci, co), server.wrap_bio(si, so, server_side=True)
    for _ in range(10):
        for end in (c, s):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        si.write(co.read())
        ci.write(so.read())

    def read_records(n):
        for _ in range(n):  # as uvloop reads a TLS record: SSLObject.read(256 KiB)
            c.write(b"x" * 1100)
            si.write(co.read())
            assert len(s.read(256 * 1024)) == 1100

    read_records(20)  # the heap settles
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    read_records(200)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _page_faults_of_tls_reads(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", TLS_READS, mode], capture_output=True, text=True, timeout=60,
                          check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux") or heap._glibc_mallopt() is None, reason="glibc only")
def test_tls_reads_stop_faulting_in_fresh_pages_once_the_allocator_is_tuned():
    """200 TLS record reads the way uvloop makes them. On glibc's defaults each 256 KiB answer buffer is a fresh
    mapping (mmap, mremap, munmap), so each read faults a zeroed page in; tuned, the buffer comes from the heap
    and its pages stay: (almost) no fault."""
    default = _page_faults_of_tls_reads("default")
    if default < 200:
        pytest.skip(f"this libc/Python does not map a page per read by default ({default} faults): nothing to fix")
    assert _page_faults_of_tls_reads("tuned") < 20
