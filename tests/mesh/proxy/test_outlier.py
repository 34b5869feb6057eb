"""Outlier detection: the docstring's worked example and each rule, on a fake clock; then through a proxy."""

from __future__ import annotations

import random

import pytest

from mesh.proxy import outlier, routing
from mesh.view import model

A = model.Endpoint("10.0.0.1", 9080, "a")
B = model.Endpoint("10.0.0.2", 9080, "b")
C = model.Endpoint("10.0.0.3", 9080, "c")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def detector(hosts=(A, B), **config) -> tuple[outlier.OutlierDetector, Clock]:
    clock = Clock()
    settings = {"consecutive_5xx": 2, "interval_s": 10.0, "base_ejection_time_s": 30.0,
                "max_ejection_percent": 100.0, **config}
    return outlier.OutlierDetector(model.OutlierDetection(**settings), hosts, clock), clock


def test_the_worked_example():
    d, clock = detector()
    clock.now = 1.0
    d.report(B, 500)
    assert d.ejected == set()
    d.report(B, 500)
    assert d.ejected == {B} and d.hosts[B].ejected_until == 31.0
    assert d.healthy((A, B)) == [A]
    clock.now = 10.0
    d.sweep(clock.now)  # the t=10 sweep: B's time is not up
    assert d.ejected == {B}
    clock.now = 40.0
    d.sweep(clock.now)  # the t=40 sweep returns B; the next one is due at t=50
    assert d.ejected == set()
    clock.now = 45.0
    d.sweep(clock.now)
    d.report(B, 503)
    d.report(B, 503)
    assert d.ejected == {B} and d.hosts[B].ejected_until == 45.0 + 60.0  # second ejection: 2 × 30 s
    assert d.stats["enforced_consecutive_5xx"] == 2


def test_a_success_resets_the_consecutive_count():
    d, _ = detector()
    d.report(A, 500)
    d.report(A, 200)
    d.report(A, 500)
    assert d.ejected == set()


def test_hosts_return_only_at_an_interval_sweep_after_their_time():
    d, clock = detector(base_ejection_time_s=5.0)
    d.report(A, 500)
    d.report(A, 500)
    clock.now = 6.0
    d.sweep(clock.now)  # no sweep due before t=10
    assert d.ejected == {A}
    clock.now = 10.0
    d.sweep(clock.now)
    assert d.ejected == set()


def test_ejection_time_grows_and_is_capped():
    d, clock = detector(base_ejection_time_s=200.0)
    for n in (1, 2):
        d.report(A, 500)
        d.report(A, 500)
        assert d.hosts[A].ejected_until - clock.now == min(300.0, 200.0 * n)
        clock.now += 400.0
        d.sweep(clock.now)


def test_gateway_errors_detector_counts_only_502_503_504():
    d, _ = detector(consecutive_5xx=0, consecutive_gateway_errors=2)
    d.report(A, 500)
    d.report(A, 500)
    assert d.ejected == set()
    d.report(A, 503)
    d.report(A, 504)
    assert d.ejected == {A} and d.stats["enforced_consecutive_gateway_failure"] == 1


def test_max_ejection_percent_lets_the_first_host_go_then_overflows():
    d, _ = detector(hosts=(A, B, C), max_ejection_percent=10.0)
    for host in (A, B):
        d.report(host, 500)
        d.report(host, 500)
    assert d.ejected == {A}
    assert d.stats["overflow"] == 1 and d.stats["detected_consecutive_5xx"] == 2


def test_all_ejected_means_no_host_and_panic_means_all_hosts():
    d, _ = detector()
    for host in (A, B):
        d.report(host, 500)
        d.report(host, 500)
    assert d.healthy((A, B)) is None
    panicking, _ = detector(min_health_percent=50.0)
    for host in (A, B):
        panicking.report(host, 500)
        panicking.report(host, 500)
    assert panicking.healthy((A, B)) == [A, B]


