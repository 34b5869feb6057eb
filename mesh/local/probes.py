"""Probes: single requests a scenario's expectation sends past the ingress, to show what the mesh refuses.

A probe is either `via: WORKLOAD` (sent through that workload's sidecar outbound port, exactly as its app
would send it with HTTP_PROXY: so it leaves with the workload's mTLS identity) to an absolute `url`, or
`direct: WORKLOAD` (a plaintext request straight to the workload's sidecar inbound port, as a client
outside the mesh would) for a `path`. It expects a `status` (and optionally a `body`), or `refused: true`
(no HTTP answer: the connection is closed, e.g. at the TLS handshake under STRICT mTLS)::

    probes:
      - {via: ui-v1, url: "http://books.bookinfo:9080/books", status: 403, body: "RBAC: access denied"}
      - {direct: books-v1, path: /books, refused: true}

`send(probe, ports)` runs one (ports from `meshctl status -o json`), `check(probes, results)` judges them;
mesh.local.expectations embeds both.
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from mesh.api.errors import invalid
from mesh.api.types import Model

TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"


class Probe(Model):
    via: str | None = None
    direct: str | None = None
    url: str | None = None
    path: str | None = None
    status: int | None = Field(default=None, ge=100, le=599)
    body: str | None = None
    refused: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> Probe:
        if (self.via is None) == (self.direct is None):
            raise invalid("a probe says exactly one of `via` (a workload's sidecar) or `direct` (its inbound port)")
        if self.via is not None and (self.url is None or urlsplit(self.url).scheme != "http"):
            raise invalid("a `via` probe needs an absolute http:// `url`", at="url")
        if self.direct is not None and not (self.path or "").startswith("/"):
            raise invalid("a `direct` probe needs a `path` starting with /", at="path")
        if self.refused == (self.status is not None):
            raise invalid("a probe expects exactly one of `status` or `refused: true`")
        return self

    @property
    def workload(self) -> str:
        return self.via or self.direct or ""

    def describe(self) -> str:
        return f"via {self.via} GET {self.url}" if self.via else f"direct to {self.direct} GET {self.path}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    status: int | None  # None: no HTTP answer (refused, reset, closed)
    body: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeResult:
        status = data.get("status")
        return cls(None if status is None else int(status), str(data.get("body", "")), str(data.get("error", "")))


def send(probe: Probe, ports: Mapping[str, Mapping[str, int]], timeout: float = TIMEOUT_S) -> ProbeResult:
    """Run one probe; `ports[workload]` has the sidecar's "inbound" and "outbound" ports."""
    workload_ports = ports.get(probe.workload)
    if not workload_ports:
        return ProbeResult(None, error=f"no ports known for workload {probe.workload}")
    if probe.via is not None:
        port, target, host = workload_ports["outbound"], probe.url, urlsplit(probe.url).netloc
    else:
        port, target, host = workload_ports["inbound"], probe.path, probe.direct
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", target, headers={"Host": host})
        response = conn.getresponse()
        return ProbeResult(response.status, response.read().decode("utf-8", "replace"))
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        return ProbeResult(None, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def check(probes: Sequence[Probe], results: Sequence[ProbeResult]) -> list[str]:
    if len(results) != len(probes):
        return [f"probes: {len(results)} results for {len(probes)} probes"]
    failures = []
    for probe, result in zip(probes, results):
        seen = f"got {result.status} {result.body.strip()[:80]!r}" if result.status is not None else (
            f"got no answer ({result.error})")
        if probe.refused:
            if result.status is not None:
                failures.append(f"probe {probe.describe()}: expected the connection refused, {seen}")
        elif result.status != probe.status or (probe.body is not None and result.body.strip() != probe.body):
            wanted = f"{probe.status}" + (f" {probe.body!r}" if probe.body is not None else "")
            failures.append(f"probe {probe.describe()}: expected {wanted}, {seen}")
    return failures
