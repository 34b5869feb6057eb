"""nginx in the bench: the fixed 1 KiB upstream, and the reference reverse proxy Weir is compared with.

Both run with one worker, no access log, in the foreground (`daemon off`), with every path (pid, error
log, temp directories) under the run's work directory, so no system nginx state is touched. The upstream
serves one 1024-byte file with keep-alive; the proxy keeps up to 64 idle keep-alive connections to it
(`keepalive 64; proxy_http_version 1.1; proxy_set_header Connection "";`), as Envoy would.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench import processes

PAYLOAD_BYTES = 1024
PAYLOAD_PATH = "/1k"  # the request path served by the upstream (a file named "1k" under its root)
UPSTREAM_KEEPALIVE = 64  # idle keep-alive connections nginx-as-proxy keeps to the upstream


def binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _common(workdir: Path, name: str) -> str:
    tmp = workdir / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o777)  # workers drop to "nobody" when started as root
    return f"""worker_processes 1;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    tcp_nodelay on;
"""


def upstream_conf(workdir: Path, port: int, root: Path) -> str:
    return _common(workdir, "upstream") + f"""    sendfile on;
    open_file_cache max=16 inactive=60s;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        root {root};
    }}
}}
"""


def proxy_conf(workdir: Path, port: int, upstream_port: int, extra: str = "") -> str:
    """`extra`: more `http` directives (bench.hostile sets nginx's client timeouts and body limit)."""
    return _common(workdir, "proxy") + extra + f"""    upstream up {{
        server 127.0.0.1:{upstream_port};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def write_payload(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    path = root / PAYLOAD_PATH.lstrip("/")
    path.write_bytes(b"x" * (PAYLOAD_BYTES - 1) + b"\n")
    path.chmod(0o644)
    return path


def start(procs: processes.Processes, name: str, conf: str, workdir: Path, port: int,
          cpus: list[str]) -> subprocess.Popen:
    """Write `conf`, start nginx in the foreground, return once it answers the payload path."""
    conf_path = workdir / f"{name}.conf"
    conf_path.write_text(conf)
    argv = [binary(), "-p", str(workdir), "-e", str(workdir / f"{name}-error.log"), "-c", str(conf_path)]
    proc = procs.start(name, argv, cpus=cpus)
    processes.wait_until(lambda: processes.http_ok(f"http://127.0.0.1:{port}{PAYLOAD_PATH}"), proc, name)
    return proc


def version() -> str:
    try:
        out = subprocess.run([binary(), "-v"], capture_output=True, text=True, timeout=5)
    except OSError:
        return "missing"
    return (out.stderr or out.stdout).strip().split("/")[-1]
