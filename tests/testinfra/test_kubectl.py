"""The same kinds of host-level facts for a cluster, through testinfra's kubectl:// backend: in each meshed
bookinfo pod's `weir-proxy` container, the proxy process, the sockets of the pod, its key and certificates.

The pod spec comes from mesh.manifests.injection (ports, mounts, uid). The Weir image is python:3.11-slim: no
`ps`, `ss` or `netstat`, so processes are read from /proc/1 (the container's command is the proxy) and sockets
from /proc/net (tests.testinfra.listening.from_proc). Skipped without kubectl, a cluster or meshed pods (conftest).

Public by design in a pod: the sidecar inbound port (15006), the health port (15021, the kubelet's probe)
and the app's own port (9080, which the `weir-sidecar-only` NetworkPolicy closes to everything but the pod).
Admin (15000), outbound (15001) and the chaos switch (9081) stay on loopback.
"""

from __future__ import annotations

import pytest
import testinfra

from mesh.manifests import bookinfo, injection
from tests.testinfra import listening

pytestmark = pytest.mark.e2e

WORKLOADS = [workload.name for workload in bookinfo.workloads()]
LOOPBACK_ONLY = {"admin": injection.ADMIN_PORT, "outbound": injection.OUTBOUND_PORT, "chaos": bookinfo.CHAOS_PORT}
POD_NETWORK = {"inbound": injection.INBOUND_PORT, "health": injection.HEALTH_PORT}


@pytest.fixture(params=WORKLOADS)
def sidecar(request, meshed_pods):
    pod = meshed_pods.get(request.param)
    if pod is None:
        pytest.skip(f"no running pod of {request.param} with a sidecar")
    return testinfra.get_host(f"kubectl://{pod}?namespace={bookinfo.NAMESPACE}&container={injection.SIDECAR_CONTAINER}")


def argv(host, pid: int = 1) -> list[str]:
    return host.file(f"/proc/{pid}/cmdline").content.decode().split("\0")[:-1]


def test_the_container_runs_the_sidecar_proxy(sidecar):
    args = argv(sidecar)
    assert args[1:5] == ["-m", "mesh.proxy", "--role", "sidecar"], args
    assert args[args.index("--admin-port") + 1] == str(injection.ADMIN_PORT)
    assert args[args.index("--cert-dir") + 1] == injection.CERT_DIR


def test_the_proxy_runs_as_the_proxy_uid(sidecar):
    status = sidecar.file("/proc/1/status").content_string
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(injection.PROXY_UID)}  # real, effective, saved, filesystem


@pytest.mark.parametrize("purpose", sorted(LOOPBACK_ONLY))
def test_private_ports_listen_on_loopback_only(sidecar, purpose):
    assert listening.from_proc(sidecar).get(LOOPBACK_ONLY[purpose]) == {"127.0.0.1"}


@pytest.mark.parametrize("purpose", sorted(POD_NETWORK))
def test_pod_network_ports_are_listening(sidecar, purpose):
    assert listening.from_proc(sidecar).get(POD_NETWORK[purpose])


def test_the_cert_dir_is_owner_only(sidecar):
    """docs/architecture.md: the proxy installs its key and certificate in `--cert-dir`, 0700. The `weir-certs`
    emptyDir is 0777 and root-owned (the kubelet's), so `--cert-dir` is a directory inside it that the proxy
    (uid 1337) creates itself."""
    cert_dir = sidecar.file(injection.CERT_DIR)
    assert (oct(cert_dir.mode), cert_dir.uid) == (oct(0o700), injection.PROXY_UID)


def test_the_proxy_key_is_owner_only(sidecar):
    key = sidecar.file(f"{injection.CERT_DIR}/key.pem")
    assert (oct(key.mode), key.uid) == (oct(0o600), injection.PROXY_UID)


def test_the_mesh_root_is_mounted(sidecar):
    root = sidecar.file(f"{injection.ROOT_CERT_MOUNT}/{injection.ROOT_CERT_KEY}")
    assert root.content_string.startswith("-----BEGIN CERTIFICATE-----")

