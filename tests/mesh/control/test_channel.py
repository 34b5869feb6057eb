"""The mesh channel over real TLS: discovery only for a client certificate matching the node, CSRs by
token or by the current certificate, and nothing for a certificate of another root."""

from __future__ import annotations

import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from mesh.control import ca as ca_mod
from mesh.control import tokens
from mesh.proxy import certagent
from tests import pki
from tests.mesh.control import meshchannel

NODE = {"id": "gw-v1.bookinfo", "role": "sidecar", "namespace": "bookinfo", "workload": "gw-v1",
        "labels": {"app": "gw", "version": "v1"}, "serviceAccount": "gw", "ports": {"app": 21010}}


async def discover(client, node=NODE):
    resp = await client.post("/v1/discovery", json={"node": node, "version_info": "", "response_nonce": ""})
    return resp.status, await resp.json()


def test_discovery_needs_the_nodes_own_identity(tmp_path):
    async def scenario(h: meshchannel.Harness):
        status, body = await discover(await h.client("bookinfo", "gw"))
        assert status == 200 and body["view"]["proxy"] == "gw-v1.bookinfo"
        status, body = await discover(await h.client("bookinfo", "books"))
        assert status == 403
        assert body["error"] == ("client certificate identity spiffe://cluster.local/ns/bookinfo/sa/books does not "
                                 "match node gw-v1.bookinfo (namespace bookinfo, service account gw)")
        status, _ = await discover(await h.client("default", "gw"))
        assert status == 403
        status, body = await discover(await h.client(None))
        assert status == 401 and "no client certificate" in body["error"]
        assert [row["proxy"] for row in h.control.discovery.rows()] == ["gw-v1.bookinfo"]  # refused ones never registered

    meshchannel.run(scenario, tmp_path)


def test_a_certificate_of_another_root_does_not_get_through_the_handshake(tmp_path):
    async def scenario(h: meshchannel.Harness):
        stranger = await h.client("bookinfo", "gw", ca=pki.make_ca())
        with pytest.raises(aiohttp.ClientError):
            await discover(stranger)

    meshchannel.run(scenario, tmp_path)


GW = "spiffe://cluster.local/ns/bookinfo/sa/gw"


async def ask(client, csr_pem: bytes, token: str | None = None) -> tuple[int, dict]:
    resp = await client.post("/v1/certificates", json={"csr": csr_pem.decode(), **({"token": token} if token else {})})
    return resp.status, await resp.json()


def test_first_certificate_by_token_then_renewal_by_that_certificate(tmp_path):
    async def scenario(h: meshchannel.Harness):
        def mint() -> str:
            return tokens.mint(tmp_path / "tokens", "bookinfo", "gw", "gw-v1.bookinfo", now=time.time())

        key = ca_mod.new_key()
        newcomer = await h.client(None)
        ingress = "spiffe://cluster.local/ns/weir-system/sa/istio-ingressgateway"
        status, doc = await ask(newcomer, certagent.make_csr(key, ingress), mint())
        assert status == 403 and doc["error"].startswith(f"the CSR asks for identity {ingress}, but the caller is "
                                                         f"authenticated as {GW} (bootstrap-token)")
        token = mint()
        status, first = await ask(newcomer, certagent.make_csr(key, GW), token)
        assert status == 200 and first["spiffeId"] == GW
        assert first["rootCert"] == h.ca.root_pem.decode()
        status, again = await ask(newcomer, certagent.make_csr(key, GW), token)
        assert status == 401 and "already used" in again["error"]
        bad = await newcomer.post("/v1/certificates", json={"csr": "nope", "token": token})
        assert bad.status == 400 and "not a PEM" in (await bad.json())["error"]

        holder_dir = tmp_path / "holder"
        holder_dir.mkdir()
        ctx = meshchannel.client_context(h.ca.root_pem, first["certChain"].encode(), ca_mod.key_pem(key), holder_dir)
        holder = TestClient(h.mesh_server, connector=aiohttp.TCPConnector(ssl=ctx, force_close=True))
        await holder.start_server()
        h.clients.append(holder)
        books = "spiffe://cluster.local/ns/bookinfo/sa/books"
        status, refused = await ask(holder, certagent.make_csr(ca_mod.new_key(), books))
        assert status == 403 and refused["error"].startswith(f"the CSR asks for identity {books}, but the caller is "
                                                             f"authenticated as {GW} (client-certificate)")
        status, renewed = await ask(holder, certagent.make_csr(ca_mod.new_key(), GW))
        assert status == 200 and renewed["spiffeId"] == first["spiffeId"] and renewed["serial"] != first["serial"]
        assert (await discover(holder))[0] == 200

    meshchannel.run(scenario, tmp_path)
