"""A stand-in for Weir's processes in the local-runtime tests: a tiny HTTP server on loopback.

It answers what the supervisor and meshctl ask of the real ones: `/healthz` (apps), `/ready` (proxies,
control plane), the control plane's `/v1/config`, `/v1/proxies` and `/debug/push_status`, a proxy's `/config_dump` (and its `secrets`) and
`/stats/prometheus`, an app's `/chaos`, and `/env` (its environment, to check what the plan passes).
Port: `--port`, else `$PORT`. `--child-pid-file F` starts a grandchild in the same process group and
writes its pid to F; `--never-ready` answers 503 on readiness URLs, `--ready-after S` for its first S
seconds. Lifecycle tests: `--events F --name N` appends "start N", "sigterm N" and "exit N" lines to F;
`--call-at-start URL` GETs URL (through $HTTP_PROXY, as an app calls out through its sidecar) before
serving and appends "call N STATUS" (0: no answer); `--also-port P` serves on P too (a sidecar's outbound
port, answering absolute-form proxy requests by path); `--stop-delay S`
takes S seconds to exit after SIGTERM, like an app finishing its in-flight requests; `--synced` reports every
proxy SYNCED (a control plane whose pushes are all acked); `--registry F`: push_status reports F's
`generation` as its snapshot's (a control plane that reads registry.json at once).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SECRETS = {  # the shape of mesh.proxy.certagent's `secrets` dump, trimmed: late renewal, failing
    "state": "ACTIVE", "source": "ca", "spiffeId": "spiffe://cluster.local/ns/bookinfo/sa/books", "serial": "5eed",
    "notBefore": "2024-01-01T00:00:00Z", "notAfter": "2024-01-02T00:00:00Z", "lifetimeSeconds": 86400,
    "expiresInSeconds": 3000, "chain": [], "roots": [],
    "rotation": {"consecutiveFailures": 2, "lastError": "control plane answered 503: TokenReview failed"},
}
PROXIES = [  # the shape of mesh.control's rows, trimmed
    {"proxy": "books-v1.bookinfo", "sent": "abc123", "acked": "abc123", "status": "SYNCED", "lastNack": None},
    {"proxy": "books-v2.bookinfo", "sent": "def456", "acked": "abc123", "status": "NACKED",
     "lastNack": {"version": "def456", "error": "bad route", "at": "2024-01-01T00:00:00Z"}},
]


class Handler(BaseHTTPRequestHandler):
    never_ready = False
    synced = False  # /v1/proxies: every proxy SYNCED instead of the sample with a NACK
    registry = ""  # registry.json, whose generation push_status reports
    ready_at = 0.0  # monotonic time from which readiness URLs answer 200
    chaos: dict = {"error_rate": 0.0, "delay": 0.0}

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.command} {self.path}\n")

    def _send(self, status: int, doc: object, content_type: str = "application/json") -> None:
        body = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path in ("/healthz", "/ready"):
            ready = not self.never_ready and time.monotonic() >= self.ready_at
            self._send(200 if ready else 503, "ok" if ready else "not ready", "text/plain")
        elif url.path == "/v1/proxies":
            self._send(200, {"proxies": PROXIES[:1] if self.synced else PROXIES})
        elif url.path == "/debug/push_status":
            self._send(200, {"pending": 0, "queued": 0, "registryGeneration": self._generation()})
        elif url.path == "/v1/config":
            self._send(200, {"resources": [{"kind": "VirtualService", "metadata": {"name": "books",
                                                                                  "namespace": "bookinfo"},
                                            "spec": {"hosts": ["books"]}}]})
        elif url.path == "/config_dump" and url.query == "resource=secrets":
            self._send(200, SECRETS)
        elif url.path == "/config_dump":
            self._send(200, {"version": "abc123", "query": url.query})
        elif url.path == "/stats/prometheus":
            self._send(200, "istio_requests_total 0\n", "text/plain")
        elif url.path == "/chaos":
            self._send(200, Handler.chaos)
        elif url.path == "/env":
            self._send(200, dict(os.environ))
        else:
            self._send(404, {"error": f"no {url.path}"})

    def _generation(self) -> int:
        try:
            with open(self.registry) as handle:
                return json.load(handle).get("generation", 0)
        except (OSError, ValueError):
            return 0

    def do_POST(self) -> None:
        files = self._body().get("files", [])
        bad = [f["name"] for f in files if "invalid" in f["text"]]
        if bad:
            self._send(400, {"error": f"{bad[0]}: VirtualService/bookinfo/books: spec.http[0].route: required"})
        else:
            keys = [f"VirtualService/bookinfo/{os.path.basename(f['name']).split('.')[0]}" for f in files]
            self._send(200, {"applied": keys, "changes": [{"key": k, "action": "configured"} for k in keys],
                             "warnings": ["spec.http[0].mirror: not enforced"] if any("mirror" in f["text"] for f in files) else []})

    def do_PUT(self) -> None:
        Handler.chaos = {**Handler.chaos, **self._body()}
        self._send(200, Handler.chaos)

    def do_DELETE(self) -> None:
        if urlparse(self.path).path == "/chaos":
            Handler.chaos = {"error_rate": 0.0, "delay": 0.0}
            self._send(200, Handler.chaos)
        else:
            files = self._body().get("files", [])
            self._send(200, {"deleted": [f"VirtualService/bookinfo/{os.path.basename(f['name']).split('.')[0]}"
                                         for f in files], "notFound": ["DestinationRule/bookinfo/gone"]})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    parser.add_argument("--child-pid-file")
    parser.add_argument("--never-ready", action="store_true")
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--events")
    parser.add_argument("--name", default="")
    parser.add_argument("--call-at-start")
    parser.add_argument("--stop-delay", type=float, default=0.0)
    parser.add_argument("--also-port", type=int)
    parser.add_argument("--synced", action="store_true")
    parser.add_argument("--registry", default="")
    args = parser.parse_args()
    Handler.never_ready = args.never_ready
    Handler.synced = args.synced
    Handler.registry = args.registry
    Handler.ready_at = time.monotonic() + args.ready_after
    _lifecycle(args)
    if args.child_pid_file:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(args.child_pid_file, "w") as handle:
            handle.write(str(child.pid))
    if args.also_port:
        also = ThreadingHTTPServer(("127.0.0.1", args.also_port), Handler)
        threading.Thread(target=also.serve_forever, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"fake service on {args.port}", flush=True)
    server.serve_forever()


def _event(args: argparse.Namespace, what: str) -> None:
    if args.events:
        with open(args.events, "a") as handle:
            handle.write(f"{what} {args.name}\n")


def _lifecycle(args: argparse.Namespace) -> None:
    _event(args, "start")
    if args.call_at_start:
        try:
            with urllib.request.urlopen(args.call_at_start, timeout=2) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        _event(args, f"call {status}")

    def stop(signum: int, frame: object) -> None:
        _event(args, "sigterm")

        def leave() -> None:
            time.sleep(args.stop_delay)
            _event(args, "exit")
            os._exit(0)

        threading.Thread(target=leave, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    main()
