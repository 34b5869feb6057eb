"""What the running local mesh exposes: every listening socket of every process is on loopback (admin,
chaos, control plane, dashboard included), and no secret (a private key, the CA key, a bootstrap token,
a JWT a client sent) shows in a log, in `meshctl proxy-config`, `meshctl status`, the control plane's
debug endpoints or a process's command line. Only public certificates may appear."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import socket
import urllib.parse
from pathlib import Path

import pytest

from mesh.control import tokens
from tests.e2e.conftest import DIRECT

pytestmark = pytest.mark.e2e

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
WORKLOADS = ("ingress", "ui-v1", "gw-v1", "books-v1", "books-v2", "ratings-v1", "ratings-v2")
PROXY_SECTIONS = (None, "routes", "clusters", "endpoints", "listeners", "secrets")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")


def state_dir(mesh) -> Path:
    return mesh.root / "state" / mesh.stack


def _proc_address(text: str) -> tuple[str, int]:
    """`0100007F:1F90` (little-endian words, as /proc/net/tcp{,6} writes them) → ("127.0.0.1", 8080)."""
    hex_address, hex_port = text.split(":")
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(hex_port, 16)


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket `pid` listens on: its socket inodes met in /proc/PID/net/tcp*."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        for line in path.read_text().splitlines()[1:] if path.exists() else ():
            fields = line.split()
            if fields[3] == LISTEN and fields[9] in inodes:
                out.add(_proc_address(fields[1]))
    return out


def test_every_listening_socket_of_the_mesh_is_on_loopback(mesh):
    status = mesh.meshctl_json("status")
    processes = {p["name"]: p for p in status["processes"] if p.get("pid")}
    sockets = {name: listening(p["pid"]) for name, p in processes.items()}
    sockets["supervisor"] = listening(status["supervisor"]["pid"])
    exposed = {name: sorted(s for s in found if not ipaddress.ip_address(s[0]).is_loopback)
               for name, found in sockets.items()}
    assert {name: found for name, found in exposed.items() if found} == {}
    # Admin and chaos ports are listening, on 127.0.0.1 exactly.
    for name, p in processes.items():
        for kind in ("admin", "chaos"):
            if kind in p["ports"]:
                assert ("127.0.0.1", p["ports"][kind]) in sockets[name], (name, kind, sockets[name])
    admin_or_chaos = sum(kind in p["ports"] for p in processes.values() for kind in ("admin", "chaos"))
    assert admin_or_chaos == 13  # 7 proxies' admin ports, 6 apps' chaos switches


def host_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing), else None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the routing decision matters
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def test_chaos_and_admin_ports_cannot_be_reached_on_a_non_loopback_address(mesh):
    """The host's own non-loopback address reaches none of them (what a peer on the network would try)."""
    address = host_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    ports = [port for p in mesh.meshctl_json("status")["processes"] for kind, port in p["ports"].items()
             if kind in ("admin", "chaos")]
    for port in ports:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
            pass


def bootstrap_tokens(mesh) -> list[str]:
    """The tokens the supervisor handed to the running proxies (their environment)."""
    found = []
    for p in mesh.meshctl_json("status")["processes"]:
        if p.get("pid") and p["role"] in ("sidecar", "gateway"):
            environ = Path(f"/proc/{p['pid']}/environ").read_bytes().split(b"\0")
            found += [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(tokens.TOKEN_ENV.encode() + b"=")]
    return found


def key_bodies(mesh) -> dict[str, str]:
    """The base64 bodies of the CA key and every proxy key, by file: what must never be printed."""
    state = state_dir(mesh)
    keys = [state / "ca" / "ca-key.pem", *sorted((state / "proxies").glob("*/key.pem")),
            *sorted(state.rglob("tls.key"))]  # gateway credentials, when a test made some
    out = {}
    for path in keys:
        lines = [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]
        out[str(path)] = "".join(lines)[:64]  # a long prefix is proof enough, whatever the line wrapping
    return out


def outputs(mesh) -> dict[str, str]:
    """Every place an operator reads: logs, proxy-config sections, status, the control plane's debug pages."""
    out = {}
    for workload in WORKLOADS:
        for section in PROXY_SECTIONS:
            args = ("proxy-config", workload, *((section,) if section else ()))
            out[" ".join(args)] = mesh.meshctl(*args).stdout
    out["status"] = mesh.meshctl("status", "-o", "json").stdout
    out["proxy-status"] = mesh.meshctl("proxy-status", "-o", "json").stdout
    with DIRECT.open(mesh.control_plane + "/v1/proxies", timeout=5) as response:
        proxy_ids = [row["proxy"] for row in json.load(response)["proxies"]]
    pages = ["/debug/syncz", "/debug/registry", "/debug/config", "/debug/ca", "/debug/push_status"]
    pages += [f"/debug/config_dump?proxy={urllib.parse.quote(str(p))}" for p in proxy_ids]
    for page in pages:
        with DIRECT.open(mesh.control_plane + page, timeout=5) as response:
            out[page] = response.read().decode()
    for path in sorted(state_dir(mesh).rglob("*")):
        if path.is_file() and (path.suffix == ".log" or "logs" in path.parts):
            out[str(path)] = path.read_text(errors="replace")
    return out


def test_no_secret_in_logs_proxy_config_status_or_debug_pages(mesh):
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').decode().rstrip("=")
    claims = base64.urlsafe_b64encode(b'{"sub":"leak-check","iss":"weir-e2e"}').decode().rstrip("=")
    jwt = f"{header}.{claims}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"
    status, _ = mesh.get("/gateway/books", headers={"Authorization": f"Bearer {jwt}", "Cookie": f"session={jwt}"})
    assert status in (200, 401, 403)  # what matters is where the credential goes, not the answer
    secrets = {"bootstrap token": bootstrap_tokens(mesh), "private key": list(key_bodies(mesh).values())}
    assert secrets["bootstrap token"] and len(secrets["private key"]) >= 8  # the CA's and 7 proxies'
    seen = outputs(mesh)
    for pid in mesh.pids():  # command lines are readable by every local user
        seen[f"/proc/{pid}/cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert any("logs" in name for name in seen) and any("config_dump" in name for name in seen)
    leaks = []
    for where, text in seen.items():
        if "PRIVATE KEY" in text:
            leaks.append((where, "a PEM private key"))
        leaks += [(where, kind) for kind, values in secrets.items() for value in values if value in text]
        leaks += [(where, f"a JWT {match[:24]}…") for match in JWT.findall(text)]
    assert leaks == []
    assert "fingerprintSha256" in seen["proxy-config ui-v1 secrets"]  # public certificates are fine, and are there
