"""`mesh.control.kube` over kubernetes_asyncio: the `Api` protocol's answers, statuses and streams, the
credentials the client sends, and the in-cluster / kubeconfig configurations."""

from __future__ import annotations

import asyncio
import datetime
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes_asyncio.client import ApiClient

from mesh.control import kube
from tests.mesh.control.fakekube import FakeKube

CM = "/api/v1/namespaces/weir-system/configmaps"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


class Recorder:
    """A bare API server: records (method, path_qs, Authorization, body) and answers from `answers`."""

    def __init__(self, **answers: web.StreamResponse) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str, str | None, object]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization"), body))
        return self.answers[request.path.strip("/").replace("/", "_")]

    async def __aenter__(self) -> TestServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app)
        await self.server.start_server()
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()


def test_the_transport_is_a_kubernetes_asyncio_client_sending_the_token():
    async def scenario():
        async with FakeKube() as fake:
            assert isinstance(fake.api.client, ApiClient)
            status, doc = await fake.api("POST", CM, {"metadata": {"name": "a"}, "data": {"k": "v"}})
            assert status == 201 and doc["metadata"]["resourceVersion"]
            status, doc = await fake.api("GET", "/api/v1/configmaps?labelSelector=app%3Dx&limit=500", None)
            assert status == 200 and doc["items"] == []
            assert fake.requests[-1] == ("GET", "/api/v1/configmaps?labelSelector=app%3Dx&limit=500")

    run(scenario())


def test_http_errors_are_answers_with_the_status_document():
    async def scenario():
        async with FakeKube() as fake:
            await fake.api("POST", CM, {"metadata": {"name": "a", "namespace": "weir-system"}})
            status, doc = await fake.api("POST", CM, {"metadata": {"name": "a", "namespace": "weir-system"}})
            assert status == 409 and doc["kind"] == "Status" and "already exists" in doc["message"]
            status, doc = await fake.api("GET", CM + "/missing", None)
            assert status == 404 and kube.status_message(status, doc) == "HTTP 404: weir-system/missing not found"

    run(scenario())


def test_headers_body_and_blank_query_values_reach_the_server():
    recorder = Recorder(api_v1_things=web.json_response({"ok": True}))

    async def scenario():
        async with recorder as server:
            api = kube.ApiServer.at(str(server.make_url("")), "tok")
            try:
                assert await api("PUT", "/api/v1/things?resourceVersion=&dryRun=All", {"a": 1}) == (200, {"ok": True})
            finally:
                await api.close()

    run(scenario())
    assert recorder.seen == [("PUT", "/api/v1/things?resourceVersion=&dryRun=All", "Bearer tok", {"a": 1})]


def test_unusable_answers_and_unreachable_servers_are_kube_errors():
    recorder = Recorder(api_v1_text=web.Response(text="<html>proxy error</html>", status=502))

    async def scenario():
        async with recorder as server:
            api = kube.ApiServer.at(str(server.make_url("")))
            try:
                with pytest.raises(kube.KubeError, match="HTTP 502 with a body that is not JSON"):
                    await api("GET", "/api/v1/text", None)
            finally:
                await api.close()
        api = kube.ApiServer.at("http://127.0.0.1:1")
        try:
            with pytest.raises(kube.KubeError, match=r"^GET /api/v1/pods: "):
                await api("GET", "/api/v1/pods", None)
            with pytest.raises(kube.KubeError, match=r"^watch /api/v1/pods\?watch=1: "):
                async for _ in api.stream("/api/v1/pods?watch=1", 1):
                    pass
        finally:
            await api.close()

    run(scenario())


def test_a_refused_watch_is_a_stream_error_with_its_status():
    gone = {"kind": "Status", "code": 410, "message": "too old resource version"}
    recorder = Recorder(api_v1_pods=web.json_response(gone, status=410))

    async def scenario():
        async with recorder as server:
            api = kube.ApiServer.at(str(server.make_url("")), "tok")
            try:
                with pytest.raises(kube.StreamError) as refused:
                    async for _ in api.stream("/api/v1/pods?watch=1&resourceVersion=5", 300):
                        pass
            finally:
                await api.close()
        return refused.value

    error = run(scenario())
    assert (error.status, error.doc) == (410, gone)
    assert recorder.seen[0][1:3] == ("/api/v1/pods?watch=1&resourceVersion=5", "Bearer tok")


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_in_cluster_uses_the_service_account_and_re_reads_its_token(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    (tmp_path / "token").write_text("projected-1")
    (tmp_path / "ca.crt").write_bytes(_ca_pem())

    async def scenario():
        api = kube.in_cluster(tmp_path)
        try:
            config = api.configuration
            assert config.host == "https://[fd00::1]:6443"
            assert config.ssl_ca_cert == str(tmp_path / "ca.crt")
            assert (await config.auth_settings())["BearerToken"]["value"] == "Bearer projected-1"
            assert config.refresh_api_key_hook is not None  # the loader re-reads the file once it is stale
        finally:
            await api.close()

    run(scenario())


def test_outside_a_pod_in_cluster_refuses(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kube.KubeError, match="not running in a Kubernetes pod"):
        kube.in_cluster()


def test_a_kubeconfig_reaches_its_server_with_its_token(tmp_path):
    async def scenario():
        async with FakeKube() as fake:
            config = tmp_path / "kubeconfig"
            config.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "dev",
                "clusters": [{"name": "c", "cluster": {"server": str(fake.server.make_url("")).rstrip("/")}}],
                "users": [{"name": "u", "user": {"token": "from-kubeconfig"}}],
                "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
            }))
            api = await kube.connect(str(config))
            try:
                assert (await api.configuration.auth_settings())["BearerToken"]["value"] == "Bearer from-kubeconfig"
                status, doc = await api("GET", "/api/v1/pods?limit=500", None)
                assert status == 200 and doc["kind"] == "List"
            finally:
                await api.close()
            with pytest.raises(kube.KubeError, match="kubeconfig"):
                await kube.connect(str(tmp_path / "missing"))

    run(scenario())
