"""Istio's SPIFFE identity shape."""

import pytest

from sailmesh.api.identity import Identity, parse_spiffe_id, spiffe_id
from sailmesh.errors import ValidationError


def test_spiffe_id_has_istios_shape() -> None:
    # Istio: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
    assert spiffe_id("cluster.local", "foo", "sleep") == "spiffe://cluster.local/ns/foo/sa/sleep"
    ident = Identity("cluster.local", "foo", "sleep")
    assert ident.principal == "cluster.local/ns/foo/sa/sleep"
    assert parse_spiffe_id(ident.uri) == ident


@pytest.mark.parametrize("uri", ["https://x/ns/a/sa/b", "spiffe://td/ns/a", "spiffe://td/ns//sa/b", "spiffe://td/x/a/sa/b"])
def test_other_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValidationError):
        parse_spiffe_id(uri)
