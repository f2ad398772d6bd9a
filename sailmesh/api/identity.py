"""Workload identity: Istio's SPIFFE IDs (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)."""

from __future__ import annotations

from dataclasses import dataclass

from sailmesh.errors import ValidationError

SPIFFE_SCHEME = "spiffe://"


@dataclass(frozen=True)
class Identity:
    """A workload's identity: trust domain, namespace and service account."""

    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        """The SPIFFE ID, as it appears in the certificate's URI SAN and in AuthorizationPolicy principals."""
        return spiffe_id(self.trust_domain, self.namespace, self.service_account)

    @property
    def principal(self) -> str:
        """Istio's principal form, without the scheme: `cluster.local/ns/foo/sa/sleep`."""
        return self.uri[len(SPIFFE_SCHEME):]


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """`spiffe://cluster.local/ns/default/sa/bookinfo-productpage`."""
    return f"{SPIFFE_SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse_spiffe_id(uri: str) -> Identity:
    """The Identity of a SPIFFE ID of Istio's shape; ValidationError for any other URI."""
    if not uri.startswith(SPIFFE_SCHEME):
        raise ValidationError([f"not a SPIFFE ID: {uri!r}"])
    parts = uri[len(SPIFFE_SCHEME):].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts[i] for i in (0, 2, 4)):
        raise ValidationError([f"not an Istio SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>): {uri!r}"])
    return Identity(parts[0], parts[2], parts[4])
