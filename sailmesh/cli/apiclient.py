"""A small synchronous client for the running control plane's HTTP API (used by apply/delete/get)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from sailmesh.errors import PlatformError

# API tokens by API URL, remembered by cli.common.running_mesh when it loads the mesh state, so every verb that
# finds the mesh that way authenticates without passing the token around.
_tokens: dict[str, str] = {}


def remember_token(api_url: str, token: str) -> None:
    """Send `token` with every call to `api_url` from now on (this process only)."""
    if token:
        _tokens[api_url] = token


def call(api_url: str, method: str, path: str, body: Any = None, timeout: float = 30.0,
         token: str = "") -> tuple[int, Any]:
    """JSON in, (status, JSON) out; connection problems raise PlatformError with a clear message.

    `token` is the control plane's API token (the 0600 `api-token` file in its state dir), sent as a bearer token.
    """
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    token = token or _tokens.get(api_url, "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(api_url + path, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, {"errors": [f"HTTP {e.code} from the control plane"]}
    except (urllib.error.URLError, OSError) as e:
        raise PlatformError(f"cannot reach the control plane at {api_url}: {e}") from e
