"""The proxy's end of the mesh channel: where the control plane is, whom to trust, and the TLS to it.

The control plane's serving certificate must chain to the mesh root given with `--ca-file` (never the
system roots) and name the host we dialled (or `--control-plane-sni`). Once the proxy holds a workload
certificate (`mesh.proxy.tls.MeshTls`), it is presented as the client certificate: discovery requires
it, and a renewal CSR is authenticated by it. The context is rebuilt when a new certificate is installed,
so `mesh.proxy.discovery` reconnects with the new one. `read_response` parses the small HTTP/1.1
answers of both endpoints. Next: `mesh.proxy.certagent` (CSRs) and `mesh.proxy.discovery` (views).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

from mesh.proxy import tls

REQUEST_TIMEOUT_S = 10.0
MAX_HEADER_LINES = 100  # an answer with more header lines than this is not our control plane
MAX_ANSWER_BYTES = 1024 * 1024  # a CSR answer is a few KB; views have their own bound (discovery)


class ChannelError(ConnectionError):
    """The control plane's answer cannot be read."""


class ControlChannel:
    __slots__ = ("host", "port", "server_hostname", "ca_file", "mesh_tls", "_roots", "_context", "_context_key")

    def __init__(self, host: str, port: int, ca_file: str | Path, mesh_tls: tls.MeshTls | None = None,
                 server_hostname: str | None = None) -> None:
        self.host = host
        self.port = port
        self.server_hostname = server_hostname or host
        self.ca_file = Path(ca_file)
        self.mesh_tls = mesh_tls
        self._roots = b""
        self._context: ssl.SSLContext | None = None
        self._context_key: tuple[bool, int] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def roots(self) -> bytes:
        """The mesh root; read on first use (locally the control plane writes it before proxies start)."""
        if not self._roots:
            self._roots = self.ca_file.read_bytes()
        return self._roots

    def context(self, with_certificate: bool = True) -> ssl.SSLContext:
        """TLS to the control plane, with our workload certificate when we have one and want it sent."""
        material = self.mesh_tls
        present = with_certificate and material is not None and material.ready
        key = (present, material.installed if present else 0)
        if self._context is None or key != self._context_key:
            self._context = tls.client_context(self.roots(), material.cert_file if present else None,
                                               material.key_file if present else None, check_hostname=True)
            self._context_key = key
        return self._context

    async def connect(self, context: ssl.SSLContext | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, ssl=context,
                                             server_hostname=self.server_hostname if context else None)

    async def post_json(self, path: str, body: Any, *, with_certificate: bool = True) -> tuple[int, Any]:
        """One request on its own connection (CSRs are rare); the JSON answer, or {} when there is none."""
        async def exchange() -> tuple[int, bytes]:
            reader, writer = await self.connect(self.context(with_certificate))
            try:
                writer.write(request_bytes(path, self.server_hostname, self.port, json.dumps(body).encode(),
                                           close=True))
                status, _, payload = await read_response(reader, MAX_ANSWER_BYTES)
            except BaseException:
                writer.transport.abort()  # a timeout or a bad answer: never wait to flush to that peer
                raise
            close_or_abort(writer)
            return status, payload

        status, payload = await asyncio.wait_for(exchange(), REQUEST_TIMEOUT_S)
        try:
            return status, json.loads(payload) if payload else {}
        except ValueError:
            raise ChannelError(f"control plane answered {status} with a body that is not JSON") from None


def close_or_abort(writer: asyncio.StreamWriter) -> None:
    """After the answer: closed, or aborted when some of the request is still unsent (a peer that answered
    without reading it all would otherwise keep the socket and the bytes until it does)."""
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()
    else:
        writer.close()


def request_bytes(path: str, host: str, port: int, body: bytes, close: bool = False) -> bytes:
    connection = b"connection: close\r\n" if close else b""
    return (b"POST %b HTTP/1.1\r\nhost: %b:%d\r\ncontent-type: application/json\r\n%bcontent-length: %d\r\n\r\n%b"
            % (path.encode(), host.encode(), port, connection, len(body), body))


async def read_response(reader: asyncio.StreamReader, limit: int) -> tuple[int, bool, bytes]:
    """(status, connection closed by the server, body) of one HTTP/1.1 answer with a content-length."""
    status_line = await reader.readline()
    if not status_line:
        raise ChannelError("control plane closed the connection")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ChannelError(f"control plane sent a malformed status line {status_line[:80]!r}")
    length, close = 0, False
    for _ in range(MAX_HEADER_LINES):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    else:
        raise ChannelError(f"control plane sent more than {MAX_HEADER_LINES} header lines")
    if length > limit:
        raise ValueError(f"answer of {length} bytes exceeds {limit}")
    return int(parts[1]), close, await reader.readexactly(length) if length else b""