def test_state_survives_a_new_view_for_hosts_that_stay():
    old, clock = detector()
    old.report(B, 500)
    old.report(B, 500)
    new = outlier.OutlierDetector(old.config, (A, B, C), clock)
    new.adopt(old)
    assert new.ejected == {B} and new.stats["enforced_consecutive_5xx"] == 1


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"])
def test_a_cluster_never_picks_an_ejected_host(policy):
    clock = Clock()
    spec = model.Cluster("c", lb=model.LoadBalancer(policy),
                         outlier=model.OutlierDetection(consecutive_5xx=1, max_ejection_percent=100.0))
    cluster = routing.CompiledCluster(spec, (A, B, C), random.Random(2), clock)
    cluster.detector.report(B, 503)
    picks = {cluster.pick() for _ in range(200)}
    assert picks == {A, C}
    cluster.detector.report(A, 503)
    cluster.detector.report(C, 503)
    assert cluster.pick() is None


def test_each_interval_in_service_lowers_the_ejection_count():
    d, clock = detector()
    d.report(A, 500)
    d.report(A, 500)
    d.hosts[A].ejections = 3
    clock.now = 35.0
    d.sweep(clock.now)  # sweeps due at 10, 20, 30: A returns at the last one
    assert d.ejected == set() and d.hosts[A].ejections == 3 and d.next_sweep == 40.0
    clock.now = 60.0
    d.sweep(clock.now)  # 40, 50, 60 in service
    assert d.hosts[A].ejections == 0


async def test_through_the_proxy_an_ejected_host_gets_no_traffic_and_shows_in_the_dump():
    import dataclasses

    from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, BOOKS_V2, Proxy, bookinfo_view, settle
    from tests.mesh.proxy.test_downstream import GET_BOOKS, OK
    from tests.mesh.proxy.test_resilience import UNAVAILABLE, route

    view = bookinfo_view(books=(BOOKS_V1, BOOKS_V2), lb=model.LoadBalancer("ROUND_ROBIN"),
                         books_route=route(retries=model.RetryPolicy(attempts=0)))
    detection = model.OutlierDetection(consecutive_5xx=1, max_ejection_percent=100.0)
    view = dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, outlier=detection) if c.name == BOOKS else c for c in view.clusters))
    proxy = Proxy(view)
    proxy.runtime.clock = proxy.net.time
    proxy.runtime.apply(view, "v2")  # compiled again with the fake clock
    client = proxy.client()
    served = []
    for _ in range(4):
        client.send(GET_BOOKS)
        await settle()
        upstream = next(up for up in proxy.upstreams if up.protocol.exchange is not None)
        served.append(upstream.address)
        upstream.respond(UNAVAILABLE if upstream.address == BOOKS_V2.address else OK)
    assert served[served.index(BOOKS_V2.address) + 1:] == [BOOKS_V1.address] * (3 - served.index(BOOKS_V2.address))
    dump = proxy.runtime.config_dump()["view"]["endpoints"]
    health = {e["address"]: e["health"] for a in dump if a["cluster"] == BOOKS for e in a["endpoints"]}
    assert health == {BOOKS_V1.address: "HEALTHY", BOOKS_V2.address: "EJECTED"}
    assert f'weir_outlier_detection_ejections_active{{cluster="{BOOKS}"}} 1' in proxy.runtime.prometheus()


def test_unsplit_local_failures_count_as_5xx():
    d, _ = detector()
    d.report(B, 503, local=True)
    d.report(B, 504, local=True)
    assert d.ejected == {B} and d.stats["enforced_consecutive_5xx"] == 1


def test_split_local_origin_failures_have_their_own_detector():
    """The docstring's second example: consecutiveLocalOriginFailures 2, split."""
    d, _ = detector(split_local_origin=True, consecutive_local_origin=2, consecutive_5xx=3)
    d.report(B, 503, local=True)
    d.connected(B)  # a try got a connection: B is reachable, its local count starts again
    d.report(B, 503, local=True)
    d.report(B, 503)  # an answer counts in the 5xx detector only, and leaves the local count alone
    assert d.ejected == set() and d.hosts[B].consecutive_5xx == 1
    d.report(B, 504, local=True)
    assert d.ejected == {B}
    assert (d.stats["enforced_consecutive_local_origin_failure"], d.stats["enforced_consecutive_5xx"]) == (1, 0)
    off, _ = detector(split_local_origin=True, consecutive_local_origin=0)
    for _ in range(10):
        off.report(A, 503, local=True)
    assert off.ejected == set() and off.hosts[A].consecutive_5xx == 0  # split failures never count as 5xx


