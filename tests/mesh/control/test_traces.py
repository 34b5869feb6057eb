"""The control plane's span collector (mesh.control.traces): all-or-nothing batches, bounded traces and
spans, the request id index and its eviction, summaries; then its two HTTP faces, `POST /v1/spans` on the
TLS mesh channel and `GET /v1/traces` on meshctl's API, through the meshchannel harness."""

from __future__ import annotations

import pytest

from mesh.control import traces
from tests.mesh.control import meshchannel

T1 = "1" * 32
T2 = "2" * 32
T3 = "3" * 32
MS = 1_000_000


def sid(n: int) -> str:
    return f"{n:016x}"


def span(trace: str = T1, n: int = 1, parent: int | None = None, start: int = 0, end: int = 5 * MS,
         request_id: str | None = None, **attributes) -> dict:
    if request_id is not None:
        attributes[traces.REQUEST_ID_KEY] = request_id
    return {"traceId": trace, "spanId": sid(n), "parentSpanId": sid(parent) if parent else "",
            "name": f"span{n}", "kind": "CLIENT", "startTimeUnixNano": start, "endTimeUnixNano": end,
            "attributes": attributes}


# -- TraceStore.add ------------------------------------------------------------------------------------------------

def test_a_batch_is_kept_and_stamped_with_the_proxy():
    store = traces.TraceStore()
    assert store.add("gw-v1.bookinfo", [span(n=1), span(n=2, parent=1, start=MS)]) == 2
    assert [s["spanId"] for s in store.trace(T1)] == [sid(1), sid(2)]
    assert {s["proxy"] for s in store.trace(T1)} == {"gw-v1.bookinfo"}
    assert store.received == 2 and store.dropped == 0


@pytest.mark.parametrize(("bad", "message"), [
    ("not a span", "expected an object"),
    ({**span(), "traceId": "1" * 31}, "traceId must be 32"),
    ({**span(), "traceId": "A" * 32}, "lower-case"),
    ({**span(), "traceId": "g" * 32}, "traceId"),
    ({**span(), "spanId": "1" * 17}, "spanId 16"),
    ({**span(), "spanId": None}, "spanId"),
    ({k: v for k, v in span().items() if k != "traceId"}, "traceId"),
    ({**span(), "parentSpanId": "xyz"}, "parentSpanId"),
    ({**span(), "startTimeUnixNano": "0"}, "integers"),
    ({**span(), "endTimeUnixNano": 1.5}, "integers"),
    ({**span(), "endTimeUnixNano": None}, "integers"),
    ({**span(), "startTimeUnixNano": 10, "endTimeUnixNano": 9}, "end >= start"),
    ({**span(), "attributes": ["a", "b"]}, "attributes must be an object"),
])
def test_a_malformed_span_refuses_the_whole_batch(bad, message):
    store = traces.TraceStore()
    good = span(T2, request_id="r-good")
    with pytest.raises(traces.SpanError, match=message) as caught:
        store.add("p", [good, bad])
    assert "spans[1]" in str(caught.value)
    assert store.trace(T2) == [] and store.trace_of_request("r-good") is None
    assert store.recent() == [] and store.received == 0


def test_too_many_spans_in_a_batch():
    store = traces.TraceStore()
    with pytest.raises(traces.SpanError, match=f"at most {traces.MAX_BATCH}"):
        store.add("p", [span(n=i + 1) for i in range(traces.MAX_BATCH + 1)])
    assert store.recent() == []


def test_a_zero_length_span_and_an_empty_batch_are_fine():
    store = traces.TraceStore()
    assert store.add("p", []) == 0
    assert store.add("p", iter([span(start=7, end=7)])) == 1


def test_an_id_with_a_trailing_newline_is_refused():
    with pytest.raises(traces.SpanError):
        traces.TraceStore().add("p", [{**span(), "traceId": T1 + "\n"}])


