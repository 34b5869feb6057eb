"""Property tests of route selection against a reference written here, independently of mesh.proxy.

The reference reads Istio's rules literally: uri/method/header/query conditions (exact, prefix, regex as a
full match, ignoreCase), present/absent conditions, AND inside a match block, OR across blocks, the first
matching rule wins; a query parameter given twice is matched on its first value (Envoy). Its regex engine is
its own backtracking matcher over a small grammar (literal, `.`, `[..]`, each with `*`/`?`/`+`), so the
compiled `re` patterns are checked against something that is not `re`. Weighted pick is checked exactly
against the cumulative-weight definition and, with a seeded RNG, statistically.
"""

from __future__ import annotations

import math
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.proxy import matching, routing
from mesh.view import model

# A small alphabet and short strings, so that conditions and requests often (but not always) agree.
CHARS = "aAb/"
texts = st.text(alphabet=CHARS, max_size=3)
METHODS = ["GET", "POST", "get", "PUT"]


# -- the reference ----------------------------------------------------------------------------------------------
# A regex is a tuple of (atom, quantifier); atom: a literal char, "." or a frozenset (character class).
atoms = st.one_of(st.sampled_from(list("abA/")), st.just("."),
                  st.sets(st.sampled_from(list("abB")), min_size=1, max_size=2).map(frozenset))
regexes = st.lists(st.tuples(atoms, st.sampled_from(["", "*", "?", "+"])), max_size=4).map(tuple)


def render(regex) -> str:
    out = []
    for atom, quantifier in regex:
        if isinstance(atom, frozenset):
            out.append("[" + "".join(sorted(atom)) + "]")
        else:
            out.append(atom)
        out.append(quantifier)
    return "".join(out)


def atom_matches(atom, char: str, fold: bool) -> bool:
    if atom == ".":
        return char != "\n"
    options = atom if isinstance(atom, frozenset) else {atom}
    if fold:
        return char.lower() in {o.lower() for o in options}
    return char in options


def regex_fullmatch(regex, text: str, fold: bool) -> bool:
    def at(i: int, j: int) -> bool:
        if i == len(regex):
            return j == len(text)
        atom, quantifier = regex[i]
        one = j < len(text) and atom_matches(atom, text[j], fold)
        if quantifier == "":
            return one and at(i + 1, j + 1)
        if quantifier == "?":
            return (one and at(i + 1, j + 1)) or at(i + 1, j)
        if quantifier == "+" and not one:
            return False
        if quantifier == "+":
            j += 1
        k = j  # "*" (or the rest of a "+"): try every run length
        while True:
            if at(i + 1, k):
                return True
            if k < len(text) and atom_matches(atom, text[k], fold):
                k += 1
            else:
                return False
    return at(0, 0)


def reference_string(kind: str, value, ignore_case: bool, text: str) -> bool:
    if kind == "regex":
        return regex_fullmatch(value, text, ignore_case)
    if ignore_case:
        value, text = value.lower(), text.lower()
    return text == value if kind == "exact" else text.startswith(value)


def reference_query(path: str) -> dict[str, str]:
    """First value of each parameter; our generated queries have no escapes."""
    found: dict[str, str] = {}
    if "?" in path:
        for part in path.split("?", 1)[1].split("&"):
            if part:
                name, _, value = part.partition("=")
                found.setdefault(name, value)
    return found


def reference_condition(condition, value: str | None) -> bool:
    """condition = (kind, value, ignore_case) or None for "present"; value None: absent."""
    if value is None:
        return False
    return condition is None or reference_string(*condition, value)


def reference_block(block: dict, request: dict) -> bool:
    if "uri" in block and not reference_string(*block["uri"], request["path"].split("?")[0]):
        return False
    if "method" in block and not reference_string(*block["method"], request["method"]):
        return False
    for name, condition, invert in block["headers"]:
        if reference_condition(condition, request["headers"].get(name)) == invert:
            return False
    query = reference_query(request["path"])
    for name, condition, invert in block["query"]:
        if reference_condition(condition, query.get(name)) == invert:
            return False
    return True


def reference_route(rules: list[list[dict]], request: dict) -> tuple[int, int | None] | None:
    """(rule index, block index) of the first rule that matches; None when none does."""
    for index, blocks in enumerate(rules):
        if not blocks:
            return index, None
        for number, block in enumerate(blocks):
            if reference_block(block, request):
                return index, number
    return None


# -- generated rules and requests -------------------------------------------------------------------------------
conditions = st.one_of(
    st.tuples(st.sampled_from(["exact", "prefix"]), texts, st.booleans()),
    st.tuples(st.just("regex"), regexes, st.booleans()),
)
KEYS = ["k", "end-user", "x"]
key_conditions = st.lists(st.tuples(st.sampled_from(KEYS), st.none() | conditions, st.booleans()),
                          max_size=2, unique_by=lambda c: c[0])
blocks = st.fixed_dictionaries(
    {"headers": key_conditions, "query": key_conditions},
    optional={"uri": conditions,
              "method": st.tuples(st.sampled_from(["exact", "prefix"]), st.sampled_from(METHODS), st.booleans())},
)
rule_sets = st.lists(st.lists(blocks, max_size=3), min_size=1, max_size=4)

query_parts = st.lists(st.tuples(st.sampled_from(KEYS[::2]), st.text(alphabet="aAb", max_size=2)), max_size=4)
requests = st.fixed_dictionaries({
    "method": st.sampled_from(METHODS),
    "path": st.tuples(texts, query_parts).map(
        lambda p: "/" + p[0] + ("?" + "&".join(f"{k}={v}" for k, v in p[1]) if p[1] else "")),
    "headers": st.dictionaries(st.sampled_from(KEYS), texts, max_size=3),
})


