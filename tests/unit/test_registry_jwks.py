"""The control plane's JWKS fetcher against a local HTTP server: fetch, change events, refresh, failing closed.

Istio's behaviour matched (pilot/pkg/model/jwks_resolver.go): istiod fetches each jwksUri (or, without one, the
jwks_uri its issuer's OpenID discovery document names), refreshes it in the
background, pushes when a key set changes, keeps the last good key set when a refresh fails, and retries a failed
fetch with a back-off; a URI with no key set is served as a key set that rejects every token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sailmesh.api.change import Change
from sailmesh.api.parse import parse_text
from sailmesh.registry.jwks import (
    FetchTimes,
    JwksFetcher,
    discovery_key,
    jwks_key,
    parse_key_set,
    rule_key,
    wanted_uris,
)
from sailmesh.store.base import Subscription

KEYS_A = json.dumps({"keys": [{"kty": "oct", "kid": "a", "k": "c2VjcmV0"}]})
KEYS_B = json.dumps({"keys": [{"kty": "oct", "kid": "b", "k": "c2VjcmV0"}]})


class KeyServer:
    """A local key server whose answer the test changes: (status, body)."""

    def __init__(self) -> None:
        self.answer: tuple[int, str] = (200, KEYS_A)
        self.hits = 0

    async def handle(self, _req: web.Request) -> web.Response:
        self.hits += 1
        status, body = self.answer
        return web.Response(status=status, text=body, content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[tuple[KeyServer, str]]:
    ks = KeyServer()
    app = web.Application()
    app.router.add_get("/jwks", ks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield ks, f"http://127.0.0.1:{port}/jwks"
    await runner.cleanup()


async def next_change(sub: Subscription, timeout: float = 10.0) -> Change:
    return await asyncio.wait_for(sub.__anext__(), timeout)


async def test_fetch_publishes_a_change_and_refresh_follows_the_server(server: tuple[KeyServer, str]) -> None:
    ks, uri = server
    fetcher = JwksFetcher(FetchTimes(refresh=0.05, retry_first=0.05))
    sub = fetcher.watch()
    try:
        fetcher.want({uri: 5.0})
        assert (await next_change(sub)).keys == {jwks_key(uri)}
        assert fetcher.keys() == {uri: KEYS_A}
        ks.answer = (200, KEYS_B)  # the issuer rotates its keys: the next refresh picks them up
        assert (await next_change(sub)).keys == {jwks_key(uri)}
        assert fetcher.keys()[uri] == KEYS_B
        # a failing refresh keeps the last good key set (Istio keeps its cached key)
        ks.answer = (503, "down")
        hits = ks.hits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while ks.hits < hits + 2 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert ks.hits >= hits + 2 and fetcher.failures >= 1
        assert fetcher.keys()[uri] == KEYS_B
        # no longer named by any RequestAuthentication: forgotten (a change, so proxies drop it)
        fetcher.want({})
        assert (await next_change(sub)).keys == {jwks_key(uri)}
        assert fetcher.keys() == {}
    finally:
        await fetcher.close()


async def test_a_failed_first_fetch_leaves_no_key_then_retries(server: tuple[KeyServer, str]) -> None:
    ks, uri = server
    ks.answer = (200, "<html>not a key set</html>")
    fetcher = JwksFetcher(FetchTimes(retry_first=0.05))
    sub = fetcher.watch()
    try:
        fetcher.want({uri: 5.0})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while fetcher.failures < 2 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert fetcher.failures >= 2 and fetcher.keys() == {}  # fails closed: the generator inlines FAKE_JWKS
        ks.answer = (200, KEYS_A)
        assert (await next_change(sub)).keys == {jwks_key(uri)}
        assert fetcher.keys() == {uri: KEYS_A}
    finally:
        await fetcher.close()


async def test_unreachable_uri_never_yields_keys() -> None:
    fetcher = JwksFetcher(FetchTimes(retry_first=0.05))
    try:
        fetcher.want({"http://127.0.0.1:9/jwks": 0.5})  # discard port: nothing listens
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while fetcher.failures < 1 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert fetcher.failures >= 1 and fetcher.keys() == {}
    finally:
        await fetcher.close()


def test_parse_key_set() -> None:
    assert parse_key_set(KEYS_A.encode()) == KEYS_A
    for bad in (b"{}", b'{"keys": []}', b"[]", b"not json"):
        with pytest.raises(ValueError):
            parse_key_set(bad)


@pytest.fixture
async def issuer() -> AsyncIterator[tuple[KeyServer, dict[str, object], str]]:
    """An OpenID provider on loopback: its discovery document (which the test may change) and its key set."""
    ks = KeyServer()
    discovery: dict[str, object] = {}

    async def openid(_req: web.Request) -> web.Response:
        return web.json_response(discovery)
    app = web.Application()
    app.router.add_get("/realm/.well-known/openid-configuration", openid)
    app.router.add_get("/realm/certs", ks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/realm"  # type: ignore[union-attr]
    discovery.update({"issuer": base, "jwks_uri": base + "/certs"})
    yield ks, discovery, base
    await runner.cleanup()


async def test_an_issuer_without_jwks_uri_is_resolved_by_openid_discovery(
        issuer: tuple[KeyServer, dict[str, object], str]) -> None:
    """Istio's resolveJwksURIUsingOpenID: `<issuer>/.well-known/openid-configuration` names the jwks_uri (a trailing
    slash on the issuer is not doubled); a document without an http(s) jwks_uri yields no keys (fails closed)."""
    ks, discovery, base = issuer
    fetcher = JwksFetcher(FetchTimes(refresh=0.05, retry_first=0.05))
    sub = fetcher.watch()
    key = discovery_key(base + "/")
    try:
        fetcher.want({key: 5.0})
        assert (await next_change(sub)).keys == {jwks_key(key)}
        assert fetcher.keys() == {key: KEYS_A} and ks.hits >= 1
        discovery["jwks_uri"] = "file:///etc/passwd"  # no http(s) jwks_uri: the last good key set is kept
        failures = fetcher.failures
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while fetcher.failures < failures + 1 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert fetcher.failures > failures and fetcher.keys() == {key: KEYS_A}
    finally:
        await fetcher.close()


def test_rules_want_their_jwks_uri_or_their_issuers_discovery() -> None:
    """An inline `jwks` wins; then `jwksUri`; then an http(s) issuer's OpenID discovery; else nothing to fetch."""
    assert rule_key('{"keys": []}', "https://k.example/jwks", "https://i.example") is None
    assert rule_key(None, "https://k.example/jwks", "https://i.example") == "https://k.example/jwks"
    assert rule_key(None, None, "https://i.example") == discovery_key("https://i.example")
    assert rule_key(None, None, "testing@secure.istio.io") is None
    ra = parse_text("""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: default}
spec:
  jwtRules:
  - {issuer: "https://i.example", timeout: 2s}
  - {issuer: "testing@secure.istio.io"}
""", "<test>").resources
    assert wanted_uris(ra) == {discovery_key("https://i.example"): 2.0}
