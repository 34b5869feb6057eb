"""Hostile HTTP (issue 8) over mock transports: each vector of bench/hostile_vectors.py is refused with its
status (never forwarded, counted, connection closed) or normalised into one unambiguous upstream request;
and the downstream timeouts (mesh.proxy.request_limits) on the fake clock: slow headers, slow body, idle
keep-alive, and the optional request body limit."""

from __future__ import annotations

import httptools
import pytest

from bench.hostile_vectors import BODY_LIMIT, BY_NAME, FORWARDED, VECTORS
from mesh.proxy import downstream, replies, request_limits
from mesh.proxy.downstream import MAX_HEADER_BYTES
from tests.mesh.proxy.fakes import Proxy, bookinfo_view, parse_requests, settle

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
GET_BOOKS = b"GET /books HTTP/1.1\r\nHost: books:9080\r\n\r\n"
# Request headers that must never reach an upstream: hop-by-hop, or framing we re-decide.
NEVER_FORWARDED = {"upgrade", "connection", "expect", "te", "http2-settings", "keep-alive", "proxy-connection"}
LIMITS = request_limits.Limits(headers_timeout_s=10.0, body_timeout_s=30.0, idle_timeout_s=60.0)


def proxy_with(limits: request_limits.Limits = LIMITS) -> Proxy:
    proxy = Proxy(bookinfo_view())
    proxy.runtime.limits = limits
    return proxy


async def answer_all(proxy: Proxy) -> None:
    """Answer every request that reaches an upstream, until no new one arrives."""
    answered: dict[int, int] = {}
    for _ in range(10):
        await settle()
        progress = False
        for index, up in enumerate(proxy.upstreams):
            got = len(up.requests())
            while answered.get(index, 0) < got and not up.transport.closed:
                answered[index] = answered.get(index, 0) + 1
                up.respond(OK)
                progress = True
        if not progress:
            return


def counters(proxy: Proxy, name: str, **labels: str) -> float:
    return proxy.runtime.counters.get(name, **labels)


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.expect != FORWARDED], ids=lambda v: v.name)
async def test_each_refused_vector_gets_its_status_is_counted_and_never_forwarded(vector):
    proxy = proxy_with(request_limits.Limits(max_body_bytes=BODY_LIMIT))
    client = proxy.client()
    for i in range(0, len(vector.data), 4096):
        client.send(vector.data[i:i + 4096])
    await settle()
    (response,) = client.responses()
    assert int(response.first) == vector.expect
    assert response.header("connection") == "close" and client.transport.closed
    assert all(up.transport.data == b"" for up in proxy.upstreams), "nothing of a refused request goes upstream"
    assert counters(proxy, "downstream_rq_rejected_total", code=str(vector.expect)) == 1


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.expect == FORWARDED], ids=lambda v: v.name)
async def test_each_forwarded_vector_is_normalised_into_unambiguous_requests(vector):
    proxy = proxy_with()
    client = proxy.client()
    client.send(vector.data)
    await answer_all(proxy)
    sent = [request for up in proxy.upstreams for request in parse_requests(up.transport.data)]
    assert len(sent) == vector.requests and all(r.complete for r in sent)
    for request in sent:
        names = {name for name, _ in request.headers}
        assert not names & NEVER_FORWARDED
        assert len(request.all("content-length") + request.all("transfer-encoding")) <= 1, "one framing only"
        assert request.all("transfer-encoding") in ([], ["chunked"])
        assert len(request.all("host")) == 1
    statuses = [r.first for r in client.responses() if r.first != "100"]
    assert statuses[:vector.requests] == ["200"] * vector.requests


async def test_normalised_bodies_keep_their_bytes_and_drop_extensions_and_trailers():
    for name, body in (("chunk-extension", b"abc"), ("chunk-trailer", b"abc"), ("te-uppercase", b"abc"),
                       ("expect-100-continue", b"abc")):
        proxy = proxy_with()
        client = proxy.client()
        client.send(BY_NAME[name].data)
        await answer_all(proxy)
        (request,) = proxy.upstreams[0].requests()
        assert request.body == body, name
        assert b"name=value" not in proxy.upstreams[0].transport.data
        assert b"x-trailer" not in proxy.upstreams[0].transport.data.lower()


