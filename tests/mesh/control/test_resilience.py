"""Simulation tests for an http rule's timeout, retries and fault: YAML in, the route a call hits out."""

from __future__ import annotations

from pathlib import Path

import pytest

import mesh.api as api
from mesh.control import builder, registry, resilience, snapshot
from mesh.view import model, wire
from tests.mesh.control import simulate as sim
from tests.mesh.control.conftest import BOOKINFO, INGRESS, out, sidecar, view

ROUTING = Path(__file__).resolve().parents[3] / "stacks" / "routing"
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes")


def vs(rule: str, host: str = "books") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}, namespace: bookinfo}}
spec:
  hosts: [{host}]
  http:
  - route: [{{destination: {{host: {host}}}}}]
{rule}
"""


def books_route(rule: str = "") -> model.Route:
    r = sim.route(view(vs(rule)), 9080, "books")
    assert r is not None
    return r


def test_defaults_without_virtual_service():
    r = sim.route(view(), 9080, "books")
    assert (r.timeout_s, r.retries, r.fault) == (None, model.DEFAULT_RETRIES, None)


def test_defaults_when_the_rule_sets_none():
    r = books_route()
    assert (r.timeout_s, r.retries, r.fault) == (None, model.DEFAULT_RETRIES, None)
    # Istio's default: 2 retries on connection failures and 503, 25 ms / 250 ms backoff.
    assert model.DEFAULT_RETRIES == model.RetryPolicy(
        attempts=2,
        per_try_timeout_s=None,
        retry_on=DEFAULT_RETRY_ON,
        retriable_status=(503,),
        backoff_base_s=0.025,
        backoff_max_s=0.25,
    )


@pytest.mark.parametrize(("text", "seconds"), [("3s", 3.0), ("1.5s", 1.5), ("250ms", 0.25), ("1m", 60.0)])
def test_timeout(text, seconds):
    assert books_route(f"    timeout: {text}").timeout_s == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0s", "0"])
def test_zero_timeout_is_disabled(text):
    assert books_route(f"    timeout: '{text}'").timeout_s is None


def test_retries_compile_exactly():
    rule = """    timeout: 3s
    retries: {attempts: 3, perTryTimeout: 0.5s, retryOn: "5xx,connect-failure,reset"}"""
    r = books_route(rule)
    assert r.timeout_s == 3.0
    assert r.retries == model.RetryPolicy(
        attempts=3, per_try_timeout_s=0.5, retry_on=("5xx", "connect-failure", "reset"), retriable_status=()
    )


def test_backoff_and_previous_hosts_compile_as_istio_sets_envoys_retry_policy():
    r = books_route("    retries: {attempts: 2, backoff: 100ms, retryIgnorePreviousHosts: false}").retries
    # Istio sets retry_back_off.base_interval only; Envoy's max_interval is then ten times it.
    assert (r.backoff_base_s, r.backoff_max_s, r.avoid_previous_host) == (0.1, 1.0, False)
    assert (r.retry_on, r.retriable_status) == (DEFAULT_RETRY_ON, (503,))
    assert books_route("    retries: {attempts: 2, retryIgnorePreviousHosts: true}").retries.avoid_previous_host
    assert books_route("    retries: {attempts: 2}").retries.avoid_previous_host  # Istio's default


def test_attempts_without_retry_on_keep_istio_conditions():
    r = books_route("    retries: {attempts: 5, perTryTimeout: 2s}")
    assert r.retries == model.RetryPolicy(attempts=5, per_try_timeout_s=2.0)
    assert (r.retries.retry_on, r.retries.retriable_status) == (DEFAULT_RETRY_ON, (503,))


@pytest.mark.parametrize(
    "retries",
    ["{attempts: 0}", "{attempts: 0, retryOn: 5xx, perTryTimeout: 1s}", "{perTryTimeout: 1s}"],
)
def test_zero_attempts_disable_retries(retries):
    # Istio returns no retry policy at all (so no per-try timeout either) when attempts is 0 or unset.
    assert (
        books_route(f"    retries: {retries}").retries
        == model.RetryPolicy(attempts=0)
        == resilience.NO_RETRIES
    )


@pytest.mark.parametrize(
    ("retry_on", "names", "codes"),
    [
        ("503", ("retriable-status-codes",), (503,)),
        ("gateway-error, 409 ,503", ("gateway-error", "retriable-status-codes"), (409, 503)),
        ("retriable-status-codes,409", ("retriable-status-codes",), (409,)),
        ("5xx,5xx,503,503", ("5xx", "retriable-status-codes"), (503,)),
        ("retriable-status-codes", ("retriable-status-codes",), ()),
        ("connect-failure,refused-stream", ("connect-failure", "refused-stream"), ()),
    ],
)
def test_retry_on_names_and_status_codes(retry_on, names, codes):
    r = books_route(f'    retries: {{attempts: 2, retryOn: "{retry_on}"}}')
    assert (r.retries.attempts, r.retries.retry_on, r.retries.retriable_status) == (2, names, codes)


@pytest.mark.parametrize(
    ("delay", "seconds", "percent"),
    [
        ("{fixedDelay: 2s, percentage: {value: 100}}", 2.0, 100.0),
        ("{fixedDelay: 500ms, percentage: {value: 12.5}}", 0.5, 12.5),
        ("{fixedDelay: 5s, percent: 30}", 5.0, 30.0),
        ("{fixedDelay: 5s, percent: 30, percentage: {value: 0.5}}", 5.0, 0.5),  # percentage wins
        ("{fixedDelay: 5s}", 5.0, 0.0),  # no percentage: never injected
    ],
)
def test_fault_delay(delay, seconds, percent):
    assert books_route(f"    fault: {{delay: {delay}}}").fault == model.Fault(
        delay_s=seconds, delay_percent=percent
    )


@pytest.mark.parametrize(
    ("abort", "status", "percent"),
    [
        ("{httpStatus: 503, percentage: {value: 50}}", 503, 50.0),
        ("{httpStatus: 418, percentage: {value: 0.1}}", 418, 0.1),
        ("{httpStatus: 500}", 500, 0.0),  # no percentage: never injected
    ],
)
def test_fault_abort(abort, status, percent):
    assert books_route(f"    fault: {{abort: {abort}}}").fault == model.Fault(
        abort_status=status, abort_percent=percent
    )


def test_fault_delay_and_abort_together():
    rule = """    fault:
      delay: {fixedDelay: 1s, percent: 10}
      abort: {httpStatus: 503, percentage: {value: 20}}"""
    assert books_route(rule).fault == model.Fault(
        delay_s=1.0, delay_percent=10.0, abort_status=503, abort_percent=20.0
    )


def test_grpc_and_http2_aborts_are_not_executed():
    rule = """    fault:
      delay: {fixedDelay: 1s, percentage: {value: 100}}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}"""
    assert books_route(rule).fault == model.Fault(delay_s=1.0, delay_percent=100.0)
    assert (
        books_route("    fault: {abort: {http2Error: REFUSED_STREAM, percentage: {value: 100}}}").fault
        is None
    )
    assert books_route("    fault: {delay: {exponentialDelay: 1s, percentage: {value: 100}}}").fault is None


def test_per_rule_and_first_matching_rule_wins():
    text = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books, namespace: bookinfo}
spec:
  hosts: [books]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: books}}]
  - timeout: 2s
    retries: {attempts: 1}
    route: [{destination: {host: books}}]
"""
    v = view(text)
    jason = sim.route(v, 9080, "books", headers={"end-user": "jason"})
    other = sim.route(v, 9080, "books")
    assert (jason.fault, jason.timeout_s, jason.retries) == (
        model.Fault(abort_status=500, abort_percent=100.0),
        None,
        model.DEFAULT_RETRIES,
    )
    assert (other.fault, other.timeout_s, other.retries) == (None, 2.0, model.RetryPolicy(attempts=1))


