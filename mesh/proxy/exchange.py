"""One request/response exchange through the proxy: route it, send it upstream, stream the answer back.

Created by `mesh.proxy.downstream` when request headers are complete. The hot path is callbacks only:
no task per request, one upstream write for a body-less request, and one downstream write per upstream
read (`out` is flushed by the upstream connection after each `feed_data`). Decisions (route, cluster,
endpoint) come from `mesh.proxy.forwarding`, which also builds the upstream request head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.proxy import breaker, replies, response_head, retry

if TYPE_CHECKING:
    from mesh.proxy.downstream import DownstreamConnection
    from mesh.proxy.routing import Target
    from mesh.proxy.upstream import UpstreamConnection

# Request body bytes held while no upstream is attached yet (connecting, pipelined): beyond this the
# downstream socket stops being read, so a fast client cannot grow our memory.
MAX_BUFFERED_BODY = 256 * 1024
# A request body up to this size is kept so that the request can be sent again on a fresh connection
# when a reused keep-alive connection turns out to be closed by the server.
MAX_REPLAY_BODY = 64 * 1024

CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"


class Exchange:
    __slots__ = (
        "conn", "head", "method", "chunked_request", "keep_alive", "start", "target", "upstream",
        "request_head", "body", "body_size", "replayable", "request_complete", "response_started",
        "chunked_response", "out", "status", "flag", "bytes_sent", "done", "is_head", "response_ops",
        "attempts", "extra_response_headers", "block", "host_header", "expect_continue",
        "timer", "try_timer", "tries", "retries_left", "retry_flag", "admitted", "retrying", "access",
        "trace", "request_id", "user_agent", "counted",
    )

    def __init__(self, conn: DownstreamConnection, head, method: str, chunked: bool, keep_alive: bool,
                 start: float, host_header: bytes) -> None:
        self.conn = conn
        self.host_header = host_header
        self.block = None
        self.head = head  # matching.RequestHead
        self.method = method
        self.expect_continue = False
        self.is_head = method == "HEAD"
        self.chunked_request = chunked
        self.keep_alive = keep_alive
        self.start = start
        self.target: Target | None = None
        self.upstream: UpstreamConnection | None = None
        self.request_head = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.replayable = True
        self.request_complete = False
        self.response_started = False
        self.chunked_response = False
        self.out: list[bytes] = []
        self.status = 0
        self.flag = "-"
        self.bytes_sent = 0
        self.done = False
        self.response_ops = None
        self.attempts = 0
        self.extra_response_headers = b""
        self.timer = None  # the route timeout (asyncio.TimerHandle)
        self.try_timer = None  # per-try timeout, retry backoff or injected delay: one at a time
        # The try's generation, moved on when a try is given up for a retry (`_schedule_retry`): what a given-up
        # try left behind (a connect, a place in a queue) sees it changed and does not send the request.
        self.tries = 0
        self.retries_left = 0
        self.retry_flag = ""  # why a retriable outcome went to the client: URX (retries spent), UO (maxRetries)
        self.admitted = None  # circuit breaking: the cluster counting this request / its retries
        self.retrying = None
        self.access = None  # mesh.proxy.access.Verdict on a received request checked by JWT/authorization
        self.trace = None  # this hop's tracing.Span once the upstream head is built
        self.request_id = None  # the x-request-id forwarded (bytes), noted with user-agent as the head is built
        self.user_agent = None
        self.counted = None  # (balancer, endpoint) while a try counts in LEAST_REQUEST's in-flight (Forwarding.count)

    # -- request side -----------------------------------------------------------------------------------
    def attach(self, upstream: UpstreamConnection) -> None:
        """Send the request head and whatever body is buffered on `upstream`."""
        self.upstream = upstream
        self.attempts += 1
        if self.conn.write_blocked:
            upstream.pause_reading()  # its answer would only queue behind a client that is not reading
        # The cluster in force (a pooled connection may have been opened by an earlier view's): Envoy's
        # local-origin connect success resets the count its detector keeps for the endpoint.
        cluster = self.target.cluster
        if cluster is not None and cluster.splits_local:
            cluster.detector.connected(self.target.endpoint)
        if self.body:
            parts = [self.request_head]
            for chunk in self.body:
                parts.append(self._frame(chunk))
            if self.request_complete and self.chunked_request:
                parts.append(LAST_CHUNK)
            upstream.send(self, b"".join(parts))
            if not self.replayable:
                self.body = []
        else:
            upstream.send(self, self.request_head + LAST_CHUNK if self.chunked_request and self.request_complete
                          else self.request_head)
        conn = self.conn
        if self.request_complete:  # the try's per-try timeout starts now (`start_try_timeout`), if it has one
            route = self.target.route
            if route is not None and route.spec.retries.per_try_timeout_s is not None:
                conn.forwarding.start_try_timeout(self)
        if conn.paused:
            conn.resume_reading(conn.BODY_BUFFER)  # the body buffered so far went upstream

    def _frame(self, chunk: bytes) -> bytes:
        if self.chunked_request:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    def request_body(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        upstream = self.upstream
        if upstream is not None and not upstream.closed:
            upstream.write(self._frame(chunk))
            if self.replayable and self.body_size <= MAX_REPLAY_BODY:
                self.body.append(chunk)
            else:
                self.replayable = False
                self.body = []
            return
        self.body.append(chunk)
        if self.body_size > MAX_REPLAY_BODY:
            self.replayable = False
        if self.body_size > MAX_BUFFERED_BODY:
            self.conn.pause_reading(self.conn.BODY_BUFFER)

    def request_done(self) -> None:
        self.request_complete = True
        if self.chunked_request and self.upstream is not None and not self.upstream.closed:
            self.upstream.write(LAST_CHUNK)
        self.conn.forwarding.request_body_ended(self)

    def pause_downstream_reading(self) -> None:
        self.conn.pause_reading(self.conn.UPSTREAM_FULL)

    def resume_downstream_reading(self) -> None:
        self.conn.resume_reading(self.conn.UPSTREAM_FULL)

    # -- response side ----------------------------------------------------------------------------------
    def response_head(self, status: int, headers: list[tuple[bytes, bytes]], upstream_keep_alive: bool) -> None:
        target = self.target
        if target is not None and target.cluster is not None and target.cluster.detector is not None:
            target.cluster.detector.report(target.endpoint, status)
        if status >= 400 and target is not None and target.route is not None:  # retry.status_is_retriable
            if self.conn.forwarding.retry_answer(self, status):
                return
            if self.retry_flag:
                self.add_flag(self.retry_flag)
        if self.try_timer is not None:
            self.try_timer.cancel()  # the answer has started: per-try timeouts no longer apply
            self.try_timer = None
        self.status = status
        self.response_started = True
        if not self.request_complete:
            # The upstream answered before reading the whole request: don't try to resync the client.
            self.keep_alive = False
        self.out.append(response_head.downstream_response_head(self, status, headers))
        if self.is_head and self.upstream is not None:
            self.upstream.head_response_done(self, upstream_keep_alive)

    def response_complete(self, upstream: UpstreamConnection, upstream_keep_alive: bool) -> None:
        out = self.out
        if self.chunked_response:
            out.append(LAST_CHUNK)
        if out:
            self.conn.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        self.upstream = None
        self.conn.forwarding.release(self, upstream, upstream_keep_alive and self.request_complete)
        self.finish()

    def flush(self) -> None:
        out = self.out
        if out:
            self.conn.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def upstream_failed(self, upstream: UpstreamConnection, error: replies.ProxyError) -> None:
        """The upstream connection broke or sent garbage while serving this exchange."""
        self.upstream = None
        forwarding = self.conn.forwarding
        forwarding.release(self, upstream, False)
        if self.done:
            return
        if not self.response_started:
            if self.try_timer is not None:  # this connection's per-try timeout (`start_try_timeout`)
                self.try_timer.cancel()
                self.try_timer = None
            if upstream.reused and not upstream.received and self.replayable and self.attempts < 2:
                # A pooled connection the server had already closed: send again on a fresh one, whose
                # `attach` starts the try's per-try timeout afresh (Envoy's next onPoolReady).
                if self.target.cluster is not None:
                    forwarding.count(self, self.target.cluster.balancer, self.target.endpoint)
                forwarding.connect(self)
                return
            forwarding.report(self, 503)
            if not forwarding.retry(self, retry.RESET):
                self.reply_error(error)
            return
        # Mid-response: the client has a partial answer; only closing the connection tells it so.
        self.add_flag(error.flag)
        self.flush()
        self.keep_alive = False
        self.finish()
        self.conn.close()

    # -- local replies and completion -----------------------------------------------------------------------
    def reply_error(self, error: replies.ProxyError) -> None:
        flag = f"{error.flag},{self.retry_flag}" if self.retry_flag else error.flag
        self.reply(error.status, error.body.encode(), flag)

    def reply(self, status: int, body: bytes, flag: str = "-", extra_headers: bytes = b"",
              content_type: bytes = b"text/plain") -> None:
        self.status = status
        self.add_flag(flag)
        self.bytes_sent = 0 if self.is_head else len(body)
        if not self.request_complete:
            self.keep_alive = False
        self.conn.write(replies.local_reply(status, body, self.keep_alive, extra_headers + self.extra_response_headers,
                                            content_type, head=self.is_head))
        self.finish()

    def add_flag(self, flag: str) -> None:
        """Set the response flag of how the exchange ended. Envoy lists every flag: an injected delay (DI)
        stays in front (`DI,UT`, `DI,DC`, `DI,URX`), whatever ends the request after it."""
        if self.flag.startswith("DI") and not flag.startswith("DI"):
            if flag == "-":
                return
            flag = "DI," + flag
        self.flag = flag

    def _cancel_timers(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None or self.try_timer is not None:
            self._cancel_timers()
        if self.admitted is not None or self.retrying is not None:
            breaker.released(self)
        if self.counted is not None:  # a try that ended with no connection (timed out or refused in a queue)
            self.conn.forwarding.uncount(self)
        self.conn.forwarding.record(self)
        self.conn.exchange_finished(self)

    def abort(self) -> None:
        """The downstream client went away: free the upstream side without reusing it."""
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.exchange = None
            self.conn.forwarding.release(self, upstream, False)
        # Never sent now: a request still queued somewhere (a circuit breaker's wait) holds neither body nor head.
        self.body = []
        self.request_head = b""
        if not self.done:
            self._cancel_timers()
            breaker.released(self)
            self.conn.forwarding.uncount(self)  # a try waiting in a queue or connecting
            self.status = self.status if self.response_started else 0
            self.add_flag("DC")
            self.done = True
            self.conn.forwarding.record(self)
