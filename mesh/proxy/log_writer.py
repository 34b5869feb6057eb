"""The access log's writer: a thread that writes the proxy's lines to a file descriptor, as Envoy's access log
flush thread does, so that a slow disk or a full pipe (a container runtime not reading the proxy's stdout)
delays the log, never the event loop.

The event loop only keeps text (`write`, as bytes); `flush`, which the telemetry flush calls once its last
slice is written, hands what was kept to the thread in one piece, and the thread writes it with `writev`.
The thread so wakes about once per telemetry flush, not once per slice: each wake-up takes the GIL from the
busy event loop and gives it back, and with one per slice (about ten per flush at 11,000 requests/s) those
switches cost a sidecar pair as much throughput as formatting the lines (docs/benchmark.md). Under a load
that never lets a flush end, what is kept is handed over every HANDOVER_BYTES.

What waits is bounded: beyond MAX_UNWRITTEN_BYTES kept or not yet written, text is dropped and its lines
counted (`weir_telemetry_dropped_total{kind="access_log"}`), as are the lines of a batch the descriptor
refused (a closed stdout, a full disk).
"""

from __future__ import annotations

import os
import queue
import select
import threading
from typing import Any

MAX_UNWRITTEN_BYTES = 8 * 1024 * 1024  # access log text kept or handed to the thread, not yet written
HANDOVER_BYTES = 1024 * 1024  # kept text handed over even before the flush ends (a flush is ~0.7 MB at 12k rps)
IOV_MAX = 1024  # buffers one writev takes (Linux's UIO_MAXIOV)
DROPPED = "telemetry_dropped_total"


class ThreadedWriter:
    """One access log's descriptor, written by its own thread (module docstring)."""

    __slots__ = ("_fd", "_owner", "_counters", "_max", "_queue", "_kept", "_kept_bytes", "_unwritten",
                 "_lost_lines", "_lock", "_thread")

    def __init__(self, fd: int, counters: Any, max_bytes: int = MAX_UNWRITTEN_BYTES, owner: Any = None) -> None:
        self._fd = fd
        self._owner = owner  # the file object `fd` belongs to, kept open as long as the writer
        self._counters = counters
        self._max = max_bytes
        self._queue: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()  # None: the last one
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self._unwritten = 0  # bytes kept or queued, not yet written (shared with the thread: under _lock)
        self._lost_lines = 0  # lines of batches the descriptor refused, counted by the event loop's next flush
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="weir-access-log", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        if not data:  # nothing to write, and a writev of empty buffers only would never end `_write_all`
            return
        with self._lock:
            if self._unwritten + len(data) > self._max:
                self._counters.inc(DROPPED, amount=data.count(b"\n"), kind="access_log")
                return
            self._unwritten += len(data)
        self._kept.append(data)
        self._kept_bytes += len(data)
        if self._kept_bytes >= HANDOVER_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand what was kept to the thread (one wake-up), and count the lines it could not write."""
        if self._kept:
            kept, self._kept, self._kept_bytes = self._kept, [], 0
            self._queue.put(kept)
        if self._lost_lines:
            with self._lock:
                lost, self._lost_lines = self._lost_lines, 0
            self._counters.inc(DROPPED, amount=lost, kind="access_log")

    def close(self, timeout_s: float) -> bool:
        """Everything kept is written before the thread ends; waits at most `timeout_s` for it (a stalled pipe
        must not hold a proxy that is shutting down). True when all was written."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (chunks := self._queue.get()) is not None:
            size = sum(map(len, chunks))
            try:
                _write_all(self._fd, chunks)
            except OSError:  # the descriptor is gone (closed stdout) or the disk is full: counted, not raised
                with self._lock:
                    self._lost_lines += sum(chunk.count(b"\n") for chunk in chunks)
            finally:
                with self._lock:
                    self._unwritten -= size


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """`writev` until every byte is written: a pipe may take part of them, and a descriptor someone made
    non-blocking may take none until it is writable. (A partly written batch that then fails counts all its
    lines lost: the caller cannot tell which lines got out.)"""
    pending = [memoryview(chunk) for chunk in chunks]
    writable = None
    while pending:
        try:
            written = os.writev(fd, pending[:IOV_MAX])
        except BlockingIOError:
            if writable is None:
                writable = select.poll()
                writable.register(fd, select.POLLOUT)
            writable.poll()
            continue
        while written and written >= len(pending[0]):
            written -= len(pending.pop(0))
        if written:
            pending[0] = pending[0][written:]
