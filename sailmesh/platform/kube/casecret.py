"""One CA for every control-plane replica, kept in the API server as istiod keeps it.

istiod's self-signed CA (security/pkg/pki/ca/ca.go, NewSelfSignedIstioCAOptions) reads the Secret
`istio-ca-secret` in its namespace; when there is none it generates a root and creates the Secret (type
`istio.io/ca-root`, keys ca-cert.pem, ca-key.pem, cert-chain.pem, key.pem, root-cert.pem: BuildSecret's layout),
so whichever replica gets there first makes the root and the others read it (a create that loses the race gets
409 and reads the winner's). A plug-in CA takes precedence: istiod uses the `cacerts` Secret (mounted at
/etc/cacerts) when it is there, and `--cacerts DIR` (files) comes before both here.

`shared_ca` writes what it found in Istio's cacerts file layout (key 0600 in a 0700 folder) for the CA to load.
A replica that already has a self-signed root in its state dir (from before it ran on Kubernetes) offers that root
when it creates the Secret, so its workloads' certificates stay valid. Private keys are never logged.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sailmesh.ca.authority import (
    CA_CERT,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    SELF_SIGNED_DIR,
    key_pem,
    new_root_key,
    pem,
    root_certificate,
    write_private,
)
from sailmesh.errors import PlatformError
from sailmesh.platform.kube.client import KubeApiError, KubeConnection

log = logging.getLogger(__name__)

CA_SECRET = "istio-ca-secret"  # istiod's self-signed root (ca.CASecret)
PLUGIN_SECRET = "cacerts"  # a plug-in CA (Istio's "plug in CA certificates" task)
CA_SECRET_TYPE = "istio.io/ca-root"
PRIVATE_KEY = "key.pem"  # in istio-ca-secret, empty (BuildSecret's privateKey)
# the plug-in Secret's newer names (Istio 1.20+: a kubernetes.io/tls-like layout) -> the cacerts file names
TLS_NAMES = {"tls.crt": CA_CERT, "tls.key": CA_KEY, "ca.crt": ROOT_CERT}


@dataclass(frozen=True)
class SharedCa:
    """Where the replicas' CA is: the folder (cacerts layout) and which Secret it came from."""

    folder: Path
    secret: str
    created: bool  # this replica created istio-ca-secret


def decode(secret: Mapping[str, Any]) -> dict[str, str]:
    data = secret.get("data") or {}
    out: dict[str, str] = {}
    for k, v in data.items():
        try:
            out[str(k)] = base64.b64decode(str(v or "")).decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise PlatformError(f"Secret key {k!r} is not base64 PEM text: {e}") from None
    return out


async def _get_secret(conn: KubeConnection, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await conn.get_json(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except KubeApiError as e:
        if e.code == 404:
            return None
        raise


def _local_root(state_dir: Path | None) -> tuple[str, str] | None:
    """(cert PEM, key PEM) of a self-signed root already in the state dir, else None."""
    if state_dir is None:
        return None
    folder = state_dir / SELF_SIGNED_DIR
    cert, key = folder / ROOT_CERT, folder / CA_KEY
    if cert.is_file() and key.is_file():
        return cert.read_text(), key.read_text()
    return None


def ca_secret_body(namespace: str, cert_pem: str, key: str) -> dict[str, Any]:
    """istio-ca-secret as istiod writes it: the root in ca-cert.pem, its key in ca-key.pem, the other keys empty."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return {"apiVersion": "v1", "kind": "Secret", "type": CA_SECRET_TYPE,
            "metadata": {"name": CA_SECRET, "namespace": namespace},
            "data": {CERT_CHAIN: "", PRIVATE_KEY: "", ROOT_CERT: "", CA_CERT: b64(cert_pem),
                     CA_KEY: b64(key)}}


def write_layout(folder: Path, files: Mapping[str, str]) -> None:
    """Istio's cacerts files: ca-cert.pem, ca-key.pem (0600), root-cert.pem, cert-chain.pem."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    ca_cert = files.get(CA_CERT, "")
    root = files.get(ROOT_CERT) or ca_cert
    chain = files.get(CERT_CHAIN) or (ca_cert if ca_cert == root else ca_cert + root)
    if not ca_cert or not files.get(CA_KEY) or not root:
        raise PlatformError(f"the CA Secret lacks {CA_CERT}, {CA_KEY} or {ROOT_CERT}")
    write_private(folder / CA_KEY, files[CA_KEY].encode())
    for name, text in ((CA_CERT, ca_cert), (ROOT_CERT, root), (CERT_CHAIN, chain)):
        (folder / name).write_text(text)


async def shared_ca(conn: KubeConnection, namespace: str, trust_domain: str, folder: Path,
                    state_dir: Path | None = None) -> SharedCa | None:
    """The replicas' CA from the API server (the plug-in `cacerts` Secret, else istio-ca-secret, created when
    absent), written to `folder` in the cacerts layout; None when the root namespace does not exist (istiod runs
    in it, so it always does; a control plane outside the cluster may have none: it keeps its own root then)."""
    plugin = await _get_secret(conn, namespace, PLUGIN_SECRET)
    if plugin is not None:
        files = decode(plugin)
        files.update({TLS_NAMES[k]: v for k, v in files.items() if k in TLS_NAMES and TLS_NAMES[k] not in files})
        write_layout(folder, files)
        log.info("CA: the plug-in Secret %s/%s (takes precedence over %s)", namespace, PLUGIN_SECRET, CA_SECRET)
        return SharedCa(folder, PLUGIN_SECRET, False)
    created = False
    secret = await _get_secret(conn, namespace, CA_SECRET)
    if secret is None:
        local = _local_root(state_dir)
        if local is None:
            key = new_root_key()
            local = pem(root_certificate(key, trust_domain)), key_pem(key).decode()
        body = ca_secret_body(namespace, *local)
        try:
            await conn.get_json(f"/api/v1/namespaces/{namespace}")
        except KubeApiError as e:
            if e.code == 404:
                log.warning("CA: the root namespace %s does not exist, so the replicas cannot share a root through "
                            "Secret %s; using this control plane's own self-signed root", namespace, CA_SECRET)
                return None
            raise
        try:
            secret = await conn.send_json("POST", f"/api/v1/namespaces/{namespace}/secrets", body)
            created = True
            log.info("CA: created the self-signed root in Secret %s/%s (%s)", namespace, CA_SECRET,
                     "this replica's existing root" if _local_root(state_dir) else "a new root")
        except KubeApiError as e:
            if e.code != 409:
                raise
            secret = await _get_secret(conn, namespace, CA_SECRET)  # another replica created it first
            if secret is None:
                raise PlatformError(f"Secret {namespace}/{CA_SECRET} conflicted on create, then was gone") from e
    if not created:
        log.info("CA: the self-signed root from Secret %s/%s", namespace, CA_SECRET)
    write_layout(folder, decode(secret))
    return SharedCa(folder, CA_SECRET, created)