@pytest.mark.parametrize("batch", [5, None, True])
def test_a_batch_that_is_not_a_list_is_a_span_error(batch):
    with pytest.raises(traces.SpanError):
        traces.TraceStore().add("p", batch)


def test_boolean_times_are_refused():
    with pytest.raises(traces.SpanError):
        traces.TraceStore().add("p", [{**span(), "startTimeUnixNano": False, "endTimeUnixNano": True}])


# -- bounds and the request index ---------------------------------------------------------------------------------

def test_request_ids_find_their_trace():
    store = traces.TraceStore()
    store.add("p", [span(T1, request_id="r1"), span(T2, request_id="r2"), span(T2, n=2, request_id="")])
    assert store.trace_of_request("r1") == T1 and store.trace_of_request("r2") == T2
    assert store.trace_of_request("") is None and store.trace_of_request("nope") is None


def test_the_oldest_trace_is_evicted_with_its_request_index():
    store = traces.TraceStore(max_traces=2)
    store.add("p", [span(T1, request_id="r1")])
    store.add("p", [span(T2, request_id="r2")])
    store.add("p", [span(T1, n=2, parent=1)])  # touching T1 makes T2 the oldest
    store.add("p", [span(T3, request_id="r3")])
    assert store.trace(T2) == [] and store.trace_of_request("r2") is None
    assert store.trace_of_request("r1") == T1 and store.trace_of_request("r3") == T3
    assert [t["traceId"] for t in store.recent()] == [T3, T1]


def test_eviction_keeps_a_request_id_that_moved_to_a_newer_trace():
    store = traces.TraceStore(max_traces=1)
    store.add("p", [span(T1, request_id="r")])
    store.add("p", [span(T2, request_id="r")])  # evicts T1, whose "r" now names T2
    assert store.trace_of_request("r") == T2


def test_spans_beyond_the_per_trace_cap_are_counted_and_not_indexed():
    store = traces.TraceStore()
    cap = traces.MAX_SPANS_PER_TRACE
    assert store.add("p", [span(n=i + 1) for i in range(cap)]) == cap
    assert store.add("p", [span(n=cap + 1, request_id="late"), span(T2)]) == 1
    assert len(store.trace(T1)) == cap and store.dropped == 1 and store.received == cap + 1
    assert store.trace_of_request("late") is None


# -- reading -------------------------------------------------------------------------------------------------------

def test_trace_is_sorted_by_start_then_end():
    store = traces.TraceStore()
    store.add("p", [span(n=3, start=2 * MS, end=3 * MS), span(n=2, start=MS, end=9 * MS),
                    span(n=4, start=MS, end=2 * MS), span(n=1, start=0, end=10 * MS)])
    assert [s["spanId"] for s in store.trace(T1)] == [sid(1), sid(4), sid(2), sid(3)]
    assert store.trace("f" * 32) == []


def test_recent_summaries_newest_first():
    store = traces.TraceStore()
    store.add("p", [span(T1, n=2, parent=1, start=MS, end=3 * MS),
                    span(T1, n=1, start=500_000, end=4 * MS, request_id="r1")])
    store.add("p", [span(T2, n=7, parent=6, start=2 * MS, end=2 * MS + 1_234_567, request_id="child")])
    assert store.recent() == [
        {"traceId": T2, "root": "span7", "spans": 1, "durationMs": 1.235, "requestId": "child"},  # orphan: first
        {"traceId": T1, "root": "span1", "spans": 2, "durationMs": 3.5, "requestId": "r1"},
    ]
    assert [t["traceId"] for t in store.recent(limit=1)] == [T2]


def test_attributes_are_filtered():
    store = traces.TraceStore()
    attributes = {"s": "x", "i": 1, "f": 1.5, "b": True, "n": None, "list": [1], "dict": {"a": 1}, "k" * 100: "long"}
    attributes.update({f"a{i}": i for i in range(40)})
    store.add("p", [{**span(), "attributes": attributes, "name": "n" * 300, "kind": 2}])
    [kept] = store.trace(T1)
    assert kept["attributes"] == {"s": "x", "i": 1, "f": 1.5, "b": True, "n": None, "k" * 64: "long",
                                  **{f"a{i}": i for i in range(24)}}  # the first 32 keys, minus non-scalars
    assert kept["name"] == "n" * 256 and kept["kind"] == "2"