async def test_a_chunked_bodys_trailers_never_become_the_next_pipelined_requests_headers():
    proxy = proxy_with()
    client = proxy.client()
    client.send(b"POST /one HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\nX-Injected: 1\r\nAuthorization: Bearer stolen\r\n\r\n"
                b"GET /two HTTP/1.1\r\nHost: books:9080\r\n\r\n")
    await answer_all(proxy)
    requests = [request for up in proxy.upstreams for request in up.requests()]
    assert [r.first for r in requests] == ["POST /one", "GET /two"]
    assert all(r.header("x-injected") is None and r.header("authorization") is None for r in requests)


class FedBytes:
    """A connection's parser, counting the bytes fed to it."""

    def __init__(self, parser) -> None:
        self.parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.parser.feed_data(data)

    def __getattr__(self, name: str):
        return getattr(self.parser, name)


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\nHost: books:9080\r\nX-Endless: ",
                                   b"GET / HTTP/1.1\r\nHost: books:9080\r\nX-Endless-Name-"],
                         ids=["value", "name"])
async def test_a_header_line_that_never_ends_is_refused_before_it_is_buffered(start):
    """httptools keeps a header's name and value until the line ends: 10 MiB of one value would all be held
    (and copied at each read) before any callback could refuse it."""
    proxy = proxy_with()
    client = proxy.client()
    client.conn.parser = counting = FedBytes(client.conn.parser)
    client.send(start)
    for _ in range(160):  # 10 MiB in 64 KiB reads
        if client.transport.closed:
            break
        client.send(b"a" * 65536)
    assert [r.first for r in client.responses()] == ["431"] and client.transport.closed
    assert counting.fed <= len(start) + downstream.MAX_HEAD_BYTES + 65536  # at most one read past the bound
    assert proxy.upstreams == []


