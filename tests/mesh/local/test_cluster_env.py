"""The cluster environment: the kubectl commands smoke sends to a GKE environment, fed recorded answers; and
the in-pod request script run for real against a loopback server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mesh.local import cluster_env, errors
from mesh.local.cluster_env import ClusterEnvironment
from mesh.local.probes import Probe

KUBECTL = ("kubectl", "--context", "gke_weir-mesh-dev_europe-west1_weir-dev")


def deployment(name: str, namespace: str, replicas: int, ready: int) -> dict:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"replicas": replicas},
            "status": {"readyReplicas": ready} if ready else {}}


class FakeKubectl:
    """Records every argv; answers `get deployments`, `get pods` and `exec … python -c` from tables."""

    def __init__(self, answers: dict[tuple[str, int, str], dict] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}
        self.deployments = {
            "weir-system": [deployment("weir-control", "weir-system", 1, 1),
                            deployment("istio-ingressgateway", "weir-system", 2, 2)],
            "bookinfo": [deployment("books-v1", "bookinfo", 1, 1), deployment("ratings-v2", "bookinfo", 1, 0)],
        }

    def __call__(self, argv) -> str:
        argv = list(argv)
        self.calls.append(argv)
        assert tuple(argv[:3]) == KUBECTL
        rest = argv[3:]
        if rest[:2] == ["get", "deployments"]:
            return json.dumps({"items": self.deployments[rest[rest.index("-n") + 1]]})
        if rest[:2] == ["get", "pods"]:
            return "10.20.1.7"
        script_at = rest.index("-c", rest.index("--")) + 1
        host, port, method, target = rest[script_at + 1:script_at + 5]
        return json.dumps(self.answers.get((host, int(port), f"{method} {target}"), {"status": 200, "body": "{}"}))


def test_readiness_is_every_deployments_replicas_in_both_namespaces() -> None:
    env = ClusterEnvironment("dev", "http://203.0.113.7", KUBECTL, run=FakeKubectl())
    rows = env.status()["processes"]
    assert [(r["name"], r["ready"], r["status"]) for r in rows] == [
        ("weir-system/weir-control", True, "1/1 ready"), ("weir-system/istio-ingressgateway", True, "2/2 ready"),
        ("bookinfo/books-v1", True, "1/1 ready"), ("bookinfo/ratings-v2", False, "0/1 ready")]
    assert env.workloads() == ["books-v1", "ratings-v2"] and env.urls() == {"ingress": "http://203.0.113.7"}


def test_proxies_are_read_from_the_control_planes_loopback_api_inside_its_pod() -> None:
    rows = [{"proxy": "books-v1.bookinfo", "status": "SYNCED"}]
    fake = FakeKubectl({("127.0.0.1", 15010, "GET /v1/proxies"): {"status": 200, "body": json.dumps({"proxies": rows})}})
    assert ClusterEnvironment("dev", "http://x", KUBECTL, run=fake).proxies() == rows
    (argv,) = fake.calls
    assert argv[3:11] == ["-n", "weir-system", "exec", "deploy/weir-control", "-c", "control", "--", "python"]


def test_stats_come_from_each_proxys_admin_port_sidecar_or_gateway() -> None:
    fake = FakeKubectl({("127.0.0.1", 15000, "GET /stats/prometheus"): {"status": 200, "body": "istio_requests_total 3\n"}})
    env = ClusterEnvironment("dev", "http://x", KUBECTL, run=fake)
    assert env.stats("books-v1") == "istio_requests_total 3\n"
    assert env.stats("istio-ingressgateway") == "istio_requests_total 3\n"
    assert [c[3:9] for c in fake.calls] == [
        ["-n", "bookinfo", "exec", "deploy/books-v1", "-c", "weir-proxy"],
        ["-n", "weir-system", "exec", "deploy/istio-ingressgateway", "-c", "istio-proxy"]]


def test_chaos_switch_is_set_and_reset_on_the_pods_loopback() -> None:
    fake = FakeKubectl({("127.0.0.1", 9081, "PUT /chaos"): {"status": 200, "body": '{"error_rate": 1.0}'},
                        ("127.0.0.1", 9081, "DELETE /chaos"): {"status": 200, "body": "{}"}})
    env = ClusterEnvironment("dev", "http://x", KUBECTL, run=fake)
    assert env.chaos("ratings-v2", {"error_rate": 1.0}) == {"error_rate": 1.0}
    env.chaos("ratings-v2", reset=True)
    assert json.loads(fake.calls[0][-1]) == {"error_rate": 1.0} and fake.calls[1][-1] == ""


def test_probes_via_the_sidecar_outbound_and_direct_to_the_pod_ip() -> None:
    fake = FakeKubectl({
        ("127.0.0.1", 15001, "GET http://books.bookinfo:9080/books"): {"status": 403, "body": "RBAC: access denied"},
        ("10.20.1.7", 15006, "GET /books"): {"status": None, "error": "ConnectionResetError: reset"},
    })
    env = ClusterEnvironment("dev", "http://x", KUBECTL, run=fake)
    via = env.probe(Probe(via="ui-v1", url="http://books.bookinfo:9080/books", status=403))
    direct = env.probe(Probe(direct="books-v1", path="/books", refused=True))
    assert (via.status, via.body) == (403, "RBAC: access denied")
    assert direct.status is None and "reset" in direct.error
    assert fake.calls[0][-2] == "books.bookinfo:9080"  # the Host header of the absolute-form request
    assert "app=books,version=v1" in fake.calls[1]  # the pod IP lookup
    assert fake.calls[2][3:9] == ["-n", "weir-system", "exec", "deploy/istio-ingressgateway", "-c", "istio-proxy"]


def test_an_unanswered_request_is_a_clear_error() -> None:
    fake = FakeKubectl({("127.0.0.1", 15000, "GET /stats/prometheus"): {"status": None, "error": "ConnectionRefusedError"}})
    with pytest.raises(errors.RequestFailed, match="stats of books-v1: ConnectionRefusedError"):
        ClusterEnvironment("dev", "http://x", KUBECTL, run=fake).stats("books-v1")


def test_a_failing_kubectl_names_the_command(tmp_path) -> None:
    fake = tmp_path / "kubectl"
    fake.write_text("#!/bin/sh\necho 'error: You must be logged in to the server' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(errors.RequestFailed, match="You must be logged in"):
        ClusterEnvironment("dev", "http://x", [str(fake)]).workloads()


class _Echo(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps({"host": self.headers["Host"], "path": self.path, "body": json.loads(body)}).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


def test_the_in_pod_request_script_speaks_http_for_real() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = ClusterEnvironment("dev", "http://x", ("kubectl",))
        argv = env.request_argv("bookinfo", "deploy/x", "weir-proxy", "PUT", "127.0.0.1", server.server_port,
                                "/chaos", "books-v1", json.dumps({"delay": 1}))
        script_args = argv[argv.index("-c", argv.index("--")) + 1:]  # what `python -c` runs in the pod
        done = subprocess.run([sys.executable, "-c", *script_args], capture_output=True, text=True, timeout=20)
        answer = json.loads(done.stdout)
        assert answer["status"] == 201
        assert json.loads(answer["body"]) == {"host": "books-v1", "path": "/chaos", "body": {"delay": 1}}
        closed = subprocess.run([sys.executable, "-c", cluster_env._REQUEST, "127.0.0.1", "1", "GET", "/", "x", ""],
                                capture_output=True, text=True, timeout=20)
        assert json.loads(closed.stdout)["status"] is None
    finally:
        server.shutdown()
