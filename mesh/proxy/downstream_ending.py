"""How a client connection ends other than by its client: its timeouts, the proxy's graceful drain, and the
refusal of malformed input. A base of `mesh.proxy.downstream.DownstreamConnection`, whose state it reads
(`active`, `current`, `queue`, `in_headers`) and whose `close`, `write` and `pause_reading` it calls.

- Timeouts: `mesh.proxy.request_limits.ConnectionTimer` asks `phase()` and calls `timed_out(phase)`: an idle
  connection is closed; headers or a body that stop arriving get 408 and the connection closed.
- Drain (`mesh.proxy.drain`): an idle connection closes now; a busy one finishes what it accepted, its last
  answer saying `Connection: close`.
- Malformed or oversized input is never forwarded: 4xx and close, after the requests pipelined before it.
"""

from __future__ import annotations

from mesh.proxy import replies, request_limits


class EndingPaths:
    __slots__ = ()

    def phase(self) -> int:
        active = self.active
        if active is not None:
            return request_limits.BUSY if active.request_complete else request_limits.BODY
        return request_limits.HEADERS if self.in_headers else request_limits.IDLE

    def timed_out(self, phase: int) -> None:
        counters = self.forwarding.runtime.counters
        if phase == request_limits.IDLE:
            counters.inc("downstream_cx_idle_timeout_total")
            self.close()
        elif phase == request_limits.HEADERS:
            counters.inc("downstream_rq_header_timeout_total")
            if self.in_headers:
                self._reject(replies.RequestTimeout())
            else:
                self.close()  # a connection that never sent a byte: nothing to answer
        else:
            counters.inc("downstream_rq_body_timeout_total")
            self._protocol_error(replies.RequestTimeout())

    def idle(self) -> bool:
        return self.active is None

    def drain(self) -> bool:
        """Graceful shutdown (mesh.proxy.drain): an idle connection is closed now (True); a busy one
        finishes the requests it has accepted, the last answer carrying `Connection: close`, then closes.
        A request whose head is still arriving counts as accepted: its answer closes the connection."""
        if self.active is None and not self.in_headers:
            self.close()
            return True
        self.draining = True
        if self.active is None:
            return False
        last = self.current if self.current is not None and not self.current.done else self.active
        if not last.response_started:
            last.keep_alive = False
        return False

    def _protocol_error(self, error: replies.ProxyError) -> None:
        """Malformed or oversized input: never forwarded; answered with 4xx and the connection closed.

        When the bad bytes start a later pipelined request, or are the body of one still queued, the earlier
        ones are served first (reading stops: the parser cannot go on; a queued bad request is dropped, never
        forwarded); when they are part of the request in flight, it is aborted."""
        current = self.current
        active = self.active
        if active is not None and current is not None and (current.request_complete or current is not active):
            if not current.request_complete:
                self.queue.pop()  # the bad request is the last one parsed; it never started
                self.current = self.queue[-1] if self.queue else active
            self.deferred_error = error
            self.pause_reading(self.REFUSED)
            return
        if active is not None:
            if active.response_started:
                self.close()
                return
            active.abort()
            self.active = None
        self._reject(error)

    def _reject(self, error: replies.ProxyError) -> None:
        self.write(replies.local_reply(error.status, error.body.encode(), False))
        self.forwarding.runtime.counters.inc("downstream_rq_rejected_total", code=str(error.status))
        self.close()
