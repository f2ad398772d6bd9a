"""GatewayApiReader: the config store as snapshots read it, plus the Gateways and VirtualServices the Gateway API
objects convert to (Istio's gateway controller is likewise a config store of Istio kinds beside the others).

The control plane builds snapshots from this reader instead of the store, and widens each change with
`expand`, so a changed HTTPRoute (or Service, ReferenceGrant, ...) rebuilds the generated VirtualServices and
Gateways and pushes what they affect. `status` gives `sailmesh get -o yaml` the status Istio would write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sailmesh.api.change import Change
from sailmesh.api.kinds import KUBERNETES_GATEWAY
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.generate.gatewayapi.convert import GATEWAY_NAME_LABEL, INPUT_KINDS, ROUTE_KINDS, Converted, convert
from sailmesh.generate.names import gateway_bind_port
from sailmesh.store.base import ConfigReader, Rejections
from sailmesh.store.base import Resources as ResourceList

GENERATED_KINDS = ("Gateway", "VirtualService", "DestinationRule")
GATEWAY_API_KINDS = frozenset({*ROUTE_KINDS, "GatewayClass", KUBERNETES_GATEWAY, "BackendTLSPolicy"})
_MARK = "<gateway-api>"  # the name of the change keys that stand for "the generated resources of this kind"


class GatewayApiReader:
    """A ConfigReader: `store`'s resources plus the converted Gateway API objects (recomputed per store revision)."""

    def __init__(self, store: ConfigReader, domain_suffix: str, enabled: bool = True) -> None:
        self.store = store
        self.domain_suffix = domain_suffix
        self.enabled = enabled  # Istio's PILOT_ENABLE_GATEWAY_API: off, the Gateway API objects convert to nothing
        self._revision = -1
        self._converted = Converted()

    @property
    def revision(self) -> int:
        return self.store.revision

    def converted(self) -> Converted:
        """The conversion of the store's current Gateway API objects; the previous generated objects are kept while
        they are equal, so snapshots and their indexes see the same objects."""
        if self.store.revision != self._revision:
            # the Gateway API kinds first: without any, the other inputs (every Service, ...) are not listed at
            # all (listing and sorting them was ~5 ms of each VirtualService push at 1,000 services)
            api = {k: tuple(self.store.list(k)) for k in GATEWAY_API_KINDS} if self.enabled else {}
            if not any(api.values()):
                fresh = Converted()
            else:
                config = {**{k: tuple(self.store.list(k)) for k in INPUT_KINDS - GATEWAY_API_KINDS}, **api}
                fresh = convert(config, self.domain_suffix)
            old = self._converted
            if fresh.gateways == old.gateways:
                fresh.gateways = old.gateways
            if fresh.virtual_services == old.virtual_services:
                fresh.virtual_services = old.virtual_services
            if fresh.destination_rules == old.destination_rules:
                fresh.destination_rules = old.destination_rules
            self._converted, self._revision = fresh, self.store.revision
        return self._converted

    def _generated(self, kind: str | None) -> tuple[Resource, ...]:
        c = self.converted()
        if kind is None:
            return c.gateways + c.virtual_services + c.destination_rules
        return {"Gateway": c.gateways, "VirtualService": c.virtual_services,
                "DestinationRule": c.destination_rules}.get(kind, ())

    def list(self, kind: str | None = None) -> ResourceList:
        extra = self._generated(kind)
        return [*self.store.list(kind), *extra] if extra else self.store.list(kind)

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        found = self.store.get(kind, namespace, name)
        if found is None:
            found = next((r for r in self._generated(kind) if r.namespace == namespace and r.name == name), None)
        return found

    def rejected(self) -> Rejections:
        return self.store.rejected()

    def expand(self, change: Change) -> Change:
        """`change` plus the generated kinds when it touches what the conversion reads: a Gateway API object
        always, a Service/Namespace/Secret/ReferenceGrant only while there is Gateway API config to convert."""
        if change.full or not change.kinds & INPUT_KINDS:
            return change
        before, after = self._converted, self.converted()
        if not change.kinds & GATEWAY_API_KINDS and not (before.gateways or before.virtual_services
                                                         or before.destination_rules or after.gateways
                                                         or after.virtual_services or after.destination_rules):
            return change
        # the generated DestinationRules (BackendTLSPolicy) only when they changed: a DestinationRule change
        # rebuilds clusters everywhere, which a route change should not cost
        kinds = GENERATED_KINDS if before.destination_rules is not after.destination_rules \
            else tuple(k for k in GENERATED_KINDS if k != "DestinationRule")
        return change.merge(Change(frozenset(ResourceKey(k, "", _MARK) for k in kinds)))

    def status(self, resource: Resource, gateway_proxies: Iterable[tuple[str, str, Mapping[str, str]]] = ()
               ) -> dict[str, Any] | None:
        """The status of a Gateway API object (None for other kinds). A Gateway's addresses are those of the
        running gateway proxies labelled with its name (`gateway_proxies`: (ip, namespace, labels))."""
        found = self.converted().status.get(resource.key)
        if found is None:
            return None
        if resource.kind != KUBERNETES_GATEWAY:
            return found
        placed = self.converted().placements.get(resource.key)
        if placed is None:
            ips = sorted({ip for ip, ns, labels in gateway_proxies
                          if ns == resource.namespace and labels.get(GATEWAY_NAME_LABEL) == resource.name})
        else:  # an unmanaged Gateway (addresses.py): the proxies of the Services its Hostnames name
            ips = sorted({ip for ip, ns, labels in gateway_proxies if ns == resource.namespace and any(
                all(labels.get(k) == v for k, v in sel.items()) for sel in placed.selectors)})
        out = dict(found)
        out["addresses"] = [{"type": "IPAddress", "value": ip} for ip in ips]
        if placed is not None and not ips:  # Istio reports the Services' hostnames without external addresses
            out["addresses"] = [{"type": "Hostname", "value": s} for s in placed.services]
        if ips:
            ports = [int(spec.get("port", 0)) for spec in resource.spec.get("listeners") or ()]
            mapping = ", ".join(f"{p} -> {ips[0]}:{gateway_bind_port(p)}" for p in dict.fromkeys(ports))
            out["conditions"] = [
                {**c, "message": f"{c['message']} (embedded mesh: listener port {mapping})"}
                if c["type"] == "Programmed" else c for c in out["conditions"]]
        return out
