"""Host-level facts of a running local environment, through testinfra's local backend: its processes, the
sockets they listen on, the modes and owners of its keys and certificates, and its state directory.

Every expectation comes from the environment's own state directory (`plan.json`, `state.json`) and
docs/architecture.md ("Processes", "Certificates"); the host is asked what is really there. One fact per test;
a test that checks many processes or files names every offender at once.
"""

from __future__ import annotations

import re

import pytest

from mesh.local import plan as plan_mod
from tests.testinfra import listening

pytestmark = pytest.mark.e2e

ROLE_MODULES = {plan_mod.ROLE_CONTROL: "mesh.control", plan_mod.ROLE_SIDECAR: "mesh.proxy",
                plan_mod.ROLE_GATEWAY: "mesh.proxy", plan_mod.ROLE_APP: "bookinfo"}
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
PRIVATE_DIR, PRIVATE_FILE, PUBLIC_FILE = 0o700, 0o600, 0o644
CA_CERTS = ("ca-cert.pem", "root-cert.pem", "cert-chain.pem")  # public: any local user may read them
PROXY_FILES = ("key.pem", "cert-chain.pem", "root-cert.pem")  # mesh.proxy.tls.MeshTls, all owner-only


def running(local_host, local_env) -> dict[str, object]:
    """Planned process name → testinfra Process of the pid state.json gives it."""
    return {name: local_host.process.get(pid=pid) for name, pid in local_env.pids().items()}


def proxy_ids(local_env) -> list[str]:
    return [spec.identity["proxyId"] for spec in local_env.plan.processes if spec.identity]


def modes(local_host, paths, mode: int, owner: str) -> dict[str, str]:
    """Each path whose mode or owner is not `mode` / `owner` → what it is."""
    wrong = {}
    for path in paths:
        file = local_host.file(str(path))
        if not file.exists or file.mode != mode or file.user != owner:
            wrong[str(path)] = f"{oct(file.mode)} {file.user}" if file.exists else "missing"
    return wrong


# --- processes ---


def test_the_supervisor_of_the_pid_file_is_running(local_host, local_env, me):
    pid = local_env.state.read_pid()
    assert pid == local_env.status()["supervisor"]["pid"]
    supervisor = local_host.process.get(pid=pid)
    assert f"-m mesh.local.supervisor --stack {local_env.plan.stack} --plan {local_env.state.plan_file}" \
        in supervisor.args
    assert supervisor.user == me


def test_every_planned_process_runs_its_planned_command(local_host, local_env):
    """Control plane, each app, each sidecar and the ingress: the pid in state.json runs the plan's command
    line (a reused pid or a stale state file would not)."""
    processes = running(local_host, local_env)
    assert set(processes) == {spec.name for spec in local_env.plan.processes}
    wrong = {spec.name: processes[spec.name].args for spec in local_env.plan.processes
             if processes[spec.name].args != " ".join(spec.command)}
    assert wrong == {}


def test_each_role_runs_its_module(local_host, local_env):
    """Whatever the plan says: the control plane is `mesh.control`, proxies `mesh.proxy --role sidecar|gateway`
    and apps `bookinfo --app A --version V` of their workload's labels."""
    processes = running(local_host, local_env)
    labels = {workload.name: workload.labels for workload in local_env.plan.workloads}
    wrong = {}
    for spec in local_env.plan.processes:
        args = processes[spec.name].args.split()
        expected = ["-m", ROLE_MODULES[spec.role]]
        if spec.role in (plan_mod.ROLE_SIDECAR, plan_mod.ROLE_GATEWAY):
            expected += ["--role", spec.role]
        elif spec.role == plan_mod.ROLE_APP:
            expected += ["--app", labels[spec.workload]["app"], "--version", labels[spec.workload]["version"]]
        if args[1:1 + len(expected)] != expected:
            wrong[spec.name] = " ".join(args)
    assert wrong == {}


def test_every_process_is_a_child_of_the_supervisor(local_host, local_env):
    supervisor = local_env.state.read_pid()
    parents = {name: process.ppid for name, process in running(local_host, local_env).items()}
    assert {name: ppid for name, ppid in parents.items() if ppid != supervisor} == {}


def test_every_process_runs_as_the_current_user(local_host, local_env, me):
    users = {name: process.user for name, process in running(local_host, local_env).items()}
    assert {name: user for name, user in users.items() if user != me} == {}


# --- sockets ---


def gateway_unbound(local_env) -> set[int]:
    """The gateway's `--port-map` ports with no Gateway server in its view: reserved, not bound (the dev
    routing has no HTTPS server, so `ingressTlsPort` stays closed)."""
    command = list(local_env.plan.process(plan_mod.GATEWAY_NAME).command)
    mapping = dict(pair.split("=") for pair in command[command.index("--port-map") + 1].split(","))
    served = local_env.gateway_listeners()
    return {int(local) for service, local in mapping.items() if int(service) not in served}


def test_every_planned_port_is_listening(local_host, local_env):
    unbound = gateway_unbound(local_env)
    closed = [f"{port} {owner}" for port, owner in local_env.plan.ports()
              if port not in unbound and not local_host.socket(f"tcp://127.0.0.1:{port}").is_listening]
    assert closed == []


