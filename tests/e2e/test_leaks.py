"""End to end, issue 8 part 5: no descriptor or memory leak, and bounded memory under slow peers.

- Connection churn: `WEIR_LEAK_CONNECTIONS` connections (20k by default, about 25 s; the issue's 100k is
  a manual run: `WEIR_LEAK_CONNECTIONS=100000 pytest --timeout 600 -s ...`) opened and closed through one
  sidecar, one request each, ended in three ways (the client after the answer, the proxy on
  `connection: close`, the client resetting before the answer): the sidecar's descriptors, less its pooled
  upstream connections, return to their warm baseline and its RSS grows by less than `RSS_SLACK`.
- A slow mirror target (ratings v2 delayed far beyond the mirror timeout) under load: clients see no
  error, copies in flight stay at `mesh.proxy.mirror.MAX_MIRRORS_IN_FLIGHT` with the excess counted as
  overflow, and the mirroring sidecar's memory stays bounded.
- Slow clients: many clients that do not read a large response: the sidecar pauses reading the upstream
  (flow control), its memory stays bounded, and other clients are served meanwhile.
Figures are printed (`pytest -s`) for the issue's record.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mesh.proxy import mirror
from tests.e2e.conftest import running_mesh
from tests.e2e.load import Load
from tests.e2e.observe import (
    SERVED_WITHIN_S,
    admin_port,
    fds,
    metric,
    pools_to,
    process,
    report,
    rss,
    scrape,
    settle,
    sockets_to,
)

pytestmark = pytest.mark.e2e

CONNECTIONS = int(os.environ.get("WEIR_LEAK_CONNECTIONS", "12000"))
CONCURRENCY = 32  # clients at a time during the churn
WARMUP = 2000  # connections before the baseline: pools, caches and the allocator reach their steady state
RSS_SLACK = 10 * 1024 * 1024  # bytes a sidecar may grow over its warm baseline after the churn
FD_SLACK = 4  # descriptors over the baseline (an idle pooled connection more or less)
# Churn connections a loaded CI machine may lose on the client side (a 10 s client timeout, a connect
# refused at a full backlog): never an error answer, and the proxy still counts each one it accepted.
CHURN_CLIENT_FAILURES = max(3, CONNECTIONS // 1000)
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running_mesh(tmp_path_factory.mktemp("leaks"), stack="leaks") as mesh:
        yield mesh


# -- connection churn ----------------------------------------------------------------------------------------

KEEP, CLOSE, ABANDON = "keep", "close", "abandon"
LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
WAYS = (KEEP, CLOSE, KEEP, ABANDON)  # how connection i ends: WAYS[i % len(WAYS)]


async def one_connection(port: int, way: str) -> int | str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        close = b"connection: close\r\n" if way == CLOSE else b""
        writer.write(b"GET /ratings/1 HTTP/1.1\r\nhost: ratings:9080\r\n%b\r\n" % close)
        if way == ABANDON:
            return way
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        if way == CLOSE:
            assert await reader.read(1) == b""  # the proxy closes after a `connection: close` request
        return int(head[9:12])
    finally:
        if way == ABANDON:  # abortive close (a client that crashed): RST, and no TIME_WAIT left behind
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def churn(port: int, count: int, concurrency: int = CONCURRENCY) -> Counter:
    outcomes: Counter = Counter()
    indices = iter(range(count))

    async def worker() -> None:
        for i in indices:
            try:
                outcomes[await asyncio.wait_for(one_connection(port, WAYS[i % len(WAYS)]), 10)] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def unpooled_fds(mesh, workload: str, pid: int) -> tuple[int, int]:
    """(descriptors that are not pooled upstream connections, pooled ones): the first must come back to
    its baseline exactly; the second is bounded by the pool and varies with the last burst's concurrency."""
    text = scrape(mesh, workload)
    pooled = int(metric(text, "weir_upstream_cx_idle") + metric(text, "weir_upstream_cx_active"))
    return fds(pid) - pooled, pooled


