"""stacks/: the routing scenarios (Istio YAML) and the Pulumi stack files that name them.

Scenarios must be self-contained (Gateway, ingress VirtualService, DestinationRules, one VirtualService per
service) so `meshctl apply -f` switches everything, and their shared documents must not drift from
gateway.yaml and destination-rules.yaml.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import yaml

STACKS = Path(__file__).resolve().parents[3] / "stacks"
ROUTING = STACKS / "routing"
V1 = [("v1", None)]
SCENARIOS = {
    "round-robin": {"ui": V1, "gw": V1, "books": [(None, None)], "ratings": [(None, None)]},
    "all-v1": {"ui": V1, "gw": V1, "books": V1, "ratings": V1},
    "ratings-50": {"ui": V1, "gw": V1, "books": V1, "ratings": [("v1", 50), ("v2", 50)]},
    "ratings-10-90": {"ui": V1, "gw": V1, "books": V1, "ratings": [("v1", 10), ("v2", 90)]},
    "delay-2s": {"ui": V1, "gw": V1, "books": V1, "ratings": V1},
    "delay-5s": {"ui": V1, "gw": V1, "books": V1, "ratings": V1},
    "timeout-retries": {"ui": V1, "gw": V1, "books": V1, "ratings": V1},
    "mirroring": {"ui": V1, "gw": V1, "books": V1, "ratings": [("v1", 100)]},
    "circuit-breaker": {"ui": V1, "gw": V1, "books": [(None, None)], "ratings": V1},
    "mtls-strict": {"ui": V1, "gw": V1, "books": V1, "ratings": V1},
    "authz-bookinfo": {"ui": V1, "gw": V1, "books": V1, "ratings": V1},
}
# Security scenarios (issue 4): all-v1's routing plus these security.istio.io/v1 resources.
SECURITY = {
    "mtls-strict": {"PeerAuthentication": 1},
    "authz-bookinfo": {"AuthorizationPolicy": 5},
}
# Article step 6: what each resilience scenario adds to the first http rule of one service, on top of all-v1.
RESILIENCE = {
    "delay-2s": ("books", {"fault": {"delay": {"fixedDelay": "2s", "percentage": {"value": 100}}}}),
    "delay-5s": ("books", {"fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 100}}}}),
    "timeout-retries": (
        "ratings",
        {
            "timeout": "3s",
            "retries": {"attempts": 3, "perTryTimeout": "0.5s", "retryOn": "5xx,connect-failure,reset"},
        },
    ),
    # Article step 7.
    "mirroring": (
        "ratings",
        {"mirror": {"host": "ratings", "subset": "v2"}, "mirrorPercentage": {"value": 100}},
    ),
}
RULE_EXTRAS = ("fault", "timeout", "retries", "mirror", "mirrors", "mirrorPercentage", "mirrorPercent")
# Article step 8: the one shared document a scenario changes, and the traffic policy it adds to it.
CHANGED_SHARED = {
    "circuit-breaker": (
        ("DestinationRule", "books"),
        {
            "connectionPool": {
                "tcp": {"maxConnections": 1},
                "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1},
            },
            "outlierDetection": {
                "consecutiveErrors": 1,
                "interval": "1s",
                "baseEjectionTime": "3m",
                "maxEjectionPercent": 100,
            },
        },
    ),
}
STACK_FILES = {
    "dev": ("round-robin", {"ingressPort": 8080, "ingressTlsPort": 8443, "controlPlanePort": 15010, "controlPlaneTlsPort": 15012,
                            "dashboardPort": 20001, "portBase": 21000}),
    "staging": ("all-v1", {"ingressPort": 8180, "ingressTlsPort": 8543, "controlPlanePort": 15110, "controlPlaneTlsPort": 15112,
                           "dashboardPort": 20101, "portBase": 22000}),
    "prod": ("all-v1", {"ingressPort": 8280, "ingressTlsPort": 8643, "controlPlanePort": 15210, "controlPlaneTlsPort": 15212,
                        "dashboardPort": 20201, "portBase": 23000}),
}


def _docs(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((ROUTING / name).read_text()) if doc is not None]


def _key(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def test_every_scenario_file_is_listed() -> None:
    on_disk = {p.stem for p in ROUTING.glob("*.yaml")} - {"gateway", "destination-rules"}
    assert on_disk == set(SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_is_self_contained(scenario: str) -> None:
    docs = _docs(f"{scenario}.yaml")
    security = [doc for doc in docs if doc["apiVersion"] == "security.istio.io/v1"]
    docs = [doc for doc in docs if doc not in security]
    assert Counter(doc["kind"] for doc in security) == SECURITY.get(scenario, {})
    if scenario not in SECURITY:
        assert (ROUTING / f"{scenario}.yaml").read_text().startswith("# Article step")
    assert Counter(doc["kind"] for doc in docs) == {"Gateway": 1, "VirtualService": 5, "DestinationRule": 4}
    assert {doc["apiVersion"] for doc in docs} == {"networking.istio.io/v1"}
    assert {doc["metadata"]["namespace"] for doc in docs} == {"bookinfo"}
    by_key = {_key(doc): doc for doc in docs}
    assert len(by_key) == len(docs), "duplicate resource"
    changed_key, added_policy = CHANGED_SHARED.get(scenario, (None, {}))
    for shared in _docs("gateway.yaml") + _docs("destination-rules.yaml"):
        expected = copy.deepcopy(shared)
        if _key(shared) == changed_key:
            expected["spec"]["trafficPolicy"].update(added_policy)
        assert by_key[_key(shared)] == expected, f"{_key(shared)} drifted from its shared file"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_routes(scenario: str) -> None:
    services = {
        doc["metadata"]["name"]: doc
        for doc in _docs(f"{scenario}.yaml")
        if doc["kind"] == "VirtualService" and doc["metadata"]["name"] != "bookinfo"
    }
    assert set(services) == set(SCENARIOS[scenario])
    for host, expected in SCENARIOS[scenario].items():
        spec = services[host]["spec"]
        assert spec["hosts"] == [host] and "gateways" not in spec  # mesh traffic only
        routes = spec["http"][0]["route"]
        assert [(r["destination"].get("subset"), r.get("weight")) for r in routes] == expected
        assert {r["destination"]["host"] for r in routes} == {host}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_resilience_only_where_the_scenario_adds_it(scenario: str) -> None:
    host, added = RESILIENCE.get(scenario, (None, {}))
    for doc in _docs(f"{scenario}.yaml"):
        if doc["kind"] != "VirtualService":
            continue
        for rule in doc["spec"]["http"]:
            extra = {k: v for k, v in rule.items() if k in RULE_EXTRAS}
            assert extra == (added if doc["metadata"]["name"] == host else {}), doc["metadata"]["name"]


def test_ingress_gateway_and_routes() -> None:
    gateway, ingress = _docs("gateway.yaml")
    assert gateway["metadata"]["name"] == "bookinfo-gateway"
    assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}
    assert gateway["spec"]["servers"] == [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
    ]
    assert ingress["spec"]["gateways"] == ["bookinfo-gateway"]
    routes = [(r["match"][0]["uri"]["prefix"], r["route"][0]["destination"]) for r in ingress["spec"]["http"]]
    assert routes == [
        ("/gateway", {"host": "gw", "port": {"number": 9080}}),
        ("/", {"host": "ui", "port": {"number": 9080}}),
    ]


def test_destination_rules() -> None:
    rules = {doc["spec"]["host"]: doc["spec"] for doc in _docs("destination-rules.yaml")}
    assert {host: [s["name"] for s in spec["subsets"]] for host, spec in rules.items()} == {
        "ui": ["v1"],
        "gw": ["v1"],
        "books": ["v1", "v2"],
        "ratings": ["v1", "v2"],
    }
    for host in ("books", "ratings"):
        assert rules[host]["trafficPolicy"] == {"loadBalancer": {"simple": "ROUND_ROBIN"}}
    assert all(s["labels"] == {"version": s["name"]} for spec in rules.values() for s in spec["subsets"])


@pytest.mark.parametrize("name", sorted(p.name for p in ROUTING.glob("*.yaml")))
def test_loads_through_mesh_api(name: str) -> None:
    api = pytest.importorskip("mesh.api", reason="mesh.api is not importable in this checkout")
    if not hasattr(api, "load_files"):
        pytest.skip(
            "mesh.api has no load_files yet: loading stacks/routing through the model is the lead's check"
        )
    resources = api.load_files([ROUTING / name])
    assert len(resources) == len(_docs(name))
    messages = api.analyze(resources) if name not in ("gateway.yaml", "destination-rules.yaml") else []
    assert [str(m) for m in messages] == []


@pytest.mark.parametrize("stack", sorted(STACK_FILES))
def test_stack_file(stack: str) -> None:
    config = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())["config"]
    _, local = STACK_FILES[stack]
    # the pin resolves: the release exists, matches its recorded digest and the pinned one
    from mesh.manifests import releases

    release = releases.ReleaseStore(STACKS.parent).resolve(config["weir:release"], config["weir:releaseDigest"],
                                                          where=stack)
    assert (STACKS.parent / release.source).is_file()
    assert config["weir:local"] == local
    for key in ("gcp:project", "gcp:region", "weir:clusterName", "weir:nodePool", "weir:image"):
        assert config[key], key


def test_stacks_can_run_side_by_side() -> None:
    ports: dict[int, str] = {}
    for stack, (_, local) in STACK_FILES.items():
        own = {
            local["ingressPort"],
            local["ingressTlsPort"],
            local["controlPlanePort"],
            local["controlPlaneTlsPort"],
            local["dashboardPort"],
            *range(local["portBase"], local["portBase"] + 100),
        }
        for port in own:
            assert port not in ports, f"{stack} and {ports[port]} both use port {port}"
            ports[port] = stack
