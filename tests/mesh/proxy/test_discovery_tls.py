"""The discovery client on the TLS mesh channel against the real control plane channel: a view for the
proxy whose certificate is its node's identity, 403 and backoff for one whose certificate is not, no
connection to a control plane that the mesh root does not vouch for, and a reconnect after rotation."""

from __future__ import annotations

import asyncio

import pytest

from mesh.proxy import channel, discovery, tls
from tests import pki
from tests.mesh.control import meshchannel
from tests.mesh.proxy.test_discovery import Applied, Stop

NODE = {"id": "gw-v1.bookinfo", "role": "sidecar", "namespace": "bookinfo", "workload": "gw-v1",
        "labels": {"app": "gw", "version": "v1"}, "serviceAccount": "gw", "ports": {"app": 21010}}


def record_sleeps(monkeypatch, stop_after: int) -> list[float]:
    """Backoff sleeps of the discovery client only are recorded, not waited; the control plane running in
    the same loop keeps its real sleeps."""
    delays: list[float] = []

    async def fake_sleep(delay, result=None):
        delays.append(delay)
        if len(delays) == stop_after:
            raise Stop
        await asyncio.sleep(0)

    class Scoped:
        sleep = staticmethod(fake_sleep)

        def __getattr__(self, name):
            return getattr(asyncio, name)

    monkeypatch.setattr(discovery, "asyncio", Scoped())
    return delays


def proxy_channel(h: meshchannel.Harness, tmp_path, account: str, *, ca=None, sni: str | None = None,
                  trusted: bytes | None = None):
    (tmp_path / "root.pem").write_bytes(trusted or h.ca.root_pem)
    material = pki.mesh_tls(ca or h.ca, tmp_path / f"certs-{account}", "bookinfo", account)
    return channel.ControlChannel("127.0.0.1", h.mesh_server.port, tmp_path / "root.pem", material, sni), material


async def until_applied(client: discovery.DiscoveryClient, applied: Applied, count: int = 1) -> None:
    task = asyncio.create_task(client.run())
    try:
        for _ in range(500):
            if len(applied.views) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no view applied")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_the_proxy_holding_its_nodes_identity_gets_its_view_over_tls(tmp_path):
    async def scenario(h):
        control, _ = proxy_channel(h, tmp_path, "gw")
        applied = Applied()
        client = discovery.DiscoveryClient(control.host, control.port, NODE, applied, control)
        await until_applied(client, applied)
        assert applied.views[0][0].proxy == "gw-v1.bookinfo" and client.dump()["tls"] is True

    meshchannel.run(scenario, tmp_path)


def test_a_proxy_whose_certificate_is_not_its_node_is_refused_and_backs_off(tmp_path, monkeypatch, caplog):
    delays = record_sleeps(monkeypatch, stop_after=2)

    async def scenario(h):
        control, _ = proxy_channel(h, tmp_path, "books")  # certificate for books, node says gw
        applied = Applied()
        client = discovery.DiscoveryClient(control.host, control.port, NODE, applied, control)
        with pytest.raises(Stop):
            await client.run()
        assert applied.views == [] and not client.connected
        return h.control.discovery.rows()

    rows = meshchannel.run(scenario, tmp_path)
    assert rows == [] and delays == [discovery.BACKOFF_START_S, discovery.BACKOFF_START_S * 2]
    assert "control plane answered 403: client certificate identity spiffe://cluster.local/ns/bookinfo/sa/books " \
           "does not match node gw-v1.bookinfo" in caplog.text


@pytest.mark.parametrize("case", ["control plane of another root", "wrong server name"])
def test_no_view_from_a_control_plane_the_mesh_root_does_not_vouch_for(tmp_path, monkeypatch, caplog, case):
    delays = record_sleeps(monkeypatch, stop_after=1)

    async def scenario(h):
        if case == "wrong server name":
            control, _ = proxy_channel(h, tmp_path, "gw", sni="weir-control.other.svc")
        else:  # we trust another mesh's root
            control, _ = proxy_channel(h, tmp_path, "gw", trusted=pki.make_ca().root_pem)
        applied = Applied()
        client = discovery.DiscoveryClient(control.host, control.port, NODE, applied, control)
        with pytest.raises(Stop):
            await client.run()
        assert applied.views == []

    meshchannel.run(scenario, tmp_path)
    assert delays == [discovery.BACKOFF_START_S] and "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_a_rotated_certificate_is_presented_from_the_next_poll_on(tmp_path):
    async def scenario(h):
        control, material = proxy_channel(h, tmp_path, "gw")
        applied = Applied()
        client = discovery.DiscoveryClient(control.host, control.port, NODE, applied, control)
        await until_applied(client, applied)
        before = client._context
        chain, key, spiffe = pki.workload(h.ca, "bookinfo", "gw")
        material.install(chain, key, h.ca.root_pem, spiffe)
        assert control.context() is not before
        await h.api.post("/v1/config", json={"files": [{"name": "dr.yaml", "text": DR}]})  # a new view to fetch
        await until_applied(client, applied, count=2)
        assert client._context is control.context()

    meshchannel.run(scenario, tmp_path)


DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: books, namespace: bookinfo}
spec:
  host: books
  subsets: [{name: v1, labels: {version: v1}}]
"""


def test_the_context_trusts_the_ca_file_and_checks_the_host_name(tmp_path):
    ca = pki.make_ca()
    (tmp_path / "root.pem").write_bytes(ca.root_pem)
    material = tls.MeshTls(tmp_path / "certs")
    control = channel.ControlChannel("127.0.0.1", 1, tmp_path / "root.pem", material)
    bare = control.context()
    assert bare.check_hostname and control.server_hostname == "127.0.0.1"
    assert control.context() is bare  # cached until a certificate is installed
    chain, key, spiffe = pki.workload(ca, "bookinfo", "gw")
    material.install(chain, key, ca.root_pem, spiffe)
    presenting = control.context()
    assert presenting is not bare and control.context() is presenting
    assert control.context(with_certificate=False) is not presenting  # a first CSR is sent without one