def plain_inbound_connections(mesh, workload: str) -> tuple[float, float]:
    """(opened, closed) plaintext connections the workload's sidecar accepted on its inbound listener."""
    text = scrape(mesh, workload)
    labels = ('reporter="destination"', 'connection_security_policy="none"')
    return (metric(text, "istio_tcp_connections_opened_total", *labels),
            metric(text, "istio_tcp_connections_closed_total", *labels))


def test_opening_and_closing_many_connections_leaks_no_descriptor_and_little_memory(mesh):
    sidecar = process(mesh, "ratings-v1.proxy")
    pid, port = sidecar["pid"], sidecar["ports"]["inbound"]
    asyncio.run(churn(port, WARMUP))
    time.sleep(1)
    (fd_base, _), rss_base = unpooled_fds(mesh, "ratings-v1", pid), rss(pid)
    opened_base, closed_base = plain_inbound_connections(mesh, "ratings-v1")
    started = time.monotonic()
    outcomes = asyncio.run(churn(port, CONNECTIONS))
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 10
    while (fd_after := unpooled_fds(mesh, "ratings-v1", pid))[0] > fd_base and time.monotonic() < deadline:
        time.sleep(0.2)  # connections the clients reset are still being torn down
    rss_after = rss(pid)
    opened, closed = plain_inbound_connections(mesh, "ratings-v1")
    report("churn", connections=CONNECTIONS, seconds=f"{elapsed:.1f}", per_s=f"{CONNECTIONS / elapsed:.0f}",
           outcomes=dict(outcomes), proxy_opened=opened - opened_base, proxy_open_now=opened - closed,
           unpooled_fds=f"{fd_base}->{fd_after[0]}", pooled=fd_after[1],
           rss_mib=f"{rss_base / MiB:.1f}->{rss_after / MiB:.1f}")
    answers = {status: n for status, n in outcomes.items() if isinstance(status, int)}
    failures = sum(n for way, n in outcomes.items() if not isinstance(way, int) and way != ABANDON)
    assert set(answers) == {200}, f"only 200s, no error answer: {outcomes}"
    assert failures <= CHURN_CLIENT_FAILURES, outcomes
    assert answers[200] >= CONNECTIONS * 3 // 4 - failures and outcomes[ABANDON] >= CONNECTIONS // 4 - failures
    # The proxy accepted every connection a client got through with, and has closed each one it accepted.
    assert CONNECTIONS - failures <= opened - opened_base <= CONNECTIONS, (opened - opened_base, outcomes)
    assert opened - closed <= opened_base - closed_base
    assert fd_after[0] <= fd_base
    # The pool keeps what its busiest moment needed: each client's live request, and each request a client
    # abandoned that the proxy had sent upstream before it read the reset. That connection is closed once
    # the reset is read (never reused), but meanwhile a new client's request may have opened one more. Without
    # abandons the pool ends at exactly CONCURRENCY; with them 23-32, and 37 once on a loaded CI machine.
    # A leak would grow with the abandons (a quarter of the connections); the bound allows each client two
    # upstream requests at once.
    assert fd_after[1] <= 2 * CONCURRENCY
    assert rss_after - rss_base < RSS_SLACK


# -- slow mirror -------------------------------------------------------------------------------------------


# The mirror's cluster (ratings, subset v2), as its pool to ratings v2 is named: under mTLS the pools of an
# endpoint are one per cluster SNI (Envoy's are per cluster), so the dump tells the mirror's connections apart
# from those other clusters keep to the same sidecar.
MIRROR_SNI = "outbound_.9080_.v2_.ratings.bookinfo.svc.cluster.local"


# Readings of the mirror's sockets per sample, of which the smallest counts (`mirror_sockets`).
READINGS = 3
READING_GAP_S = 0.02


def other_pools(admin: int, port: int) -> int:
    """Connections the proxy keeps to `port` in pools other than the mirror cluster's."""
    return sum(p["active"] + p["idle"] for p in pools_to(admin, port) if p["sni"] != MIRROR_SNI)


