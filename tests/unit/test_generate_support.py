"""Builders for generator tests: Bookinfo-shaped MeshSnapshots from Istio YAMLs, services and workloads."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping

from google.protobuf import any_pb2, message

from sailmesh.api.parse import parse_text
from sailmesh.api.resource import Resource
from sailmesh.generate.generator import Generator
from sailmesh.settings import MeshDefaults
from sailmesh.snapshot.model import Endpoint, MeshSnapshot, ProxyView, Service, ServicePort, Workload
from sailmesh.store.base import sort_by_creation

SUFFIX = "svc.cluster.local"
BOOKINFO = ("productpage", "details", "reviews", "ratings")


def resources(*texts_or_paths: str | pathlib.Path) -> list[Resource]:
    """Resources from YAML strings or file paths (parse errors fail the test)."""
    out: list[Resource] = []
    for t in texts_or_paths:
        text = t.read_text() if isinstance(t, pathlib.Path) else t
        r = parse_text(text, str(t) if isinstance(t, pathlib.Path) else "<test>")
        assert not r.errors, r.errors
        out.extend(r.resources)
    return out


def service(name: str, ns: str = "default", ports: Iterable[tuple[int, str]] = ((9080, "HTTP"),),
            selector: Mapping[str, str] | None = None, **kw: object) -> Service:
    """A Kubernetes-like service `name.ns.svc.cluster.local`; selector defaults to app=<name>."""
    return Service(
        hostname=f"{name}.{ns}.{SUFFIX}", name=name, namespace=ns,
        ports=tuple(ServicePort(port=p, name=proto.lower(), protocol=proto) for p, proto in ports),
        selector={"app": name} if selector is None else selector, **kw,  # type: ignore[arg-type]
    )


def workload(name: str, address: str, ns: str = "default", **labels: str) -> Workload:
    return Workload(name=name, namespace=ns, address=address, labels=labels)


def make_snapshot(config: Iterable[Resource] = (), services: Iterable[Service] = (),
                  workloads: Iterable[Workload] = (), version: int = 1,
                  extra_endpoints: Iterable[Endpoint] = ()) -> MeshSnapshot:
    """A snapshot whose endpoints are the workloads selected by each service (plus extra_endpoints)."""
    by_kind: dict[str, list[Resource]] = {}
    for r in config:
        by_kind.setdefault(r.kind, []).append(r)
    svcs = {s.hostname: s for s in services}
    wls = tuple(workloads)
    eps: dict[tuple[str, int], list[Endpoint]] = {}
    for s in svcs.values():
        for p in s.ports:
            eps[(s.hostname, p.port)] = []
            if not s.selector:
                continue
            for w in wls:
                if w.namespace == s.namespace and all(w.labels.get(k) == v for k, v in s.selector.items()):
                    eps[(s.hostname, p.port)].append(Endpoint(
                        service=s.hostname, service_port=p.port, address=w.address, port=p.target_port or p.port,
                        labels=w.labels, service_account=w.service_account, workload=f"{w.namespace}/{w.name}",
                        locality=w.locality, network=w.network,
                        healthy=w.healthy))
    for e in extra_endpoints:
        eps.setdefault((e.service, e.service_port), []).append(e)
    return MeshSnapshot(
        version=version, mesh=MeshDefaults(),
        config={k: tuple(sort_by_creation(v)) for k, v in by_kind.items()},  # oldest first, as snapshot.build
        services=svcs, endpoints={k: tuple(v) for k, v in eps.items()}, workloads=wls,
    )


def bookinfo_services() -> list[Service]:
    return [service(n) for n in BOOKINFO]


def bookinfo_workloads() -> list[Workload]:
    return [
        workload("productpage-v1-0", "127.0.1.1", app="productpage", version="v1"),
        workload("details-v1-0", "127.0.1.2", app="details", version="v1"),
        workload("reviews-v1-0", "127.0.1.3", app="reviews", version="v1"),
        workload("reviews-v2-0", "127.0.1.4", app="reviews", version="v2"),
        workload("reviews-v3-0", "127.0.1.5", app="reviews", version="v3"),
        workload("ratings-v1-0", "127.0.1.6", app="ratings", version="v1"),
    ]


def bookinfo(*config: str | pathlib.Path, version: int = 1) -> MeshSnapshot:
    """Bookinfo's four services and six pods plus the given config files/texts."""
    return make_snapshot(resources(*config), bookinfo_services(), bookinfo_workloads(), version=version)


def sidecar(name: str = "productpage-v1-0", ip: str = "127.0.1.1", ns: str = "default",
            app_ports: Mapping[int, int] | None = None, **labels: str) -> ProxyView:
    labels = labels or {"app": name.split("-")[0], "version": "v1"}
    return ProxyView(id=f"sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local", type="sidecar", ip=ip, namespace=ns,
                     workload_name=name, labels=labels,
                     app_ports=dict(app_ports) if app_ports is not None else {9080: 41000})


def gateway_proxy(ip: str = "127.0.0.1", ns: str = "istio-system") -> ProxyView:
    return ProxyView(id=f"router~{ip}~istio-ingressgateway-0.{ns}~{ns}.svc.cluster.local", type="router", ip=ip,
                     namespace=ns, workload_name="istio-ingressgateway-0",
                     labels={"istio": "ingressgateway", "app": "istio-ingressgateway"})


def unpacked(resources_: Mapping[str, any_pb2.Any], cls: type[message.Message]) -> dict[str, message.Message]:
    out = {}
    for name, a in resources_.items():
        m = cls()
        assert a.Unpack(m), (name, a.type_url)
        out[name] = m
    return out


def generate(snapshot: MeshSnapshot, proxy: ProxyView, type_url: str) -> dict[str, any_pb2.Any]:
    """Every resource of type_url for proxy, through the production entry point (a fresh Generator)."""
    return Generator().resources(snapshot, proxy, type_url)


def generated(snapshot: MeshSnapshot, proxy: ProxyView, type_url: str, cls: type[message.Message]) -> dict:
    """generate(), unpacked into `cls` messages keyed by name."""
    return unpacked(generate(snapshot, proxy, type_url), cls)
