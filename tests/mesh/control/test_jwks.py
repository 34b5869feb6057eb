"""JWKS resolution outside the builder: file:// read at snapshot time, http(s) fetched from a local aiohttp
server, OpenID discovery, failures (Istio's fake key set), refresh keeping the last good key set, and the
control plane taking a new snapshot when a fetch lands."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.control import builder, config_store, jwks, plane, registry, security, snapshot
from tests.mesh.control.conftest import BOOKINFO, NS, sidecar, snap
from tests.mesh.control.fakes import FakeClock
from tests.mesh.control.test_security_authz import JWKS_TEXT, ra

OTHER_JWKS = json.dumps({"keys": [{"kty": "oct", "kid": "k2", "k": "c2VjcmV0"}]})


class KeyServer:
    """/jwks answers `body` with `status` after `delay` s; /.well-known/openid-configuration points at it."""

    def __init__(self) -> None:
        self.body, self.status, self.delay, self.hits = JWKS_TEXT, 200, 0.0, 0
        app = web.Application()
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        self.server = TestServer(app, host="127.0.0.1")

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text=self.body, content_type="application/json")

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url(""), "jwks_uri": self.url("/jwks")})

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def __aenter__(self) -> KeyServer:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.server.close()


def resources(rules: str):
    return snap(ra("keys", NS, rules)).resources


def rule_jwks(resolved, res) -> str:
    s = snapshot.build_snapshot(res, snap().registry, jwks=resolved)
    (rule,) = builder.build_proxy_view(s, sidecar("books-v1")).security.jwt_rules
    return rule.jwks


def test_http_jwks_is_prefetched_and_inlined():
    async def main():
        async with KeyServer() as keys:
            res = resources(f"  - {{issuer: a, jwksUri: '{keys.url('/jwks')}'}}")
            resolver = jwks.JwksResolver()
            await resolver.prefetch(res)
            try:
                return rule_jwks(resolver.resolve(res), res), keys.hits
            finally:
                await resolver.close()

    assert asyncio.run(main()) == (JWKS_TEXT, 1)


def test_issuer_discovery_when_no_jwks_uri():
    async def main():
        async with KeyServer() as keys:
            res = resources(f"  - {{issuer: '{keys.url('')}'}}")
            resolver = jwks.JwksResolver()
            await resolver.prefetch(res)
            await resolver.close()
            return rule_jwks(resolver.resolve(res), res)

    assert asyncio.run(main()) == JWKS_TEXT


def test_fetch_scheduled_by_a_snapshot_calls_on_change():
    async def main():
        async with KeyServer() as keys:
            res = resources(f"  - {{issuer: a, jwksUri: '{keys.url('/jwks')}'}}")
            changed = asyncio.Event()
            resolver = jwks.JwksResolver(on_change=changed.set)
            first = resolver.resolve(res)  # not fetched yet: the rule gets the fake key set meanwhile
            await asyncio.wait_for(changed.wait(), 5)
            second = resolver.resolve(res)
            await resolver.close()
            return rule_jwks(first, res), rule_jwks(second, res)

    assert asyncio.run(main()) == (security.FAKE_JWKS, JWKS_TEXT)


def test_failed_fetch_rejects_the_issuer_and_warns(caplog):
    async def main():
        async with KeyServer() as keys:
            keys.status = 503
            res = resources(f"  - {{issuer: a, jwksUri: '{keys.url('/jwks')}'}}")
            resolver = jwks.JwksResolver()
            await resolver.prefetch(res)
            await resolver.close()
            return rule_jwks(resolver.resolve(res), res), resolver.status()

    with caplog.at_level(logging.WARNING, logger="mesh.control.jwks"):
        key_set, status = asyncio.run(main())
    assert key_set == security.FAKE_JWKS
    assert "HTTP 503" in caplog.text and "rejected" in caplog.text
    assert [s["loaded"] for s in status.values()] == [False]


def test_fetch_timeout_is_the_rule_timeout():
    async def main():
        async with KeyServer() as keys:
            keys.delay = 1.0
            res = resources(f"  - {{issuer: a, jwksUri: '{keys.url('/jwks')}', timeout: 100ms}}")
            resolver = jwks.JwksResolver()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await resolver.prefetch(res)
            elapsed = loop.time() - started
            await resolver.close()
            return resolver.resolve(res), elapsed

    resolved, elapsed = asyncio.run(main())
    assert resolved == {} and elapsed < 0.9


def test_not_a_key_set_is_refused():
    async def main():
        async with KeyServer() as keys:
            keys.body = '{"keys": []}'
            res = resources(f"  - {{issuer: a, jwksUri: '{keys.url('/jwks')}'}}")
            resolver = jwks.JwksResolver()
            await resolver.prefetch(res)
            await resolver.close()
            return resolver.resolve(res)

    assert asyncio.run(main()) == {}


def test_refresh_replaces_the_key_set_and_a_failed_refresh_keeps_the_last_good():
    clock = FakeClock()

    async def main():
        async with KeyServer() as keys:
            res = resources(f"  - {{issuer: a, jwksUri: '{keys.url('/jwks')}'}}")
            changed = asyncio.Event()
            resolver = jwks.JwksResolver(on_change=changed.set, clock=clock, refresh_interval=60)
            await resolver.prefetch(res)
            keys.body = OTHER_JWKS
            assert resolver.resolve(res) == {keys.url("/jwks"): JWKS_TEXT} and keys.hits == 1  # still fresh
            clock.advance(61)
            resolver.resolve(res)  # stale: re-fetched in the background
            await asyncio.wait_for(changed.wait(), 5)
            refreshed = resolver.resolve(res)
            keys.status = 500
            clock.advance(61)
            resolver.resolve(res)
            for _ in range(100):
                if keys.hits == 3:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            kept = resolver.resolve(res)
            await resolver.close()
            return refreshed, kept, keys.url("/jwks")

    refreshed, kept, url = asyncio.run(main())
    assert refreshed == {url: OTHER_JWKS} and kept == {url: OTHER_JWKS}


def test_file_jwks_is_read_at_each_snapshot(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(JWKS_TEXT)
    res = resources(f"  - {{issuer: a, jwksUri: 'file://{path}'}}")
    resolver = jwks.JwksResolver()
    assert rule_jwks(resolver.resolve(res), res) == JWKS_TEXT
    path.write_text(OTHER_JWKS)
    assert rule_jwks(resolver.resolve(res), res) == OTHER_JWKS
    path.write_text("not json")
    assert rule_jwks(resolver.resolve(res), res) == OTHER_JWKS  # a bad file keeps the last good key set
    assert rule_jwks(jwks.JwksResolver().resolve(res), res) == security.FAKE_JWKS


def test_control_plane_fetches_before_the_first_snapshot_and_on_new_config(tmp_path):
    async def main():
        async with KeyServer() as keys:
            store = config_store.ConfigStore(tmp_path)
            store.apply([("ra.yaml", ra("keys", NS, f"  - {{issuer: a, jwksUri: '{keys.url('/jwks')}'}}"))])
            source = registry.StaticRegistry(registry.parse_registry(BOOKINFO))
            control = plane.ControlPlane(store, source, quiet=0.01, max_delay=0.05)
            await control.start()
            try:
                first = dict(control.snapshot.jwks)
                keys.body = OTHER_JWKS
                discovery_url = keys.url("")
                store.apply([("ra2.yaml", ra("more", NS, f"  - {{issuer: '{discovery_url}'}}"))])
                wanted = discovery_url.rstrip("/") + security.OPENID_CONFIGURATION
                for _ in range(200):
                    if wanted in control.snapshot.jwks:
                        break
                    await asyncio.sleep(0.01)
                return first, dict(control.snapshot.jwks), keys.url("/jwks"), wanted
            finally:
                await control.stop()

    first, later, url, wanted = asyncio.run(main())
    assert first == {url: JWKS_TEXT}
    assert later == {url: JWKS_TEXT, wanted: OTHER_JWKS}
