"""Fixtures for the local-runtime tests: free ports, stack settings in tmp dirs, and plans of fake
processes (tests/mesh/local/fake_service.py) that the real supervisor runs."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from mesh.local import plan as plan_mod
from mesh.local import runtime
from mesh.local.stack import StackSettings

REPO = Path(__file__).resolve().parents[3]
FAKE = ("-m", "tests.mesh.local.fake_service")


def free_ports(count: int) -> list[int]:
    """Distinct ports the OS considers free right now."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy, up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def settings_for(tmp_path: Path, name: str = "t") -> StackSettings:
    routing = tmp_path / "routing.yaml"
    routing.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                       "metadata: {name: routing, namespace: bookinfo}\n"
                       "spec: {hosts: [ratings], http: [{route: [{destination: {host: ratings}}]}]}\n")
    cp, ingress = free_ports(2)
    return StackSettings(name=name, root=REPO, state_dir=tmp_path / name, routing="fake", routing_file=routing,
                         ingress_port=ingress, control_plane_port=cp, port_base=20000)


def fake_plan(settings: StackSettings, *, never_ready: str = "", child_pid_file: Path | None = None,
              events: Path | None = None, proxy_ready_after: float = 0.0, app_stop_delay: float = 0.0,
              ) -> plan_mod.Plan:
    """control → books-v1.proxy, then books-v1 (app) once its sidecar is ready → ingress, all fake services,
    on free ports. `events`: the workload's processes log start, sigterm and exit there (fake_service.py);
    the app calls its sidecar's readiness URL as it starts."""
    app, inbound, outbound, admin, gw_admin = free_ports(5)
    cp = settings.control_plane_port

    def fake(name: str, role: str, stage: int, port: int, path: str, ports: dict, log: str, workload: str = "",
             env: dict | None = None, identity: dict | None = None) -> plan_mod.ProcessSpec:
        args = ["--port", str(port)] if role != plan_mod.ROLE_APP else []
        if name == never_ready:
            args.append("--never-ready")
        if child_pid_file and role == plan_mod.ROLE_APP:
            args += ["--child-pid-file", str(child_pid_file)]
        if events and workload == "books-v1":
            args += ["--events", str(events), "--name", name]
        if events and role == plan_mod.ROLE_CONTROL:
            # restarts settle on the push ack, not on the lifecycle's 5 s cap
            args += ["--synced", "--registry", str(settings.state_dir / "registry.json")]
        if role == plan_mod.ROLE_APP:  # its first outbound call, through the sidecar's outbound port
            args += ["--call-at-start", "http://ratings.bookinfo:9080/ready", "--stop-delay", str(app_stop_delay)]
        if role == plan_mod.ROLE_SIDECAR:
            args += ["--ready-after", str(proxy_ready_after), "--also-port", str(outbound)]
        return plan_mod.ProcessSpec(name=name, role=role, stage=stage, command=(sys.executable, *FAKE, *args),
                                    env=env or {}, ports=ports, ready_url=f"http://127.0.0.1:{port}{path}",
                                    log=log, workload=workload, identity=identity,
                                    after="books-v1.proxy" if role == plan_mod.ROLE_APP else "")

    processes = (
        fake("control", plan_mod.ROLE_CONTROL, 0, cp, "/ready", {"http": cp}, "control.log"),
        fake("books-v1", plan_mod.ROLE_APP, 1, app, "/healthz", {"app": app, "chaos": app}, "books-v1.log",
             "books-v1", env={"PORT": str(app), "CHAOS_PORT": str(app), "HOST": "127.0.0.1",
                              "HTTP_PROXY": f"http://127.0.0.1:{outbound}"}),
        fake("books-v1.proxy", plan_mod.ROLE_SIDECAR, 1, admin, "/ready",
             {"inbound": inbound, "outbound": outbound, "admin": admin}, "books-v1.proxy.log", "books-v1",
             identity={"namespace": "bookinfo", "serviceAccount": "books", "proxyId": "books-v1.bookinfo"}),
        fake("ingress", plan_mod.ROLE_GATEWAY, 2, gw_admin, "/ready",
             {"http": settings.ingress_port, "admin": gw_admin}, "ingress.proxy.log", "istio-ingressgateway",
             identity={"namespace": "weir-system", "serviceAccount": "istio-ingressgateway-service-account",
                       "proxyId": "istio-ingressgateway.weir-system"}),
    )
    workload = plan_mod.Workload(name="books-v1", namespace="bookinfo", labels={"app": "books", "version": "v1"},
                                 service_account="books", port=inbound, processes=("books-v1", "books-v1.proxy"))
    service = {"name": "books", "namespace": "bookinfo", "ports": [{"name": "http", "port": 9080, "targetPort": 9080}],
               "selector": {"app": "books"}}
    return plan_mod.Plan(stack=settings.name, cwd=str(REPO), state_dir=str(settings.state_dir), processes=processes,
                         services=(service,), workloads=(workload,),
                         urls={"ingress": f"http://127.0.0.1:{settings.ingress_port}",
                               "controlPlane": f"http://127.0.0.1:{cp}",
                               "meshChannel": f"https://127.0.0.1:{settings.mesh_channel_port}"})


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    return settings_for(tmp_path)


@pytest.fixture
def running(settings: StackSettings) -> Iterator[runtime.UpResult]:
    """A fake environment started through the real runtime and supervisor; always taken down."""
    try:
        yield runtime.up(settings, plan=fake_plan(settings), timeout=30)
    finally:
        runtime.down(settings.name, settings.state_dir)
