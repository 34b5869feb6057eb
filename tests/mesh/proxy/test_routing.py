"""Route selection: domain lookup order, first matching rule, OR of match blocks, seeded weighted picks."""

from __future__ import annotations

import collections
import math
import random

import pytest

from mesh.proxy import routing
from mesh.proxy.matching import RequestHead
from mesh.view import model

S = model.StringMatch
N = 10_000


def head(path: str = "/", host: str = "books", headers: dict[str, str] | None = None) -> RequestHead:
    return RequestHead("GET", path, host, 9080, [(k.encode(), v.encode()) for k, v in (headers or {}).items()])


def route(name: str, *matches: model.RouteMatch, clusters: tuple[tuple[str, int], ...] = (("c", 1),)) -> model.Route:
    return model.Route(name, matches, tuple(model.WeightedCluster(c, w) for c, w in clusters))


def table(*hosts: tuple[str, tuple[str, ...]]) -> routing.CompiledTable:
    return routing.CompiledTable(model.RouteTable("t", tuple(
        model.VirtualHost(name, domains, (route(name),)) for name, domains in hosts)))


@pytest.mark.parametrize("host, expected", [
    ("api.books.example.com", "exact"),
    ("x.books.example.com", "long-suffix"),
    ("y.example.com", "short-suffix"),
    ("example.com", "star"),  # "*.example.com" needs at least one more label
    ("ratings", "star"),
])
def test_virtual_host_lookup_exact_then_longest_suffix_then_star(host, expected):
    compiled = table(("star", ("*",)), ("short-suffix", ("*.example.com",)),
                     ("long-suffix", ("*.books.example.com",)), ("exact", ("api.books.example.com",)))
    assert compiled.virtual_host(host).spec.name == expected


def test_domains_are_case_insensitive_and_no_star_means_no_host():
    compiled = table(("books", ("Books.Bookinfo",)))
    assert compiled.virtual_host("books.bookinfo").spec.name == "books"
    assert compiled.virtual_host("ratings") is None


def test_first_matching_rule_wins():
    host = routing.CompiledVirtualHost(model.VirtualHost("h", ("*",), (
        route("jason", model.RouteMatch(headers=(model.KeyMatch("end-user", S("exact", "jason")),))),
        route("books", model.RouteMatch(uri=S("prefix", "/books"))),
        route("catch-all"),
        route("never"),
    )))
    assert host.find(head("/books", headers={"end-user": "jason"}))[0].spec.name == "jason"
    assert host.find(head("/books"))[0].spec.name == "books"
    assert host.find(head("/other"))[0].spec.name == "catch-all"


def test_match_blocks_are_ored_and_the_matching_block_is_returned():
    first = model.RouteMatch(uri=S("prefix", "/a"))
    second = model.RouteMatch(uri=S("prefix", "/b"))
    compiled = routing.CompiledRoute(route("r", first, second))
    assert compiled.match(head("/a")) == (True, first)
    assert compiled.match(head("/b/1")) == (True, second)
    assert compiled.match(head("/c")) == (False, None)
    assert routing.CompiledRoute(route("any")).match(head("/c")) == (True, None)


def split(weights: tuple[int, ...], seed: int = 1) -> collections.Counter:
    compiled = routing.CompiledRoute(route("r", clusters=tuple((f"c{i}", w) for i, w in enumerate(weights))))
    rng = random.Random(seed)
    return collections.Counter(compiled.pick(rng).cluster for _ in range(N))


@pytest.mark.parametrize("weights", [(50, 50), (10, 90), (1, 9), (20, 30, 50), (3, 3, 3), (0, 100), (7, 0, 3)])
@pytest.mark.parametrize("seed", [1, 2])
def test_weighted_pick_is_within_a_statistical_band_of_the_weights(weights, seed):
    counts = split(weights, seed)
    total = sum(weights)
    for i, weight in enumerate(weights):
        p = weight / total
        if p == 0:
            assert counts[f"c{i}"] == 0, "a weight-0 destination is never picked"
            continue
        band = 4.5 * math.sqrt(N * p * (1 - p)) + 1
        assert abs(counts[f"c{i}"] - N * p) <= band, (weights, counts)


def test_weighted_pick_is_reproducible_with_the_same_seed():
    assert split((10, 90), seed=5) == split((10, 90), seed=5)


def test_no_destination_or_zero_total_picks_nothing():
    assert routing.CompiledRoute(model.Route("r")).pick(random.Random(1)) is None
    assert routing.CompiledRoute(route("r", clusters=(("a", 0), ("b", 0)))).pick(random.Random(1)) is None


def test_compiled_view_routes_by_table_and_host():
    books = model.Cluster("books")
    view = model.ProxyView(
        proxy="p",
        route_tables=(model.RouteTable("9080", (model.VirtualHost("books", ("books",), (
            route("r", clusters=(("books", 1),)),)),)),),
        clusters=(books,),
        endpoints=(model.ClusterEndpoints("books", (model.Endpoint("10.0.0.1", 9080),)),),
        listeners=(model.Listener("out", model.OUTBOUND, 15001),),
    )
    compiled = routing.CompiledView(view, "v1", random.Random(1))
    found, block = compiled.find_route("9080", head())
    assert (found.spec.name, block) == ("r", None)
    assert compiled.find_route("9081", head()) is None
    assert compiled.find_route("9080", head(host="ratings")) is None
    assert compiled.has_virtual_host("9080", "books") and not compiled.has_virtual_host("9080", "ratings")
    assert compiled.listener(model.OUTBOUND).name == "out" and compiled.listener(model.INBOUND) is None
    assert repr(compiled.clusters["books"]) == "<Cluster books <RoundRobin endpoints=1>>"
