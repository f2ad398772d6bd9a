"""End-user authentication through real Envoy: RequestAuthentication on the ingress gateway and on a sidecar.

Istio's rules proven (istio.io RequestAuthentication reference and the authn-policy task, "End-user
authentication"): a request with an invalid token (expired, wrong issuer, wrong key, `alg: none`) gets 401 (a
wrong audience 403, Envoy's answer in Istio too); a request without a token passes; a valid token passes.
Keys come inline (`jwks`), or from a `jwksUri` the control plane fetches (a local key server the test runs), and an
unreachable `jwksUri` fails closed (every token 401, as Istio's fake JWKS does). Istio's own sample tokens
(../shared/conformance/security/jwt) verify against Istio's sample jwks.json on a sidecar's inbound listener.
"""

from __future__ import annotations

import base64
import http.server
import json
import pathlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sailmesh.processes import free_port
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.conftest import CONFORMANCE

pytestmark = pytest.mark.e2e
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
JWT_DIR = CONFORMANCE / "security" / "jwt"

INLINE_ISS = "https://inline.sailmesh.test"
REMOTE_ISS = "https://remote.sailmesh.test"
DEAD_ISS = "https://unreachable.sailmesh.test"
ISTIO_ISS = "testing@secure.istio.io"  # Istio's sample issuer (demo.jwt, groups-scope.jwt)
AUDIENCE = "sailmesh-e2e"

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: details-v1, namespace: default, labels: {app: details, version: v1}}
spec:
  command: [python, -m, sailmesh.samples.bookinfo.details]
  ports: [{name: http, containerPort: 9080, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: details, port: {number: 9080}}}]}]