def test_missing_optional_fields_default():
    store = traces.TraceStore()
    store.add("p", [{"traceId": T1, "spanId": sid(1), "startTimeUnixNano": 1, "endTimeUnixNano": 2}])
    [kept] = store.trace(T1)
    assert (kept["parentSpanId"], kept["name"], kept["kind"], kept["attributes"]) == ("", "", "", {})


# -- HTTP: POST /v1/spans (mesh channel) and GET /v1/traces (meshctl API) ------------------------------------------

def test_spans_over_the_mesh_channel_then_read_back(tmp_path):
    async def scenario(h: meshchannel.Harness):
        anonymous = await h.client(None)
        resp = await anonymous.post("/v1/spans", json={"spans": [span()]})
        assert resp.status == 401 and (await resp.json())["error"].startswith("spans: ")
        assert h.control.traces.recent() == []

        gw = await h.client("bookinfo", "gw")
        resp = await gw.post("/v1/spans", json={"proxy": "gw-v1.bookinfo", "spans": [span(), {"traceId": "x"}]})
        assert resp.status == 400 and "spans[1]" in (await resp.json())["error"]
        resp = await gw.post("/v1/spans", data=b"{not json", headers={"content-type": "application/json"})
        assert resp.status == 400

        batch = [span(T1, n=2, parent=1, start=MS), span(T1, n=1, request_id="req-1")]
        resp = await gw.post("/v1/spans", json={"proxy": "gw-v1.bookinfo", "spans": batch})
        assert resp.status == 200 and await resp.json() == {"kept": 2}
        resp = await gw.post("/v1/spans", json={"spans": [span(T2)]})  # no proxy: the certificate names it
        assert await resp.json() == {"kept": 1}
        assert h.control.traces.trace(T2)[0]["proxy"] == "spiffe://cluster.local/ns/bookinfo/sa/gw"
        assert await (await gw.post("/v1/spans", json={})).json() == {"kept": 0}

        by_request = await h.api.get("/v1/traces", params={"request_id": "req-1"})
        body = await by_request.json()
        assert by_request.status == 200 and body["traceId"] == T1
        assert [s["spanId"] for s in body["spans"]] == [sid(1), sid(2)]
        by_trace = await (await h.api.get("/v1/traces", params={"trace_id": T1})).json()
        assert by_trace == body

        missing = await h.api.get("/v1/traces", params={"request_id": "nope"})
        assert missing.status == 404 and (await missing.json())["error"] == (
            f"no trace recorded for request id nope (sampled out, or older than the last {traces.MAX_TRACES} traces)")
        unknown = await h.api.get("/v1/traces", params={"trace_id": T3})
        assert unknown.status == 404 and (await unknown.json())["error"] == f"no trace {T3}"

        listing = await (await h.api.get("/v1/traces")).json()
        assert [(t["traceId"], t["spans"], t["requestId"]) for t in listing["traces"]] == [(T2, 1, None),
                                                                                           (T1, 2, "req-1")]

    meshchannel.run(scenario, tmp_path)


def test_a_batch_that_is_not_a_list_answers_400(tmp_path):
    async def scenario(h: meshchannel.Harness):
        resp = await (await h.client("bookinfo", "gw")).post("/v1/spans", json={"spans": 5})
        assert resp.status == 400

    meshchannel.run(scenario, tmp_path)


def test_an_empty_collector_lists_no_traces(tmp_path):
    async def scenario(h: meshchannel.Harness):
        resp = await h.api.get("/v1/traces")
        assert resp.status == 200 and await resp.json() == {"traces": []}

    meshchannel.run(scenario, tmp_path)
