"""End to end: a browser's CORS preflight and request through the ingress gateway, with `corsPolicy` on the
ingress VirtualService, applied live; the route without it answers as before."""

from __future__ import annotations

import urllib.request

import pytest
import yaml

from tests.e2e.conftest import DIRECT

pytestmark = pytest.mark.e2e

ORIGIN = "http://books.example"
POLICY = {"allowOrigins": [{"exact": ORIGIN}], "allowMethods": ["GET"], "allowHeaders": ["x-client"],
          "maxAge": "600s", "exposeHeaders": ["x-request-id"]}


def call(mesh, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(mesh.ingress + "/gateway/books", method=method, headers=headers)
    with DIRECT.open(request, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def test_a_preflight_is_answered_at_the_ingress_and_the_answer_allows_the_origin(mesh, tmp_path):
    documents = list(yaml.safe_load_all((mesh.root / "stacks" / "routing" / "gateway.yaml").read_text()))
    ingress_vs = next(d for d in documents if d["kind"] == "VirtualService")
    ingress_vs["spec"]["http"][0]["corsPolicy"] = POLICY  # the /gateway route
    path = tmp_path / "gateway-cors.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    applied = mesh.meshctl("apply", "-f", str(path))
    assert "corsPolicy" not in applied.stdout + applied.stderr  # enforced: no WEIR0001 warning
    mesh.wait_synced()
    try:
        status, headers, body = call(mesh, "OPTIONS", {"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                                                       "Access-Control-Request-Headers": "x-client"})
        assert (status, body) == (200, b"")
        assert headers["access-control-allow-origin"] == ORIGIN
        assert (headers["access-control-allow-methods"], headers["access-control-allow-headers"],
                headers["access-control-max-age"]) == ("GET", "x-client", "600")
        status, headers, body = call(mesh, "GET", {"Origin": ORIGIN})
        assert status == 200 and b'"books"' in body
        assert (headers["access-control-allow-origin"], headers["access-control-expose-headers"]) == (
            ORIGIN, "x-request-id")
        _, headers, _ = call(mesh, "GET", {"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in headers
    finally:
        mesh.apply("gateway")
        mesh.wait_synced()
    _, headers, _ = call(mesh, "GET", {"Origin": ORIGIN})
    assert "access-control-allow-origin" not in headers  # the policy left with the rule