def test_a_changed_local_origin_rule_starts_the_counts_again():
    old, clock = detector(split_local_origin=True, consecutive_local_origin=5)
    for _ in range(3):
        old.report(B, 503, local=True)
    new = outlier.OutlierDetector(model.OutlierDetection(split_local_origin=True, consecutive_local_origin=2,
                                                         max_ejection_percent=100.0), (A, B), clock)
    new.adopt(old)
    new.report(B, 503, local=True)
    assert new.ejected == set()  # 3 counted under a threshold of 5 do not carry over to one of 2


async def test_through_the_proxy_refused_connections_eject_a_host_when_split():
    import dataclasses

    from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, BOOKS_V2, Proxy, bookinfo_view, settle
    from tests.mesh.proxy.test_downstream import GET_BOOKS, OK
    from tests.mesh.proxy.test_resilience import route

    view = bookinfo_view(books=(BOOKS_V1, BOOKS_V2), lb=model.LoadBalancer("ROUND_ROBIN"),
                         books_route=route(retries=model.RetryPolicy(attempts=0)))
    detection = model.OutlierDetection(consecutive_5xx=0, max_ejection_percent=100.0, split_local_origin=True,
                                       consecutive_local_origin=2)
    view = dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, outlier=detection) if c.name == BOOKS else c for c in view.clusters))
    proxy = Proxy(view)
    proxy.net.refused.add((BOOKS_V2.address, BOOKS_V2.port))
    statuses = []
    for _ in range(6):
        client = proxy.client()
        client.send(GET_BOOKS)
        await settle()
        for upstream in proxy.upstreams:
            if upstream.protocol.exchange is not None:
                upstream.respond(OK)
        statuses.append(client.responses()[0].first)
    assert statuses.count("503") == 2 and statuses[-2:] == ["200", "200"]  # v2 out after its second refusal
    detector_stats = proxy.runtime.view.clusters[BOOKS].detector.stats
    assert detector_stats["enforced_consecutive_local_origin_failure"] == 1
    assert 'weir_outlier_detection_enforced_consecutive_local_origin_failure_total' in proxy.runtime.prometheus()


async def test_through_the_proxy_a_host_that_connects_but_never_answers_is_not_ejected_when_split():
    """Envoy resets the local-origin count when a try gets its connection: per-try timeouts on attached
    connections alternate with connect successes and never reach the threshold."""
    import dataclasses

    from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, Proxy, bookinfo_view, settle
    from tests.mesh.proxy.test_downstream import GET_BOOKS
    from tests.mesh.proxy.test_resilience import route, step

    retries = model.RetryPolicy(attempts=0, per_try_timeout_s=1.0)
    view = bookinfo_view(books=(BOOKS_V1,), books_route=route(retries=retries))
    detection = model.OutlierDetection(max_ejection_percent=100.0, split_local_origin=True, consecutive_local_origin=2)
    view = dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, outlier=detection) if c.name == BOOKS else c for c in view.clusters))
    proxy = Proxy(view)
    for _ in range(4):
        client = proxy.client()
        client.send(GET_BOOKS)
        await settle()
        await step(proxy, 1.1)
        assert client.responses()[0].first == "504"
    assert proxy.runtime.view.clusters[BOOKS].detector.ejected == set()


