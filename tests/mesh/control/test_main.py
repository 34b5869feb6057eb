"""`python -m mesh.control`: starts on loopback, serves, reloads persisted config, stops on SIGTERM;
its CA and TLS mesh channel; and the layering rule (mesh.control never imports mesh.proxy)."""

from __future__ import annotations

import ast
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mesh.control
from tests.mesh.control.conftest import BOOKINFO

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books, namespace: bookinfo}
spec:
  hosts: [books]
  http: [{route: [{destination: {host: books}}]}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as resp:
        return resp.status, json.loads(resp.read())


def test_process_serves_and_stops_on_sigterm(tmp_path):
    (tmp_path / "registry.json").write_text(json.dumps(BOOKINFO))
    config = tmp_path / "routing.yaml"
    config.write_text(VS)
    port, tls_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "mesh.control", "--port", str(port), "--tls-port", str(tls_port),
           "--state-dir", str(tmp_path),
           "--registry", str(tmp_path / "registry.json"), "--config", str(config), "--outbound-policy", "REGISTRY_ONLY"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[3])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/ready")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
                time.sleep(0.05)
        assert status == 200 and body["ready"]
        _, listed = get(f"http://127.0.0.1:{port}/v1/config")
        assert [r["metadata"]["name"] for r in listed["resources"]] == ["books"]
        ca_dir = tmp_path / "ca"
        assert oct(ca_dir.stat().st_mode & 0o777) == "0o700"
        assert oct((ca_dir / "ca-key.pem").stat().st_mode & 0o777) == "0o600"
        # the mesh channel: TLS with a certificate for 127.0.0.1 that chains to the mesh root
        ctx = ssl.create_default_context(cafile=str(ca_dir / "root-cert.pem"))
        with socket.create_connection(("127.0.0.1", tls_port), timeout=2) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_bad_config_file_refuses_to_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Nope\n")
    result = subprocess.run(
        [sys.executable, "-m", "mesh.control", "--port", str(free_port()), "--tls-port", str(free_port()),
         "--state-dir", str(tmp_path), "--registry", str(tmp_path / "registry.json"), "--config", str(bad)],
        capture_output=True, timeout=20, cwd=Path(__file__).parents[3],
    )
    assert result.returncode == 2 and b"bad.yaml" in result.stderr


def test_group_readable_ca_key_refuses_to_start(tmp_path):
    from mesh.control import ca_store
    from tests import pki

    ca_dir = tmp_path / "ca"
    ca_dir.mkdir(mode=0o700)
    for name, data in ca_store.to_files(pki.make_ca()).items():
        (ca_dir / name).write_bytes(data)
    (ca_dir / "ca-key.pem").chmod(0o640)
    result = subprocess.run(
        [sys.executable, "-m", "mesh.control", "--port", str(free_port()), "--tls-port", str(free_port()),
         "--state-dir", str(tmp_path), "--registry", str(tmp_path / "registry.json")],
        capture_output=True, timeout=20, cwd=Path(__file__).parents[3],
    )
    assert result.returncode == 2
    assert b"ca-key.pem is accessible by group or others (mode 0640)" in result.stderr


def test_plain_api_refuses_a_non_loopback_address(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mesh.control", "--port", str(free_port()), "--tls-port", str(free_port()),
         "--state-dir", str(tmp_path), "--registry", str(tmp_path / "r.json"), "--host", "0.0.0.0"],
        capture_output=True, timeout=20, cwd=Path(__file__).parents[3],
    )
    assert result.returncode == 2 and b"loopback only" in result.stderr


def test_control_never_imports_proxy():
    root = Path(mesh.control.__file__).parent
    for path in root.glob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else (
                [n.module or ""] if isinstance(n, ast.ImportFrom) else [])
            assert not any(x == "mesh.proxy" or x.startswith("mesh.proxy.") for x in names), path
            if isinstance(n, ast.ImportFrom) and n.module == "mesh":
                assert "proxy" not in {a.name for a in n.names}, path


