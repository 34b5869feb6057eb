"""Mirrors on routes; connection pools and outlier detection on clusters: YAML in, the view out."""

from __future__ import annotations

from pathlib import Path

import pytest

import mesh.api as api
from mesh.control import builder, registry, snapshot
from mesh.view import model, wire
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import BOOKINFO, INGRESS, out, sidecar, view

ROUTING = Path(__file__).resolve().parents[3] / "stacks" / "routing"

RATINGS_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
"""


def ratings_vs(rule: str) -> str:
    return f"""{RATINGS_DR}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: bookinfo}}
spec:
  hosts: [ratings]
  http:
  - route: [{{destination: {{host: ratings, subset: v1}}}}]
{rule}
"""


def mirrors(rule: str) -> tuple[model.Mirror, ...]:
    v = view(ratings_vs(rule), sidecar("books-v1"))
    model.check_references(v)
    r = sim.route(v, 9080, "ratings")
    assert r is not None and sim.hit(v, 9080, "ratings") == out("ratings", "v1")
    return r.mirrors


# --- mirrors ---------------------------------------------------------------------------------------------


def test_no_mirror_by_default():
    assert mirrors("") == ()
    assert sim.route(view(), 9080, "ratings").mirrors == ()


def test_single_mirror_is_100_percent_when_no_percentage():
    assert mirrors("    mirror: {host: ratings, subset: v2}") == (model.Mirror(out("ratings", "v2"), 100.0),)


@pytest.mark.parametrize(
    ("extra", "percent"),
    [
        (["mirrorPercentage: {value: 12.5}"], 12.5),
        (["mirrorPercentage: {value: 100.0}"], 100.0),
        (["mirrorPercent: 30"], 30.0),  # deprecated integer
        (["mirrorPercent: 30", "mirrorPercentage: {value: 0.5}"], 0.5),  # mirrorPercentage wins
    ],
)
def test_mirror_percentage(extra, percent):
    rule = "\n".join(f"    {line}" for line in ["mirror: {host: ratings, subset: v2}", *extra])
    assert mirrors(rule) == (model.Mirror(out("ratings", "v2"), percent),)


@pytest.mark.parametrize("percent", ["mirrorPercentage: {value: 0}", "mirrorPercent: 0"])
def test_zero_percent_mirror_is_dropped(percent):
    assert mirrors(f"    mirror: {{host: ratings, subset: v2}}\n    {percent}") == ()


def test_mirrors_list():
    rule = """    mirrors:
    - destination: {host: ratings, subset: v2}
      percentage: {value: 25}
    - destination: {host: books}
    - destination: {host: gw}
      percentage: {value: 0}"""
    assert mirrors(rule) == (
        model.Mirror(out("ratings", "v2"), 25.0),
        model.Mirror(out("books"), 100.0),
    )


def test_mirror_cluster_is_in_the_view_even_when_nothing_else_names_it():
    # Subset v3 is not defined and no route goes to it: the mirror still gets its (empty) cluster, and
    # an unknown host gets one too, as route destinations do.
    rule = """    mirrors:
    - destination: {host: ratings, subset: v3}
    - destination: {host: shadow.example.com, port: {number: 8080}}"""
    got = mirrors(rule)
    assert got == (
        model.Mirror(out("ratings", "v3"), 100.0),
        model.Mirror("outbound|8080||shadow.example.com", 100.0),
    )
    v = view(ratings_vs(rule), sidecar("books-v1"))
    names = {c.name for c in v.clusters}
    assert {m.cluster for m in got} <= names
    assert sim.endpoints(v, out("ratings", "v3")) == ()


def test_mirror_port_defaults_like_a_route_destination():
    assert mirrors("    mirror: {host: books}") == (model.Mirror(out("books"), 100.0),)
    assert mirrors("    mirror: {host: books, port: {number: 9080}}") == (model.Mirror(out("books"), 100.0),)


def test_mirror_only_on_the_rule_that_sets_it():
    text = f"""{RATINGS_DR}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: bookinfo}}
spec:
  hosts: [ratings]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: ratings, subset: v2}}}}]
  - route: [{{destination: {{host: ratings, subset: v1}}}}]
    mirror: {{host: ratings, subset: v2}}
    mirrorPercentage: {{value: 50}}
"""
    v = view(text, sidecar("books-v1"))
    assert sim.route(v, 9080, "ratings", headers={"end-user": "jason"}).mirrors == ()
    assert sim.route(v, 9080, "ratings").mirrors == (model.Mirror(out("ratings", "v2"), 50.0),)


def test_mirrors_survive_the_wire():
    v = view(ratings_vs("    mirror: {host: ratings, subset: v2}\n    mirrorPercentage: {value: 12.5}"))
    assert wire.from_dict(wire.to_dict(v)) == v
    assert wire.version_of(v) != wire.version_of(view(ratings_vs("")))


# --- connection pool -------------------------------------------------------------------------------------


def books_dr(body: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: books, namespace: bookinfo}}
spec:
  host: books
{body}
"""


def cluster(body: str, name: str | None = None) -> model.Cluster:
    v = view(books_dr(body))
    model.check_references(v)
    return sim.cluster(v, name or out("books"))


