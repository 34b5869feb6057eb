"""Property: whatever the input, the loader returns resources or raises ConfigError, nothing else."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.api import ConfigError, dump, load_document, load_text
from tests.mesh.api.conftest import dr, gw, route_to, se, vs

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KINDS = ["VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "PeerAuthentication", "Sidecar", ""]
API_VERSIONS = ["networking.istio.io/v1", "networking.istio.io/v1alpha3", "security.istio.io/v1", "v1", ""]
KEYS = [
    "hosts",
    "http",
    "route",
    "destination",
    "host",
    "subset",
    "weight",
    "match",
    "uri",
    "prefix",
    "exact",
    "regex",
    "timeout",
    "retries",
    "fault",
    "delay",
    "abort",
    "percentage",
    "value",
    "subsets",
    "name",
    "labels",
    "trafficPolicy",
    "loadBalancer",
    "simple",
    "servers",
    "port",
    "number",
    "endpoints",
    "resolution",
    "tls",
    "mode",
    "headers",
    "x",
    "",
    "1",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["1s", "-1s", "0", "*", "mesh", "v1", "(", "STATIC"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(0, 3)), inner, max_size=5),
    ),
    max_leaves=25,
)


def _check(call: Any) -> None:
    try:
        call()
    except ConfigError:
        pass


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    _check(lambda: load_text(text, "fuzz.yaml"))


yamlish = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "---",
                "...",
                "apiVersion: networking.istio.io/v1",
                "kind: VirtualService",
                "metadata:",
                "  name: r",
                "spec:",
                "  hosts: [a, b",
                "  - x",
                "- {a: 1}",
                "&a [*a]",
                "!!python/object:os.system x",
                "? [a]\n: b",
                "key: !!binary AAAA",
                "t: 2001-13-45",
                "  http:",
                "  - route:",
                "    - destination: {host: r}",
                "'unterminated",
                "\t- tab",
            ]
        ),
        st.text(alphabet=" :-[]{},&*!|>'\"#%@`\n\tabc01", max_size=20),
    ),
    max_size=12,
).map("\n".join)


@SETTINGS
@given(yamlish)
def test_yaml_like_text(text: str) -> None:
    _check(lambda: load_text(text, "fuzz.yaml"))


@SETTINGS
@given(st.sampled_from(KINDS), st.sampled_from(API_VERSIONS), values, values)
def test_arbitrary_documents(kind: str, api_version: str, metadata: Any, spec: Any) -> None:
    body = {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}
    _check(lambda: load_document(body, "fuzz.yaml"))


BASES = [
    vs(
        [
            {
                "match": [{"uri": {"prefix": "/"}}],
                "route": [route_to(weight=50), route_to(subset="v2", weight=50)],
                "timeout": "1s",
                "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 1}}},
            }
        ]
    ),
    dr(
        trafficPolicy={"loadBalancer": {"simple": "RANDOM"}, "outlierDetection": {"interval": "1s"}},
        subsets=[{"name": "v1", "labels": {"version": "v1"}}],
    ),
    gw(),
    se(
        hosts=["a.example.com"],
        resolution="STATIC",
        ports=[{"number": 80, "name": "http"}],
        endpoints=[{"address": "10.0.0.1"}],
    ),
]


def _replace(tree: Any, path: list[int], new: Any) -> Any:
    """Replace the subtree reached by following `path` (indices into children) with `new`."""
    if not path or not isinstance(tree, dict | list) or not tree:
        return new
    items = list(tree.items()) if isinstance(tree, dict) else list(enumerate(tree))
    key, child = items[path[0] % len(items)]
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    copy[key] = _replace(child, path[1:], new)
    return copy


@SETTINGS
@given(st.sampled_from(BASES), st.lists(st.integers(0, 10), max_size=6), values)
def test_mutated_valid_documents(base: dict, path: list[int], new: Any) -> None:
    body = _replace(base, path, new)
    try:
        res = load_document(body, "fuzz.yaml")
    except ConfigError:
        return
    # Whatever is accepted must survive the trip through dump and YAML.
    assert load_document(yaml.safe_load(yaml.safe_dump(dump(res)))) == res