def test_gateway_routes_carry_resilience_too():
    text = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - timeout: 4s
    fault: {delay: {fixedDelay: 1s, percentage: {value: 50}}}
    route: [{destination: {host: gw, port: {number: 9080}}}]
"""
    r = sim.route(view(text, proxy=INGRESS), "http.80", "anything.example.com")
    assert (r.timeout_s, r.fault) == (4.0, model.Fault(delay_s=1.0, delay_percent=50.0))


def test_resilience_survives_the_wire():
    rule = """    timeout: 3s
    retries: {attempts: 3, perTryTimeout: 0.5s, retryOn: "5xx,409"}
    fault: {delay: {fixedDelay: 2s, percent: 100}, abort: {httpStatus: 503, percentage: {value: 1}}}"""
    v = view(vs(rule))
    assert wire.from_dict(wire.to_dict(v)) == v
    assert wire.version_of(v) != wire.version_of(view(vs("")))


# The article's step 6 scenarios, loaded as `meshctl apply -f` would and built for gw's and books' sidecars.
SCENARIOS = {
    "delay-2s": ("gw-v1", "books", out("books", "v1"), None, model.DEFAULT_RETRIES, model.Fault(2.0, 100.0)),
    "delay-5s": ("gw-v1", "books", out("books", "v1"), None, model.DEFAULT_RETRIES, model.Fault(5.0, 100.0)),
    "timeout-retries": (
        "books-v1",
        "ratings",
        out("ratings", "v1"),
        3.0,
        model.RetryPolicy(
            attempts=3,
            per_try_timeout_s=0.5,
            retry_on=("5xx", "connect-failure", "reset"),
            retriable_status=(),
        ),
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_step6_scenarios(name):
    workload, host, cluster, timeout, retries, fault = SCENARIOS[name]
    resources = api.load_files([ROUTING / f"{name}.yaml"])
    snap = snapshot.build_snapshot(resources, registry.parse_registry(BOOKINFO))
    for proxy in ("gw-v1", "books-v1"):
        v = builder.build_proxy_view(snap, sidecar(proxy))
        model.check_references(v)
        assert wire.from_dict(wire.to_dict(v)) == v
    v = builder.build_proxy_view(snap, sidecar(workload))
    r = sim.route(v, 9080, host)
    assert sim.hit(v, 9080, host) == cluster
    assert (r.timeout_s, r.retries, r.fault) == (timeout, retries, fault)
    # Every other service keeps Istio's defaults.
    for other in {"ui", "gw", "books", "ratings"} - {host}:
        o = sim.route(v, 9080, other)
        assert (o.timeout_s, o.retries, o.fault) == (None, model.DEFAULT_RETRIES, None), other
    ingress = builder.build_proxy_view(snap, INGRESS)
    g = sim.route(ingress, "http.80", "localhost", path="/gateway/books")
    assert (g.timeout_s, g.retries, g.fault) == (None, model.DEFAULT_RETRIES, None)
