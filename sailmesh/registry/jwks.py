"""JWKS fetcher: the control plane fetches and caches the key sets RequestAuthentication `jwksUri`s name.

This is Istio's default (PILOT_JWT_ENABLE_REMOTE_JWKS=false, istiod's JwksResolver): istiod fetches each jwksUri,
caches it, refreshes it in the background and inlines the keys into the jwt_authn config it sends (local_jwks), so
proxies never reach the key server themselves. sailmesh does the same, off the generators' path: the fetcher is a
small registry-like source. The control plane tells it which URIs the config names (`want`); each URI has one task
that fetches it with aiohttp (never blocking the event loop), refreshes it every `refresh` seconds (Istio's
PILOT_JWT_PUB_KEY_REFRESH_INTERVAL, 20 minutes), and retries a failure after 1 s, doubling up to an hour (Istio's
refresh-on-failure back-off). A key set that arrives or changes is published as a Change of kind `JWKS_KIND` (name =
the URI); `snapshot.build` copies `keys()` into the snapshot and the generators inline it from there.

A rule with an `issuer` but neither `jwks` nor `jwksUri` is resolved as Istio's resolveJwksURIUsingOpenID does: the
issuer's OpenID discovery document (`<issuer>/.well-known/openid-configuration`) names the `jwks_uri`, fetched next;
such a rule is wanted under the key `discovery_key(issuer)` (rule_key), refreshed like any other. Only an issuer that
is an http(s) URL is looked up (any other is no URL to discover from: its tokens are rejected, reported at apply).

Failure is closed, as in Istio: a URI with no key set yet (never fetched, unreachable, not a JWKS) is absent from
`keys()`, and the jwt_authn builder inlines a key set nobody holds a private key for, so every token is rejected
(401) while requests without a token pass, as they would with the real keys. A refresh that fails keeps the last
good key set (Istio keeps its cached key until it is evicted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import aiohttp

from sailmesh.api.change import Change
from sailmesh.api.models import model_of
from sailmesh.api.models.security import RequestAuthentication
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.errors import ModelError
from sailmesh.store.base import Broadcaster, Subscription

log = logging.getLogger(__name__)

JWKS_KIND = "JwksKeySet"  # kind of the ResourceKeys that name fetched key sets in change sets (name = the URI)
DEFAULT_TIMEOUT = 5.0  # Istio's JWTRule.timeout default
OPENID_PREFIX = "openid-discovery:"  # keys of rules resolved through their issuer's OpenID discovery document
OPENID_CONFIGURATION = "/.well-known/openid-configuration"  # Istio's openIDDiscoveryCfgURLSuffix
MAX_BODY = 1 << 20  # a key set is a few KB; refuse to hold more than 1 MiB of anyone's answer


def jwks_key(uri: str) -> ResourceKey:
    return ResourceKey(JWKS_KIND, "", uri)


def discovery_key(issuer: str) -> str:
    """The key of the key set found through `issuer`'s OpenID discovery document."""
    return OPENID_PREFIX + issuer


def discoverable(issuer: str | None) -> bool:
    """Whether an issuer is a URL its OpenID discovery document can be fetched from."""
    return bool(issuer) and str(issuer).startswith(("https://", "http://"))


def rule_key(jwks: str | None, jwks_uri: str | None, issuer: str | None) -> str | None:
    """Where a rule's key set comes from: None for an inline `jwks` (Istio's BuildLocalJwks: it wins), else its
    `jwksUri`, else its issuer's OpenID discovery (discovery_key), else None (no key set: tokens rejected)."""
    if jwks:
        return None
    if jwks_uri:
        return jwks_uri
    return discovery_key(str(issuer)) if discoverable(issuer) else None


def wanted_uris(resources: Iterable[Resource]) -> dict[str, float]:
    """Key -> fetch timeout (seconds) for every rule of these RequestAuthentications whose key set is fetched
    (rule_key: its jwksUri, or its issuer's OpenID discovery). The shortest timeout wins when several rules share
    a key."""
    out: dict[str, float] = {}
    for r in resources:
        try:
            spec = model_of(r, RequestAuthentication)
        except ModelError:
            continue
        for rule in spec.jwt_rules or ():
            key = rule_key(rule.jwks, rule.jwks_uri, rule.issuer)
            if key is not None:
                timeout = rule.timeout.seconds if rule.timeout is not None else DEFAULT_TIMEOUT
                out[key] = min(out.get(key, timeout), timeout)
    return out


