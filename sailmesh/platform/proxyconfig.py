"""The ProxyConfig resources the control plane holds now, for a proxy the embedded platform starts (Istio's injector
reads them as it creates a pod): api/proxyconfig.py picks the proxy's `concurrency` from them."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from sailmesh.api.parse import resource_from_dict
from sailmesh.api.proxyconfig import KIND
from sailmesh.api.resource import Resource
from sailmesh.errors import PlatformError
from sailmesh.store.base import sort_by_creation


async def fetch(api_url: str, token_file: str) -> list[Resource]:
    """Every ProxyConfig, oldest first; PlatformError when the control plane does not answer."""
    with open(token_file, encoding="utf-8") as fh:
        token = fh.read().strip()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), trust_env=False) as s, \
                s.get(f"{api_url}/api/v1/resources", params={"kind": KIND},
                      headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
            if r.status != 200:
                raise PlatformError(f"the control plane did not list ProxyConfigs: {body}")
    except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as e:
        raise PlatformError(f"the control plane did not list ProxyConfigs: {e}") from None
    items = body.get("items") if isinstance(body, Mapping) else None
    return list(sort_by_creation(resource_from_dict(dict(i)) for i in items or () if isinstance(i, Mapping)))
