"""The Kubernetes Gateway API's own CRDs for the test cluster, from the Go module proxy, cached outside the repo.

The CRDs are not in ../shared/conformance/crds (Istio ships without them: users install them from the Gateway API
release). The module sigs.k8s.io/gateway-api carries them in config/crd/standard (GatewayClass, Gateway,
HTTPRoute, GRPCRoute, ReferenceGrant) and config/crd/experimental (also TCPRoute, TLSRoute, ...). The module zip is
fetched once from $GOPROXY's first proxy (proxy.golang.org by default), checked against the pinned SHA-256 and
unpacked to $SAILMESH_KUBE_CACHE/../gateway-api/<version>/ (~/.cache/sailmesh/gateway-api/<version>/).

    python -m sailmesh.testing.gatewayapi_crds     # fetch now; prints the folder

Kube e2e tests install the standard channel, and the experimental channel's extra kinds where they need them
(experimental_only: BackendTLSPolicy v1alpha3 is experimental in v1.3).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

MODULE = "sigs.k8s.io/gateway-api"
VERSION = "v1.3.0"  # the Gateway API release Istio 1.26/1.27 is tested with
ZIP_SHA256 = "9f9810c8c36fa3524bd1f388cbe273d1a26f34fee913526ab611fadb4f295deb"
CHANNELS = ("standard", "experimental")


def cache_dir() -> Path:
    """~/.cache/sailmesh/gateway-api/<version> (beside the kube binaries' cache)."""
    kube = os.environ.get("SAILMESH_KUBE_CACHE") or str(Path.home() / ".cache" / "sailmesh" / "kube")
    return Path(kube).parent / "gateway-api" / VERSION


def cached(channel: str = "standard") -> Path | None:
    """The folder of the channel's CRD YAML files, or None when not fetched yet."""
    d = cache_dir() / channel
    return d if d.is_dir() and any(d.glob("*.yaml")) else None


def _proxy() -> str:
    for entry in (os.environ.get("GOPROXY") or "https://proxy.golang.org").replace("|", ",").split(","):
        if entry.startswith(("http://", "https://")):
            return entry.rstrip("/")
    return "https://proxy.golang.org"


def fetch(timeout_s: float = 120.0) -> Path:
    """Download, verify and unpack the CRDs (both channels); the cache folder. OSError/ValueError on failure."""
    if cached() is not None:
        return cache_dir()
    url = f"{_proxy()}/{MODULE}/@v/{VERSION}.zip"
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        data = resp.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ZIP_SHA256:
        raise ValueError(f"{url}: SHA-256 {digest}, expected {ZIP_SHA256}")
    prefix = f"{MODULE}@{VERSION}/config/crd/"
    target = cache_dir()
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            rest = name[len(prefix):] if name.startswith(prefix) else ""
            channel, _, file = rest.partition("/")
            if channel in CHANNELS and file.endswith(".yaml") and "/" not in file and file != "kustomization.yaml":
                out = tmp / channel / file
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(name))
    if target.exists():
        return target
    tmp.rename(target)
    return target


def experimental_only(folder: Path | None = None) -> list[Path]:
    """The experimental channel's CRD files of kinds the standard channel lacks (BackendTLSPolicy, TCPRoute,
    TLSRoute, ...): installed beside the standard CRDs, they leave the standard kinds' CRDs as they are."""
    base = folder or cache_dir()
    standard = {p.name for p in (base / "standard").glob("*.yaml")}
    return sorted(p for p in (base / "experimental").glob("*.yaml") if p.name not in standard)


def available(channel: str = "standard") -> tuple[Path | None, str]:
    """(the channel's folder, "") when cached or fetched now, else (None, why not)."""
    try:
        fetch()
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        return None, (f"the Gateway API CRDs ({MODULE} {VERSION}, config/crd/{channel}) are not cached in "
                      f"{cache_dir()} and could not be fetched from the Go module proxy: {e}")
    return cached(channel), ""


if __name__ == "__main__":
    folder, why = available()
    print(folder or why)
    sys.exit(0 if folder else 1)
