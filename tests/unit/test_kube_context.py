"""The control plane on Kubernetes without a server: `--kubeconfig PATH --context NAME` talks to the API server of the
named kubeconfig context, not the file's current-context (kubectl's and istioctl's `--context`); a replica on the
shared istio-ca-secret root refuses to rotate its own root."""

from __future__ import annotations

import argparse
import asyncio
import pathlib

import yaml

from sailmesh.cli.controlplane import add_arguments
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.platform.kube import connect
from sailmesh.settings import Settings


def _kubeconfig(path: pathlib.Path) -> pathlib.Path:
    clusters = [("current", "https://127.0.0.1:6443"), ("other", "https://127.0.0.2:7443")]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "current",
        "clusters": [{"name": n, "cluster": {"server": s, "insecure-skip-tls-verify": True}} for n, s in clusters],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n, _ in clusters]}))
    return path


def test_the_named_context_picks_its_api_server(tmp_path: pathlib.Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "config")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--kubeconfig", str(kubeconfig), "--context", "other"])
    assert args.context == "other" and parser.parse_args([]).context is None
    cp = ControlPlane(ControlPlaneOptions(kubeconfig=str(kubeconfig), kube_context=args.context,
                                          state_dir=str(tmp_path / "state")), Settings())
    assert cp.kube is not None and cp.kube.context == "other"

    async def servers() -> tuple[str, str]:
        named, current = connect(str(kubeconfig), "other"), connect(str(kubeconfig))
        try:
            return named.server, current.server
        finally:
            await named.close()
            await current.close()

    assert asyncio.run(servers()) == ("https://127.0.0.2:7443", "https://127.0.0.1:6443")


def test_a_replica_on_the_shared_root_starts_a_rotation_in_the_secret_and_leaves_the_steps_to_every_replica(
        tmp_path: pathlib.Path) -> None:
    """With istio-ca-secret followed (replicas share one root), `x ca rotate-root` on one replica writes a new root
    into the Secret (every replica, this one too, then takes trust, sign and drop itself): the `add` step goes to
    the follower; `switch` and `drop` are refused (409 through the API), since stepping one replica's root alone
    would leave the others' behind; `status` still answers."""
    import pytest

    from sailmesh.ca.authority import new_root_key, root_certificate
    from sailmesh.ca.rotation import fingerprint
    from sailmesh.errors import CertificateError

    cp = ControlPlane(ControlPlaneOptions(kubeconfig=str(_kubeconfig(tmp_path / "config")),
                                          state_dir=str(tmp_path / "state")), Settings())
    assert cp.kube is not None
    from sailmesh.ca.authority import CaOptions
    from sailmesh.controlplane.identity import MeshIdentity

    cp.identity = MeshIdentity(str(tmp_path / "state"), "", CaOptions(), ["127.0.0.1"])
    new = root_certificate(new_root_key(), "cluster.local")

    class Follower:
        asked: list[str] = []

        async def start_rotation(self, trust_domain: str) -> object:
            self.asked.append(trust_domain)
            return new

    follower = Follower()
    cp.kube.ca_follower = follower  # type: ignore[assignment]  # following istio-ca-secret

    async def steps() -> dict[str, object]:
        for phase in ("switch", "drop"):
            with pytest.raises(CertificateError, match="takes the"):
                await cp.rotate_root(phase)
        assert (await cp.rotate_root("status"))["phase"] == "add"
        return await cp.rotate_root("add")

    out = asyncio.run(steps())
    assert follower.asked == ["cluster.local"]
    assert out["shared"] is True and out["written"] == fingerprint(new)
