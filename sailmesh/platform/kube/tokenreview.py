"""Service-account tokens checked by the API server: the TokenReview API (authentication.k8s.io/v1), as istiod does.

A workload's agent sends its projected service-account token (audience `istio-ca`) as `authorization: Bearer` with
its first CSR. `TokenReviewer.verify` asks the API server whether the token is valid for that audience and takes the
namespace and service account from the review's user name (`system:serviceaccount:<ns>:<sa>`), never from the
token's unverified claims: the certificate is issued for exactly that identity. Errors name the reason, never the
token (the API server's own `status.error` does not contain it either).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx2 as httpx

from sailmesh.errors import AuthenticationError
from sailmesh.platform.kube.client import KubeApiError, KubeConnection

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ISTIO_CA_AUDIENCE = "istio-ca"  # Istio's default token audience for the CA (TOKEN_AUDIENCES)
SA_PREFIX = "system:serviceaccount:"


def service_account_of(status: dict[str, Any], audiences: Sequence[str]) -> tuple[str, str]:
    """(namespace, service account) from a TokenReview's status; AuthenticationError when it does not prove one.
    Istio's ValidateK8sJwt: authenticated, one of our audiences, a service account's user name."""
    if not status.get("authenticated"):
        raise AuthenticationError(f"the token is not authenticated: {str(status.get('error') or 'no reason')[:200]}")
    got = status.get("audiences")
    if isinstance(got, list) and not set(map(str, got)) & set(audiences):
        raise AuthenticationError(f"the token is not for the audiences {list(audiences)}")
    user = status.get("user") or {}
    name = str(user.get("username") or "") if isinstance(user, dict) else ""
    if not name.startswith(SA_PREFIX):
        raise AuthenticationError("the token is not a service account's")
    parts = name[len(SA_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise AuthenticationError(f"invalid username field in the token review result: {name[:200]!r}")
    return parts[0], parts[1]


class TokenReviewer:
    """A `ca.service.TokenVerifier` backed by the API server (the control plane needs `create tokenreviews`,
    Kubernetes' `system:auth-delegator` role)."""

    def __init__(self, conn: KubeConnection, audiences: Sequence[str] = (ISTIO_CA_AUDIENCE,)) -> None:
        self.conn = conn
        self.audiences = tuple(audiences)
        self.reviews = 0

    async def verify(self, token: str) -> tuple[str, str]:
        """The token's (namespace, service account) per the API server; AuthenticationError otherwise."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": list(self.audiences)}}
        self.reviews += 1
        try:
            review = await self.conn.send_json("POST", TOKEN_REVIEWS, body)
        except KubeApiError as e:
            raise AuthenticationError(f"TokenReview failed: {e}") from None
        except httpx.HTTPError as e:
            raise AuthenticationError(f"TokenReview failed: API server unreachable ({type(e).__name__})") from None
        status = review.get("status")
        return service_account_of(status if isinstance(status, dict) else {}, self.audiences)
