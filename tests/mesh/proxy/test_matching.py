"""Istio match blocks compiled to predicates: every StringMatch kind, headers, query, method, authority, port."""

from __future__ import annotations

import pytest

from mesh.proxy import matching
from mesh.view import model

S = model.StringMatch


def request(path: str = "/", method: str = "GET", host: str = "books", port: int = 9080,
            headers: dict[str, str] | None = None, scheme: str = "http") -> matching.RequestHead:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return matching.RequestHead(method, path, host, port, raw, scheme, "10.0.0.1")


@pytest.mark.parametrize("match, text, expected", [
    (S("exact", "/books"), "/books", True),
    (S("exact", "/books"), "/books/1", False),
    (S("exact", "/books"), "/BOOKS", False),
    (S("exact", "/books", ignore_case=True), "/BOOKS", True),
    (S("prefix", "/books"), "/books/1", True),
    (S("prefix", "/books"), "/book", False),
    (S("prefix", "/Books", ignore_case=True), "/bOOKS/1", True),
    (S("prefix", ""), "/anything", True),
    (S("regex", "/books/[0-9]+"), "/books/12", True),
    (S("regex", "/books/[0-9]+"), "/books/12/x", False),  # full match, not search
    (S("regex", "/books/[0-9]+"), "/x/books/12", False),
    (S("regex", "/B.*"), "/books", False),
    (S("regex", "/B.*", ignore_case=True), "/books", True),
])
def test_string_match(match, text, expected):
    assert matching.compile_string_match(match)(text) is expected


def block(**kw) -> matching.Predicate:
    return matching.compile_route_match(model.RouteMatch(**kw))


def test_empty_block_matches_everything():
    assert block()(request())


@pytest.mark.parametrize("condition, headers, expected", [
    (model.KeyMatch("end-user"), {"End-User": "jason"}, True),  # present
    (model.KeyMatch("end-user"), {}, False),
    (model.KeyMatch("end-user", S("exact", "jason")), {"end-user": "jason"}, True),
    (model.KeyMatch("end-user", S("exact", "jason")), {"end-user": "json"}, False),
    (model.KeyMatch("end-user", S("exact", "jason")), {}, False),
    (model.KeyMatch("end-user", S("prefix", "ja")), {"end-user": "jason"}, True),
    (model.KeyMatch("end-user", S("regex", "j.*n")), {"end-user": "jason"}, True),
    (model.KeyMatch("end-user", invert=True), {}, True),  # withoutHeaders: absent
    (model.KeyMatch("end-user", invert=True), {"end-user": "x"}, False),
    (model.KeyMatch("end-user", S("exact", "jason"), invert=True), {"end-user": "bob"}, True),
    (model.KeyMatch("end-user", S("exact", "jason"), invert=True), {"end-user": "jason"}, False),
    (model.KeyMatch("end-user", S("exact", "jason"), invert=True), {}, True),
])
def test_header_conditions(condition, headers, expected):
    assert block(headers=(condition,))(request(headers=headers)) is expected


@pytest.mark.parametrize("condition, path, expected", [
    (model.KeyMatch("v"), "/?v=", True),
    (model.KeyMatch("v"), "/?w=1", False),
    (model.KeyMatch("v"), "/", False),
    (model.KeyMatch("v", S("exact", "2")), "/p?a=1&v=2", True),
    (model.KeyMatch("v", S("exact", "2")), "/p?v=3", False),
    (model.KeyMatch("v", S("regex", "[0-9]+")), "/p?v=42", True),
    (model.KeyMatch("v", S("exact", "a b")), "/p?v=a%20b", True),
    (model.KeyMatch("v", invert=True), "/p?w=1", True),
])
def test_query_param_conditions(condition, path, expected):
    assert block(query_params=(condition,))(request(path)) is expected


def test_uri_match_ignores_the_query_string():
    assert block(uri=S("exact", "/books"))(request("/books?id=1"))


@pytest.mark.parametrize("kw, req, expected", [
    ({"method": S("exact", "POST")}, request(method="POST"), True),
    ({"method": S("exact", "POST")}, request(method="GET"), False),
    ({"authority": S("prefix", "books")}, request(host="books.bookinfo"), True),
    ({"authority": S("exact", "books")}, request(host="ratings"), False),
    ({"port": 9080}, request(port=9080), True),
    ({"port": 9080}, request(port=80), False),
    ({"scheme": S("exact", "https")}, request(scheme="http"), False),
])
def test_single_conditions(kw, req, expected):
    assert block(**kw)(req) is expected


def test_conditions_in_one_block_are_anded():
    predicate = block(uri=S("prefix", "/books"), method=S("exact", "GET"),
                      headers=(model.KeyMatch("end-user", S("exact", "jason")),), port=9080)
    ok = request("/books/1", headers={"end-user": "jason"})
    assert predicate(ok)
    assert not predicate(request("/books/1"))
    assert not predicate(request("/books/1", method="POST", headers={"end-user": "jason"}))
    assert not predicate(request("/ratings", headers={"end-user": "jason"}))
    assert not predicate(request("/books/1", port=80, headers={"end-user": "jason"}))


@pytest.mark.parametrize("uri, path, prefix", [
    (S("prefix", "/api"), "/api/books?x=1", "/api"),
    (S("prefix", "/API", ignore_case=True), "/api/books", "/api"),
    (S("exact", "/api"), "/api?x=1", "/api"),
    (None, "/anything", "/"),
])
def test_matched_prefix(uri, path, prefix):
    assert matching.matched_prefix(model.RouteMatch(uri=uri), request(path)) == prefix


def test_header_lookup_is_first_value_and_query_is_cached():
    head = request("/p?a=1", headers={"x": "1"})
    head.headers.append((b"x", b"2"))
    assert head.header(b"x") == "1"
    assert head.query() is head.query()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("pattern, text", [
    (r"/([a-z0-9]+-?)+/details", "/" + "a" * 40 + "!/details"),  # nested quantifiers: 2^40 tries in `re`
    (r".*Chrome.*Mobile.*Safari.*", "Chrome" * 4000),
])
def test_a_regex_runs_in_linear_time_whatever_the_pattern(pattern, text):
    """Envoy runs Istio's regexes in RE2; Python's backtracking engine took 25 s for the first on 30 bytes."""
    match = matching.compile_string_match(model.StringMatch("regex", pattern))
    assert not match(text)


def test_regex_semantics_are_re2s():
    assert not matching.compile_regex(r"\d+").fullmatch("١٢٣")  # \d is ASCII
    assert matching.compile_regex(r"/books/\d+").fullmatch("/books/42")
    assert matching.compile_regex("ABC", ignore_case=True).fullmatch("abc")
    assert not matching.compile_regex("ABC").fullmatch("abc")
    assert matching.compile_regex(r"^/v(\d+)/(.*)$").sub(r"/version\1/\2", "/v2/books") == "/version2/books"


def test_a_regex_re2_refuses_is_a_regex_error_naming_it():
    with pytest.raises(matching.RegexError, match=r"'\(\?=x\)': invalid perl operator"):
        matching.compile_regex("(?=x)")
