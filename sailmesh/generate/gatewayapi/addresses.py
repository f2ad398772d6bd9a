"""A Gateway's `spec.addresses`, as Istio's gateway controller reads them (gatewaycommon.IsManaged and
extractGatewayServices, pilot/pkg/config/kube/gateway, 1.27).

- No address, or one of type IPAddress (the default type): a managed Gateway. Istio deploys `<gateway>-istio`
  and gives its Service the IP as loadBalancerIP; the embedded mesh starts a gateway process that listens on the
  IP when it is a free loopback address (platform/gateways.py).
- Anything else (a Hostname, or several addresses): Istio's manual deployment. Nothing is deployed; each Hostname
  names an existing Service or ServiceEntry host of the Gateway's namespace (Istio's ResolveGatewayInstances looks
  the name up in ServiceIndex.HostnameAndNamespace, which holds both; a short name is `<name>.<gateway
  ns>.svc.<suffix>`; a ServiceEntry's instances are the workloads its `workloadSelector` selects) and the Gateway's
  listeners apply to the proxies that are instances of those Services in the Gateway's namespace (push_context's
  mergeGateways with the `internal.istio.io/gateway-service` annotation). Here the generated Istio Gateway selects
  those proxies by the Service's selector, limited to the Gateway's namespace (NAMESPACE_ANNOTATION, read by
  generate/gateway.gateways_for). Addresses of another type are skipped and the Gateway is not Accepted
  (InvalidAddress, "only Hostname is supported, ignoring [...]", a soft failure: the Hostnames still apply).
  Istio's ResolveGatewayInstances warnings (sorted) make Programmed False, and its reason is Istio's
  reportGatewayStatus rule: a Hostname naming no Service or ServiceEntry of the Gateway's namespace, or a listener
  port the named Service lacks ("port N not found for hostname", with Istio's hint when a service port targets N:
  only ports are compared, not endpoints), is unusable (AddressNotUsable); otherwise (one without a selector: "no
  instances found", once per listener port) AddressNotAssigned. The Kubernetes
  status writer (platform/kube/gatewaystatus.py) keeps this verdict, so both platforms give the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GATEWAY_SERVICE_ANNOTATION = "internal.istio.io/gateway-service"  # Istio's: the Services a Gateway runs on
NAMESPACE_ANNOTATION = "internal.sailmesh.io/gateway-namespace"  # the only namespace whose proxies it selects
INVALID_ADDRESS = "InvalidAddress"  # Istio's condition reason
ADDRESS_NOT_ASSIGNED = "AddressNotAssigned"  # Istio: every warning leaves the addresses usable
ADDRESS_NOT_USABLE = "AddressNotUsable"  # Istio: some Hostname was not found (foundUnusable)


def _type(address: Mapping[str, Any]) -> str:
    return str(address.get("type") or "IPAddress")


def is_managed(spec: Mapping[str, Any]) -> bool:
    """Istio's IsManaged: no address, or exactly one of type IPAddress."""
    addresses = spec.get("addresses") or []
    return not addresses or (len(addresses) == 1 and _type(addresses[0]) == "IPAddress")


def requested_address(spec: Mapping[str, Any]) -> str:
    """The IP a managed Gateway asks for: its one `spec.addresses` entry of type IPAddress, which Istio gives the
    gateway's Service as loadBalancerIP, else ""."""
    addresses = spec.get("addresses") or []
    if len(addresses) != 1 or _type(addresses[0]) != "IPAddress":
        return ""
    return str(addresses[0].get("value") or "")


def gateway_services(namespace: str, spec: Mapping[str, Any], suffix: str) -> tuple[list[str], list[str]]:
    """(the FQDNs of the Services an unmanaged Gateway runs on, the values of its skipped non-Hostname
    addresses), as Istio's extractGatewayServices (a name without a dot is a Service of the Gateway's namespace)."""
    services: list[str] = []
    skipped: list[str] = []
    for addr in spec.get("addresses") or ():
        value = str(addr.get("value") or "")
        if _type(addr) != "Hostname":
            skipped.append(value)
            continue
        services.append(value if "." in value else f"{value}.{namespace}.svc.{suffix}")
    return services, skipped


