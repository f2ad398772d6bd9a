"""One connection to the API server: lightkube reads the kubeconfig (or in-cluster config) and builds the client.

lightkube handles what is fiddly (kubeconfig contexts, client certificates, bearer tokens and token files, exec
plugins, CA bundles); the informers speak the list/watch protocol themselves over the httpx client it configures,
because they need `allowWatchBookmarks` and their own handling of 410 Gone.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError

from sailmesh.errors import PlatformError

IN_CLUSTER = "in-cluster"


class KubeApiError(PlatformError):
    """The API server answered with an error status (code, reason, message from its Status object)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"API server: {code} {reason}: {message}")
        self.code = code
        self.reason = reason


class Gone(KubeApiError):
    """410 Gone: the resourceVersion asked for is older than the server keeps (compacted); re-list."""


def api_error(code: int, body: Any) -> KubeApiError:
    """The typed error for an error response or watch ERROR event (a Status object)."""
    status = body if isinstance(body, Mapping) else {}
    code = int(status.get("code") or code)
    cls = Gone if code == 410 else KubeApiError
    return cls(code, str(status.get("reason") or ""), str(status.get("message") or body))


def load_config(kubeconfig: str, context: str | None = None) -> SingleConfig:
    """A kubeconfig file's context, or the pod's service account (`in-cluster`)."""
    try:
        if kubeconfig == IN_CLUSTER:
            cfg = KubeConfig.from_service_account().get()
        else:
            cfg = KubeConfig.from_file(os.path.expanduser(kubeconfig)).get(context)
    except (LightkubeConfigError, OSError, KeyError, ValueError) as e:
        raise PlatformError(f"cannot load Kubernetes config {kubeconfig!r}: {e}") from e
    if cfg is None:
        raise PlatformError(f"no context in {kubeconfig!r}")
    return cfg


@dataclass
class KubeConnection:
    """The httpx client for one API server, with JSON helpers for the calls the platform makes."""

    http: httpx.AsyncClient
    server: str

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET a path; KubeApiError for an error status."""
        resp = await self.http.get(path, params=dict(params or {}))
        return self._body(resp)

    async def send_json(self, method: str, path: str, body: Mapping[str, Any],
                        content_type: str = "application/json", params: Mapping[str, str] | None = None
                        ) -> dict[str, Any]:
        """POST/PUT/PATCH a JSON body; KubeApiError for an error status."""
        resp = await self.http.request(method, path, content=json.dumps(body).encode(),
                                       headers={"Content-Type": content_type}, params=dict(params or {}))
        return self._body(resp)

    async def delete(self, path: str) -> None:
        """DELETE a path; a missing object is not an error."""
        resp = await self.http.delete(path)
        if resp.status_code not in (200, 202, 404):
            self._body(resp)

    async def stream_lines(self, path: str, params: Mapping[str, str], timeout_s: float) -> AsyncIterator[str]:
        """A watch: the response's lines as they arrive; KubeApiError (Gone for 410) for an error status."""
        timeout = httpx.Timeout(10.0, read=timeout_s + 30.0)
        async with self.http.stream("GET", path, params=dict(params), timeout=timeout) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                self._body(resp)
            async for line in resp.aiter_lines():
                if line.strip():
                    yield line

    @staticmethod
    def _body(resp: httpx.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 400:
            raise api_error(resp.status_code, body)
        return body if isinstance(body, dict) else {}

    async def close(self) -> None:
        await self.http.aclose()


def connect(kubeconfig: str, context: str | None = None) -> KubeConnection:
    """A connection from a kubeconfig path (or `in-cluster`); nothing is sent until the first call."""
    cfg = load_config(kubeconfig, context)
    params = client_adapter.ConnectionParams(timeout=httpx.Timeout(10.0), trust_env=False)
    try:
        http = client_adapter.AsyncClient(cfg, params)
    except (LightkubeConfigError, OSError, ValueError) as e:
        raise PlatformError(f"cannot connect with {kubeconfig!r}: {e}") from e
    return KubeConnection(http, str(cfg.cluster.server))
