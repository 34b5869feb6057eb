"""A cluster environment (GKE) seen through kubectl, for smoke checks: what `Environment` gives locally.

Smoke (mesh.local.smoke) needs: the ingress URL, readiness, proxy sync, each sidecar's stats, the apps'
chaos switches and probes. In a cluster the admin (15000), chaos (9081) and control plane API (15010) ports
listen on the pod's loopback only (mesh.manifests), so each is reached with `kubectl exec` running one
HTTP request with the image's Python inside the pod's network namespace — the same request meshctl sends
locally. Probes: `via W` is sent to W's sidecar outbound port (15001) from inside W's pod, as W's app sends
through HTTP_PROXY; `direct W` is a plaintext request from the ingress gateway's pod (a client without the
sidecar's certificate) to W's pod IP on the inbound port (15006).

Every kubectl call is an argv built by a small function and run by `Kubectl.run`, so tests check the
commands and feed recorded answers without a cluster.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mesh.local import errors
from mesh.manifests import bookinfo, injection, platform
from mesh.manifests import gateway as gateway_manifests

GATEWAY = gateway_manifests.NAME
EXEC_TIMEOUT_S = 30
# One HTTP request inside a pod: argv = host port method target host-header json-body; prints
# {"status", "body"} or {"status": null, "error"} (no answer: refused, reset, closed).
_REQUEST = (
    "import http.client,json,sys\n"
    "h,p,m,t,hh,b=sys.argv[1:7]\n"
    "c=http.client.HTTPConnection(h,int(p),timeout=10)\n"
    "try:\n"
    " c.request(m,t,body=b or None,headers={'Host':hh,'Content-Type':'application/json'})\n"
    " r=c.getresponse();print(json.dumps({'status':r.status,'body':r.read().decode('utf-8','replace')}))\n"
    "except Exception as e:\n"
    " print(json.dumps({'status':None,'error':type(e).__name__+': '+str(e)}))\n"
)

Runner = Callable[[Sequence[str]], str]  # argv → stdout; raises errors.WeirError on failure


def run_kubectl(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=EXEC_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise errors.Unreachable(f"{' '.join(argv[:4])}…: {exc}") from None
    if done.returncode != 0:
        raise errors.RequestFailed(f"{' '.join(argv[:6])}…: {done.stderr.strip() or done.returncode}", 500)
    return done.stdout


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    body: str = ""
    error: str = ""


class ClusterEnvironment:
    """The subset of mesh.local.environment.Environment that smoke uses, over kubectl."""

    def __init__(self, stack: str, ingress_url: str, kubectl: Sequence[str] = ("kubectl",),
                 run: Runner = run_kubectl) -> None:
        self.stack = stack
        self.ingress_url = ingress_url.rstrip("/")
        self.kubectl = tuple(kubectl)
        self._run = run

    # -- argv builders ------------------------------------------------------------------------------

    def request_argv(self, namespace: str, target: str, container: str, method: str, host: str, port: int,
                     path: str, host_header: str, body: str = "") -> list[str]:
        return [*self.kubectl, "-n", namespace, "exec", target, "-c", container, "--", "python", "-c", _REQUEST,
                host, str(port), method, path, host_header, body]

    @staticmethod
    def workload_target(workload: str) -> tuple[str, str]:
        """(namespace, deploy/NAME) of a workload: the ingress gateway or a bookinfo Deployment."""
        if workload in (GATEWAY, "ingress"):
            return platform.SYSTEM_NAMESPACE, f"deploy/{GATEWAY}"
        return bookinfo.NAMESPACE, f"deploy/{workload}"

    # -- what smoke asks ------------------------------------------------------------------------------

    def urls(self) -> dict[str, str]:
        return {"ingress": self.ingress_url}

    def _request(self, namespace: str, target: str, container: str, method: str, port: int, path: str,
                 body: Any = None, host: str = "127.0.0.1", host_header: str = "127.0.0.1") -> Answer:
        out = self._run(self.request_argv(namespace, target, container, method, host, port, path, host_header,
                                          json.dumps(body) if body is not None else ""))
        doc = json.loads(out.strip().splitlines()[-1])
        return Answer(doc.get("status"), doc.get("body", ""), doc.get("error", ""))

    def _json(self, answer: Answer, what: str) -> Any:
        if answer.status is None or answer.status >= 400:
            raise errors.RequestFailed(f"{what}: {answer.error or answer.body.strip() or answer.status}",
                                       answer.status or 502)
        return json.loads(answer.body or "null")

    def _deployments(self, namespace: str) -> list[dict[str, Any]]:
        return json.loads(self._run([*self.kubectl, "get", "deployments", "-n", namespace, "-o", "json"]))["items"]

    def status(self) -> dict[str, Any]:
        rows = []
        for namespace in (platform.SYSTEM_NAMESPACE, bookinfo.NAMESPACE):
            for d in self._deployments(namespace):
                want, ready = d["spec"].get("replicas", 1), d.get("status", {}).get("readyReplicas", 0)
                rows.append({"name": f"{namespace}/{d['metadata']['name']}", "ready": ready >= want > 0,
                             "status": f"{ready}/{want} ready"})
        return {"processes": rows}

    def workloads(self) -> list[str]:
        return sorted(d["metadata"]["name"] for d in self._deployments(bookinfo.NAMESPACE))

    def proxies(self) -> list[dict[str, Any]]:
        answer = self._request(platform.SYSTEM_NAMESPACE, f"deploy/{platform.CONTROL_NAME}", "control", "GET",
                               platform.HTTP_API_PORT, "/v1/proxies")
        return self._json(answer, "the control plane's /v1/proxies")["proxies"]

    def config_label(self) -> None:
        """A cluster's config comes from its custom resources (no label): `pulumi stack output routing`
        says which release Pulumi deployed (the release_in_effect role checks it)."""
        return None

    def stats(self, workload: str) -> str:
        namespace, target = self.workload_target(workload)
        container = "istio-proxy" if namespace == platform.SYSTEM_NAMESPACE else injection.SIDECAR_CONTAINER
        answer = self._request(namespace, target, container, "GET", injection.ADMIN_PORT, "/stats/prometheus")
        if answer.status != 200:
            raise errors.RequestFailed(f"stats of {workload}: {answer.error or answer.status}", answer.status or 502)
        return answer.body

    def chaos(self, workload: str, change: dict[str, Any] | None = None, reset: bool = False) -> Any:
        """The app's switch on 127.0.0.1:9081 in its pod (reached from the sidecar container: one netns)."""
        namespace, target = self.workload_target(workload)
        method = "DELETE" if reset else ("PUT" if change else "GET")
        answer = self._request(namespace, target, injection.SIDECAR_CONTAINER, method, bookinfo.CHAOS_PORT,
                               "/chaos", change if method == "PUT" else None)
        return self._json(answer, f"chaos switch of {workload}")

    def probe(self, probe: Any) -> Any:
        from mesh.local import probes as probes_mod  # mesh.api: only when a scenario has probes

        if probe.via is not None:
            namespace, target = self.workload_target(probe.via)
            answer = self._request(namespace, target, injection.SIDECAR_CONTAINER, "GET", injection.OUTBOUND_PORT,
                                   probe.url, host_header=urlsplit(probe.url).netloc)
        else:
            pod_ip = self._pod_ip(probe.direct)
            answer = self._request(platform.SYSTEM_NAMESPACE, f"deploy/{GATEWAY}", "istio-proxy", "GET", injection.INBOUND_PORT,
                                   probe.path, host=pod_ip, host_header=probe.direct)
        return probes_mod.ProbeResult(answer.status, answer.body, answer.error)

    def _pod_ip(self, workload: str) -> str:
        app, _, version = workload.rpartition("-")
        out = self._run([*self.kubectl, "get", "pods", "-n", bookinfo.NAMESPACE, "-l", f"app={app},version={version}",
                         "--field-selector=status.phase=Running", "-o", "jsonpath={.items[0].status.podIP}"])
        if not out.strip():
            raise errors.RequestFailed(f"no running pod of {workload}", 503)
        return out.strip()
