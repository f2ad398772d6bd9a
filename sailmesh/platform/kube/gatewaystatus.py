"""Gateway API status written to the API server by the Lease holder, as Istio's gateway controller writes it.

The status itself is the conversion's (generate/gatewayapi/: GatewayClass Accepted; Gateway Accepted, Programmed
and each listener's conditions and attached routes; each route's parents with Accepted and ResolvedRefs). What
only the cluster knows is added here, with Istio's rules (pilot/pkg/config/kube/gateway, reportGatewayStatus):

- a Gateway's addresses are those of its Service `<gateway>-istio`: the load balancer's ingress IPs or host names
  for a LoadBalancer Service, else the Service's cluster host name (`<gateway>-istio.<ns>.svc.<suffix>`,
  type Hostname); a LoadBalancer still waiting for an address makes Programmed False (AddressNotAssigned,
  "address pending for hostname ..."), a missing Service makes it False (AddressNotUsable, "hostname ... not
  found"); a Gateway on existing Services (a Hostname address, Istio's manual deployment) gets those Services'
  addresses by the same rules;
- every condition carries lastTransitionTime (the CRDs require it): kept from the stored status while the
  condition's status is unchanged, else the time of this write;
- a route's `parents` (a policy's `ancestors`) written by another controller (`controllerName` not Istio's) are
  kept, before ours, as Istio's createRouteStatus keeps them: a route attached to two implementations' Gateways
  shows both (a merge patch replaces the whole list, so they are written back as they were).

Writes go to the status subresource (a JSON merge patch) and only when the status differs both from what the
object has and from what this replica last wrote, so a write's own watch event does not cause another (as Istio's
status queue, a status changed by someone else is not written back until the computed status changes). Only
objects from the API server get a status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx2 as httpx

from sailmesh.api.kinds import GATEWAY_API, KUBERNETES_GATEWAY, external_kind
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.generate.gatewayapi.addresses import gateway_services, is_managed
from sailmesh.generate.gatewayapi.convert import deployment_name
from sailmesh.generate.gatewayapi.reader import GATEWAY_API_KINDS
from sailmesh.generate.gatewayapi.status import CONTROLLER_NAME
from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.platform.kube.store import KubeStore

log = logging.getLogger(__name__)

StatusOf = Callable[[Resource], "dict[str, Any] | None"]
PLURALS = {"GatewayClass": "gatewayclasses", KUBERNETES_GATEWAY: "gateways", "HTTPRoute": "httproutes",
           "GRPCRoute": "grpcroutes", "TCPRoute": "tcproutes", "TLSRoute": "tlsroutes",
           "ReferenceGrant": "referencegrants", "BackendTLSPolicy": "backendtlspolicies"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gateway_addresses(gw: Resource, service: Resource | None, suffix: str, status: dict[str, Any],
                      host: str = "") -> dict[str, Any]:
    """`status` (the conversion's) with the Gateway's addresses and Programmed condition from its Service (`host`:
    that Service's name, by default the gateway's own `<gateway>-istio`)."""
    out = dict(status)
    host = host or f"{deployment_name(gw.name)}.{gw.namespace}.svc.{suffix}"
    addresses: list[dict[str, str]] = []
    problem: tuple[str, str] | None = None
    if service is None:
        problem = "AddressNotUsable", f'Failed to assign to any requested addresses: hostname "{host}" not found'
    elif (service.spec.get("type") or "ClusterIP") == "LoadBalancer":
        ingress = ((service.raw.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
        for i in ingress:
            if isinstance(i, Mapping) and i.get("ip"):
                addresses.append({"type": "IPAddress", "value": str(i["ip"])})
            elif isinstance(i, Mapping) and i.get("hostname"):
                addresses.append({"type": "Hostname", "value": str(i["hostname"])})
        if not addresses:
            programmed: Mapping[str, Any] = next(
                (c for c in status.get("conditions") or () if c.get("type") == "Programmed"), {})
            assigned = str(programmed.get("message", "")).replace("Resource programmed, assigned", "Assigned")
            problem = "AddressNotAssigned", (f"{assigned}, but failed to assign to all requested addresses: "
                                             f'address pending for hostname "{host}"')
    else:
        addresses.append({"type": "Hostname", "value": host})
    out["addresses"] = addresses
    if problem is not None:
        out["conditions"] = [{**c, "status": "False", "reason": problem[0], "message": problem[1]}
                             if c.get("type") == "Programmed" else c for c in status.get("conditions") or ()]
    return out


def _conditions_with_times(desired: Iterable[Mapping[str, Any]], current: Any, now: str) -> list[dict[str, Any]]:
    before = {str(c.get("type")): c for c in current or () if isinstance(c, Mapping)}
    out = []
    for c in desired:
        old = before.get(str(c.get("type")))
        same = old is not None and old.get("status") == c.get("status") and old.get("lastTransitionTime")
        out.append({**c, "lastTransitionTime": old["lastTransitionTime"] if same and old else now})
    return out


def with_times(desired: dict[str, Any], current: Mapping[str, Any], now: str) -> dict[str, Any]:
    """`desired` with lastTransitionTime on every condition (kept from `current` where the status is unchanged)."""
    out = dict(desired)
    if "conditions" in desired:
        out["conditions"] = _conditions_with_times(desired["conditions"], current.get("conditions"), now)
    # per-listener, per-route-parent and per-policy-ancestor (BackendTLSPolicy) conditions: each needs its time (the
    # CRDs require lastTransitionTime; a status without one is refused with 422)
    for key, name_of in (("listeners", lambda x: x.get("name")), ("parents", lambda x: repr(x.get("parentRef"))),
                         ("ancestors", lambda x: repr(x.get("ancestorRef")))):
        if key not in desired:
            continue
        old = {name_of(x): x for x in current.get(key) or () if isinstance(x, Mapping)}
        out[key] = [{**x, "conditions": _conditions_with_times(x.get("conditions") or (),
                                                              (old.get(name_of(x)) or {}).get("conditions"), now)}
                    for x in desired[key]]
    return out


def with_others(status: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """`status` with the route parents / policy ancestors of `current` that another controller wrote, first and
    untouched (Istio: "we don't own this status, so keep it around")."""
    out = dict(status)
    for key in ("parents", "ancestors"):
        if key in status:
            others = [x for x in current.get(key) or ()
                      if isinstance(x, Mapping) and x.get("controllerName") != CONTROLLER_NAME]
            out[key] = [*others, *status[key]]
    return out


class GatewayStatusWriter:
    """Keeps the status of the API server's Gateway API objects as the conversion says (`lead()` while leading)."""

    def __init__(self, conn: KubeConnection, store: KubeStore, status_of: StatusOf, domain_suffix: str) -> None:
        self.conn = conn
        self.store = store
        self.status_of = status_of
        self.domain_suffix = domain_suffix
        self.writes = 0
        self._written: dict[ResourceKey, dict[str, Any]] = {}  # what was last written (a server may normalise)

    async def lead(self) -> None:
        """Reconcile now and after every change of the API server's config, until cancelled."""
        changes = self.store.watch()
        while True:
            try:
                await self.reconcile()
            except Exception:  # a bug here must not end the leader's other work, nor this loop
                log.exception("Gateway API status writer: reconcile failed; retrying on the next change")
            await anext(changes)
            await asyncio.sleep(0.05)  # let the changes of one apply arrive together

    def desired(self, r: Resource) -> dict[str, Any] | None:
        status = self.status_of(r)
        if status is None:
            return None
        if r.kind == KUBERNETES_GATEWAY and is_managed(r.spec):
            status = gateway_addresses(r, self.store.get("Service", r.namespace, deployment_name(r.name)),
                                       self.domain_suffix, status)
        elif r.kind == KUBERNETES_GATEWAY:  # Istio's manual deployment: the addresses of the Services it names
            status = self._unmanaged_addresses(r, status)
        return status

    def _unmanaged_addresses(self, r: Resource, status: dict[str, Any]) -> dict[str, Any]:
        """The addresses of each Service an unmanaged Gateway names (gatewayapi/addresses.py), as for a managed
        one's own Service; the first problem decides Programmed unless the conversion already said it is not
        (its reason and message, Istio's rule for both platforms, are kept then)."""
        hosts, _ = gateway_services(r.namespace, r.spec, self.domain_suffix)
        found: list[dict[str, str]] = []
        out = status
        programmed = [c for c in status.get("conditions") or () if c.get("type") == "Programmed"]
        decided = bool(programmed) and programmed[0].get("status") == "False"
        for host in hosts:
            name, _, rest = host.partition(".")
            svc = self.store.get("Service", r.namespace, name) \
                if rest == f"{r.namespace}.svc.{self.domain_suffix}" else None
            if svc is None and self._entry_host(r.namespace, host):  # an internal host: Istio reports its name
                found += [a for a in ({"type": "Hostname", "value": host},) if a not in found]
                continue
            one = gateway_addresses(r, svc, self.domain_suffix, status, host)
            found += [a for a in one["addresses"] if a not in found]
            if not decided and out is status and one["conditions"] != status.get("conditions"):
                out = one
        return {**out, "addresses": found}

    def _entry_host(self, namespace: str, host: str) -> bool:
        """Whether a ServiceEntry of `namespace` has `host` (Istio's HostnameAndNamespace holds both kinds)."""
        return any(r.namespace == namespace and host in (r.spec.get("hosts") or ())
                   for r in self.store.list("ServiceEntry"))

    async def reconcile(self) -> int:
        """Write every status that differs from the object's; the number written."""
        written = 0
        now = _now()
        for r in [r for kind in GATEWAY_API_KINDS for r in self.store.list(kind)]:
            desired = self.desired(r)
            if desired is None:
                continue
            current = r.raw.get("status") or {}
            # condition times continue from what this replica last wrote: the store may not have seen that write
            # yet (its watch event comes later), and stamping "now" on a stale read would write again
            previous = self._written.get(r.key, current if isinstance(current, Mapping) else {})
            status = with_others(with_times(desired, previous, now), current if isinstance(current, Mapping) else {})
            if status == current or status == self._written.get(r.key):
                continue
            if await self._write(r, status):
                self._written[r.key] = status
                written += 1
        self.writes += written
        return written

    async def _write(self, r: Resource, status: dict[str, Any]) -> bool:
        group_version = r.api_version if r.api_version.startswith(GATEWAY_API + "/") else f"{GATEWAY_API}/v1"
        ns = f"/namespaces/{r.namespace}" if r.namespace else ""
        path = f"/apis/{group_version}{ns}/{PLURALS[r.kind]}/{r.name}/status"
        try:
            await self.conn.send_json("PATCH", path, {"status": status}, "application/merge-patch+json")
        except KubeApiError as e:
            if e.code not in (404, 409):  # gone meanwhile / changed meanwhile: the next round sees it
                log.warning("status of %s %s/%s not written: %s", external_kind(r.kind), r.namespace, r.name, e)
            return False
        except httpx.HTTPError as e:
            log.warning("status of %s %s/%s not written: %s", external_kind(r.kind), r.namespace, r.name, e)
            return False
        log.info("wrote the status of %s %s", external_kind(r.kind), f"{r.namespace}/{r.name}".lstrip("/"))
        return True
