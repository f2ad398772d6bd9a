"""Embedded platform workloads: what a LocalWorkload declares (named ports, locality, network, weight) reaches
the control plane's registry through the workload file, so a Service with a named targetPort gets endpoints."""

from __future__ import annotations

import pathlib

from sailmesh.api.parse import parse_text
from sailmesh.api.resource import Resource
from sailmesh.api.validate import validate
from sailmesh.platform import workload_file
from sailmesh.platform.workloads import plan, registry_workload
from sailmesh.registry import endpoints
from sailmesh.registry.model import Workload
from sailmesh.registry.services import build_index
from sailmesh.registry.workloads import LocalRegistry
from sailmesh.settings import MeshDefaults

# A Service whose targetPort is a container port name, and the LocalWorkload that names that port
# (tests/e2e/test_mesh_named_target_port.py runs it through real Envoy).
NAMED_TARGET_PORT = """\
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports:
  - {name: http, port: 80, targetPort: details-http}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata:
  name: details-v1
  namespace: default
  labels: {app: details, version: v1}
spec:
  command: [python, -m, sailmesh.samples.bookinfo.details]
  locality: us-east/zone-a/rack-1
  network: net-1
  weight: 3
  ports:
  - {name: details-http, containerPort: 9080, protocol: HTTP}
"""
def parse(text: str) -> list[Resource]:
    r = parse_text(text)
    assert not r.errors, r.errors
    return r.resources


def through_the_workload_file(resources: list[Resource], tmp_path: pathlib.Path) -> tuple[Workload, ...]:
    """What the control plane's registry holds after `sailmesh up` planned the instances and wrote the file."""
    instances = plan(resources, "127.0.10.2", lambda _host: 41000)
    path = str(tmp_path / "workloads.json")
    workload_file.write(path, [registry_workload(i) for i in instances])
    registry = LocalRegistry()
    for w in workload_file.read(path):
        registry.register(w)
    return registry.workloads()


def test_local_workload_fields_are_valid() -> None:
    assert [i for i in validate(parse(NAMED_TARGET_PORT)[1]) if i.severity == "error"] == []
    bad = parse(NAMED_TARGET_PORT.replace("weight: 3", "weight: -1").replace("network: net-1", "network: [a]"))[1]
    found = [str(i) for i in validate(bad)]
    assert any("spec.weight" in e for e in found) and any("spec.network" in e for e in found), found


def test_named_ports_locality_network_and_weight_reach_the_registry(tmp_path: pathlib.Path) -> None:
    (w,) = through_the_workload_file(parse(NAMED_TARGET_PORT + "  - {containerPort: 9000}\n"), tmp_path)
    assert dict(w.ports) == {"details-http": 9080}  # unnamed container ports have no name to resolve
    assert (w.locality, w.network, w.weight) == ("us-east/zone-a/rack-1", "net-1", 3)
    assert dict(w.app_ports) == {9080: 41000, 9000: 41000}


def test_a_network_becomes_the_network_label_unless_labelled(tmp_path: pathlib.Path) -> None:
    """Istio's AugmentLabels (pilot/pkg/serviceregistry/util/label/label.go): a workload's network is added as
    `topology.istio.io/network` unless its labels already say one (the same labels are its sidecar's)."""
    (w,) = through_the_workload_file(parse(NAMED_TARGET_PORT), tmp_path)
    assert w.labels["topology.istio.io/network"] == "net-1"
    labelled = NAMED_TARGET_PORT.replace("version: v1}", "version: v1, topology.istio.io/network: own}")
    (w,) = through_the_workload_file(parse(labelled), tmp_path)
    assert w.labels["topology.istio.io/network"] == "own"
    (w,) = through_the_workload_file(parse(NAMED_TARGET_PORT.replace("  network: net-1\n", "")), tmp_path)
    assert "topology.istio.io/network" not in w.labels


def test_service_with_named_target_port_gets_local_endpoints(tmp_path: pathlib.Path) -> None:
    resources = parse(NAMED_TARGET_PORT)
    workloads = through_the_workload_file(resources, tmp_path)
    eps = endpoints.compute(build_index(resources, MeshDefaults()).records, workloads)
    (ep,) = eps[("details.default.svc.cluster.local", 80)]
    assert (ep.address, ep.port, ep.workload) == ("127.0.10.2", 9080, "default/details-v1-0")
    assert (ep.locality, ep.network, ep.weight) == ("us-east/zone-a/rack-1", "net-1", 3)


def test_workload_file_round_trip_keeps_every_field(tmp_path: pathlib.Path) -> None:
    w = Workload(name="vm-0", namespace="ns", address="127.0.3.4", labels={"app": "a"}, service_account="sa",
                 app_ports={80: 40080}, locality="r/z", network="n", healthy=False, origin="LocalWorkload ns/vm",
                 ports={"http": 80}, weight=7)
    path = str(tmp_path / "w.json")
    workload_file.write(path, [w])
    (back,) = workload_file.read(path)
    assert back == w


def test_defaults_without_the_new_fields(tmp_path: pathlib.Path) -> None:
    plain = NAMED_TARGET_PORT.replace("  locality: us-east/zone-a/rack-1\n  network: net-1\n  weight: 3\n", "")
    (w,) = through_the_workload_file(parse(plain), tmp_path)
    assert (w.locality, w.network, w.weight) == ("", "", 1)