def mirror_sockets(admin: int, pid: int, port: int) -> tuple[int, int]:
    """(sockets of `pid` to `port` that no other cluster's pool accounts for, those the other pools hold),
    the smallest of READINGS readings a moment apart. A copy that times out leaves the mirror's pool at once
    and the next copy may open a connection, but its own socket closes only once the TLS shutdown (the
    close_notify each way) is done, a moment later: one reading can count that socket too (257 against the
    bound of 256, once in about ten runs). Sockets the mirror really holds are in every reading."""
    readings = []
    for _ in range(READINGS):
        readings.append(_mirror_sockets_once(admin, pid, port))
        time.sleep(READING_GAP_S)
    return min(readings)


def _mirror_sockets_once(admin: int, pid: int, port: int) -> tuple[int, int]:
    """One reading: the pools are read before and after the sockets, and the larger count taken, so that a
    connection another pool opens meanwhile is not charged to the mirror."""
    before = other_pools(admin, port)
    sockets = sockets_to(pid, port)
    others = max(before, other_pools(admin, port))
    return sockets - others, others


def test_a_slow_mirror_target_keeps_copies_in_flight_and_memory_bounded(mesh):
    mesh.apply("mirroring")
    mesh.wait_synced()
    pid, admin = process(mesh, "books-v1.proxy")["pid"], admin_port(mesh, "books-v1")
    target = process(mesh, "ratings-v2.proxy")["ports"]["inbound"]
    before, rss_base = scrape(mesh, "books-v1"), rss(pid)
    # The sockets to ratings v2 are the mirror's and those of other clusters' pools (the previous scenario's
    # round-robin leaves one idle in the `ratings` cluster's pool): the mirror's are what it must bound, so
    # each sample counts the other pools' from the proxy's own dump (`mirror_sockets`).
    mesh.meshctl("chaos", "ratings-v2", "--delay", "60")  # far past the mirror timeout: copies hang
    try:
        with Load(mesh.ingress + "/gateway/books", rate=80, workers=12) as load:
            peak_active, peak_rss, peak_sockets, peak_others, peak_pool = 0.0, 0, 0, 0, 0
            while load.now() < 6:
                time.sleep(0.5)
                peak_active = max(peak_active, metric(scrape(mesh, "books-v1"), "weir_mirror_requests_active"))
                mirror_now, others_now = mirror_sockets(admin, pid, target)
                pool_now = sum(p["active"] for p in pools_to(admin, target) if p["sni"] == MIRROR_SNI)
                peak_rss, peak_sockets = max(peak_rss, rss(pid)), max(peak_sockets, mirror_now)
                peak_others, peak_pool = max(peak_others, others_now), max(peak_pool, pool_now)
        after = scrape(mesh, "books-v1")
    finally:
        mesh.meshctl("chaos", "ratings-v2", "--reset")
    sent = metric(after, "weir_mirror_requests_total") - metric(before, "weir_mirror_requests_total")
    overflow = metric(after, "weir_mirror_overflow_total") - metric(before, "weir_mirror_overflow_total")
    report("slow mirror", rps=f"{load.rps():.1f}", statuses=dict(load.statuses()), mirrored=sent,
           overflow=overflow, peak_in_flight=peak_active, peak_sockets=peak_sockets, peak_pool=peak_pool,
           other_pools=peak_others, rss_mib=f"{rss_base / MiB:.1f}->{peak_rss / MiB:.1f}")
    assert load.failures() == []
    assert {a.books for a in load.snapshot()} == {"v1"}
    assert sent == mirror.MAX_MIRRORS_IN_FLIGHT and overflow > 0  # past the bound: skipped and counted
    assert peak_active <= mirror.MAX_MIRRORS_IN_FLIGHT
    assert peak_rss - rss_base < 4 * RSS_SLACK
    # The mirror's pool was found (the copies went through it) and neither it nor the kernel's count of the
    # sockets no other pool holds passed the bound.
    assert 0 < peak_pool <= mirror.MAX_MIRRORS_IN_FLIGHT
    assert peak_sockets <= mirror.MAX_MIRRORS_IN_FLIGHT
    # Cut at the mirror timeout: the copies end and their sockets to the mirror target close.
    deadline = time.monotonic() + mirror.MIRROR_TIMEOUT_S + 5
    while (mirror_sockets(admin, pid, target)[0] > 0
           or metric(scrape(mesh, "books-v1"), "weir_mirror_requests_active")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metric(scrape(mesh, "books-v1"), "weir_mirror_requests_active") == 0
    assert mirror_sockets(admin, pid, target)[0] <= 0
    mesh.apply("round-robin")
    mesh.wait_synced()


# -- slow clients ------------------------------------------------------------------------------------------

BIG = 8 * MiB  # one large-ish download
SLOW_CLIENTS = 32  # together they ask for 256 MiB; an unbounded proxy would buffer most of it


class _Big(BaseHTTPRequestHandler):
    chunk = b"x" * (256 * 1024)

    def do_GET(self):  # noqa: N802 - http.server's naming
        size = BIG if self.path == "/big" else 16
        self.send_response(200)
        self.send_header("content-length", str(size))
        self.end_headers()
        try:
            for _ in range(size // len(self.chunk)):
                self.wfile.write(self.chunk)
            self.wfile.write(b"x" * (size % len(self.chunk)))
        except OSError:
            pass  # the proxy let go of a response nobody read

    def log_message(self, *args):
        pass


def big_entry(port: int) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            "metadata: {name: big, namespace: bookinfo}\n"
            "spec:\n  hosts: [big.example.org]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n"
            "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
            f"  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n")


def slow_client(port: int) -> socket.socket:
    """A client with a tiny receive window that asks for /big and then does not read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET http://big.example.org/big HTTP/1.1\r\nhost: big.example.org\r\n\r\n")
    return sock


def quick_get(port: int, path: str) -> tuple[int, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET http://big.example.org%b HTTP/1.1\r\nhost: big.example.org\r\nconnection: close\r\n\r\n"
                     % path.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data[9:12]), time.monotonic() - started


def test_slow_clients_are_flow_controlled_and_others_still_served(mesh, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    entry = tmp_path / "big.yaml"
    entry.write_text(big_entry(server.server_address[1]))
    sidecar = process(mesh, "gw-v1.proxy")
    pid, port = sidecar["pid"], sidecar["ports"]["outbound"]
    clients: list[socket.socket] = []
    try:
        mesh.meshctl("apply", "-f", str(entry))
        mesh.wait_synced()
        baseline_status, baseline = quick_get(port, "/small")
        assert baseline_status == 200
        fd_base, rss_base = fds(pid), rss(pid)
        clients = [slow_client(port) for _ in range(SLOW_CLIENTS)]
        time.sleep(3)  # the upstream writes as fast as the proxy reads: any buffering shows by now
        rss_held = rss(pid)
        status, took = quick_get(port, "/small")  # a normal client, through the same sidecar
        served = mesh.get("/gateway/books")[0]
        report("slow clients", clients=SLOW_CLIENTS, asked_mib=SLOW_CLIENTS * BIG // MiB,
               rss_mib=f"{rss_base / MiB:.1f}->{rss_held / MiB:.1f}", normal_get_s=f"{baseline:.3f}->{took:.3f}")
        assert status == 200 and took < SERVED_WITHIN_S and served == 200
        assert rss_held - rss_base < 4 * RSS_SLACK
    finally:
        for sock in clients:
            sock.close()
        mesh.meshctl("delete", "-f", str(entry))
        server.shutdown()
        server.server_close()
    assert settle(pid, fd_base + FD_SLACK) <= fd_base + FD_SLACK  # both sides of each slow download closed
