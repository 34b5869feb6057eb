"""`python -m mesh.control`: starts on loopback, serves, reloads persisted config, stops on SIGTERM;
and the layering rule (mesh.control never imports mesh.proxy)."""

from __future__ import annotations

import ast
import json
import signal
import socket
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
    port = free_port()
    cmd = [sys.executable, "-m", "mesh.control", "--port", str(port), "--state-dir", str(tmp_path),
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
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_bad_config_file_refuses_to_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Nope\n")
    result = subprocess.run(
        [sys.executable, "-m", "mesh.control", "--port", str(free_port()), "--state-dir", str(tmp_path),
         "--registry", str(tmp_path / "registry.json"), "--config", str(bad)],
        capture_output=True, timeout=20, cwd=Path(__file__).parents[3],
    )
    assert result.returncode == 2 and b"bad.yaml" in result.stderr


def test_control_never_imports_proxy():
    root = Path(mesh.control.__file__).parent
    for path in root.glob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else (
                [n.module or ""] if isinstance(n, ast.ImportFrom) else [])
            assert not any(x == "mesh.proxy" or x.startswith("mesh.proxy.") for x in names), path
            if isinstance(n, ast.ImportFrom) and n.module == "mesh":
                assert "proxy" not in {a.name for a in n.names}, path


