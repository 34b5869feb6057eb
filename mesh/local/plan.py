"""The local plan: which processes run for a stack, with their commands, env, ports and readiness URLs.

Pure: `build` turns StackSettings plus the bookinfo manifests (mesh.manifests.bookinfo Deployment and
Service dicts) into a Plan; nothing here touches the OS. Ports follow docs/architecture.md: workload i
(manifest order) gets `portBase + 10*i + {0 app, 1 inbound, 2 outbound, 3 admin, 4 chaos}`, the ingress
gateway's admin port is `portBase + 9`; the control plane listens on `controlPlanePort` (meshctl's HTTP
API) and on the stack's mesh channel port (TLS, for proxies). Each proxy trusts only the mesh root
(`--ca-file <state>/ca/root-cert.pem`), keeps its key in `<state>/proxies/<proxy-id>/`, and carries an
`identity` the supervisor mints a one-time bootstrap token for; every proxy also exports its spans to the
stack's `weir:otlpEndpoint` when it sets one (`--otlp-endpoint`). A Plan round-trips through JSON
(`plan.json` in the state dir), which is how the supervisor receives it. Next: mesh.local.supervisor runs it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mesh.local import errors, statedir
from mesh.local.stack import StackSettings
from mesh.manifests import injection

LOOPBACK = "127.0.0.1"
PORT_STRIDE = 10  # ports reserved per workload
PORT_OFFSETS = {"app": 0, "inbound": 1, "outbound": 2, "admin": 3, "chaos": 4}
GATEWAY_ADMIN_OFFSET = 9
GATEWAY_NAME = "ingress"
GATEWAY_WORKLOAD = "istio-ingressgateway"
GATEWAY_NAMESPACE = "weir-system"
GATEWAY_LABELS = "istio=ingressgateway"
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"  # Istio's name: policies can name it
GATEWAY_SERVICE_PORT = 80  # the Gateway resources' port, mapped to the stack's ingressPort
GATEWAY_TLS_SERVICE_PORT = 443  # HTTPS Gateway servers, mapped to the stack's ingressTlsPort
GATEWAY_PROXY_ID = f"{GATEWAY_WORKLOAD}.{GATEWAY_NAMESPACE}"

# Start order; the supervisor stops in reverse.
STAGE_CONTROL, STAGE_WORKLOADS, STAGE_GATEWAY = 0, 1, 2
ROLE_CONTROL, ROLE_APP, ROLE_SIDECAR, ROLE_GATEWAY = "control", "app", "sidecar", "gateway"
PYTHON_NAMES = ("python", "python3")


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process the supervisor runs and restarts."""

    name: str  # "control", "ingress", "<workload>" (app), "<workload>.proxy" (sidecar)
    role: str
    stage: int
    command: tuple[str, ...]
    env: Mapping[str, str]  # added to the supervisor's environment
    ports: Mapping[str, int]  # every port it listens on, by purpose
    ready_url: str
    log: str  # file name under logs/
    workload: str = ""
    # Proxies: {"namespace", "serviceAccount", "proxyId"}; the supervisor hands the process a bootstrap token
    # for this identity (never in the plan or on the command line).
    identity: Mapping[str, str] | None = None
    # A process that must be ready before this one starts, and that stops after it (an app: its sidecar;
    # mesh.local.lifecycle).
    after: str = ""


