"""Retries and timeouts of a forwarded request: the I/O side of `mesh.proxy.retry`'s decisions.

`Forwarding` (mesh.proxy.forwarding) takes these methods from `RetriesAndTimeouts`: after a try that got no
answer (`retry`) or an answer with a retriable status (`retry_answer`) another try is scheduled after its
backoff, preferably to another endpoint (Envoy's previous_hosts predicate), while the route's retry budget,
the request's replayability and the cluster's `maxRetries` allow; the per-try timeout (504, retried like a
reset) and the route timeout (504, flag UT, bounds every try and wait, never retried) end tries here.

Example: with Istio's default policy (2 retries on connect-failure and 503), a 503 from books v1 is dropped
and the request sent again, to books v2 when it is there, after U(0, 25 ms); a second 503 is retried after
U(0, 75 ms); a third goes to the client, flagged URX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.proxy import breaker, replies, retry

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange


class RetriesAndTimeouts:
    """Methods of `Forwarding` (its `runtime`, `loop`, `deadlines`, `_send` and `release`)."""

    __slots__ = ()

    def retry(self, exchange: Exchange, failure: str) -> bool:
        """After a try that got no answer: schedule another (True), or let the caller answer."""
        if not self._may_retry(exchange, failure, 0):
            return False
        self._schedule_retry(exchange)
        return True

    def retry_answer(self, exchange: Exchange, status: int) -> bool:
        """An answer with `status` is arriving: drop it and try again (True), or let it through."""
        if not self._may_retry(exchange, None, status):
            return False
        self._detach(exchange)
        self._schedule_retry(exchange)
        return True

    def _may_retry(self, exchange: Exchange, failure: str | None, status: int) -> bool:
        target = exchange.target
        route = target.route if target is not None else None
        if route is None or exchange.done or exchange.response_started:
            return False
        policy = route.spec.retries
        if failure is not None:
            eligible = retry.failure_is_retriable(policy, failure)
        else:
            eligible = retry.status_is_retriable(policy, status)
        if not eligible:
            return False
        if exchange.retries_left <= 0:
            exchange.retry_flag = "URX"  # Envoy's: this outcome goes to the client, flagged
            return False
        if not exchange.request_complete or not exchange.replayable:
            return False
        if target.cluster is not None and not breaker.admit_retry(self, exchange, target.cluster):
            exchange.retry_flag = "UO"  # Envoy's UpstreamOverflow: the cluster's maxRetries are all in use
            return False
        return True

    def _schedule_retry(self, exchange: Exchange) -> None:
        target = exchange.target
        route = target.route
        policy = route.spec.retries
        cluster = target.cluster
        if cluster is not None:  # Envoy's previous_hosts predicate: prefer another endpoint
            endpoint = cluster.pick(None, avoid=target.endpoint if policy.avoid_previous_host else None)
            if endpoint is None:  # every host ejected (the try before may have done it): as a new request is
                exchange.reply_error(replies.NoHealthyUpstream())
                return
        exchange.retries_left -= 1
        self.runtime.counters.inc("upstream_rq_retry_total")
        if cluster is not None and endpoint != target.endpoint:
            exchange.target = target.with_endpoint(endpoint, self.runtime.source_peer(cluster.spec, endpoint))
        number = policy.attempts - exchange.retries_left
        exchange.tries += 1  # the failed try is over (Exchange.tries): a late connect of its is pooled
        if exchange.try_timer is not None:  # the failed try's per-try timeout: it must not cut the next try short
            exchange.try_timer.cancel()
        exchange.try_timer = self.loop.call_later(retry.backoff(policy, number, self.runtime.view.rng),
                                                  self._send, exchange)

    def start_try_timeout(self, exchange: Exchange) -> None:
        """A try's per-try timeout starts once it has its connection and the downstream request is whole, as
        Envoy's (`onPoolReady`, or the request's end after it): connecting is bounded by the connect timeout,
        a wait at the breaker's limit by a freed connection, the route timeout or the client, and a slow
        upload does not spend it. Called at both moments; the later one starts it."""
        route = exchange.target.route
        if (route is not None and route.spec.retries.per_try_timeout_s is not None and exchange.request_complete
                and exchange.upstream is not None and exchange.try_timer is None and not exchange.done
                and not exchange.response_started):
            exchange.try_timer = self.deadlines.call_later(route.spec.retries.per_try_timeout_s,
                                                           self._try_timed_out, exchange)

    def _detach(self, exchange: Exchange) -> None:
        upstream = exchange.upstream
        if upstream is not None:
            exchange.upstream = None
            upstream.exchange = None
            self.release(exchange, upstream, False)  # its answer is not wanted any more: never reused

    def _try_timed_out(self, exchange: Exchange) -> None:
        exchange.try_timer = None
        if exchange.done or exchange.response_started:
            return
        if exchange.upstream is not None:  # a try whose connection is already gone tells nothing more of the host
            self.report(exchange, 504)
        self._detach(exchange)
        self.runtime.counters.inc("upstream_rq_per_try_timeout_total")
        if not self.retry(exchange, retry.PER_TRY_TIMEOUT):
            exchange.reply_error(replies.UpstreamTimeout())

    def _timed_out(self, exchange: Exchange) -> None:
        exchange.timer = None
        if exchange.done:
            return
        self.runtime.counters.inc("upstream_rq_timeout_total")
        if exchange.try_timer is not None:
            exchange.try_timer.cancel()
            exchange.try_timer = None
        if exchange.response_started:
            # Part of the answer is out: only closing the connection tells the client it is cut short.
            exchange.add_flag("UT")
            self._detach(exchange)
            exchange.keep_alive = False
            exchange.finish()
            exchange.conn.close()
            return
        if exchange.upstream is not None:
            self.report(exchange, 504)
        self._detach(exchange)
        exchange.reply_error(replies.UpstreamTimeout())

    def report(self, exchange: Exchange, status: int) -> None:
        """A try that failed here (connect failure, reset, timeout), for outlier detection: a 503/504, or a
        local-origin failure when the cluster splits them (`mesh.proxy.outlier`)."""
        target = exchange.target
        if target is not None and target.cluster is not None and target.cluster.detector is not None:
            target.cluster.detector.report(target.endpoint, status, local=True)