async def test_a_head_just_under_the_limits_in_many_reads_is_served():
    proxy = proxy_with()
    client = proxy.client()
    head = (b"GET /" + b"u" * (downstream.MAX_URL_BYTES - 2) + b" HTTP/1.1\r\nHost: books:9080\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 590) for i in range(99)) + b"\r\n")
    for i in range(0, len(head), 1000):
        client.send(head[i:i + 1000])
    await answer_all(proxy)
    assert [r.first for r in client.responses()] == ["200"]


async def test_a_trailer_line_that_never_ends_is_refused_before_it_is_buffered():
    proxy = proxy_with()
    client = proxy.client()
    client.conn.parser = counting = FedBytes(client.conn.parser)
    start = (b"POST /one HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
             b"X-Endless: ")
    client.send(start)
    for _ in range(160):  # 10 MiB in 64 KiB reads
        if client.transport.closed:
            break
        client.send(b"a" * 65536)
    assert client.transport.closed and [r.first for r in client.responses()][-1] == "431"
    assert counting.fed <= len(start) + MAX_HEADER_BYTES + 65536


async def test_large_chunks_in_many_reads_are_not_taken_for_trailers():
    proxy = proxy_with()
    client = proxy.client()
    client.send(b"POST /one HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(4):  # 4 chunks of 256 KiB, each header in its own read, the data in 64 KiB reads
        client.send(b"40000\r\n")
        for _ in range(4):
            client.send(b"d" * 65536)
        client.send(b"\r\n")
    client.send(b"0\r\n\r\n")
    await answer_all(proxy)
    (request,) = proxy.upstreams[0].requests()
    assert len(request.body) == 4 * 262144 and [r.first for r in client.responses()] == ["200"]


async def test_trailers_are_held_to_the_header_budget():
    proxy = proxy_with()
    client = proxy.client()
    big = b"x-pad: " + b"p" * 1000 + b"\r\n"
    client.send(b"POST /one HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
                + big * (MAX_HEADER_BYTES // 1000 + 1) + b"\r\n")
    await answer_all(proxy)
    assert [r.first for r in client.responses()][-1] == "431" and client.transport.closed


@pytest.mark.parametrize("cut", [None, "after-upgrade-request"])
async def test_bytes_after_an_upgrade_request_are_the_next_request_however_they_arrive(cut):
    data = BY_NAME["upgrade-then-request"].data
    proxy = proxy_with()
    client = proxy.client()
    if cut is None:
        client.send(data)
    else:
        split = data.index(b"GET /next")
        client.send(data[:split])
        await settle()
        client.send(data[split:])
    await answer_all(proxy)
    sent = [r.first for up in proxy.upstreams for r in up.requests()]
    assert sent == ["GET /", "GET /next"]
    assert [r.first for r in client.responses()] == ["200", "200"]
    assert not client.transport.closed


async def test_a_pipeline_ending_in_garbage_answers_the_good_request_then_400():
    proxy = proxy_with()
    client = proxy.client()
    client.send(BY_NAME["pipelined-then-garbage"].data)
    await answer_all(proxy)
    assert [r.first for r in client.responses()] == ["200", "400"]
    assert client.transport.closed
    assert counters(proxy, "downstream_rq_rejected_total", code="400") == 1


CHUNKED_POST = b"POST /books HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("bad_body, status", [(b"b\r\nhello world\r\n", "413"), (b"zz\r\nhello\r\n", "400")],
                         ids=["over-the-limit", "bad-chunk-size"])
@pytest.mark.parametrize("answer_started", [False, True], ids=["waiting", "answer-started"])
async def test_a_queued_requests_bad_body_is_answered_after_the_earlier_request(bad_body, status, answer_started):
    proxy = proxy_with(request_limits.Limits(max_body_bytes=10))
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (up,) = proxy.upstreams
    if answer_started:
        up.respond(OK[:-2])  # the head and no body yet
    client.send(CHUNKED_POST + bad_body)  # pipelined behind the GET in flight
    await settle()
    assert not up.transport.closed, "the earlier, well-formed request is not aborted"
    up.respond(OK[-2:] if answer_started else OK)
    await settle()
    responses = client.responses()
    assert [r.first for r in responses] == ["200", status] and responses[0].body == b"ok"
    assert client.transport.closed
    assert [r.first for r in up.requests()] == ["GET /books"], "the bad request is never forwarded"
    assert counters(proxy, "downstream_rq_rejected_total", code=status) == 1


async def test_absolute_form_sends_origin_form_with_the_urls_authority_as_host():
    proxy = proxy_with()
    client = proxy.client()
    client.send(BY_NAME["absolute-form"].data)
    await settle()
    (request,) = proxy.upstreams[0].requests()
    assert (request.first, request.all("host")) == ("GET /x?y=1", ["up:9080"])


async def test_expect_100_continue_is_not_sent_when_the_body_is_over_the_limit():
    proxy = proxy_with(request_limits.Limits(max_body_bytes=10))
    client = proxy.client()
    client.send(b"PUT / HTTP/1.1\r\nHost: books:9080\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    await settle()
    assert [r.first for r in client.responses()] == ["413"]
    assert proxy.upstreams == [] and client.transport.closed


async def test_a_body_over_the_limit_after_forwarding_started_resets_the_upstream_and_answers_413():
    proxy = proxy_with(request_limits.Limits(max_body_bytes=10))
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await settle()
    (up,) = proxy.upstreams
    assert up.transport.data.endswith(b"5\r\nhello\r\n"), "the head and first chunk are on their way"
    client.send(b"6\r\n world\r\n0\r\n\r\n")
    await settle()
    assert up.transport.closed, "the upstream sees a truncated chunked body, never a complete one"
    assert b"0\r\n\r\n" not in up.transport.data
    assert [r.first for r in client.responses()] == ["413"] and client.transport.closed
    assert counters(proxy, "downstream_rq_rejected_total", code="413") == 1


async def test_a_body_at_the_limit_is_forwarded():
    proxy = proxy_with(request_limits.Limits(max_body_bytes=11))
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 11\r\n\r\nhello world")
    await settle()
    (request,) = proxy.upstreams[0].requests()
    assert request.body == b"hello world"


# -- timeouts on the fake clock --------------------------------------------------------------------------------
async def test_slow_headers_get_408_at_the_deadline_however_slowly_bytes_keep_coming():
    proxy = proxy_with()
    client = proxy.client()
    for piece in (b"GET /books HTTP/1.1\r\n", b"Host: books:9080\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n"):
        client.send(piece)
        proxy.net.advance(2.4)  # a byte now and then never extends the deadline
    assert client.responses() == [] and not client.transport.closed
    proxy.net.advance(0.5)
    (response,) = client.responses()
    assert (response.first, response.header("connection")) == ("408", "close")
    assert client.transport.closed and proxy.upstreams == []
    assert counters(proxy, "downstream_rq_header_timeout_total") == 1
    assert counters(proxy, "downstream_rq_rejected_total", code="408") == 1


async def test_a_connection_that_never_sends_a_byte_is_closed_silently_after_the_headers_timeout():
    proxy = proxy_with()
    client = proxy.client()
    proxy.net.advance(9.9)
    assert not client.transport.closed
    proxy.net.advance(0.2)
    assert client.transport.closed and client.transport.data == b""
    assert counters(proxy, "downstream_rq_header_timeout_total") == 1
    assert counters(proxy, "downstream_rq_rejected_total", code="408") == 0


async def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_while_busy():
    proxy = proxy_with()
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.net.advance(120.0)  # an answer that takes long is the route timeout's business, not ours
    assert not client.transport.closed
    proxy.upstreams[0].respond(OK)
    proxy.net.advance(59.0)
    client.send(GET_BOOKS)  # a new request in time: the idle clock starts again after it
    await settle()
    proxy.upstreams[0].respond(OK)
    proxy.net.advance(59.0)
    assert not client.transport.closed
    proxy.net.advance(1.5)
    assert client.transport.closed
    assert [r.first for r in client.responses()] == ["200", "200"]
    assert counters(proxy, "downstream_cx_idle_timeout_total") == 1


async def test_partial_next_request_on_a_keep_alive_connection_gets_the_headers_timeout():
    proxy = proxy_with()
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(OK)
    proxy.net.advance(30.0)
    client.send(b"GET /books HTTP/1.1\r\n")
    proxy.net.advance(10.5)
    assert [r.first for r in client.responses()] == ["200", "408"] and client.transport.closed


async def test_a_stalled_request_body_gets_408_and_the_upstream_is_not_reused():
    proxy = proxy_with()
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 10\r\n\r\nhel")
    await settle()
    (up,) = proxy.upstreams
    for _ in range(3):
        proxy.net.advance(20.0)  # some bytes within each body timeout: the clock restarts
        client.send(b"l")
    assert not client.transport.closed
    proxy.net.advance(30.5)
    assert [r.first for r in client.responses()] == ["408"] and client.transport.closed
    assert up.transport.closed
    assert counters(proxy, "downstream_rq_body_timeout_total") == 1


async def test_the_body_timeout_does_not_count_while_the_proxy_is_not_reading():
    proxy = proxy_with()
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 10\r\n\r\nhel")
    await settle()
    client.conn.pause_reading(client.conn.UPSTREAM_FULL)  # flow control: the upstream is slow to take the body
    proxy.net.advance(100.0)
    assert not client.transport.closed
    client.conn.resume_reading(client.conn.UPSTREAM_FULL)
    proxy.net.advance(29.0)
    assert not client.transport.closed
    proxy.net.advance(32.0)
    assert client.transport.closed


async def test_a_partial_head_pipelined_behind_a_busy_request_gets_the_headers_timeout_after_it():
    proxy = proxy_with()
    client = proxy.client()
    client.send(GET_BOOKS + b"GE")  # the next request's first bytes, behind one in flight
    await settle()
    proxy.net.advance(50.0)  # the busy request's wait is not the next head's
    proxy.upstreams[0].respond(OK)
    proxy.net.advance(9.9)
    assert [r.first for r in client.responses()] == ["200"] and not client.transport.closed
    proxy.net.advance(0.2)
    assert [r.first for r in client.responses()] == ["200", "408"] and client.transport.closed


def armed(proxy: Proxy) -> list:
    return [timer for timer in proxy.net.timers if not timer.cancelled]


async def test_keep_alive_requests_do_no_timer_work_and_a_busy_connection_has_no_timer():
    proxy = proxy_with()
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    (up,) = proxy.upstreams
    up.respond(OK)
    created = len(proxy.net.timers)
    for _ in range(50):
        client.send(GET_BOOKS)
        up.respond(OK)
    assert len(proxy.net.timers) == created, "a keep-alive request whose head comes whole sets no timer"
    client.send(GET_BOOKS)
    proxy.net.advance(300.0)  # a long answer: the timer wakes once, sees the request in flight, sleeps
    assert armed(proxy) == [] and not client.transport.closed
    up.respond(OK)
    (timer,) = armed(proxy)
    assert timer.when == proxy.net.now + LIMITS.idle_timeout_s
    assert [r.first for r in client.responses()] == ["200"] * 52


async def test_timeouts_set_to_zero_are_off():
    proxy = proxy_with(request_limits.Limits(headers_timeout_s=0, body_timeout_s=0, idle_timeout_s=0))
    client = proxy.client()
    client.send(b"GET / HTTP/1.1\r\n")
    proxy.net.advance(10_000.0)
    assert not client.transport.closed and proxy.net.timers == []


async def test_a_closed_connection_leaves_no_timer_behind():
    proxy = proxy_with()
    client = proxy.client()
    client.send(GET_BOOKS)
    await settle()
    proxy.upstreams[0].respond(OK)
    client.conn.connection_lost(None)
    assert all(timer.cancelled for timer in proxy.net.timers)


def test_limits_describe_themselves():
    assert repr(request_limits.Limits(max_body_bytes=5)) == "<Limits headers=10.0s body=30.0s idle=120.0s max_body=5>"


async def test_headers_named_in_connection_are_dropped_before_forwarding():
    proxy = proxy_with()
    client = proxy.client()
    client.send(BY_NAME["connection-nominates-header"].data)
    await settle()
    (request,) = proxy.upstreams[0].requests()
    assert request.header("x-secret") is None and request.header("connection") is None


@pytest.mark.parametrize("target, host", [(b"http://[::1]:9080/x", "[::1]:9080"), (b"http://up/x", "up"),
                                          (b"HTTP://UP:9080/x", "UP:9080")])
async def test_absolute_form_authorities_become_the_host_header(target, host):
    proxy = proxy_with()
    client = proxy.client()
    client.send(b"GET " + target + b" HTTP/1.1\r\nHost: other\r\n\r\n")
    await settle()
    (request,) = proxy.upstreams[0].requests()
    assert (request.first, request.all("host")) == ("GET /x", [host])


@pytest.mark.parametrize("connection, dropped", [
    (b"close", False), (b"keep-alive", False), (b"Keep-Alive", False), (b"close, x-secret", True),
    (b"Keep-Alive, X-Secret", True), (b"x-secret", True)])
def test_read_head_drops_only_the_headers_connection_nominates(connection, dropped):
    headers = [(b"host", b"books"), (b"connection", connection), (b"x-secret", b"1")]
    request_limits.read_head("GET", "1.1", b"/", headers, 0)
    assert ((b"x-secret", b"1") not in headers) == dropped
    assert (b"connection", connection) in headers  # hop-by-hop itself: mesh.proxy.headers drops it


@pytest.mark.parametrize("headers, error", [
    ([(b"transfer-encoding", b"")], replies.TransferEncodingNotImplemented),  # present, even empty: not chunked
    ([(b"transfer-encoding", b"gzip")], replies.TransferEncodingNotImplemented),
    ([(b"content-length", b"5")], None)])
def test_read_head_frames_a_body_whenever_a_framing_header_is_present(headers, error):
    head = [(b"host", b"books"), *headers]
    if error is not None:
        with pytest.raises(error):
            request_limits.read_head("POST", "1.1", b"/", head, 0)
    else:
        assert request_limits.read_head("POST", "1.1", b"/", head, 0)[2:4] == (False, True)


@pytest.mark.parametrize("version", [b"1.1", b"1.0", b"0.9", b"2.0"])
@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n", b"Proxy-Connection: keep-alive\r\n",
                                        b"Connection: close\r\n", b"connection: Upgrade, Keep-Alive\r\n",
                                        b"Keep-Alive: timeout=5\r\n"])
def test_http_version_says_what_the_parser_says_without_asking_it_for_a_kept_alive_request(version, connection):
    seen = []

    class Head:
        headers: list = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

        def on_headers_complete(self) -> None:
            keep_alive = parser.should_keep_alive()
            seen.append((request_limits.http_version(parser, keep_alive, self.headers), parser.get_http_version()))

    parser = httptools.HttpRequestParser(Head())
    parser.feed_data(b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + connection + b"\r\n")
    ((said, parsed),) = seen
    assert said == parsed == version.decode()


async def test_a_head_split_over_reads_then_its_body_is_served():
    """The head bound counts a read only when the whole read went to the head: here the second read ends
    the head and carries 200 KB of body."""
    proxy = proxy_with()
    client = proxy.client()
    client.send(b"POST /books HTTP/1.1\r\nHost: books:9080\r\nContent-Length: 200000\r\n")
    client.send(b"\r\n" + b"b" * 200000)
    await answer_all(proxy)
    (request,) = proxy.upstreams[0].requests()
    assert len(request.body) == 200000 and [r.first for r in client.responses()] == ["200"]


async def test_a_chunked_upload_whose_reads_straddle_chunks_is_served():
    proxy = proxy_with()
    client = proxy.client()
    client.send(b"POST /one HTTP/1.1\r\nHost: books:9080\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n")
    client.send(b"d" * 65536 + b"\r\n10000\r\n")  # a chunk's data, its end and the next chunk's header
    client.send(b"e" * 65536 + b"\r\n0\r\n\r\n")
    await answer_all(proxy)
    (request,) = proxy.upstreams[0].requests()
    assert len(request.body) == 131072 and [r.first for r in client.responses()] == ["200"]