@dataclass
class Placement:
    """Where an unmanaged Gateway's listeners go: one selector per distinct Service selector (in address order),
    the Service FQDNs, and what went wrong (Istio's condition messages)."""

    services: list[str] = field(default_factory=list)
    selectors: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unusable: bool = False  # Istio's foundUnusable: a Hostname names nothing in the Gateway's namespace

    @property
    def reason(self) -> str:
        """The Programmed=False reason (Istio's reportGatewayStatus: allUsable -> AddressNotAssigned)."""
        return ADDRESS_NOT_USABLE if self.unusable else ADDRESS_NOT_ASSIGNED

    @property
    def invalid(self) -> str:
        """The Accepted=False message (Go's %v of a string slice), "" when every address is a Hostname."""
        return f"only Hostname is supported, ignoring [{' '.join(self.skipped)}]" if self.skipped else ""

    @property
    def not_assigned(self) -> str:
        """The Programmed=False message, "" when every Hostname names a Service with instances."""
        if not self.warnings:
            return ""
        resolved = [s for s in self.services if not any(f'"{s}"' in w for w in self.warnings)]
        warnings = "; ".join(sorted(self.warnings))  # ResolveGatewayInstances sorts them
        if resolved:
            return (f"Assigned to service(s) {', '.join(resolved)}, but failed to assign to all requested "
                    f"addresses: {warnings}")
        return f"Failed to assign to any requested addresses: {warnings}"


def entry_hosts(entries: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """host -> namespace -> the ServiceEntry spec with that host there (the first one), from (namespace, spec)."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for ns, spec in entries:
        for host in spec.get("hosts") or ():
            out.setdefault(str(host), {}).setdefault(ns, spec)
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _service_ports(found: Mapping[str, Any], entry: bool) -> list[tuple[int | None, int | None]]:
    """(service port, the workload port it targets when known: a number) of a Service or ServiceEntry spec."""
    out = []
    for p in found.get("ports") or ():
        if isinstance(p, Mapping):
            number = _int(p.get("number" if entry else "port"))
            out.append((number, _int(p.get("targetPort")) if p.get("targetPort") is not None else number))
    return out


def _selector(fqdn: str, namespace: str, suffix: str, services: Mapping[tuple[str, str], Mapping[str, Any]],
              entries: Mapping[str, Mapping[str, Mapping[str, Any]]],
              ) -> tuple[Mapping[str, Any] | None, list[str], list[tuple[int | None, int | None]]]:
    """(the selector of the Service or ServiceEntry `fqdn` names in `namespace`, or None and the other namespaces
    that have it; its ports)."""
    tail = f".svc.{suffix}"
    name, _, rest = fqdn.partition(".")
    svc_ns = rest[: -len(tail)] if rest.endswith(tail) else ""
    found = services.get((svc_ns, name)) if svc_ns == namespace else None
    if found is not None:
        return found.get("selector") or {}, [], _service_ports(found, False)
    entry = entries.get(fqdn, {}).get(namespace)
    if entry is not None:
        return (entry.get("workloadSelector") or {}).get("labels") or {}, [], _service_ports(entry, True)
    others = {ns for ns, n in services if n == name and ns == svc_ns and ns != namespace}
    return None, sorted(others | set(entries.get(fqdn, {}))), []


def _port_warnings(fqdn: str, listener_ports: list[int], ports: list[tuple[int | None, int | None]]) -> list[str]:
    """Istio's ResolveGatewayInstances for a Hostname with instances: each listener port the Service does not have
    is unusable, with a hint when it is a workload port (a service port targets it; Go's %v of the ports)."""
    out = []
    for port in listener_ports:
        if any(number == port for number, _ in ports):
            continue
        hint = sorted({str(number) for number, target in ports if target == port and number is not None})
        out.append(f'port {port} not found for hostname "{fqdn}" (hint: the service port should be specified, not '
                   f'the workload port. Did you mean one of these ports: [{" ".join(hint)}]?)' if hint
                   else f'port {port} not found for hostname "{fqdn}"')
    return out


def placement(namespace: str, spec: Mapping[str, Any], suffix: str,
              services: Mapping[tuple[str, str], Mapping[str, Any]],
              entries: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> Placement:
    """An unmanaged Gateway's placement; `services` maps (namespace, name) to a Service's spec, `entries` a
    ServiceEntry host to its specs by namespace (entry_hosts). Istio's warnings per distinct listener port."""
    fqdns, skipped = gateway_services(namespace, spec, suffix)
    out = Placement(fqdns, [], skipped)
    listener_ports = sorted({p for lst in spec.get("listeners") or () if isinstance(lst, Mapping)
                             if (p := _int(lst.get("port"))) is not None})
    for fqdn in fqdns:
        found, others, ports = _selector(fqdn, namespace, suffix, services, entries or {})
        if found is None:
            quoted = ", ".join(f'"{ns}"' for ns in others)  # Istio quotes each namespace
            out.warnings.append(f'hostname "{fqdn}" not found in namespace "{namespace}", but it was found in '
                                f'namespace(s) {quoted}' if others else f'hostname "{fqdn}" not found')
            out.unusable = True
            continue
        selector = {str(k): str(v) for k, v in found.items()}
        if not selector:  # Istio: once per listener port
            out.warnings += [f'no instances found for hostname "{fqdn}"'] * max(1, len(listener_ports))
            continue
        missing = _port_warnings(fqdn, listener_ports, ports)
        out.warnings += missing
        out.unusable = out.unusable or bool(missing)
        if selector not in out.selectors:
            out.selectors.append(selector)
    return out