def string_match(condition) -> model.StringMatch:
    kind, value, ignore_case = condition
    return model.StringMatch(kind, render(value) if kind == "regex" else value, ignore_case)


def key_match(name: str, condition, invert: bool) -> model.KeyMatch:
    return model.KeyMatch(name, string_match(condition) if condition is not None else None, invert)


def to_model(rules: list[list[dict]]) -> model.VirtualHost:
    routes = []
    for index, rule_blocks in enumerate(rules):
        matches = tuple(model.RouteMatch(
            uri=string_match(b["uri"]) if "uri" in b else None,
            method=string_match(b["method"]) if "method" in b else None,
            headers=tuple(key_match(*h) for h in b["headers"]),
            query_params=tuple(key_match(*q) for q in b["query"]),
        ) for b in rule_blocks)
        routes.append(model.Route(f"r{index}", matches=matches, clusters=(model.WeightedCluster(f"c{index}"),)))
    return model.VirtualHost("books", ("books",), tuple(routes))


def to_head(request: dict) -> matching.RequestHead:
    raw = [(k.encode(), v.encode()) for k, v in request["headers"].items()]
    return matching.RequestHead(request["method"], request["path"], "books", 9080, raw)


# -- properties -------------------------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(conditions, texts)
def test_string_match_agrees_with_the_reference(condition, text):
    assert matching.compile_string_match(string_match(condition))(text) == reference_string(*condition, text)


@settings(max_examples=400, deadline=None)
@given(rule_sets, requests)
def test_first_matching_rule_and_block_agree_with_the_reference(rules, request):
    host = routing.CompiledVirtualHost(to_model(rules))
    found = host.find(to_head(request))
    expected = reference_route(rules, request)
    if expected is None:
        assert found is None
        return
    route, block = found
    index, number = expected
    assert route.spec.name == f"r{index}"
    assert block is (route.spec.matches[number] if number is not None else None)


@settings(max_examples=300, deadline=None)
@given(key_conditions, key_conditions, requests)
def test_one_block_of_header_and_query_conditions_agrees_with_the_reference(headers, query, request):
    block = {"headers": headers, "query": query}
    predicate = matching.compile_route_match(to_model([[block]]).routes[0].matches[0])
    assert predicate(to_head(request)) == reference_block(block, request)


@settings(max_examples=200, deadline=None)
@given(st.none() | conditions, st.booleans(), st.lists(texts.filter(lambda t: "/" not in t), max_size=3))
def test_a_query_condition_on_a_repeated_parameter_agrees_with_the_reference(condition, invert, values):
    request = {"method": "GET", "path": "/?" + "&".join(f"k={v}" for v in values), "headers": {}}
    block = {"headers": [], "query": [("k", condition, invert)]}
    predicate = matching.compile_route_match(to_model([[block]]).routes[0].matches[0])
    assert predicate(to_head(request)) == reference_block(block, request)


def test_a_repeated_query_parameter_matches_on_its_first_value():
    """Envoy's query_parameters matcher ignores all but the first value of a key."""
    rule = model.RouteMatch(query_params=(model.KeyMatch("v", model.StringMatch("exact", "1")),))
    predicate = matching.compile_route_match(rule)
    assert predicate(matching.RequestHead("GET", "/?v=1&v=2", "books", 9080, []))
    assert not predicate(matching.RequestHead("GET", "/?v=2&v=1", "books", 9080, []))


# -- weighted pick ----------------------------------------------------------------------------------------------
weights = st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=6)


def route_with(weight_list: list[int]) -> routing.CompiledRoute:
    clusters = tuple(model.WeightedCluster(f"c{i}", w) for i, w in enumerate(weight_list))
    return routing.CompiledRoute(model.Route("r", clusters=clusters))


def reference_pick(weight_list: list[int], draw: float) -> int:
    """Destination i owns [w0 + ... + w(i-1), w0 + ... + wi) of [0, total): a zero weight owns nothing."""
    point, running = draw * sum(weight_list), 0
    for index, weight in enumerate(weight_list):
        running += weight
        if point < running:
            return index
    raise AssertionError("draw outside [0, 1)")


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@settings(max_examples=300, deadline=None)
@given(weights, st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_weighted_pick_is_the_cumulative_weight_definition(weight_list, draw):
    route = route_with(weight_list)
    picked = route.pick(FixedRandom(draw))
    total = sum(weight_list)
    if total == 0:
        assert picked is None
        return
    if len(weight_list) == 1:
        assert picked.cluster == "c0"
        return
    assert picked.cluster == f"c{reference_pick(weight_list, draw)}"
    assert picked.weight > 0


@settings(max_examples=25, deadline=None)
@given(weights.filter(lambda w: sum(w) > 0), st.integers(min_value=0, max_value=2**32))
def test_weighted_pick_follows_relative_weights_and_never_picks_weight_zero(weight_list, seed):
    route = route_with(weight_list)
    rng = random.Random(seed)
    picks = 4000
    counts = Counter(route.pick(rng).cluster for _ in range(picks))
    total = sum(weight_list)
    for index, weight in enumerate(weight_list):
        share = weight / total
        seen = counts.get(f"c{index}", 0)
        if weight == 0:
            assert seen == 0
            continue
        # Binomial: 6 standard deviations (plus one pick) makes a false alarm astronomically unlikely.
        band = 6 * math.sqrt(picks * share * (1 - share)) + 1
        assert abs(seen - picks * share) <= band, (weight_list, counts)
