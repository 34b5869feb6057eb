"""Access log lines: every field as the entry has it, whatever the fragment caches hold (`mesh.proxy.log_line`)."""

from __future__ import annotations

import datetime
import gc
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.proxy import log_line
from mesh.view import model
from tests.mesh.proxy.implementations import implementation  # noqa: F401  (autouse: both run)

BASE = int(datetime.datetime(2026, 11, 26, 4, 0, tzinfo=datetime.UTC).timestamp())
CLUSTER = "outbound|9080|v1|books.bookinfo.svc.cluster.local"
T = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = (T.encode(), b"", False, b"b7ad6b7169203331", False)  # a tracing.Span: ids as ASCII bytes


def entry(**changes):
    fields = dict(wall=BASE + 0.125, duration_s=0.25, direction="outbound", method="GET", path="/books",
                  status=200, flag="-", received=0, sent=512, endpoint=model.Endpoint("127.0.0.1", 21031),
                  cluster=CLUSTER, principal=None, remote="10.0.0.9", trace=SPAN, authority=b"books:9080",
                  request_id=b"req-1", user_agent=b"curl/8")
    fields.update(changes)
    return tuple(fields[name] for name in log_line.ENTRY_FIELDS)


def text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def latin(value: str | None) -> bytes | None:
    return value.encode("latin-1") if value is not None else None


def iso(wall: float) -> str:
    """Envoy's start time: ISO 8601 in UTC, milliseconds truncated."""
    moment = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def expected(e: tuple, workload: str = "gw-v1") -> dict:
    """The line's fields, written the slow and obvious way."""
    f = dict(zip(log_line.ENTRY_FIELDS, e, strict=True))
    endpoint = f["endpoint"]
    return {"start_time": iso(f["wall"]), "method": f["method"], "path": f["path"], "protocol": "HTTP/1.1",
            "response_code": f["status"], "response_flags": f["flag"], "bytes_received": f["received"],
            "bytes_sent": f["sent"], "duration": int(f["duration_s"] * 1000), "request_id": text(f["request_id"]),
            "trace_id": f["trace"][0].decode() if f["trace"] else None,
            "upstream_host": f"{endpoint.address}:{endpoint.port}" if endpoint else None,
            "upstream_cluster": f["cluster"] or None, "authority": text(f["authority"]),
            "user_agent": text(f["user_agent"]), "downstream_remote_address": f["remote"] or None,
            "downstream_peer_principal": f["principal"] or None, "direction": f["direction"], "workload": workload}


def test_a_line_has_envoys_fields_and_ends_the_line():
    text = log_line.LineFormat("gw-v1").line(entry())
    assert text.endswith(b"}\n") and text.count(b"\n") == 1
    assert json.loads(text) == expected(entry())


@pytest.mark.parametrize(("fraction", "text"), [(0.0, ".000Z"), (0.0625, ".062Z"), (0.5, ".500Z"), (0.9999, ".999Z")])
def test_start_time_milliseconds_are_truncated_like_envoys(fraction, text):
    line = json.loads(log_line.LineFormat("w").line(entry(wall=BASE + fraction)))
    assert line["start_time"] == "2026-11-26T04:00:00" + text


def test_a_batch_across_seconds_gives_each_line_its_own_start_time():
    walls = [BASE + 0.5, BASE + 1.25, BASE + 0.75, BASE + 61.0625, BASE + 61.125]  # fractions exact in binary
    text = log_line.LineFormat("w").lines([entry(wall=wall) for wall in walls])
    assert [json.loads(line)["start_time"] for line in text.splitlines()] == [iso(wall) for wall in walls]


# One formatter for every example: what one request left in the caches must never show in another's line.
SHARED = log_line.LineFormat("gw-v1")
client_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=12)
made_name = st.sampled_from(["", "a", "outbound|9080||up.default.svc.cluster.local"])


