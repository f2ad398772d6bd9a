"""What the control plane's current snapshot holds for proxies the embedded platform starts (Istio's injector reads
the same as it creates a pod): the ProxyConfig resources and the mesh config's defaultConfig.concurrency, from which
api/proxyconfig.py picks a proxy's `concurrency`. Fetched once per batch of proxies started together (`Batch`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from sailmesh.api import proxyconfig as effective
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource
from sailmesh.errors import PlatformError
from sailmesh.store.base import sort_by_creation


@dataclass(frozen=True)
class ProxyDefaults:
    """The control plane's answer: ProxyConfigs oldest first, the mesh default and the root namespace."""

    configs: Sequence[Resource]
    mesh_concurrency: int | None
    root_namespace: str

    def concurrency(self, namespace: str, labels: Mapping[str, str]) -> int | None:
        """The proxy's worker count by Istio's precedence (None: nothing sets it)."""
        return effective.concurrency(self.configs, namespace, labels, self.root_namespace,
                                     mesh_concurrency=self.mesh_concurrency)


async def fetch(api_url: str, token_file: str) -> ProxyDefaults:
    """One call to the control plane's /api/v1/proxy-defaults; PlatformError when it does not answer."""
    with open(token_file, encoding="utf-8") as fh:
        token = fh.read().strip()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), trust_env=False) as s, \
                s.get(f"{api_url}/api/v1/proxy-defaults", headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
            if r.status != 200 or not isinstance(body, Mapping):
                raise PlatformError(f"the control plane did not give its proxy defaults: {body}")
    except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as e:
        raise PlatformError(f"the control plane did not give its proxy defaults: {e}") from None
    items = body.get("proxyConfigs")
    mesh = body.get("meshConcurrency")
    return ProxyDefaults(
        list(sort_by_creation(resource_from_dict(dict(i)) for i in items or () if isinstance(i, Mapping))),
        mesh if isinstance(mesh, int) and not isinstance(mesh, bool) else None, str(body.get("rootNamespace") or ""))


class Batch:
    """One fetch shared by the proxies started together (`sailmesh up`'s gateways and workloads): the first caller
    fetches, the others wait for that answer; a proxy started later makes a new Batch (fresh config)."""

    def __init__(self, get: Callable[[], Awaitable[ProxyDefaults]]) -> None:
        self._get = get
        self._answer: asyncio.Task[ProxyDefaults] | None = None

    async def defaults(self) -> ProxyDefaults:
        if self._answer is None:
            self._answer = asyncio.ensure_future(self._get())
        return await asyncio.shield(self._answer)