def parse_key_set(body: bytes) -> str:
    """The body as JWKS text, or ValueError: a JSON object with a non-empty `keys` list (what Envoy accepts)."""
    text = body.decode("utf-8")
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise ValueError("not a JSON Web Key Set (no 'keys' list)")
    return text


@dataclass(frozen=True)
class FetchTimes:
    """How often key sets are fetched again (seconds), Istio's defaults."""

    refresh: float = 20 * 60.0  # PILOT_JWT_PUB_KEY_REFRESH_INTERVAL
    retry_first: float = 1.0  # the first retry after a failure
    retry_max: float = 60 * 60.0  # back-off doubles up to this


class JwksFetcher:
    """Fetches, caches and refreshes the key sets of the wanted URIs; use it from one event loop."""

    def __init__(self, times: FetchTimes | None = None) -> None:
        self.times = times or FetchTimes()
        self._keys: Mapping[str, str] = MappingProxyType({})
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._timeouts: dict[str, float] = {}
        self._events = Broadcaster()
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0
        self.failures = 0

    def keys(self) -> Mapping[str, str]:
        """URI -> the last key set fetched from it (JSON text); the same mapping until a key set changes."""
        return self._keys

    def watch(self) -> Subscription:
        """Change events (keys of kind JWKS_KIND) from now on; unread ones merge."""
        return self._events.subscribe()

    def want(self, uris: Mapping[str, float]) -> None:
        """Fetch exactly these URIs (URI -> timeout): start the new ones now, forget the ones no longer named."""
        for uri in list(self._tasks):
            if uri not in uris:
                self._tasks.pop(uri).cancel()
                self._timeouts.pop(uri, None)
                if uri in self._keys:
                    self._set(uri, None)
        for uri, timeout in uris.items():
            self._timeouts[uri] = timeout
            if uri not in self._tasks:
                self._tasks[uri] = asyncio.get_running_loop().create_task(self._run(uri), name=f"jwks {uri}")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one URI --------------------------------------------------------------------------------------
    async def _run(self, uri: str) -> None:
        delay = self.times.retry_first
        while True:
            try:
                text = await self._fetch(uri, self._timeouts.get(uri, DEFAULT_TIMEOUT))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # network, HTTP status, decoding: all fail closed the same way
                self.failures += 1
                kept = "keeping the last key set" if uri in self._keys else "tokens are rejected until it is fetched"
                log.error("fetching JWKS from %s failed (%s: %s); %s; retry in %.0f s",
                          uri, type(e).__name__, e, kept, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.times.retry_max)
                continue
            delay = self.times.retry_first
            if self._keys.get(uri) != text:
                log.info("JWKS from %s %s", uri, "updated" if uri in self._keys else "fetched")
                self._set(uri, text)
            await asyncio.sleep(self.times.refresh)

    async def _fetch(self, uri: str, timeout: float) -> str:
        self.fetches += 1
        if uri.startswith(OPENID_PREFIX):  # Istio's resolveJwksURIUsingOpenID: the discovery document's jwks_uri
            issuer = uri[len(OPENID_PREFIX):]
            doc = json.loads(await self._get(issuer.rstrip("/") + OPENID_CONFIGURATION, timeout))
            jwks_uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
            if not isinstance(jwks_uri, str) or not discoverable(jwks_uri):
                raise ValueError(f"the OpenID discovery document of {issuer} names no http(s) jwks_uri")
            uri = jwks_uri
        return parse_key_set(await self._get(uri, timeout))

    async def _get(self, url: str, timeout: float) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout),
                                     allow_redirects=True) as resp:
            if not 200 <= resp.status < 300:
                raise ValueError(f"HTTP status {resp.status} from {url}")
            body = await resp.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise ValueError(f"answer larger than {MAX_BODY} bytes from {url}")
        return body

    def _set(self, uri: str, text: str | None) -> None:
        keys = dict(self._keys)
        if text is None:
            keys.pop(uri, None)
        else:
            keys[uri] = text
        self._keys = MappingProxyType(keys)
        self._events.publish(Change.of(jwks_key(uri)))
