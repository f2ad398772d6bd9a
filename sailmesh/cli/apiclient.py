"""A small synchronous client for the running control plane's HTTP API (used by apply/delete/get)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from sailmesh.cli import rawhttp
from sailmesh.errors import PlatformError

if TYPE_CHECKING:  # ssl and urllib load only for the remote (https) API: every local call is plain HTTP
    import ssl

# API tokens by API URL, remembered by cli.common.running_mesh when it loads the mesh state, so every verb that
# finds the mesh that way authenticates without passing the token around.
_tokens: dict[str, str] = {}


def remember_token(api_url: str, token: str) -> None:
    """Send `token` with every call to `api_url` from now on (this process only)."""
    if token:
        _tokens[api_url] = token


# A remote control plane (https://HOST:PORT, its --api-mtls port) wants the admin client certificate: the directory
# `sailmesh x ca admin-cert` wrote (cert.pem, key.pem 0600, root-cert.pem).
CERT_DIR_ENV = "SAILMESH_API_CERT_DIR"
CERT, KEY, ROOT = "cert.pem", "key.pem", "root-cert.pem"


def tls_context(cert_dir: str) -> ssl.SSLContext:
    """Client TLS for the remote API: verify the control plane against the mesh's root, present the admin cert."""
    import ssl

    try:
        ctx = ssl.create_default_context(cafile=os.path.join(cert_dir, ROOT))
        ctx.load_cert_chain(os.path.join(cert_dir, CERT), os.path.join(cert_dir, KEY))
    except (OSError, ssl.SSLError) as e:
        raise PlatformError(f"cannot load the admin client certificate from {cert_dir}: {e}") from e
    ctx.check_hostname = False  # the serving certificate names istiod and loopback; the mesh root is what is checked
    return ctx


def call(api_url: str, method: str, path: str, body: Any = None, timeout: float = 30.0,
         token: str = "", cert_dir: str = "") -> tuple[int, Any]:
    """JSON in, (status, JSON) out; connection problems raise PlatformError with a clear message.

    `token` is the control plane's API token (the 0600 `api-token` file in its state dir), sent as a bearer token;
    an https URL is the remote port, where `cert_dir` (or $SAILMESH_API_CERT_DIR) holds the admin certificate.
    """
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    token = token or _tokens.get(api_url, "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if not api_url.startswith("https://"):
        try:
            status, raw = rawhttp.request(api_url + path, method, data, headers, timeout)
        except OSError as e:
            raise PlatformError(f"cannot reach the control plane at {api_url}: {e}") from e
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            if status < 400:
                raise PlatformError(f"the control plane at {api_url} answered HTTP {status} without JSON") from None
            return status, {"errors": [f"HTTP {status} from the control plane"]}
    return _remote(api_url, path, method, data, headers, timeout, cert_dir)


def get_text(api_url: str, path: str, timeout: float = 30.0) -> tuple[int, str]:
    """A GET's (status, body) as the control plane sent it (its JSON text, not parsed and dumped again: what
    bug-report archives)."""
    if api_url.startswith("https://"):
        status, body = call(api_url, "GET", path, timeout=timeout)
        return status, json.dumps(body, indent=1)
    token = _tokens.get(api_url, "")
    try:
        status, raw = rawhttp.request(api_url + path, headers={"Authorization": f"Bearer {token}"} if token else {},
                                      timeout=timeout)
    except OSError as e:
        raise PlatformError(f"cannot reach the control plane at {api_url}: {e}") from e
    return status, raw.decode("utf-8", "replace")


def _remote(api_url: str, path: str, method: str, data: bytes | None, headers: dict[str, str], timeout: float,
            cert_dir: str) -> tuple[int, Any]:
    """`call` on the remote (https) API, with urllib and the admin client certificate."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(api_url + path, data=data, method=method, headers=headers)
    cert_dir = cert_dir or os.environ.get(CERT_DIR_ENV, "")
    if not cert_dir:
        raise PlatformError(f"{api_url} is the remote API: give the admin certificate's directory "
                            f"(${CERT_DIR_ENV}, from `sailmesh x ca admin-cert`)")
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}),
                                                  urllib.request.HTTPSHandler(context=tls_context(cert_dir))]
    opener = urllib.request.build_opener(*handlers)
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