def test_default_pool_and_no_outlier_detection():
    c = sim.cluster(view(), out("books"))
    assert (c.pool, c.outlier) == (model.DEFAULT_CONNECTION_POOL, None)
    assert model.DEFAULT_CONNECTION_POOL == model.ConnectionPool(
        max_connections=model.UNLIMITED,
        connect_timeout_s=10.0,
        max_pending_requests=model.UNLIMITED,
        max_requests=model.UNLIMITED,
        max_requests_per_connection=0,
        max_retries=model.UNLIMITED,
        idle_timeout_s=None,
    )


def test_every_pool_field():
    body = """  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        maxConnectionDuration: 10m
        tcpKeepalive: {time: 7200s, interval: 75.5s, probes: 9}
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 5
        maxRetries: 3
        idleTimeout: 15s"""
    assert cluster(body).pool == model.ConnectionPool(
        max_connections=100,
        connect_timeout_s=0.03,
        max_pending_requests=10,
        max_requests=1000,
        max_requests_per_connection=5,
        max_retries=3,
        idle_timeout_s=15.0,
        max_connection_duration_s=600.0,
        tcp_keepalive=True,
        keepalive_time_s=7200,
        keepalive_interval_s=75,  # whole seconds, as Envoy's socket options take them
        keepalive_probes=9,
    )


def test_an_empty_tcp_keepalive_turns_keepalive_on_with_the_os_values():
    pool = cluster("  trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {}}}}").pool
    assert pool == model.ConnectionPool(tcp_keepalive=True)


def test_unset_and_zero_pool_fields_keep_the_defaults():
    assert cluster(
        "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}"
    ).pool == model.ConnectionPool(max_connections=1)
    # Istio only sets a limit that is > 0; a 0s idle timeout means none.
    body = """  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 0}
      http: {http1MaxPendingRequests: 0, http2MaxRequests: 0, maxRequestsPerConnection: 0, maxRetries: 0,
             idleTimeout: 0s}"""
    assert cluster(body).pool == model.DEFAULT_CONNECTION_POOL


OVERRIDES = """  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10}
      http: {http1MaxPendingRequests: 10}
    outlierDetection: {consecutive5xxErrors: 10}
    portLevelSettings:
    - port: {number: 9999}
      connectionPool: {tcp: {maxConnections: 99}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool:
        http: {http1MaxPendingRequests: 2}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      connectionPool:
        tcp: {maxConnections: 3}
      portLevelSettings:
      - port: {number: 9080}
        connectionPool:
          tcp: {maxConnections: 33}
  - name: v4
    labels: {version: v4}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 4}
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {simple: RANDOM}"""


@pytest.mark.parametrize(
    ("subset", "pool", "consecutive_5xx"),
    [
        # Top level; the port-level entry is for another port.
        ("", model.ConnectionPool(max_connections=10, max_pending_requests=10), 10),
        ("v1", model.ConnectionPool(max_connections=10, max_pending_requests=10), 10),
        # A subset's connectionPool replaces the top-level one whole: tcp is not inherited.
        ("v2", model.ConnectionPool(max_pending_requests=2), 10),
        # The subset's port level beats its top level, and replaces every section: no outlierDetection
        # in the port entry means none, even though the top level sets one.
        ("v3", model.ConnectionPool(max_connections=33), None),
        # Likewise a port entry with neither connectionPool nor outlierDetection → defaults for both.
        ("v4", model.DEFAULT_CONNECTION_POOL, None),
    ],
)
def test_override_order(subset, pool, consecutive_5xx):
    c = cluster(OVERRIDES, out("books", subset))
    assert c.pool == pool
    assert (c.outlier.consecutive_5xx if c.outlier else None) == consecutive_5xx


def test_top_level_port_settings_replace_the_top_level_policy():
    body = """  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 10}}
    outlierDetection: {consecutive5xxErrors: 10}
    portLevelSettings:
    - port: {number: 9080}
      connectionPool: {http: {maxRetries: 1}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 2}"""
    for subset in ("", "v1"):
        c = cluster(body, out("books", subset))
        assert (c.pool, c.outlier) == (model.ConnectionPool(max_retries=1), None), subset
    # The subset's own section still applies on top of the top-level port entry.
    c = cluster(body, out("books", "v2"))
    assert (c.pool, c.outlier) == (
        model.ConnectionPool(max_retries=1),
        model.OutlierDetection(consecutive_5xx=2),
    )


def test_pool_and_outlier_survive_the_wire():
    v = view(
        books_dr("""  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1, connectTimeout: 1s}, http: {idleTimeout: 2s}}
    outlierDetection: {consecutiveErrors: 1, interval: 1s}""")
    )
    assert wire.from_dict(wire.to_dict(v)) == v
    assert wire.version_of(v) != wire.version_of(view())


# --- outlier detection -----------------------------------------------------------------------------------


def outlier(spec: str) -> model.OutlierDetection | None:
    return cluster(f"  trafficPolicy: {{outlierDetection: {spec}}}").outlier


