"""The I/O side of the open-loop client: keep-alive connections on uvloop, ticked by a precise timer.

`bench.openloop` owns the schedule and the latency math. Here a periodic Linux timerfd (nanosecond
resolution, read by the event loop like a socket) wakes the loop at each intended send time; the due
requests go to idle keep-alive connections, or wait in a backlog while none is free (that wait counts as
latency). uvloop's own timers have millisecond resolution, which would add up to 1 ms of send lag at
1000 rps; they are only the fallback when timerfd is unavailable. Responses are parsed with httptools.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import math
import os
import time
from collections import deque
from dataclasses import dataclass

import httptools

from bench.openloop import Schedule

MAX_CONNECTIONS = 512  # client sockets; past it requests queue in the backlog (and their wait is latency)
DRAIN_S = 2.0  # after the last intended send, how long outstanding requests may still complete
CONNECT_TIMEOUT_S = 5.0
_CLOCK_MONOTONIC = 1  # time.perf_counter() is CLOCK_MONOTONIC on Linux: the timer and the stamps agree
_TFD_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1
_PR_SET_TIMERSLACK = 29


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timespec(seconds: float) -> _Timespec:
    whole = int(seconds)
    return _Timespec(whole, int((seconds - whole) * 1e9))


def periodic_timerfd(first_at: float, interval: float) -> int | None:
    """A non-blocking timerfd firing at `first_at` (a perf_counter reading), then every `interval`.

    None when timerfd is unavailable (not Linux, no libc via ctypes).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)  # 1 ns slack instead of the default 50 µs
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK_CLOEXEC)
        if fd < 0:
            return None
        spec = _Itimerspec(_timespec(interval), _timespec(first_at))
        if libc.timerfd_settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            os.close(fd)
            return None
        return fd
    except (OSError, AttributeError):
        return None


@dataclass
class Result:
    schedule: Schedule
    sent: list[float]
    completed: list[float]
    ok: bytearray
    timer: str
    connections_opened: int


class _Connection(asyncio.Protocol):
    __slots__ = ("client", "transport", "parser", "index")

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.index = -1  # the request in flight, -1 when idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client.ready(self)

    def send(self, index: int, now: float) -> None:
        self.index = index
        self.client.sent[index] = now
        self.transport.write(self.client.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        index, self.index = self.index, -1
        status = self.parser.get_status_code()
        self.client.finished(index, now, 200 <= status < 400)
        if self.parser.should_keep_alive():
            self.client.ready(self)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)


class _Client:
    """Hands due requests to idle connections; opens more (up to MAX_CONNECTIONS) when none is idle."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, request: bytes,
                 schedule: Schedule) -> None:
        self.loop, self.host, self.port, self.request = loop, host, port, request
        self.schedule = schedule
        self.sent = [math.nan] * schedule.count  # NaN: never sent / never completed
        self.completed = [math.nan] * schedule.count
        self.ok = bytearray(schedule.count)
        self.idle: deque[_Connection] = deque()  # FIFO: load spreads over all connections, as from many clients
        self.backlog: deque[int] = deque()
        self.opening = 0
        self.open = 0
        self.opened = 0
        self.outstanding = 0

    def connect(self) -> None:
        self.opening += 1
        self.opened += 1
        task = self.loop.create_task(asyncio.wait_for(
            self.loop.create_connection(lambda: _Connection(self), self.host, self.port), CONNECT_TIMEOUT_S))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task) -> None:
        self.opening -= 1
        if task.cancelled() or task.exception() is not None:
            return  # queued requests wait for another connection; never completed ones count as errors
        self.open += 1

    def tick(self) -> None:
        now = time.perf_counter()
        for index in self.schedule.due(now):
            self.outstanding += 1
            if self.idle:
                self.idle.popleft().send(index, now)
            else:
                self.backlog.append(index)
                if self.opening + self.open < MAX_CONNECTIONS and self.opening < len(self.backlog):
                    self.connect()

    def ready(self, conn: _Connection) -> None:
        if self.backlog:
            conn.send(self.backlog.popleft(), time.perf_counter())
        else:
            self.idle.append(conn)

    def finished(self, index: int, now: float, ok: bool) -> None:
        self.completed[index] = now
        self.ok[index] = ok
        self.outstanding -= 1

    def lost(self, conn: _Connection) -> None:
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        if conn.index >= 0:
            self.finished(conn.index, time.perf_counter(), False)
            conn.index = -1


async def _drive(host: str, port: int, request: bytes, rate: float, duration: float,
                 connections: int) -> Result:
    loop = asyncio.get_running_loop()
    schedule = Schedule(rate, duration, start=0.0)
    client = _Client(loop, host, port, request, schedule)
    for _ in range(min(connections, MAX_CONNECTIONS)):
        client.connect()
    deadline = time.perf_counter() + CONNECT_TIMEOUT_S
    while client.opening and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    schedule.start = time.perf_counter() + 0.05
    fd = periodic_timerfd(schedule.start, 1.0 / rate)
    stop = loop.create_future()

    def on_tick() -> None:
        if fd is not None:
            try:
                os.read(fd, 8)
            except BlockingIOError:
                return
        client.tick()
        if schedule.finished and not stop.done():
            stop.set_result(None)
        elif fd is None:
            loop.call_at(loop.time() + max(0.0, schedule.intended(schedule.next) - time.perf_counter()), on_tick)

    if fd is not None:
        loop.add_reader(fd, on_tick)
    else:
        loop.call_later(max(0.0, schedule.start - time.perf_counter()), on_tick)
    try:
        await stop
        drain_until = time.perf_counter() + DRAIN_S
        while client.outstanding and time.perf_counter() < drain_until:
            await asyncio.sleep(0.01)
    finally:
        if fd is not None:
            loop.remove_reader(fd)
            os.close(fd)
    return Result(schedule, client.sent, client.completed, client.ok,
                  "timerfd" if fd is not None else "event-loop (1 ms resolution)", client.opened)


def run(host: str, port: int, request: bytes, *, rate: float, duration: float, connections: int = 32) -> Result:
    """Send `rate × duration` requests on schedule; GC is off meanwhile so that it cannot stall the client."""
    import uvloop

    gc.disable()
    try:
        return uvloop.run(_drive(host, port, request, rate, duration, connections))
    finally:
        gc.enable()
