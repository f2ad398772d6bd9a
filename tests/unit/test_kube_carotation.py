"""Reading istio-ca-secret for a root rotation (platform/kube/carotation.py): what counts as a usable root, and
that an unusable Secret changes nothing (the replica keeps signing with its root)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from sailmesh.ca.authority import CertificateAuthority, key_pem, new_root_key, pem, root_certificate
from sailmesh.ca.rotation import RootRotation
from sailmesh.errors import CertificateError, PlatformError
from sailmesh.platform.kube.carotation import RootFollower, parse


def secret(**files: str) -> dict[str, Any]:
    return {"metadata": {"name": "istio-ca-secret"},
            "data": {k.replace("_", "-") + ".pem": base64.b64encode(v.encode()).decode() for k, v in files.items()}}


def test_the_secrets_root_key_and_listed_roots_are_read() -> None:
    key = new_root_key()
    root = root_certificate(key, "cluster.local")
    other = root_certificate(new_root_key(), "cluster.local")
    got = parse(secret(ca_cert=pem(root), ca_key=key_pem(key).decode(), root_cert=pem(root) + pem(other)))
    assert got.cert == root and got.listed == [root, other]
    assert parse(secret(ca_cert=pem(root), ca_key=key_pem(key).decode(), root_cert="")).listed == []


def test_unusable_secrets_are_refused_without_echoing_the_key() -> None:
    key = new_root_key()
    root = root_certificate(key, "cluster.local")
    with pytest.raises(PlatformError, match="no usable") as err:
        parse(secret(ca_cert=pem(root), ca_key="-----BEGIN PRIVATE KEY-----\nnot a key\n"))
    assert "not a key" not in str(err.value)
    with pytest.raises(CertificateError, match="does not match"):
        parse(secret(ca_cert=pem(root), ca_key=key_pem(new_root_key()).decode()))


def test_an_unusable_secret_leaves_the_replicas_ca_alone(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    ca = CertificateAuthority.self_signed(tmp_path)
    rotation = RootRotation(ca)
    changed: list[int] = []
    follower = RootFollower(object(), "istio-system", rotation, lambda: changed.append(1))  # type: ignore[arg-type]
    before = (ca.signing_cert, list(ca.roots))
    with caplog.at_level(logging.ERROR):
        follower.upserted(follower.informer.resource, secret(ca_cert="garbage", ca_key="garbage"))
    assert "cannot be used" in caplog.text
    assert (ca.signing_cert, ca.roots) == before and not changed and follower.steps == []
    # the root it already signs with (a re-list, an unrelated edit of the Secret) is no rotation either
    current = secret(ca_cert=pem(ca.signing_cert), ca_key=(tmp_path / "ca" / "ca-key.pem").read_text())
    follower.listed(follower.informer.resource, [current])
    assert follower.steps == [] and not changed and rotation.pending is None