@settings(max_examples=300)
@given(method=st.sampled_from(["GET", "POST"]), path=st.sampled_from(["/", "/books", '/q"\\\x01é']),
       status=st.sampled_from([200, 404, 503]), flag=st.sampled_from(["-", "UH", "NR"]),
       received=st.integers(0, 3), sent=st.integers(0, 3), port=st.sampled_from([None, 1, 2]),
       cluster=made_name, principal=st.sampled_from([None, "spiffe://cluster.local/ns/a/sa/b", 'spiffe://x","evil":"1']),
       remote=st.sampled_from(["", "10.0.0.9"]), traced=st.booleans(),
       authority=client_text, request_id=st.one_of(st.none(), client_text),
       user_agent=st.one_of(st.none(), client_text), direction=st.sampled_from(model.DIRECTIONS),
       millis=st.integers(0, 5_000), duration_ms=st.integers(0, 3_000))
def test_every_field_is_the_entrys_own_whatever_the_caches_hold(method, path, status, flag, received, sent, port,
                                                                   cluster, principal, remote, traced, authority,
                                                                   request_id, user_agent, direction, millis,
                                                                   duration_ms):
    e = entry(method=method, path=path, status=status, flag=flag, received=received, sent=sent,
              endpoint=model.Endpoint("127.0.0.1", port) if port else None, cluster=cluster, principal=principal,
              remote=remote, trace=SPAN if traced else None, authority=latin(authority),
              request_id=latin(request_id), user_agent=latin(user_agent), direction=direction,
              wall=BASE + millis / 1000 + 0.0001, duration_s=duration_ms / 1000 + 0.0001)
    text = SHARED.line(e)
    assert text.isascii() and json.loads(text) == expected(e)  # client bytes past 0x7f: escaped, not encoded


def test_the_caches_are_bounded(monkeypatch):
    monkeypatch.setattr(log_line, "MAX_CACHED", 3)
    fmt = log_line.LineFormat("gw-v1")
    for port in range(1, 11):
        e = entry(path=f"/r{port}", endpoint=model.Endpoint("127.0.0.1", port))
        assert json.loads(fmt.line(e)) == expected(e)
    assert len(fmt._cached) <= 3 and len(fmt._endpoints) <= 3


def test_an_endpoint_gone_cannot_lend_its_cached_fields_to_a_new_one_at_the_same_address_in_memory():
    """The cache names an endpoint by id(); an endpoint freed while its key is cached could hand its id
    to the next one, and its upstream_host with it. The cache keeps its endpoints alive instead."""
    fmt = log_line.LineFormat("gw-v1")
    hosts = []
    for port in range(1, 50):
        fmt.line(entry(endpoint=model.Endpoint("127.0.0.1", port)))  # the endpoint is dropped right after
        gc.collect()
        hosts.append(json.loads(fmt.line(entry(endpoint=model.Endpoint("127.0.0.1", port + 1000))))["upstream_host"])
    assert hosts == [f"127.0.0.1:{port + 1000}" for port in range(1, 50)]


def test_a_long_set_of_client_fields_is_formatted_each_time_not_kept(monkeypatch):
    fmt = log_line.LineFormat("gw-v1")
    long_path = "/" + "\u00e9" * 400  # escaped, six times longer: past MAX_CACHED_TEXT
    e = entry(path=long_path, user_agent=b"\xe9" * 300)
    assert json.loads(fmt.line(e)) == expected(e) and fmt._cached == {} and fmt._endpoints == []
    fmt.line(entry())
    assert len(fmt._cached) == 1


def test_a_principal_from_a_client_certificate_cannot_break_the_line():
    principal = 'spiffe://x","evil":"1\\'
    text = log_line.LineFormat("gw-v1").line(entry(principal=principal))
    assert text.isascii()  # escaped: the bytes written are the text, whatever the log's reader decodes
    line = json.loads(text)
    assert line["downstream_peer_principal"] == principal and "evil" not in line
