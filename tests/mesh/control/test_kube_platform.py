"""`--platform kubernetes` wiring: flags, and the two seams + root publisher behind one control plane."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mesh.control import __main__ as main
from mesh.control import ca, plane, server
from tests.mesh.control.fakekube import FakeKube, until
from tests.mesh.control.test_kube_config import VS, vs
from tests.mesh.control.test_kube_registry import books_cluster


def test_kubernetes_needs_no_registry_and_refuses_config_files(capsys):
    args = main.parse_args(["--platform", "kubernetes", "--tls-host", "0.0.0.0", "--port", "15010",
                            "--tls-port", "15012", "--state-dir", "/var/run/weir"])
    assert args.registry is None
    with pytest.raises(SystemExit):
        main.parse_args(["--port", "1", "--tls-port", "2", "--state-dir", "d"])
    assert "--registry is required with --platform local" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main.parse_args(["--platform", "kubernetes", "--port", "1", "--tls-port", "2", "--state-dir", "d",
                         "--config", "a.yaml"])
    assert "kubectl apply" in capsys.readouterr().err


def test_control_plane_on_the_fake_cluster():
    async def scenario():
        async with FakeKube() as kube:
            kube.put(VS, vs())
            books_cluster(kube)
            authority = ca.CertificateAuthority.create_root(now=time.time())
            inputs = main.KubernetesInputs(kube.api, authority, "weir-system")
            control = plane.ControlPlane(inputs.store, inputs.registry)
            await inputs.start()
            await control.start()
            app = server.make_app(control)
            app.router.add_get("/debug/kubernetes", inputs.debug)
            async with TestClient(TestServer(app)) as client:
                assert (await client.get("/ready")).status == 200
                snap = control.snapshot
                assert [r.key for r in snap.resources] == ["VirtualService/bookinfo/books"]
                assert len(snap.registry.workloads) == 3
                await until(lambda: "weir-system/weir-ca-root-cert" in kube.collections.get("/api/v1/configmaps", {}),
                            "the root ConfigMap")
                debug = await (await client.get("/debug/kubernetes")).json()
                assert debug["config"]["watches"]["VirtualService"]["synced"] is True
                assert set(debug["registry"]["watches"]) == {"/api/v1/services", "/api/v1/pods",
                                                             "/apis/discovery.k8s.io/v1/endpointslices"}
                refused = await client.post("/v1/config", json={"files": [{"name": "a.yaml", "text": ""}]})
                assert refused.status == 500 and "kubectl apply" in (await refused.json())["error"]
            await control.stop()
            await inputs.stop()
    asyncio.run(asyncio.wait_for(scenario(), 20))
