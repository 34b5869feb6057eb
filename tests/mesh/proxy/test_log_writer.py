"""The access log's writer thread (mesh.proxy.log_writer) on real pipes: `write` and `flush` never block,
what waits is bounded and counted, the thread wakes once per flush, every byte gets out in order (partial
writes, a non-blocking descriptor, more buffers than one writev takes), a refused batch is counted, and
`close` writes what is left or gives up after its timeout."""

from __future__ import annotations

import os
import threading

from mesh.proxy import log_writer, stats


def read_until(fd: int, expected: bytes) -> bytes:
    got = b""
    while len(got) < len(expected):
        got += os.read(fd, len(expected) - len(got))  # blocks until the writer thread writes
    return got


def read_all(fd: int) -> tuple[list[bytes], threading.Thread]:
    """Everything that comes out of the pipe until its write end closes, read by a thread (the runtime): the
    list gets it once the thread is joined."""
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(os.fdopen(fd, "rb").read()), daemon=True)
    reader.start()
    return out, reader


def test_write_and_flush_never_block_and_what_waits_is_bounded():
    """A pipe nobody reads (a container runtime that stalls): `write` and `flush` return at once, what waits
    is bounded, and what was kept is written once the pipe drains."""
    read_end, write_end = os.pipe()
    counters = stats.Counters()
    writer = log_writer.ThreadedWriter(write_end, counters, max_bytes=200_000)
    big = b"x" * 99_999 + b"\n"  # more than the pipe holds: the thread blocks on it
    writer.write(big)
    writer.flush()
    writer.write(b"aaaa\n")  # kept at once although the thread is blocked
    writer.write(big)  # 200,005 bytes would wait: dropped and counted
    writer.flush()
    assert counters.get(log_writer.DROPPED, kind="access_log") == 1
    assert read_until(read_end, big + b"aaaa\n") == big + b"aaaa\n"
    os.close(read_end)


def test_the_thread_wakes_once_per_flush_and_writes_every_slice_in_order():
    read_end, write_end = os.pipe()
    writer = log_writer.ThreadedWriter(write_end, stats.Counters())
    writer.write(b"a\n")
    writer.write(b"")  # kept as nothing
    writer.write(b"b\n")
    assert writer._queue.qsize() == 0 and len(writer._kept) == 2  # kept, not handed over: no wake-up per slice
    writer.flush()
    writer.write(b"c\n")
    writer.flush()
    writer.flush()  # nothing kept: nothing handed over
    assert read_until(read_end, b"a\nb\nc\n") == b"a\nb\nc\n"
    os.close(read_end)


def test_a_flush_that_never_ends_still_hands_its_text_over():
    """Under saturation the telemetry flush may not end for a while (slices keep coming): what is kept goes to
    the thread every HANDOVER_BYTES, written while the flush goes on, instead of waiting and filling the bound."""
    read_end, write_end = os.pipe()
    counters = stats.Counters()
    writer = log_writer.ThreadedWriter(write_end, counters)
    slice_text = "".join(f"{i:07d}{'y' * 471}\n" for i in range(128)).encode()  # 128 lines of 480 bytes
    slices = log_writer.HANDOVER_BYTES // len(slice_text) + 1  # just past one handover, and no flush
    for _ in range(slices):
        writer.write(slice_text)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_until(read_end, slice_text * slices)),
                              daemon=True)
    reader.start()
    reader.join(30)
    assert got == [slice_text * slices], "written without a flush"
    assert counters.get(log_writer.DROPPED, kind="access_log") == 0
    os.close(read_end)


def test_partial_writes_are_finished_in_order_and_a_non_blocking_descriptor_is_waited_for():
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # as if someone else made stdout non-blocking
    chunks = [bytes([65 + i]) * 50_000 for i in range(4)]  # 200 kB through a 64 kB pipe: EAGAIN, partial writes
    out, reader = read_all(read_end)
    log_writer._write_all(write_end, chunks)
    os.close(write_end)
    reader.join(10)
    assert out[0] == b"".join(chunks)  # each byte once, in order: nothing repeated or skipped


def test_more_buffers_than_one_writev_takes_are_all_written():
    read_end, write_end = os.pipe()
    chunks = [f"{i}\n".encode() for i in range(log_writer.IOV_MAX * 2 + 5)]
    out, reader = read_all(read_end)
    log_writer._write_all(write_end, chunks)
    os.close(write_end)
    reader.join(10)
    assert out[0] == b"".join(chunks)


def test_a_batch_the_descriptor_refuses_is_counted_at_the_next_flush():
    read_end, write_end = os.pipe()
    os.close(read_end)  # stdout gone: EPIPE (Python ignores SIGPIPE)
    counters = stats.Counters()
    writer = log_writer.ThreadedWriter(write_end, counters)
    writer.write(b"a\nb\n")
    assert writer.close(timeout_s=10)  # the thread has tried, and ended
    writer.flush()
    assert counters.get(log_writer.DROPPED, kind="access_log") == 2
    os.close(write_end)


def test_at_exit_a_stalled_pipe_holds_the_proxy_no_longer_than_the_timeout():
    read_end, write_end = os.pipe()
    writer = log_writer.ThreadedWriter(write_end, stats.Counters())
    writer.write(b"x" * 200_000 + b"\n")  # more than a pipe holds, and nobody reads
    assert writer.close(timeout_s=0.05) is False
    os.close(read_end)  # the thread's write fails (EPIPE) and it ends