def test_outlier_defaults_are_envoys():
    assert outlier("{}") == model.OutlierDetection(
        consecutive_5xx=5,
        consecutive_gateway_errors=0,
        interval_s=10.0,
        base_ejection_time_s=30.0,
        max_ejection_percent=10.0,
        min_health_percent=0.0,
        split_local_origin=False,
        consecutive_local_origin=5,
    )


def test_every_outlier_field():
    spec = """{consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, interval: 5s, baseEjectionTime: 1m,
      maxEjectionPercent: 50, minHealthPercent: 30, splitExternalLocalOriginErrors: true,
      consecutiveLocalOriginFailures: 3}"""
    assert outlier(spec) == model.OutlierDetection(
        consecutive_5xx=3,
        consecutive_gateway_errors=2,
        interval_s=5.0,
        base_ejection_time_s=60.0,
        max_ejection_percent=50.0,
        min_health_percent=30.0,
        split_local_origin=True,
        consecutive_local_origin=3,
    )


def test_a_zero_local_origin_count_is_envoys_default():
    """Istio sends Envoy consecutive_local_origin_failure only above 0: 0 or unset is Envoy's 5."""
    got = outlier("{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 0}")
    assert (got.split_local_origin, got.consecutive_local_origin) == (True, 5)


@pytest.mark.parametrize(
    ("spec", "consecutive_5xx", "gateway"),
    [
        # Deprecated consecutiveErrors: gateway errors only, the 5xx detector off (istio/api#617).
        ("{consecutiveErrors: 1}", 0, 1),
        ("{consecutiveErrors: 7}", 0, 7),
        ("{consecutiveErrors: 0}", 5, 0),  # 0 is unset
        # The newer fields, when set, win over what consecutiveErrors implies.
        ("{consecutiveErrors: 1, consecutive5xxErrors: 4}", 4, 1),
        ("{consecutiveErrors: 1, consecutiveGatewayErrors: 3}", 0, 3),
        # An explicit 0 disables a detector.
        ("{consecutive5xxErrors: 0}", 0, 0),
        ("{consecutiveGatewayErrors: 0}", 5, 0),
    ],
)
def test_consecutive_errors(spec, consecutive_5xx, gateway):
    got = outlier(spec)
    assert (got.consecutive_5xx, got.consecutive_gateway_errors) == (consecutive_5xx, gateway)


def test_zero_max_ejection_percent_keeps_envoys_default():
    assert outlier("{maxEjectionPercent: 0}").max_ejection_percent == 10.0


# --- the article's scenarios -----------------------------------------------------------------------------


def scenario(name: str) -> snapshot.Snapshot:
    snap = snapshot.build_snapshot(
        api.load_files([ROUTING / f"{name}.yaml"]), registry.parse_registry(BOOKINFO)
    )
    for proxy in (*(sidecar(w) for w in ("ui-v1", "gw-v1", "books-v1", "books-v2", "ratings-v1")), INGRESS):
        v = builder.build_proxy_view(snap, proxy)
        model.check_references(v)
        assert wire.from_dict(wire.to_dict(v)) == v
    return snap


def test_mirroring_scenario():
    snap = scenario("mirroring")
    v = builder.build_proxy_view(snap, sidecar("books-v1"))
    r = sim.route(v, 9080, "ratings")
    assert sim.hit(v, 9080, "ratings") == out("ratings", "v1")
    assert r.mirrors == (model.Mirror(out("ratings", "v2"), 100.0),)
    assert [e.workload for e in sim.endpoints(v, out("ratings", "v2"))] == ["ratings-v2"]
    for other in ("ui", "gw", "books"):
        assert sim.route(v, 9080, other).mirrors == (), other
    # No DestinationRule sets a pool or outlier detection here.
    assert all(c.pool == model.DEFAULT_CONNECTION_POOL and c.outlier is None for c in v.clusters)


def test_circuit_breaker_scenario():
    snap = scenario("circuit-breaker")
    v = builder.build_proxy_view(snap, sidecar("gw-v1"))
    assert sim.hit(v, 9080, "books") == out("books")
    assert [e.workload for e in sim.endpoints(v, out("books"))] == ["books-v1", "books-v2"]
    pool = model.ConnectionPool(max_connections=1, max_pending_requests=1, max_requests_per_connection=1)
    detection = model.OutlierDetection(
        consecutive_5xx=0,  # consecutiveErrors counts gateway errors only
        consecutive_gateway_errors=1,
        interval_s=1.0,
        base_ejection_time_s=180.0,
        max_ejection_percent=100.0,
        min_health_percent=0.0,
    )
    for subset in ("", "v1", "v2"):
        c = sim.cluster(v, out("books", subset))
        assert (c.lb.policy, c.pool, c.outlier) == ("ROUND_ROBIN", pool, detection), subset
    for other in ("ui", "gw", "ratings"):
        assert sim.hit(v, 9080, other) == out(other, "v1")
        c = sim.cluster(v, out(other, "v1"))
        assert (c.pool, c.outlier) == (model.DEFAULT_CONNECTION_POOL, None), other
    assert all(r.mirrors == () for t in v.route_tables for h in t.virtual_hosts for r in h.routes)
