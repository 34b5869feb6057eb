"""A closed connection is freed as it closes, by reference counting, with no garbage collection: no cycle
(protocol ↔ parser callbacks, timer, exchange) outlives it. A TLS connection holds ~300 KiB of uvloop and
OpenSSL buffers, so on a busy proxy, where full collections are rare, a cycle per dead connection was the
growth the soak showed (mesh.proxy.heap keeps collecting on a timer as a backstop)."""

from __future__ import annotations

import asyncio
import collections
import gc

import pytest

from mesh.view import security
from tests import pki
from tests.mesh.proxy import tlsnet

CONNECTION_TYPES = ("DownstreamConnection", "SecureDownstream", "UpstreamConnection", "Exchange", "SSLProtocol")


def alive() -> dict[str, int]:
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return {name: counts[name] for name in CONNECTION_TYPES if counts[name]}


async def settle() -> None:
    for _ in range(20):  # connection_lost comes a loop turn or two after the close
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


@pytest.fixture
def no_collection():
    gc.collect()
    gc.disable()  # as on a busy proxy: whatever a cycle holds stays until a collection, so none may run
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.uvloop
async def test_closed_connections_on_both_sides_of_an_mtls_hop_are_freed_without_a_collection(
        tmp_path, no_collection):
    ca = pki.make_ca()
    runner, app_port = await tlsnet.start_app()
    books = await tlsnet.sidecar("books-v1", "books", tlsnet.mesh(ca, tmp_path, "books"),
                                 lambda inbound, _: tlsnet.inbound_view(inbound, app_port, security.STRICT))
    endpoint = tlsnet.books_endpoint(books.inbound, identity=tlsnet.spiffe("books"))
    gw = await tlsnet.sidecar("gw-v1", "gw", tlsnet.mesh(ca, tmp_path, "gw"),
                              lambda *_: tlsnet.outbound_view((endpoint,)))
    try:
        assert alive() == {}
        for _ in range(10):  # each on its own client connection, closed after the answer
            assert (await tlsnet.http(gw.outbound, "/books", proxy=True)).status == 200
        await settle()
        # Open: the pooled mTLS connection between the sidecars (both ends; books' end keeps its last
        # exchange until the next request) and books' pooled connection to its app.
        assert gw.counter("upstream_cx_tls_handshakes_total") >= 1
        assert alive() == {"SecureDownstream": 1, "Exchange": 1, "UpstreamConnection": 2, "SSLProtocol": 2}
        await books.proxy.shutdown()  # closes that one too, on both sides
        await settle()
        assert alive() == {}
    finally:
        await gw.proxy.shutdown()
        await books.proxy.shutdown()
        await runner.cleanup()


@pytest.mark.uvloop
@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "tls"])
async def test_closed_inbound_connections_are_freed_without_a_collection(tmp_path, no_collection, secure):
    ca = pki.make_ca()
    runner, app_port = await tlsnet.start_app()
    books = await tlsnet.sidecar("books-v1", "books", tlsnet.mesh(ca, tmp_path, "books"),
                                 lambda inbound, _: tlsnet.inbound_view(inbound, app_port, security.PERMISSIVE))
    ctx = tlsnet.client_context(tlsnet.mesh(ca, tmp_path, "gw"), ca.root_pem) if secure else None
    try:
        for _ in range(10):
            assert (await tlsnet.http(books.inbound, "/books", ctx=ctx)).status == 200
        await settle()
        assert alive() == {"UpstreamConnection": 1}  # the pooled connection to the app
    finally:
        await books.proxy.shutdown()
        await runner.cleanup()
