"""Synthetic meshes for the control-plane benchmark: Services, VirtualServices, DestinationRules, workloads, proxies."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import yaml

from sailmesh.platform import workload_file
from sailmesh.snapshot.model import Workload

SERVICES_PER_NAMESPACE = 20
SHARED_NAMESPACE = "ns-0"
SHARED_SERVICES = 3  # svc-0..svc-2 in ns-0: imported by every proxy even with Sidecar scoping; changes target them
PORT = 8080
DOMAIN = "cluster.local"


@dataclass(frozen=True)
class ProxySpec:
    """One simulated (or real) proxy: its node id and metadata, and the service it is a replica of."""

    node_id: str
    metadata: dict[str, str]
    service: int
    namespace: str


@dataclass
class SyntheticMesh:
    """A mesh of `services` services on disk (config dir + workload file) and the proxies that will connect."""

    services: int
    sidecar_scoping: bool
    config_dir: str
    workload_file: str
    workloads: list[Workload] = field(default_factory=list)

    def namespace(self, i: int) -> str:
        return f"ns-{i // SERVICES_PER_NAMESPACE}"

    def host(self, i: int) -> str:
        return f"svc-{i}.{self.namespace(i)}.svc.{DOMAIN}"

    def proxies(self, count: int, ip_prefix: str = "10.200") -> list[ProxySpec]:
        """`count` sidecars; proxy j is replica j // services of service j % services (version v1)."""
        out = []
        for j in range(count):
            i = j % self.services
            ns = self.namespace(i)
            replica = j // self.services
            ip = f"{ip_prefix}.{j // 250}.{j % 250 + 1}"
            name = f"svc-{i}-v1-{replica}"
            out.append(ProxySpec(
                node_id=f"sidecar~{ip}~{name}.{ns}~{ns}.svc.{DOMAIN}",
                metadata={"NAMESPACE": ns, "NAME": name, "LABELS": json.dumps({"app": f"svc-{i}", "version": "v1"}),
                          "APP_PORTS": f"{PORT}:{PORT}", "SERVICE_ACCOUNT": f"svc-{i}"},
                service=i, namespace=ns))
        return out

    # -- documents --
    def service_doc(self, i: int) -> dict:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": f"svc-{i}", "namespace": self.namespace(i), "labels": {"app": f"svc-{i}"}},
                "spec": {"selector": {"app": f"svc-{i}"},
                         "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]}}

    def virtual_service_doc(self, i: int, change: int = 0) -> dict:
        """Two routes (a header match to v2, then a weighted split with retries); `change` moves the weights."""
        w = 90 - (change % 40)
        return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": f"svc-{i}", "namespace": self.namespace(i)},
                "spec": {"hosts": [f"svc-{i}"], "http": [
                    {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "1"}}}],
                     "route": [{"destination": {"host": f"svc-{i}", "subset": "v2"}}]},
                    {"name": "default",
                     "route": [{"destination": {"host": f"svc-{i}", "subset": "v1"}, "weight": w},
                               {"destination": {"host": f"svc-{i}", "subset": "v2"}, "weight": 100 - w}],
                     "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"},
                     "timeout": "10s"}]}}

    def destination_rule_doc(self, i: int) -> dict:
        subsets = [{"name": f"v{k}", "labels": {"version": f"v{k}"}} for k in (1, 2, 3)[: 3 if i % 2 == 0 else 2]]
        return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": f"svc-{i}", "namespace": self.namespace(i)},
                "spec": {"host": f"svc-{i}", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"},
                                                              "outlierDetection": {"consecutive5xxErrors": 5}},
                         "subsets": subsets}}

    def sidecar_doc(self) -> dict:
        hosts = ["./*", *(f"{SHARED_NAMESPACE}/{self.host(i)}" for i in range(min(SHARED_SERVICES, self.services)))]
        return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                "metadata": {"name": "default", "namespace": "istio-system"},
                "spec": {"egress": [{"hosts": hosts}]}}

    def workload(self, i: int, version: str, n: int) -> Workload:
        return Workload(name=f"svc-{i}-{version}-{n}", namespace=self.namespace(i),
                        address=f"10.{(i // 250) % 250}.{i % 250}.{n * 10 + int(version[1:])}",
                        labels={"app": f"svc-{i}", "version": version}, service_account=f"svc-{i}",
                        app_ports={PORT: PORT}, origin="bench")

    def write(self) -> None:
        """Write one YAML file per namespace (Services, VirtualServices, DestinationRules) and the workload file."""
        os.makedirs(self.config_dir, exist_ok=True)
        by_ns: dict[str, list[dict]] = {}
        for i in range(self.services):
            by_ns.setdefault(self.namespace(i), []).extend(
                [self.service_doc(i), self.virtual_service_doc(i), self.destination_rule_doc(i)])
        for ns, docs in by_ns.items():
            with open(os.path.join(self.config_dir, f"{ns}.yaml"), "w", encoding="utf-8") as fh:
                yaml.safe_dump_all(docs, fh, sort_keys=False)
        if self.sidecar_scoping:
            with open(os.path.join(self.config_dir, "sidecar.yaml"), "w", encoding="utf-8") as fh:
                yaml.safe_dump(self.sidecar_doc(), fh, sort_keys=False)
        self.workloads = [self.workload(i, v, 0) for i in range(self.services) for v in ("v1", "v2")]
        workload_file.write(self.workload_file, self.workloads)


def make_mesh(workdir: str, services: int, sidecar_scoping: bool) -> SyntheticMesh:
    mesh = SyntheticMesh(services, sidecar_scoping, os.path.join(workdir, "config"),
                         os.path.join(workdir, "workloads.json"))
    mesh.write()
    return mesh