@dataclass(frozen=True, slots=True)
class Workload:
    """A registry entry; ready when all its processes (app and sidecar) are."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    service_account: str
    port: int  # the sidecar inbound port: on loopback it stands for pod IP + targetPort
    processes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    stack: str
    cwd: str  # the project root; every process runs there
    state_dir: str
    processes: tuple[ProcessSpec, ...]
    services: tuple[Mapping[str, Any], ...]  # registry.json service entries
    workloads: tuple[Workload, ...]
    urls: Mapping[str, str]

    def process(self, name: str) -> ProcessSpec:
        for spec in self.processes:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def ports(self) -> Iterator[tuple[int, str]]:
        """(port, "process (purpose)") for every port the plan listens on."""
        for spec in self.processes:
            for purpose, port in spec.ports.items():
                yield port, f"{spec.name} ({purpose})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Plan:
        return cls(
            stack=doc["stack"],
            cwd=doc["cwd"],
            state_dir=doc["state_dir"],
            processes=tuple(ProcessSpec(**{**p, "command": tuple(p["command"])}) for p in doc["processes"]),
            services=tuple(doc["services"]),
            workloads=tuple(Workload(**{**w, "processes": tuple(w["processes"])}) for w in doc["workloads"]),
            urls=doc["urls"],
        )


def app_log(workload: str) -> str:
    return f"{workload}.log"


def proxy_log(workload: str) -> str:
    return f"{workload}.proxy.log"


def build(settings: StackSettings, deployments: Sequence[Mapping[str, Any]],
          services: Sequence[Mapping[str, Any]], python: str = sys.executable) -> Plan:
    """The plan for a stack: control plane, then app + sidecar per Deployment, then the ingress gateway."""
    last = settings.port_base + PORT_STRIDE * max(len(deployments), 1) - 1
    if last > 65535:
        raise errors.StackError(f"weir:local.portBase {settings.port_base} leaves no room for "
                                f"{len(deployments)} workloads (needs ports up to {last})")
    processes = [_control(settings, python)]
    workloads = []
    for index, deployment in enumerate(deployments):
        app, sidecar, workload = _workload(settings, index, deployment, python)
        processes += [app, sidecar]
        workloads.append(workload)
    processes.append(_gateway(settings, python))
    plan = Plan(
        stack=settings.name,
        cwd=str(settings.root),
        state_dir=str(settings.state_dir),
        processes=tuple(processes),
        services=tuple(_service(s) for s in services),
        workloads=tuple(workloads),
        urls={"ingress": f"http://{LOOPBACK}:{settings.ingress_port}",
              "ingressTls": f"https://{LOOPBACK}:{settings.ingress_tls_port}",
              "controlPlane": f"http://{LOOPBACK}:{settings.control_plane_port}",
              "meshChannel": f"https://{LOOPBACK}:{settings.mesh_channel_port}",
              "dashboard": f"http://{LOOPBACK}:{settings.dashboard_port}/"},
    )
    _check_distinct_ports(plan)
    return plan


def _control(settings: StackSettings, python: str) -> ProcessSpec:
    port, tls_port = settings.control_plane_port, settings.mesh_channel_port
    state = statedir.StateDir(settings.state_dir)
    return ProcessSpec(
        name="control", role=ROLE_CONTROL, stage=STAGE_CONTROL,
        command=(python, "-m", "mesh.control", "--port", str(port), "--tls-port", str(tls_port),
                 "--state-dir", str(state.path), "--registry", str(state.registry_file),
                 "--outbound-policy", settings.outbound_policy, "--dashboard-port", str(settings.dashboard_port),
                 *(("--workload-cert-ttl", settings.workload_cert_ttl) if settings.workload_cert_ttl else ())),
        env={}, ports={"http": port, "mesh": tls_port, "dashboard": settings.dashboard_port},
        ready_url=f"http://{LOOPBACK}:{port}/ready", log="control.log",
    )


def _mesh_channel(settings: StackSettings, proxy_id: str) -> tuple[str, ...]:
    """The flags that point a proxy at the TLS mesh channel, the mesh root and its own key directory."""
    state = statedir.StateDir(settings.state_dir)
    return ("--control-plane", f"{LOOPBACK}:{settings.mesh_channel_port}", "--ca-file", str(state.root_cert_file),
            "--cert-dir", str(state.proxy_dir(proxy_id)))


# Locally every request is traced (Istio samples 1 %): `meshctl trace REQUEST_ID` works for any request.
# Access log lines go to the proxy's stdout, its log file (`meshctl logs W --proxy`).
LOCAL_TELEMETRY = ("--trace-sampling", "100")
# A sidecar's drain on SIGTERM ends below the supervisor's 5 s stop grace, so the proxy exits on its own.
LOCAL_DRAIN_TIMEOUT = ("--drain-timeout", "4")


def _telemetry(settings: StackSettings) -> tuple[str, ...]:
    """Every proxy's telemetry flags: LOCAL_TELEMETRY, and the stack's OTLP collector when it names one."""
    return (*LOCAL_TELEMETRY, *injection.otlp_args(settings.otlp_endpoint))  # the flags a pod's proxy gets


def _identity(namespace: str, account: str, proxy_id: str) -> dict[str, str]:
    return {"namespace": namespace, "serviceAccount": account, "proxyId": proxy_id}


def _gateway(settings: StackSettings, python: str) -> ProcessSpec:
    admin = settings.port_base + GATEWAY_ADMIN_OFFSET
    return ProcessSpec(
        name=GATEWAY_NAME, role=ROLE_GATEWAY, stage=STAGE_GATEWAY,
        command=(python, "-m", "mesh.proxy", "--role", "gateway",
                 "--id", GATEWAY_PROXY_ID, "--namespace", GATEWAY_NAMESPACE,
                 "--workload", GATEWAY_WORKLOAD, "--labels", GATEWAY_LABELS,
                 "--service-account", GATEWAY_SERVICE_ACCOUNT, *_mesh_channel(settings, GATEWAY_PROXY_ID),
                 *_telemetry(settings), *LOCAL_DRAIN_TIMEOUT,
                 "--port-map", f"{GATEWAY_SERVICE_PORT}={settings.ingress_port},"
                               f"{GATEWAY_TLS_SERVICE_PORT}={settings.ingress_tls_port}",
                 "--admin-port", str(admin)),
        env={}, ports={"http": settings.ingress_port, "https": settings.ingress_tls_port, "admin": admin},
        ready_url=f"http://{LOOPBACK}:{admin}/ready", log=proxy_log(GATEWAY_NAME), workload=GATEWAY_WORKLOAD,
        identity=_identity(GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT, GATEWAY_PROXY_ID),
    )


def _workload(settings: StackSettings, index: int, deployment: Mapping[str, Any],
              python: str) -> tuple[ProcessSpec, ProcessSpec, Workload]:
    name, namespace, labels, account, container = _pod(index, deployment)
    ports = {purpose: settings.port_base + PORT_STRIDE * index + offset for purpose, offset in PORT_OFFSETS.items()}
    env = _container_env(container, name, namespace, account)
    env.update(PORT=str(ports["app"]), HOST=LOOPBACK, CHAOS_PORT=str(ports["chaos"]),
               HTTP_PROXY=f"http://{LOOPBACK}:{ports['outbound']}")
    app = ProcessSpec(
        name=name, role=ROLE_APP, stage=STAGE_WORKLOADS, command=_app_command(container, name, python),
        env=env, ports={"app": ports["app"], "chaos": ports["chaos"]},
        ready_url=f"http://{LOOPBACK}:{ports['app']}/healthz", log=app_log(name), workload=name,
        after=f"{name}.proxy",  # Istio's holdApplicationUntilProxyStarts
    )
    proxy_id = f"{name}.{namespace}"
    sidecar = ProcessSpec(
        name=f"{name}.proxy", role=ROLE_SIDECAR, stage=STAGE_WORKLOADS,
        command=(python, "-m", "mesh.proxy", "--role", "sidecar", "--id", proxy_id,
                 "--namespace", namespace, "--workload", name,
                 "--labels", ",".join(f"{k}={v}" for k, v in labels.items()), "--service-account", account,
                 *_mesh_channel(settings, proxy_id), *_telemetry(settings), *LOCAL_DRAIN_TIMEOUT,
                 "--inbound-port", str(ports["inbound"]), "--outbound-port", str(ports["outbound"]),
                 "--app-port", str(ports["app"]), "--admin-port", str(ports["admin"])),
        env={}, ports={p: ports[p] for p in ("inbound", "outbound", "admin")},
        ready_url=f"http://{LOOPBACK}:{ports['admin']}/ready", log=proxy_log(name), workload=name,
        identity=_identity(namespace, account, proxy_id),
    )
    workload = Workload(name=name, namespace=namespace, labels=labels, service_account=account,
                        port=ports["inbound"], processes=(app.name, sidecar.name))
    return app, sidecar, workload


def _pod(index: int, deployment: Mapping[str, Any]) -> tuple[str, str, dict[str, str], str, Mapping[str, Any]]:
    """(name, namespace, pod labels, service account, app container) of a Deployment dict."""
    meta = deployment.get("metadata") or {}
    label = meta.get("name", f"#{index}")
    try:
        template = deployment["spec"]["template"]
        labels = dict(template.get("metadata", {}).get("labels") or meta.get("labels") or {})
        pod_spec = template["spec"]
        container = pod_spec["containers"][0]
        return (meta["name"], meta.get("namespace", "default"), labels,
                pod_spec.get("serviceAccountName", "default"), container)
    except (KeyError, IndexError, TypeError) as exc:
        raise errors.StackError(f"deployment {label}: missing {exc} in the manifest") from None


def _app_command(container: Mapping[str, Any], name: str, python: str) -> tuple[str, ...]:
    command = [*container.get("command", ()), *container.get("args", ())]
    if not command:
        raise errors.StackError(f"deployment {name}: its container has no `command`")
    if os.path.basename(command[0]) in PYTHON_NAMES:
        command[0] = python  # run with this interpreter, so the apps see the same packages
    return tuple(str(part) for part in command)


def _container_env(container: Mapping[str, Any], name: str, namespace: str, account: str) -> dict[str, str]:
    """The manifest's env as a dict; the few downward-API fields a pod could use are resolved locally."""
    field_values = {"metadata.name": name, "metadata.namespace": namespace,
                    "spec.serviceAccountName": account, "status.podIP": LOOPBACK}
    env: dict[str, str] = {}
    for item in container.get("env", ()):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        field = (item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        if field not in field_values:
            raise errors.StackError(f"deployment {name}: env {item.get('name')} has a source the local "
                                    f"runtime cannot resolve: {item.get('valueFrom')}")
        env[item["name"]] = field_values[field]
    return env


def _service(service: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec = service["metadata"], service["spec"]
    return {
        "name": meta["name"],
        "namespace": meta.get("namespace", "default"),
        "ports": [{"name": p.get("name", "http"), "port": p["port"], "targetPort": p.get("targetPort", p["port"])}
                  for p in spec.get("ports", ())],
        "selector": dict(spec.get("selector") or {}),
    }


def _check_distinct_ports(plan: Plan) -> None:
    owners: dict[int, str] = {}
    for port, owner in plan.ports():
        if port in owners:
            raise errors.StackError(f"port {port} is planned twice: {owners[port]} and {owner}; check weir:local "
                                    f"ingressPort, ingressTlsPort, controlPlanePort, controlPlaneTlsPort, dashboardPort and portBase")
        owners[port] = owner
