"""Root rotation under steady traffic between two sidecars (ISTIO_MUTUAL, STRICT, a new handshake per request), with
the default 24 h certificates: each step of `sailmesh x ca rotate-root` reaches every Envoy through the agents
(they renew when the published bundle changes), the new root is in every Envoy's ROOTCA before anything is signed
with it, and not one request fails across add, switch and drop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from sailmesh.testing.envoy_stats import envoy_certs
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_cert_rotation import CONFIG, Traffic, addresses

pytestmark = pytest.mark.e2e


def ca_serials(address: str) -> set[int]:
    """The serials of the roots Envoy trusts (its ROOTCA and xds-root, from admin /certs; Envoy prints whole bytes
    in hex, so a serial whose top nibble is 0 has a leading zero: compared as numbers)."""
    return {int(ca["serial_number"], 16) for entry in envoy_certs(address) for ca in entry.get("ca_cert", [])}


def serial_of(path: Path) -> int:
    return int(x509.load_pem_x509_certificate(path.read_bytes()).serial_number)


@pytest.fixture
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    cfg = tmp_path_factory.mktemp("root-rotation-config")
    (cfg / "mesh.yaml").write_text(CONFIG)
    m = RunningMesh(str(tmp_path_factory.mktemp("root-rotation")), dirs=[str(cfg)])
    try:
        yield m
    finally:
        m.stop()


def status(mesh: RunningMesh) -> dict[str, object]:
    r = mesh.cli("x", "ca", "status", check=True)
    return {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in r.stdout.splitlines()}


def test_root_rotation_keeps_traffic_flowing(mesh: RunningMesh) -> None:
    addr = addresses(mesh)
    ca_dir = Path(mesh.state_dir, "controlplane", "ca")
    old = serial_of(ca_dir / "root-cert.pem")
    probe = Traffic(addr["sleep"])
    wait_for(lambda: (probe.one(), probe.ok > 0)[1], timeout=60, interval=0.2, what="sleep -> httpbin (mTLS)")
    traffic = Traffic(addr["sleep"])
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        assert status(mesh)["next step"] == "add"
        # 1. add: the new root joins every Envoy's trust bundle; the CA still signs with the old one.
        mesh.cli("x", "ca", "rotate-root", "--step", "add", check=True)
        new = serial_of(ca_dir / "next-root-cert.pem")
        assert new != old
        for name, a in addr.items():
            wait_for(lambda a=a: ca_serials(a) == {old, new}, timeout=60, interval=0.5,
                     what=f"{name}'s Envoy to trust both roots")
        assert serial_of(ca_dir / "root-cert.pem") == old  # nothing signed with the new root yet
        assert status(mesh)["next step"] == "switch"
        # every live workload (the ingress gateway too, not only the two sidecars above) reported the new bundle:
        # the switch is refused until then (CI once switched while the gateway's agent had not renewed yet)
        wait_for(lambda: "(0 without the current bundle" in status(mesh)["live workloads"], timeout=60,
                 interval=0.5, what="every live workload to report the new trust bundle")
        # 2. switch: refused by nobody (every live workload holds the bundle), then agents renew onto the new root.
        mesh.cli("x", "ca", "rotate-root", "--step", "switch", check=True)
        assert serial_of(ca_dir / "root-cert.pem") == new
        wait_for(lambda: "0 on an older root" in status(mesh)["live workloads"], timeout=60, interval=0.5,
                 what="every workload to hold a certificate of the new root")
        # 3. drop: the old root leaves every Envoy's trust bundle.
        mesh.cli("x", "ca", "rotate-root", "--step", "drop", check=True)
        for name, a in addr.items():
            wait_for(lambda a=a: ca_serials(a) == {new}, timeout=60, interval=0.5,
                     what=f"{name}'s Envoy to trust the new root only")
        assert status(mesh)["next step"] == "add"
        # Traffic kept flowing across all of it, and still does on the new root alone.
        sent = traffic.ok
        wait_for(lambda: traffic.ok > sent + 20, timeout=30, interval=0.2, what="more requests after the drop")
    finally:
        traffic.stop.set()
        thread.join(timeout=15)
    assert traffic.failures == [], f"{len(traffic.failures)} of {traffic.ok + len(traffic.failures)} failed"
    print(f"\nroot rotation: {traffic.ok} requests, 0 failed")
