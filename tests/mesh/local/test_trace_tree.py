"""`meshctl trace`'s tree (mesh.local.console.trace_tree): children under their parent in start order,
box-drawing branches, orphans shown as roots, durations and offsets from the trace's first span."""

from __future__ import annotations

import random

from mesh.local import console

MS = 1_000_000


def span(n: int, parent: int | str | None, start_ms: float, end_ms: float, workload: str, direction: str, name: str,
         status: int = 200, flags: str = "-") -> dict:
    if isinstance(parent, int):
        parent = f"{parent:016x}"
    return {"traceId": "1" * 32, "spanId": f"{n:016x}", "parentSpanId": parent or "", "name": name,
            "startTimeUnixNano": round(start_ms * MS), "endTimeUnixNano": round(end_ms * MS),
            "attributes": {"workload": workload, "direction": direction, "http.method": "GET",
                           "http.status_code": status, "response_flags": flags}}


# ingress → gw inbound → gw outbound → books inbound, and gw's second call (to ratings) as a sibling
CHAIN = [
    span(1, None, 0, 20, "istio-ingressgateway", "outbound", "bookinfo.local/books"),
    span(2, 1, 1, 18, "gw-v1", "inbound", "gw:9080/books"),
    span(3, 2, 2, 10, "gw-v1", "outbound", "books:9080/books"),
    span(4, 3, 3, 9.5, "books-v1", "inbound", "books:9080/books"),
    span(5, 2, 11, 17, "gw-v1", "outbound", "ratings:9080/ratings/1", status=503, flags="UF"),
]
TREE = [
    "istio-ingressgateway outbound  GET bookinfo.local/books  200  20.0 ms  (+0.0 ms)",
    "└─ gw-v1 inbound  GET gw:9080/books  200  17.0 ms  (+1.0 ms)",
    "   ├─ gw-v1 outbound  GET books:9080/books  200  8.0 ms  (+2.0 ms)",
    "   │  └─ books-v1 inbound  GET books:9080/books  200  6.5 ms  (+3.0 ms)",
    "   └─ gw-v1 outbound  GET ratings:9080/ratings/1  503 (UF)  6.0 ms  (+11.0 ms)",
]


def test_a_chain_with_a_sibling():
    assert console.trace_tree(CHAIN) == TREE


def test_the_order_spans_arrive_in_does_not_matter():
    shuffled = CHAIN[:]
    random.Random(4).shuffle(shuffled)
    assert console.trace_tree(shuffled) == TREE


def test_an_orphan_is_shown_as_a_root_after_the_earlier_one():
    orphan = span(6, "f" * 16, 12, 12.3, "ratings-v1", "inbound", "ratings:9080/ratings/1")  # its parent never arrived
    assert console.trace_tree([*CHAIN, orphan]) == [
        *TREE, "ratings-v1 inbound  GET ratings:9080/ratings/1  200  0.3 ms  (+12.0 ms)"]


def test_offsets_count_from_the_first_span_even_when_it_is_not_the_root():
    late_root = span(1, None, 5, 9, "istio-ingressgateway", "outbound", "bookinfo.local/")
    early_orphan = span(9, 8, 1, 2.5, "gw-v1", "inbound", "gw:9080/")
    assert console.trace_tree([late_root, early_orphan]) == [
        "gw-v1 inbound  GET gw:9080/  200  1.5 ms  (+0.0 ms)",
        "istio-ingressgateway outbound  GET bookinfo.local/  200  4.0 ms  (+4.0 ms)",
    ]


def test_deep_last_branches_indent_with_spaces():
    spans = [span(1, None, 0, 4, "a", "outbound", "/a"), span(2, 1, 1, 3, "b", "inbound", "/b"),
             span(3, 2, 2, 2.5, "c", "outbound", "/c")]
    assert console.trace_tree(spans) == [
        "a outbound  GET /a  200  4.0 ms  (+0.0 ms)",
        "└─ b inbound  GET /b  200  2.0 ms  (+1.0 ms)",
        "   └─ c outbound  GET /c  200  0.5 ms  (+2.0 ms)",
    ]


def test_no_spans_no_lines():
    assert console.trace_tree([]) == []
