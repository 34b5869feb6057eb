"""Who may get what on the real local mesh: the CA refuses a CSR for an identity the caller does not hold,
whether the caller comes with a bootstrap token or renews over mTLS with its workload certificate; and
configuration of another namespace routes bookinfo's traffic only when it is exported to bookinfo."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from mesh.control import ca as ca_mod
from mesh.control import tokens
from mesh.proxy import certagent
from tests.e2e.conftest import DIRECT

pytestmark = pytest.mark.e2e

BOOKS = "spiffe://cluster.local/ns/bookinfo/sa/books"
RATINGS = "spiffe://cluster.local/ns/bookinfo/sa/ratings"


def state_dir(mesh):
    return mesh.root / "state" / mesh.stack


def ask_certificate(mesh, spiffe: str, token: str | None = None, client: str | None = None) -> tuple[int, dict]:
    """POST /v1/certificates on the mesh channel, with a token or as proxy `client` (its cert and key)."""
    state = state_dir(mesh)
    channel = json.loads((state / "state.json").read_text())["urls"]["meshChannel"]
    context = ssl.create_default_context(cafile=str(state / "ca" / "root-cert.pem"))
    if client is not None:
        context.load_cert_chain(state / "proxies" / client / "cert-chain.pem", state / "proxies" / client / "key.pem")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    body = {"csr": certagent.make_csr(ca_mod.new_key(), spiffe).decode(), **({"token": token} if token else {})}
    request = urllib.request.Request(channel + "/v1/certificates", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def refused_identity(mesh) -> int:
    with DIRECT.open(mesh.control_plane + "/debug/ca", timeout=5) as response:
        return json.load(response)["counters"].get("refused_identity", 0)


def test_a_bootstrap_token_cannot_get_another_identity(mesh):
    before = refused_identity(mesh)
    token = tokens.mint(state_dir(mesh) / "ca" / "tokens", "bookinfo", "ratings", "intruder.bookinfo", now=time.time())
    status, doc = ask_certificate(mesh, BOOKS, token=token)
    assert status == 403, doc
    assert doc["error"].startswith(f"the CSR asks for identity {BOOKS}, but the caller is authenticated as {RATINGS}")
    assert refused_identity(mesh) == before + 1


def test_renewal_over_mtls_cannot_switch_identity(mesh):
    before = refused_identity(mesh)
    status, doc = ask_certificate(mesh, BOOKS, client="ratings-v1.bookinfo")
    assert status == 403, doc
    assert f"authenticated as {RATINGS} (client-certificate)" in doc["error"]
    assert refused_identity(mesh) == before + 1
    status, renewed = ask_certificate(mesh, RATINGS, client="ratings-v1.bookinfo")  # its own: renewed
    assert status == 200 and renewed["spiffeId"] == RATINGS


def other_namespace_vs(export_to: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings-v2-only, namespace: other}}
spec:
  hosts: [ratings.bookinfo.svc.cluster.local]
  exportTo: ["{export_to}"]
  http:
  - route: [{{destination: {{host: ratings.bookinfo.svc.cluster.local, subset: v2}}}}]
"""


# The stack's own VirtualService for ratings (release round-robin): bookinfo's, so it wins for bookinfo's
# sidecars over any other namespace's (Istio: the proxy's namespace first).
OWNER_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
"""


def ratings_route(mesh) -> list[str]:
    """The route names of books-v1's virtual host for ratings, as `proxy-config routes` shows them."""
    tables = json.loads(mesh.meshctl("proxy-config", "books-v1", "routes").stdout)
    hosts = [h for t in tables for h in t["virtual_hosts"] if h["name"].startswith("ratings.bookinfo.")]
    return [r["name"] for h in hosts for r in h["routes"]]


def ratings_versions(mesh, calls: int = 12) -> Counter:
    return Counter(mesh.books()["versions"]["ratings"] for _ in range(calls))


@pytest.mark.parametrize(("export_to", "owner", "route"), [
    pytest.param(".", False, "default", id="dot: not bookinfo's"),
    pytest.param("~", False, "default", id="tilde: nobody's"),
    pytest.param("bookinfo", False, "other/ratings-v2-only.0", id="exported to bookinfo"),
    pytest.param("*", False, "other/ratings-v2-only.0", id="exported everywhere"),
    pytest.param("*", True, "bookinfo/ratings.0", id="exported, but bookinfo has its own"),
])
def test_a_virtual_service_of_another_namespace_routes_bookinfo_only_when_exported_to_it(
        mesh, export_to, owner, route):
    text = other_namespace_vs(export_to)
    if not owner:
        mesh.meshctl("delete", "-f", "-", input=OWNER_VS)
    mesh.meshctl("apply", "-f", "-", input=text)
    try:
        mesh.wait_synced()
        assert ratings_route(mesh) == [route]
        versions = ratings_versions(mesh)
        assert set(versions) == ({"v2"} if route.startswith("other/") else {"v1", "v2"}), versions
    finally:
        mesh.meshctl("delete", "-f", "-", input=text)
        if not owner:
            mesh.meshctl("apply", "-f", "-", input=OWNER_VS)
        mesh.wait_synced()
    assert ratings_route(mesh) == ["bookinfo/ratings.0"]
