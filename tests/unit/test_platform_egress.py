"""The embedded egress gateway's install: Istio's istio-egressgateway Service and workload, and its address."""

from __future__ import annotations

import pathlib

from sailmesh.api.parse import parse_text
from sailmesh.platform import egress
from sailmesh.platform.local import LocalMesh
from sailmesh.platform.portplan import MeshOptions
from sailmesh.registry.services import service_from_kube
from sailmesh.settings import load


def test_service_is_istios_egress_gateway_service(tmp_path: pathlib.Path) -> None:
    folder = egress.write_config(str(tmp_path))
    loaded = parse_text((pathlib.Path(folder) / "istio-egressgateway.yaml").read_text())
    assert not loaded.errors
    (svc,) = loaded.resources
    record = service_from_kube(svc, load().mesh).service
    assert record.hostname == "istio-egressgateway.istio-system.svc.cluster.local"
    # Istio's egress gateway Service: http2 80 -> 8080, https 443 -> 8443 (where the router binds 80 and 443)
    assert [(p.port, p.name, p.protocol, p.target_port) for p in record.ports] == [
        (80, "http2", "HTTP2", 8080), (443, "https", "HTTPS", 8443)]
    assert dict(record.selector) == {"istio": "egressgateway", "app": "istio-egressgateway"}


def test_workload_selected_by_the_service_without_tls_mode() -> None:
    w = egress.workload("127.1.2.254")
    assert (w.name, w.namespace, w.address) == ("istio-egressgateway-0", "istio-system", "127.1.2.254")
    assert w.labels["istio"] == "egressgateway"
    assert "security.istio.io/tlsMode" not in w.labels  # sidecars reach its plain HTTP servers in plain text


def test_default_address_and_ports_checked(tmp_path: pathlib.Path) -> None:
    assert egress.default_ip("127.0.0.1") == "127.0.0.254"
    config = tmp_path / "config"
    config.mkdir()
    mesh = LocalMesh(MeshOptions(config_dirs=[str(config)], state_dir=str(tmp_path / "state"),
                                 egress_gateway_ip="127.9.9.254"), load(), say=lambda _: None)
    hosts = {(p.host, p.what) for p in mesh.planned_ports()}
    assert ("127.9.9.254", "egress gateway admin") in hosts
    off = LocalMesh(MeshOptions(config_dirs=[str(config)], state_dir=str(tmp_path / "state2")), load(),
                    say=lambda _: None)
    assert not any("egress" in p.what for p in off.planned_ports())
