"""The proxy's discovery client: long-polls the control plane for its view, ACKs or NACKs each version.

xDS semantics over HTTP/JSON: every request carries the last applied `version_info` and the `nonce` of
the response it answers; a rejected view is NACKed with `error_detail` while the proxy keeps serving its
previous view. When the control plane is away, the proxy keeps its last good view and retries with
capped exponential backoff.

The connection is TLS on the mesh channel (`mesh.proxy.channel.ControlChannel`): the control plane is
checked against the mesh root and its host name, and our workload certificate is the client certificate
(the control plane only serves the view of the identity it names). When the certificate agent installs
a new certificate, the next poll reconnects with it. Without a channel (tests) the connection is plain.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable

from mesh.proxy import channel as channel_mod
from mesh.view import model, wire

log = logging.getLogger("weir.proxy.discovery")

# Longer than the control plane's 15 s hold, so a healthy long poll never times out on our side.
POLL_TIMEOUT_S = 30.0
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0
# A view larger than this is refused before parsing: it bounds what one response can make us allocate.
MAX_VIEW_BYTES = 32 * 1024 * 1024

ApplyView = Callable[[model.ProxyView, str], Awaitable[None]]


class DiscoveryClient:
    def __init__(self, host: str, port: int, node: dict, apply_view: ApplyView,
                 channel: channel_mod.ControlChannel | None = None) -> None:
        self.host = host
        self.port = port
        self.node = node
        self.apply_view = apply_view
        self.channel = channel
        self.version = ""
        self.nonce = ""
        self.error: str | None = None
        self.last_nack: dict | None = None
        self.connected = False
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._context: ssl.SSLContext | None = None  # the one the open connection was made with

    async def run(self) -> None:
        backoff = BACKOFF_START_S
        while True:
            try:
                status, body = await asyncio.wait_for(self._poll(), POLL_TIMEOUT_S)
                if status not in (200, 304):  # an unhealthy control plane is backed off too
                    raise ConnectionError(f"control plane answered {status}")
                self.connected = True
                backoff = BACKOFF_START_S
                if status == 200:
                    await self._handle(json.loads(body))
            except asyncio.CancelledError:
                self._close()
                raise
            except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                if self.connected or backoff == BACKOFF_START_S:
                    log.warning("control plane %s:%s unreachable (%s); serving last view %s",
                                self.host, self.port, exc or type(exc).__name__, self.version or "none")
                self.connected = False
                self._close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            except Exception:  # a bug here must not silently end config delivery: log it, back off, go on
                log.exception("discovery failed unexpectedly; serving last view %s", self.version or "none")
                self.connected = False
                self._close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _handle(self, response: dict) -> None:
        if not isinstance(response, dict):
            raise ValueError("discovery response is not a JSON object")
        version = response.get("version_info", "")
        self.nonce = response.get("nonce", "")
        try:
            spec = wire.from_dict(response.get("view"))
            await self.apply_view(spec, version)
        except model.ViewError as exc:
            self.error = str(exc)
            self.last_nack = {"version": version, "error": self.error}
            log.error("NACK view %s: %s (keeping %s)", version, exc, self.version or "none")
            return
        self.version = version
        self.error = None
        if log.isEnabledFor(logging.INFO):
            log.info("applied view %s", version)

    async def _poll(self) -> tuple[int, bytes]:
        context = self.channel.context() if self.channel is not None else None
        if self._streams is not None and context is not self._context:
            self._close()  # a new certificate was installed: present it from now on
        if self._streams is None:
            if self.channel is not None:
                self._streams = await self.channel.connect(context)
            else:
                self._streams = await asyncio.open_connection(self.host, self.port)
            self._context = context
        reader, writer = self._streams
        body = json.dumps({"node": self.node, "version_info": self.version, "response_nonce": self.nonce,
                           "error_detail": self.error}).encode()
        writer.write(channel_mod.request_bytes("/v1/discovery", self.host, self.port, body))
        status, close, payload = await channel_mod.read_response(reader, MAX_VIEW_BYTES)
        if close:
            self._close()
        if status in (400, 401, 403):  # refused: say why (a certificate not matching the node, ...)
            raise ConnectionError(f"control plane answered {status}: {_error_of(payload)}")
        return status, payload

    def _close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    def dump(self) -> dict:
        return {"control_plane": f"{self.host}:{self.port}", "tls": self.channel is not None,
                "connected": self.connected, "version": self.version, "last_nack": self.last_nack}


def _error_of(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("error"))
    except (ValueError, AttributeError):
        return payload[:200].decode("utf-8", "replace")