"""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """An RSA signing key and its public JWK."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        n = self.private.public_key().public_numbers()
        return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "e": "AQAB",
                                     "n": b64(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big"))}]})

    def sign(self, kid: str | None = None, alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload = {"iat": now, "exp": now + 3600, "sub": "alice", **claims}
        header = {"alg": alg, "typ": "JWT", "kid": kid or self.kid}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
        if alg == "none":
            return signing_input + "."
        sig = self.private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64(sig)}"


class KeyServer:
    """A JWKS endpoint on loopback, served from a thread (the control plane fetches it, not Envoy), and an OpenID
    provider's discovery document naming it (`issuer` + /.well-known/openid-configuration)."""

    def __init__(self, body: str) -> None:
        self.body = body
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = outer.body.encode()
                if self.path == "/idp/.well-known/openid-configuration":
                    data = json.dumps({"issuer": outer.issuer, "jwks_uri": outer.url}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.issuer = f"http://127.0.0.1:{self.httpd.server_address[1]}/idp"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def status(url: str, token: str | None = None, header: str = "Authorization", prefix: str = "Bearer ",
           host: str | None = None) -> int:
    headers = {header: prefix + token} if token is not None else {}
    req = urllib.request.Request(url, headers=headers | ({"Host": host} if host else {}))
    try:
        with NO_PROXY.open(req, timeout=10) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def request_authentication(name: str, ns: str, selector: dict[str, str], rules: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                       "metadata": {"name": name, "namespace": ns},
                       "spec": {"selector": {"matchLabels": selector}, "jwtRules": rules}})


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {name: Key(name) for name in ("inline", "remote", "stranger")}


@pytest.fixture(scope="module")
def key_server(keys: dict[str, Key]) -> Iterator[KeyServer]:
    ks = KeyServer(keys["remote"].jwks())
    yield ks
    ks.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    root = tmp_path_factory.mktemp("jwt-mesh")
    (root / "config").mkdir()
    (root / "config" / "mesh.yaml").write_text(MESH)
    m = RunningMesh(str(root / "state"), dirs=[str(root / "config")])
    yield m
    m.stop()


def apply(mesh: RunningMesh, tmp: pathlib.Path, text: str) -> None:
    path = tmp / "policy.yaml"
    path.write_text(text)
    mesh.cli("apply", "-f", str(path), check=True)


def test_gateway_tokens_inline_remote_and_unreachable_keys(
        mesh: RunningMesh, keys: dict[str, Key], key_server: KeyServer, tmp_path: pathlib.Path) -> None:
    url = mesh.gateway_url() + "/details/0"
    wait_for(lambda: status(url) == 200, timeout=30, interval=0.2, what="details through the gateway")
    inline, remote, stranger = keys["inline"], keys["remote"], keys["stranger"]
    good = inline.sign(iss=INLINE_ISS, aud=AUDIENCE)
    assert status(url, good) == 200  # no RequestAuthentication yet: tokens are not looked at

    dead_port = free_port()  # nothing listens there
    apply(mesh, tmp_path, request_authentication("ingress-jwt", "istio-system", {"istio": "ingressgateway"}, [
        {"issuer": INLINE_ISS, "jwks": inline.jwks(), "audiences": [AUDIENCE]},
        {"issuer": REMOTE_ISS, "jwksUri": key_server.url},
        {"issuer": DEAD_ISS, "jwksUri": f"http://127.0.0.1:{dead_port}/jwks.json", "timeout": "1s"},
        {"issuer": "https://params.sailmesh.test", "jwks": inline.jwks(), "fromParams": ["access_token"]},
        {"issuer": key_server.issuer},  # no jwks, no jwksUri: Istio's OpenID discovery of the issuer's keys
    ]))
    # the policy is in force once an expired token is refused
    expired = inline.sign(iss=INLINE_ISS, aud=AUDIENCE, exp=int(time.time()) - 600, iat=int(time.time()) - 1200)
    wait_for(lambda: status(url, expired) == 401, timeout=20, interval=0.1, what="the RequestAuthentication")

    assert status(url, good) == 200
    assert status(url) == 200  # no token: passes (only an AuthorizationPolicy can require one)
    assert status(url, inline.sign(iss="https://other.sailmesh.test", aud=AUDIENCE)) == 401  # unknown issuer
    # wrong audience: Envoy's jwt_authn answers 403 "Audiences in Jwt are not allowed" (envoyproxy/envoy#7646),
    # so Istio's proxies do too; the token is still refused
    assert status(url, inline.sign(iss=INLINE_ISS, aud="someone-else")) == 403
    assert status(url, stranger.sign(kid="inline", iss=INLINE_ISS, aud=AUDIENCE)) == 401  # wrong key
    assert status(url, inline.sign(alg="none", iss=INLINE_ISS, aud=AUDIENCE)) == 401  # alg: none
    assert status(url, "not.a.jwt") == 401

    # jwksUri: fetched by the control plane from the test's key server, then inlined into the gateway's config
    wait_for(lambda: status(url, remote.sign(iss=REMOTE_ISS)) == 200, timeout=30, interval=0.2,
             what="the key set fetched from the jwksUri")
    assert status(url, inline.sign(kid="remote", iss=REMOTE_ISS)) == 401  # right kid, wrong key
    # only an issuer: its discovery document names the key server's jwks_uri (Istio's resolveJwksURIUsingOpenID)
    wait_for(lambda: status(url, remote.sign(iss=key_server.issuer)) == 200, timeout=30, interval=0.2,
             what="the key set found through the issuer's OpenID discovery document")
    assert status(url, stranger.sign(kid="remote", iss=key_server.issuer)) == 401
    # an unreachable jwksUri fails closed: its tokens are all rejected, requests without one still pass
    assert status(url, inline.sign(iss=DEAD_ISS)) == 401
    assert status(url, remote.sign(iss=DEAD_ISS)) == 401
    # fromParams: the token in ?access_token=
    params = "https://params.sailmesh.test"
    assert status(url + "?access_token=" + inline.sign(iss=params)) == 200
    assert status(url + "?access_token=" + stranger.sign(kid="inline", iss=params)) == 401


def test_sidecar_inbound_with_istios_sample_tokens(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    if not JWT_DIR.is_dir():
        pytest.skip(f"Istio's sample tokens not found at {JWT_DIR}")
    tokens = json.loads((JWT_DIR / "tokens.json").read_text())
    url = f"http://{mesh.base_ip}:9080/details/0"  # the sidecar's inbound listener on the pod IP
    wait_for(lambda: status(url) == 200, timeout=30, interval=0.2, what="the sidecar's inbound listener")
    # istio.io authz-jwt task: RequestAuthentication jwt-example (jwksUri replaced by the inline jwks.json)
    apply(mesh, tmp_path, request_authentication("jwt-example", "default", {"app": "details"}, [
        {"issuer": ISTIO_ISS, "jwks": (JWT_DIR / "jwks.json").read_text()}]))
    wait_for(lambda: status(url, "garbage") == 401, timeout=20, interval=0.1, what="jwt_authn on the sidecar")
    assert status(url, tokens["demo.jwt"]["token"]) == 200
    assert status(url, tokens["groups-scope.jwt"]["token"]) == 200
    assert status(url) == 200
    forged = tokens["demo.jwt"]["token"].rsplit(".", 1)[0] + "." + b64(b"\x00" * 256)
    assert status(url, forged) == 401


def test_gateway_routes_on_verified_jwt_claims(mesh: RunningMesh, keys: dict[str, Key],
                                               tmp_path: pathlib.Path) -> None:
    """Istio's JWT claim-based routing task (istio.io tasks/security/authentication/jwt-route): a VirtualService
    bound to the ingress gateway matches `@request.auth.claims.groups`; a token whose verified `groups` holds
    group1 is routed (200), one without it, a forged one or none gets no route (404; the forged one 401)."""
    key = keys["inline"]
    iss = "https://claims.sailmesh.test"
    apply(mesh, tmp_path, request_authentication("claims-jwt", "istio-system", {"istio": "ingressgateway"}, [
        {"issuer": iss, "jwks": key.jwks()}]))
    apply(mesh, tmp_path, json.dumps({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "claims", "namespace": "default"},
        "spec": {"hosts": ["claims.example"], "gateways": ["gw"], "http": [{
            "match": [{"uri": {"prefix": "/details"},
                       "headers": {"@request.auth.claims.groups": {"exact": "group1"}}}],
            "route": [{"destination": {"host": "details", "port": {"number": 9080}}}]}]}}))
    url = mesh.gateway_url() + "/details/0"

    def code(token: str | None) -> int:
        return status(url, token, host="claims.example")
    # until the claims VirtualService reaches the gateway, Host claims.example takes the `*` host's route (200 for
    # anyone): wait for the request without a token to find no route, then for the policy's key
    wait_for(lambda: code(None) == 404, timeout=30, interval=0.2, what="the claims VirtualService at the gateway")
    member = key.sign(iss=iss, groups=["group1", "group2"])
    wait_for(lambda: code(member) == 200, timeout=30, interval=0.2, what="the claim route for group1")
    assert code(key.sign(iss=iss, groups="group1")) == 200  # a plain string claim matches too
    assert code(key.sign(iss=iss, groups=["group2"])) == 404  # verified, but not in group1: no route
    assert code(None) == 404  # no token, no claims
    assert code(keys["stranger"].sign(kid="inline", iss=iss, groups=["group1"])) == 401  # forged: refused