async def test_a_pooled_connection_opened_under_an_earlier_view_resets_the_local_origin_count():
    """splitExternalLocalOriginErrors, consecutiveLocalOriginFailures 2: refused, success on a connection
    pooled before a config push, refused again: not consecutive, so no ejection (the success used to be
    reported to the earlier view's detector)."""
    import dataclasses

    from mesh.view import wire
    from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, Proxy, bookinfo_view, settle
    from tests.mesh.proxy.test_downstream import GET_BOOKS, OK
    from tests.mesh.proxy.test_resilience import route

    detection = model.OutlierDetection(consecutive_5xx=0, max_ejection_percent=100.0, split_local_origin=True,
                                       consecutive_local_origin=2)
    view = bookinfo_view(books=(BOOKS_V1,), books_route=route(retries=model.RetryPolicy(attempts=0)))
    view = dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, outlier=detection) if c.name == BOOKS else c for c in view.clusters))
    proxy = Proxy(view)
    host = (BOOKS_V1.address, BOOKS_V1.port)
    proxy.client().send(GET_BOOKS)
    await settle()
    pooled = proxy.upstreams[0]
    pooled.respond(OK)
    proxy.runtime.apply(wire.from_dict(wire.to_dict(view)), "v2")  # a push: equal values, new objects
    proxy.client().send(GET_BOOKS)  # takes the pooled connection
    await settle()
    proxy.net.refused.add(host)
    proxy.client().send(GET_BOOKS)  # local-origin failure 1
    await settle()
    proxy.net.refused.discard(host)
    pooled.respond(OK)
    proxy.client().send(GET_BOOKS)  # the pooled connection again: a connect success for the count
    await settle()
    pooled.respond(OK)
    proxy.client().send(GET_BOOKS)
    await settle()
    proxy.net.refused.add(host)
    proxy.client().send(GET_BOOKS)  # local-origin failure 2, not consecutive
    await settle()
    assert proxy.runtime.view.clusters[BOOKS].detector.ejected == set()


async def test_a_retry_with_every_host_ejected_is_answered_503_uh_not_sent_to_an_ejected_host():
    """The 503 that ejects the only host is retriable by default; the retry finds no healthy host and is
    answered as a new request would be (Istio's minHealthPercent 0: no panic mode)."""
    import dataclasses

    from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, Proxy, bookinfo_view, settle
    from tests.mesh.proxy.test_downstream import GET_BOOKS
    from tests.mesh.proxy.test_resilience import UNAVAILABLE, flags, route, step

    view = bookinfo_view(books=(BOOKS_V1,), books_route=route())
    view = dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, outlier=model.OutlierDetection(consecutive_5xx=1, max_ejection_percent=100.0))
        if c.name == BOOKS else c for c in view.clusters))
    proxy = Proxy(view)
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(UNAVAILABLE)
    await step(proxy, 1)
    assert proxy.runtime.view.clusters[BOOKS].detector.ejected == {BOOKS_V1}
    assert len(proxy.upstreams) == 1 and proxy.upstreams[0].protocol.exchange is None  # no retry went out
    assert [(r.first, r.body) for r in client.responses()] == [("503", b"no healthy upstream")]
    assert flags(proxy) == [(503, "UH")] and proxy.runtime.counters.get("upstream_rq_retry_total") == 0


async def test_an_ejection_decided_by_a_try_from_before_a_config_push_holds_in_the_view_in_force():
    """consecutive5xx 2: one 5xx, a push (same config, new objects), then the 5xx of a request sent before
    the push: the host is ejected in the view in force, and the next request is not sent to it."""
    import dataclasses

    from mesh.view import wire
    from tests.mesh.proxy.fakes import BOOKS, BOOKS_V1, Proxy, bookinfo_view, settle
    from tests.mesh.proxy.test_downstream import GET_BOOKS
    from tests.mesh.proxy.test_resilience import ERROR, route

    view = bookinfo_view(books=(BOOKS_V1,), books_route=route(retries=model.RetryPolicy(attempts=0)))
    view = dataclasses.replace(view, clusters=tuple(
        dataclasses.replace(c, outlier=model.OutlierDetection(consecutive_5xx=2, max_ejection_percent=100.0))
        if c.name == BOOKS else c for c in view.clusters))
    proxy = Proxy(view)
    proxy.client().send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(ERROR)  # 5xx 1
    proxy.client().send(GET_BOOKS)  # in flight across the push
    await settle()
    proxy.runtime.apply(wire.from_dict(wire.to_dict(view)), "v2")
    proxy.upstreams[0].respond(ERROR)  # 5xx 2, reported by a try of the earlier view
    await settle()
    detector = proxy.runtime.view.clusters[BOOKS].detector
    assert detector.ejected == {BOOKS_V1} and detector.stats["enforced_consecutive_5xx"] == 1
    late = proxy.client()
    late.send(GET_BOOKS)
    await settle()
    assert [(r.first, r.body) for r in late.responses()] == [("503", b"no healthy upstream")]
