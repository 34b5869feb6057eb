"""The mesh channel: the control plane's TLS listener for proxies (Istio's port 15012).

Three endpoints, served with the certificate of `mesh.control.serving` (client certificate optional):
- `POST /v1/certificates`: a CSR, authenticated by a token or by the client certificate of this
  connection, signed by `mesh.control.certificates`; 400/401/403/503 answer `{"error": ...}`.
- `POST /v1/discovery`: the xDS-style long poll of docs/architecture.md. It requires a client certificate
  from the mesh CA whose SPIFFE namespace and service account are the node's: 401 without one, 403
  when they differ, so a proxy only ever receives the view of an identity it holds.
- `POST /v1/spans`: a batch of trace spans for the collector (mesh.control.traces), from any workload
  certificate of the mesh (401 without one).
Decisions live in `mesh.control.discovery` and `mesh.control.authn`; this module moves bytes.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mesh.control import authn, certificates, node, plane, server, traces

log = logging.getLogger(__name__)

LONG_POLL_HOLD = 15.0  # seconds a discovery request waits for a change before 304
MAX_BODY = 256 * 1024  # bytes: a discovery request (node metadata) or a CSR is a few KB

PLANE = web.AppKey("plane", plane.ControlPlane)
CERTS = web.AppKey("certificates", certificates.CertificateService)
HOLD = web.AppKey("hold", float)


def make_app(control: plane.ControlPlane, certs: certificates.CertificateService,
             hold: float = LONG_POLL_HOLD) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[PLANE] = control
    app[CERTS] = certs
    app[HOLD] = hold
    app.router.add_post("/v1/discovery", discovery)
    app.router.add_post("/v1/certificates", create_certificate)
    app.router.add_post("/v1/spans", collect_spans)
    return app


def peer_der(request: web.Request) -> bytes | None:
    """The client certificate of this connection (DER; verified by ssl against the mesh root), or None."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


async def create_certificate(request: web.Request) -> web.Response:
    body = await server.read_json(request)
    try:
        issued = await request.app[CERTS].issue(body, peer_der(request))
    except (certificates.RequestError, authn.AuthnError) as exc:
        return server.error(exc.status, str(exc))
    return web.json_response(issued.to_json())


async def collect_spans(request: web.Request) -> web.Response:
    """A proxy's batch of spans (mesh.control.traces), from any workload certificate of the mesh."""
    try:
        caller = request.app[CERTS].peers.authenticate(peer_der(request))
    except authn.AuthnError as exc:
        return server.error(exc.status, f"spans: {exc}")
    body = await server.read_json(request)
    try:
        kept = request.app[PLANE].traces.add(str(body.get("proxy") or caller.spiffe_id), body.get("spans") or [])
    except traces.SpanError as exc:
        return server.error(400, str(exc))
    return web.json_response({"kept": kept})


def authorize(certs: certificates.CertificateService, proxy: node.Node, der: bytes | None) -> web.Response | None:
    """None when the connection's certificate is the node's identity, else the error answer."""
    try:
        caller = certs.peers.authenticate(der)
    except authn.AuthnError as exc:
        return server.error(exc.status, f"discovery for {proxy.id}: {exc}")
    if (caller.namespace, caller.service_account) != (proxy.namespace, proxy.service_account):
        log.warning("discovery refused: %s asked as node %s (namespace %s, service account %s)",
                    caller.spiffe_id, proxy.id, proxy.namespace, proxy.service_account)
        return server.error(403, f"client certificate identity {caller.spiffe_id} does not match node {proxy.id} "
                                 f"(namespace {proxy.namespace}, service account {proxy.service_account})")
    return None


async def discovery(request: web.Request) -> web.StreamResponse:
    disco = request.app[PLANE].discovery
    body = await server.read_json(request)
    try:
        proxy = node.parse_node(body.get("node"))
    except node.NodeError as exc:
        return server.error(400, str(exc))
    refused = authorize(request.app[CERTS], proxy, peer_der(request))
    if refused is not None:
        return refused
    version_info = str(body.get("version_info") or "")
    state = disco.on_request(proxy, version_info, str(body.get("response_nonce") or ""), body.get("error_detail"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.app[HOLD]
    state.polling += 1
    try:
        while True:
            wakeup = state.wakeup  # taken before the check, so a change in between is not missed
            if disco.should_send(state, version_info):
                return web.json_response(disco.mark_sent(state))
            remaining = deadline - loop.time()
            if remaining <= 0 or disco.closing:
                return web.Response(status=304)
            try:
                await asyncio.wait_for(wakeup.wait(), remaining)
            except TimeoutError:
                pass
    finally:
        state.polling -= 1
        state.last_seen = disco.clock()
