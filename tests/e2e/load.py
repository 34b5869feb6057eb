"""Constant-rate HTTP load for the fault tests: what a client sees while something breaks.

`Load(url, rate)` runs in background threads (`with Load(...) as load:`), each on its own keep-alive
connection, sending request i at `start + i / rate` (a worker that falls behind catches up, so a stall
shows as latency, not as fewer requests). Every answer is recorded as (seconds since start, status,
books version, when its request was sent); a connection error or timeout is recorded with its exception
name instead of a status. Seconds since start are `time.monotonic() - load.start_at`: another process's
time.monotonic() stamps (system-wide on Linux) compare after subtracting `start_at`.
The fault tests assert on `failures()` (anything but a 200) and on when a version was seen again.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

REQUEST_TIMEOUT_S = 10.0  # a client's patience: longer than any fault these tests inject on purpose


@dataclass(frozen=True, slots=True)
class Answer:
    at: float  # seconds since the load started (when the answer came)
    status: int | str  # HTTP status, or the exception name when there was no answer
    books: str | None  # versions.books of a 200 from /gateway/books
    sent: float = 0.0  # seconds since the load started (when its request was sent)


class Load:
    def __init__(self, url: str, rate: float = 50.0, workers: int = 8, timeout: float = REQUEST_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.rate = rate
        self.workers = workers
        self.timeout = timeout
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._index = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.start_at = 0.0
        self.stopped_at = 0.0

    def __enter__(self) -> Load:
        self.start_at = time.monotonic()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.stopped_at = self.stopped_at or time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.start_at

    def _work(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            with self._lock:
                due = self.start_at + next(self._index) / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            answer, keep = self._one(conn)
            with self._lock:
                self.answers.append(answer)
            if not keep:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _one(self, conn: http.client.HTTPConnection) -> tuple[Answer, bool]:
        sent = self.now()
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Answer(self.now(), type(exc).__name__, None, sent), False
        books = None
        if response.status == 200:
            try:
                books = json.loads(body).get("versions", {}).get("books")
            except (ValueError, AttributeError):
                pass
        return Answer(self.now(), response.status, books, sent), not response.will_close

    # -- what the tests read ----------------------------------------------------------------------------
    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def statuses(self) -> Counter:
        return Counter(answer.status for answer in self.snapshot())

    def failures(self) -> list[Answer]:
        return [answer for answer in self.snapshot() if answer.status != 200]

    def rps(self) -> float:
        answers = self.snapshot()
        span = (self.stopped_at or time.monotonic()) - self.start_at
        return len(answers) / span if span > 0 else 0.0

    def wait_for(self, predicate, timeout: float) -> Answer | None:
        """The first answer after now that satisfies `predicate`, waiting up to `timeout` s."""
        start, seen = time.monotonic(), len(self.snapshot())
        while time.monotonic() - start < timeout:
            answers = self.snapshot()
            for answer in answers[seen:]:
                if predicate(answer):
                    return answer
            seen = len(answers)
            time.sleep(0.05)
        return None

    def __repr__(self) -> str:
        return f"<Load {self.rate:g} rps {dict(self.statuses())} failures={len(self.failures())}>"