def test_every_environment_port_is_bound_to_loopback_only(local_host, local_env):
    """No port of the environment is public: control plane (HTTP API and TLS mesh channel), apps, chaos
    switches, sidecar inbound/outbound/admin and the ingress gateway (its Gateway ports and admin) all bind
    127.0.0.1, never 0.0.0.0 or ::. Locally the mesh is for this machine only; on a cluster the inbound,
    health and gateway ports face the pod network instead (test_kubectl)."""
    sockets = listening.listening(local_host)
    wrong = {f"{port} {owner}": sorted(sockets[port]) for port, owner in local_env.plan.ports()
             if port in sockets and sockets[port] != {"127.0.0.1"}}
    assert wrong == {}


def test_no_process_listens_on_an_unplanned_port(local_host, local_env):
    """What each process of the environment listens on (by pid, from `ss -p`) is among its planned ports;
    the supervisor listens on none."""
    planned = {spec.name: set(spec.ports.values()) for spec in local_env.plan.processes}
    names = {pid: name for name, pid in local_env.pids().items()}
    names[local_env.state.read_pid()] = "supervisor"
    planned["supervisor"] = set()
    extra: dict[str, set[str]] = {}
    for line in local_host.check_output("ss -Hltnp").splitlines():
        local = line.split()[3]
        for pid in re.findall(r"pid=(\d+)", line):
            name = names.get(int(pid))
            if name is not None and int(local.rpartition(":")[2]) not in planned[name]:
                extra.setdefault(name, set()).add(local)
    assert extra == {}


# --- certificates and keys ---


@pytest.mark.parametrize("key", ["ca-key.pem", "serving-key.pem"])
def test_control_plane_keys_are_owner_only(local_host, local_env, me, key):
    """The mesh CA's signing key and the mesh channel's serving key: 0600, the current user's."""
    assert modes(local_host, [local_env.state.ca_dir / key], PRIVATE_FILE, me) == {}


def test_private_directories_are_owner_only(local_host, local_env, me):
    state = local_env.state
    directories = [state.ca_dir, state.tokens_dir, state.proxies_dir, *map(state.proxy_dir, proxy_ids(local_env))]
    assert modes(local_host, directories, PRIVATE_DIR, me) == {}


def test_every_proxy_key_and_certificate_is_owner_only(local_host, local_env, me):
    files = [local_env.state.proxy_dir(proxy) / name for proxy in proxy_ids(local_env) for name in PROXY_FILES]
    assert modes(local_host, files, PRIVATE_FILE, me) == {}


def test_mesh_ca_certificates_are_readable_by_all(local_host, local_env, me):
    assert modes(local_host, [local_env.state.ca_dir / name for name in CA_CERTS], PUBLIC_FILE, me) == {}


def test_certificates_are_pem(local_host, local_env):
    state = local_env.state
    files = [state.ca_dir / name for name in CA_CERTS]
    files += [state.proxy_dir(proxy) / name for proxy in proxy_ids(local_env) for name in PROXY_FILES[1:]]
    assert [str(f) for f in files if not local_host.file(str(f)).content_string.startswith(PEM_CERTIFICATE)] == []


def test_every_proxy_trusts_the_mesh_root(local_host, local_env):
    root = local_host.file(str(local_env.state.root_cert_file)).content_string
    others = [proxy for proxy in proxy_ids(local_env)
              if root not in local_host.file(str(local_env.state.proxy_dir(proxy) / "root-cert.pem")).content_string]
    assert others == []


def test_bootstrap_token_records_are_owner_only(local_host, local_env, me):
    """Usually vacuous on a settled environment (see the next test): it bites while proxies start."""
    tokens = local_env.state.tokens_dir
    records = [tokens / name for name in local_host.file(str(tokens)).listdir()]
    assert modes(local_host, records, PRIVATE_FILE, me) == {}


def test_no_unused_bootstrap_token_is_left(local_host, local_env):
    """Every proxy is up, so each one-time token was consumed by the CA: none lies around to be replayed."""
    assert local_host.file(str(local_env.state.tokens_dir)).listdir() == []


# --- state directory ---


def test_state_directory_layout(local_host, local_env, me):
    state = local_env.state
    files = [state.pid_file, state.state_file, state.plan_file, state.registry_file]
    directories = [state.logs, state.config_dir, state.ca_dir, state.proxies_dir]
    wrong = [str(path) for path in files if not local_host.file(str(path)).is_file]
    wrong += [str(path) for path in directories if not local_host.file(str(path)).is_directory]
    wrong += [f"{path} owned by {local_host.file(str(path)).user}" for path in files + directories
              if local_host.file(str(path)).user != me]
    assert wrong == []


def test_one_log_per_planned_process(local_host, local_env):
    logs = set(local_host.file(str(local_env.state.logs)).listdir())
    assert logs == {spec.log for spec in local_env.plan.processes} | {local_env.state.supervisor_log.name}


def test_one_certificate_directory_per_proxy(local_host, local_env):
    assert set(local_host.file(str(local_env.state.proxies_dir)).listdir()) == set(proxy_ids(local_env))
