"""A control plane with both listeners for tests: meshctl's plain API and the TLS mesh channel.

`Harness.api` is an aiohttp TestClient on the plain API; `Harness.client(namespace, account)` one on the
mesh channel over real TLS, presenting a workload certificate of that identity (None: no certificate),
checking the control plane's serving certificate against the mesh root and its IP SAN.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from mesh.control import authn, certificates, channel, config_store, plane, registry, server, serving
from tests import pki
from tests.mesh.control.conftest import BOOKINFO


def client_context(root_pem: bytes, chain_pem: bytes | None = None, key_pem: bytes | None = None,
                   directory: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=root_pem.decode())
    if chain_pem is not None:
        (directory / "chain.pem").write_bytes(chain_pem)
        (directory / "key.pem").write_bytes(key_pem)
        ctx.load_cert_chain(str(directory / "chain.pem"), str(directory / "key.pem"))
    return ctx


@dataclass
class Harness:
    control: plane.ControlPlane
    certs: certificates.CertificateService
    source: registry.StaticRegistry
    api: TestClient
    mesh_server: TestServer
    tmp_path: Path
    clients: list[TestClient] = field(default_factory=list)

    @property
    def ca(self):
        return self.certs.authority

    async def client(self, namespace: str | None = "bookinfo", account: str = "gw", *, ca=None,
                     ttl_s: float | None = None, now: float | None = None) -> TestClient:
        """A mesh-channel client with a certificate for namespace/account (from `ca`, default ours)."""
        directory = self.tmp_path / f"client{len(self.clients)}"
        directory.mkdir()
        if namespace is None:
            ctx = client_context(self.ca.root_pem)
        else:
            chain, key, _ = pki.workload(ca or self.ca, namespace, account, ttl_s=ttl_s, now=now)
            ctx = client_context(self.ca.root_pem, chain, key, directory)
        client = TestClient(self.mesh_server, connector=aiohttp.TCPConnector(ssl=ctx, force_close=True))
        await client.start_server()
        self.clients.append(client)
        return client


async def start(tmp_path: Path, *, reg: dict | None = None, hold: float = 2.0, clock=time.time,
                tokens: certificates.TokenAuthenticator | None = None) -> Harness:
    store = config_store.ConfigStore(tmp_path / "state")
    source = registry.StaticRegistry(registry.parse_registry(reg or BOOKINFO))
    certs = certificates.CertificateService(pki.make_ca(), tokens or authn.BootstrapTokens(tmp_path / "tokens"),
                                            clock=clock)
    control = plane.ControlPlane(store, source, quiet=0.01, max_delay=0.05, certs=certs)
    await control.start()
    api = TestClient(TestServer(server.make_app(control)))
    await api.start_server()
    identity = serving.ServingCertificate(lambda: certs.authority, tmp_path)
    mesh_server = TestServer(channel.make_app(control, certs, hold=hold), host="127.0.0.1")
    await mesh_server.start_server(ssl=identity.issue())
    return Harness(control, certs, source, api, mesh_server, tmp_path)


async def stop(harness: Harness) -> None:
    await harness.control.stop()
    for client in harness.clients:
        await client.close()
    await harness.mesh_server.close()
    await harness.api.close()


def run(scenario, tmp_path: Path, **options):
    async def main():
        harness = await start(tmp_path, **options)
        try:
            return await scenario(harness)
        finally:
            await stop(harness)

    return asyncio.run(main())
