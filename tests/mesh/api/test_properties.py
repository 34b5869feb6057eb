"""Properties of the edge: whatever the input, the loader returns resources or raises ConfigError, nothing
else (no KeyError, TypeError, RecursionError...); valid generated VirtualServices and DestinationRules
round-trip through dump and YAML; YAML bombs (alias fan-out, deep nesting, self-reference) are refused
quickly by the loader's bounds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import yaml_target
from mesh.api import ConfigError, dump, load_document, load_text, loader
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
                "x: &b [*b, *b]",
                "l0: &l0 [a, a, a]\nl1: &l1 [*l0, *l0, *l0]\nl2: [*l1, *l1, *l1]",
                "<<: *a",
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


# -- generated valid VirtualServices and DestinationRules round-trip ----------------------------------------------
# Small pools rather than regexes: generation stays cheap, and the values are the shapes real configs use.
names = st.sampled_from(["a", "v1", "v2", "reviews", "ratings-v2", "x0-y"])
hostnames = st.sampled_from(["a", "reviews", "ratings.bookinfo", "books.bookinfo.svc.cluster.local",
                             "api.example.com", "*.example.com"])
durations = st.one_of(st.integers(1, 600).map(lambda n: f"{n}s"), st.integers(1, 999).map(lambda n: f"{n}ms"))
percent = st.sampled_from([0, 0.5, 10, 33.33, 50, 99.9, 100])
header_names = st.sampled_from(["end-user", "x-version", "user-agent", "cookie", "a"])
header_values = st.sampled_from(["", "jason", "v1", "Mozilla/5.0", "a.b_c-d"])
paths = st.sampled_from(["/", "/books", "/books/1", "/gateway/books", "/v1/", "/a.b_c-d"])
string_matches = st.one_of(
    st.builds(lambda v: {"exact": v}, paths), st.builds(lambda v: {"prefix": v}, paths),
    st.builds(lambda v: {"regex": v}, st.sampled_from(["/books/[0-9]+", ".*", "/(a|b)/?", "/v[12]/.*"])),
)
value_matches = st.one_of(st.builds(lambda v: {"exact": v}, header_values),
                          st.builds(lambda v: {"prefix": v}, header_values),
                          st.builds(lambda v: {"regex": v}, st.sampled_from(["jason", "[a-z]+", ".*"])))


def _some(**fields: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """A dict with any subset of the given fields."""
    return st.fixed_dictionaries({}, optional=fields)


match_blocks = _some(
    name=names, uri=string_matches, method=st.sampled_from([{"exact": "GET"}, {"exact": "POST"}, {"prefix": "P"}]),
    headers=st.dictionaries(header_names, value_matches, max_size=2),
    queryParams=st.dictionaries(header_names, value_matches, max_size=2),
    ignoreUriCase=st.booleans(),
).filter(bool)  # Weir refuses an empty match block
destinations = st.builds(lambda host, extra: {"host": host, **extra}, hostnames,
                         _some(subset=names, port=st.builds(lambda n: {"number": n}, st.integers(1, 65535))))


@st.composite
def http_routes(draw) -> dict:
    count = draw(st.integers(1, 3))
    route = [{"destination": draw(destinations)} for _ in range(count)]
    if count > 1 or draw(st.booleans()):
        for item in route:
            item["weight"] = draw(st.integers(1, 100))
    rule = {"route": route}
    rule.update(draw(_some(
        name=names, match=st.lists(match_blocks, min_size=1, max_size=2), timeout=durations,
        retries=_some(attempts=st.integers(0, 5), perTryTimeout=durations,
                      retryOn=st.sampled_from(["5xx", "connect-failure,refused-stream", "gateway-error,503"])),
        fault=_some(delay=st.builds(lambda d, p: {"fixedDelay": d, "percentage": {"value": p}}, durations, percent),
                    abort=st.builds(lambda s, p: {"httpStatus": s, "percentage": {"value": p}},
                                    st.integers(200, 599), percent)).filter(bool),  # Weir refuses an empty fault
        mirror=destinations, mirrorPercentage=st.builds(lambda p: {"value": p}, percent),
        headers=st.builds(lambda s: {"request": {"set": s}}, st.dictionaries(header_names, header_values, max_size=2)),
    )))
    return rule


virtual_services = st.builds(
    lambda name, hosts, http: {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                               "metadata": {"name": name, "namespace": "bookinfo"},
                               "spec": {"hosts": hosts, "http": http}},
    names, st.lists(hostnames, min_size=1, max_size=3, unique=True), st.lists(http_routes(), min_size=1, max_size=3))

traffic_policies = _some(
    loadBalancer=st.builds(lambda s: {"simple": s}, st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"])),
    connectionPool=_some(
        tcp=_some(maxConnections=st.integers(1, 10_000), connectTimeout=durations),
        http=_some(http1MaxPendingRequests=st.integers(1, 10_000), maxRequestsPerConnection=st.integers(1, 100)),
    ),
    outlierDetection=_some(consecutive5xxErrors=st.integers(0, 100), interval=durations,
                           baseEjectionTime=durations, maxEjectionPercent=st.integers(0, 100)),
)
subsets = st.lists(
    st.builds(lambda name, labels, extra: {"name": name, "labels": labels, **extra}, names,
              st.dictionaries(header_names, names, min_size=1, max_size=2), _some(trafficPolicy=traffic_policies)),
    max_size=3, unique_by=lambda s: s["name"])
destination_rules = st.builds(
    lambda name, host, extra: {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                               "metadata": {"name": name, "namespace": "bookinfo"},
                               "spec": {"host": host, **extra}},
    names, hostnames, _some(trafficPolicy=traffic_policies, subsets=subsets))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(virtual_services, destination_rules))
def test_valid_documents_round_trip_through_dump_and_yaml(body: dict) -> None:
    resource = load_document(body, "gen.yaml")  # valid by construction: a ConfigError here is a finding
    dumped = dump(resource)
    [again] = load_text(yaml.safe_dump(dumped), "gen.yaml")
    assert again == resource
    assert dump(again) == dumped


# -- YAML bombs: refused with a clear error, in bounded time --------------------------------------------------------
def _laughs(levels: int, fan_out: int = 9) -> str:
    """A VirtualService whose http rules are an alias fan-out: fan_out**levels routes from a few lines."""
    lines = ["apiVersion: networking.istio.io/v1", "kind: VirtualService", "metadata: {name: lol}",
             "x: &r0 {route: [{destination: {host: a}}]}"]
    for level in range(1, levels):
        lines.append(f"x{level}: &r{level} [" + ", ".join([f"*r{level - 1}"] * fan_out) + "]")
    lines.append(f"spec: {{hosts: [a], http: *r{levels - 1}}}")
    return "\n".join(lines)


def _valid_shaped_laughs(fan_out: int = 1000) -> str:
    """Every level is a field the schema accepts: http rules × match blocks × gateways, fan_out**3 strings from
    ~14 KB (before the bound, 300 × 300 × 1000 took 8 s and 860 MB to validate, and this one would not end)."""
    gateways = "&g [" + ", ".join(["mesh"] * fan_out) + "]"
    match = "&m {uri: {prefix: /}, gateways: " + gateways + "}"
    rule = "&r {match: [" + match + ", " + ", ".join(["*m"] * (fan_out - 1)) + "], route: [{destination: {host: a}}]}"
    return ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: lol}\n"
            "spec: {hosts: [a], http: [" + rule + ", " + ", ".join(["*r"] * (fan_out - 1)) + "]}\n")


@pytest.mark.parametrize("text, says", [
    (_valid_shaped_laughs(), "aliases expand to more than"),
    (_laughs(9), "aliases expand to more than"),
    (_laughs(4, 1000), "aliases expand to more than"),
    ("[" * 100_000 + "]" * 100_000, "nested deeper than"),
    ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)), "nested deeper than"),
    ("&a [*a]", "recursive alias"),
    ("a: &a {b: *a}", "recursive alias"),
], ids=["valid-shaped-laughs", "billion-laughs", "wide-laughs", "deep-flow", "deep-block", "self-list", "self-map"])
def test_yaml_bombs_are_refused_quickly(text: str, says: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match="invalid YAML") as refused:
        load_text(text, "bomb.yaml")
    assert says in str(refused.value) and refused.value.file == "bomb.yaml"
    assert time.monotonic() - started < 10  # a fraction of a second unloaded; generous for a shared CI box


def test_shared_aliases_within_the_bounds_still_load() -> None:
    text = "\n".join(["apiVersion: networking.istio.io/v1", "kind: VirtualService", "metadata: {name: ok}",
                      "spec: {hosts: [a], http: [&r {route: [{destination: {host: a}}]}, *r, *r]}"])
    [loaded] = load_text(text)
    assert len(loaded.spec.http) == 3


@pytest.mark.parametrize("depth, refused", [(loader.MAX_YAML_DEPTH, False), (loader.MAX_YAML_DEPTH + 1, True)])
def test_the_nesting_limit_is_exact(depth: int, refused: bool) -> None:
    says = "nested deeper than" if refused else "expected a mapping"  # a list parses, then is not an object
    with pytest.raises(ConfigError, match=says):
        load_text("[" * depth + "]" * depth)


def test_the_node_limit_counts_expanded_aliases() -> None:
    fan_out = 1000
    levels = 2  # 1 + 1000 * (1 + 1000) nodes > MAX_YAML_NODES only once aliases are expanded
    assert (fan_out + 1) ** levels > loader.MAX_YAML_NODES > 3 * fan_out
    flat = "a: &a [" + ", ".join(["x"] * fan_out) + "]\nb: [" + ", ".join(["*a"] * fan_out) + "]"
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        load_text(flat)
    with pytest.raises(ConfigError, match="expected a mapping|required value"):
        load_text("a: &a [" + ", ".join(["x"] * fan_out) + "]\nb: [*a, *a]")


# -- the atheris target (fuzz/yaml_target.py), without atheris --------------------------------------------------------
YAML_CORPUS = Path(__file__).resolve().parents[3] / "fuzz" / "corpus" / "yaml"


@pytest.mark.parametrize("seed", sorted(p.name for p in YAML_CORPUS.iterdir()))
def test_yaml_fuzz_target_passes_its_seed_corpus(seed: str) -> None:
    yaml_target.check((YAML_CORPUS / seed).read_bytes())
