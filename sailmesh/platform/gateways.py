"""Gateway deployments of the embedded platform: one gateway (agent in router mode) per Gateway API Gateway.

Istio's deployment controller gives every Gateway of its class a Deployment and a Service named
`<gateway>-istio`; here the supervisor does the same with a local process. It follows the control plane's Gateways
(`/api/v1/resources?kind=KubernetesGateway`, polled) and starts or stops gateways as they come and go.

A Gateway whose `spec.addresses` is a Hostname or several addresses is not deployed (Istio's manual deployment,
generate/gatewayapi/addresses.py: it runs on the pods of the Services it names).

Labels: Istio's, plus the Gateway's `spec.infrastructure.labels` (as on Istio's gateway pods) and the pod
template labels of its `infrastructure.parametersRef` ConfigMap's `deployment` overlay; a change of them restarts
the gateway, as Istio's deployment controller rolls the pods.

Addresses: each gateway gets a loopback address of its own: the one IPAddress of the Gateway's `spec.addresses`
when that is a free loopback address (Istio makes it the Service's loadBalancerIP), else the first free one after
the ingress gateway's (127.0.0.1 -> 127.0.0.2, 127.0.0.3, ...; a taken address or a workload's is skipped),
because a proxy also binds Envoy's admin (15000), health (15021), stats (15090) and metrics (15020) ports on its
address, which `proxy-config` and `explain` find there. Listener ports follow the ingress gateway's rule: below
1024 they move up by 8000 (port 80 -> 8080, 443 -> 8443), so the Gateway's listener 80 answers on 127.0.0.2:8080.
The Gateway's status.addresses and its Programmed condition (`sailmesh get gateway.gateway.networking.k8s.io NAME
-o yaml`) say where it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from sailmesh.api.resource import Resource
from sailmesh.errors import PlatformError
from sailmesh.generate.gatewayapi import parameters
from sailmesh.generate.gatewayapi.addresses import is_managed, requested_address
from sailmesh.registry.model import TLS_MODE_ISTIO, TLS_MODE_LABEL

# _convert_lazily: generate.gatewayapi.convert (and the protobufs its imports load, ~0.3 CPU s) is imported by the
# functions that use it, once the control plane has a Gateway: every `sailmesh up` supervisor imports this module.

POLL_S = 0.5
MAX_GATEWAYS = 200


class Supervisor(Protocol):
    """What the deployments need of the embedded platform (platform.local.LocalMesh)."""

    @property
    def api_url(self) -> str: ...

    @property
    def api_token_file(self) -> str: ...

    def say(self, text: str) -> None: ...


@dataclass
class Deployment:
    """One running gateway: the Gateway it serves, its address and its process handle (LocalMesh's _Proc)."""

    namespace: str
    gateway: str
    ip: str
    proc: Any
    want: Wanted | None = None  # what it was started with


@dataclass(frozen=True)
class Wanted:
    """What a Gateway asks of its gateway: the infrastructure labels (convert.infrastructure) and the address of
    its `spec.addresses` (convert.requested_address; Istio's loadBalancerIP), "" to let the platform pick one."""

    labels: Mapping[str, str] = field(default_factory=dict)
    address: str = ""


def gateway_labels(gateway: str, infra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels Istio puts on a Gateway's deployment (the generated Istio Gateways select the first): the
    Gateway's infrastructure labels (convert.infrastructure), then Istio's own, which win."""
    from sailmesh.generate.gatewayapi.convert import GATEWAY_NAME_LABEL  # lazy: see _convert_lazily
    return {**(infra or {}), GATEWAY_NAME_LABEL: gateway, "istio.io/gateway-name": gateway,
            TLS_MODE_LABEL: TLS_MODE_ISTIO}


def _address_free(ip: str, ports: Collection[int]) -> bool:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


def next_address(after: str, taken: Collection[str], ports: Collection[int]) -> str:
    """The first loopback address after `after` that no one uses and whose proxy ports are free."""
    ip = ipaddress.IPv4Address(after)
    for _ in range(MAX_GATEWAYS * 4):
        ip += 1
        text = str(ip)
        if text not in taken and _address_free(text, ports):
            return text
    raise OSError(f"no free loopback address for a gateway after {after}")


Spawn = Callable[[str, str, dict[str, str], str], Awaitable[Any]]


class GatewayDeployments:
    """Keeps one gateway process per Gateway API Gateway of the running mesh."""

    def __init__(self, supervisor: Supervisor, spawn: Spawn, retire: Callable[[Any], None], first_ip: str,
                 taken: Callable[[], Collection[str]], proxy_ports: Collection[int]) -> None:
        self.supervisor = supervisor
        self.spawn = spawn  # (namespace, gateway, labels, ip) -> the started process
        self.retire = retire  # stop a process on purpose (not restarted)
        self.first_ip = first_ip
        self.taken = taken
        self.proxy_ports = proxy_ports
        self.running: dict[tuple[str, str], Deployment] = {}

    async def wanted(self, session: aiohttp.ClientSession) -> dict[tuple[str, str], Wanted] | None:
        """(namespace, name) of the Gateways the control plane programs (those with a status) -> what they ask
        of their gateway; None if unknown."""
        try:
            with open(self.supervisor.api_token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
            async with session.get(f"{self.supervisor.api_url}/api/v1/resources?kind=KubernetesGateway",
                                   headers={"Authorization": f"Bearer {token}"}) as r:
                if r.status != 200:
                    return None
                body = await r.json()
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError):
            return None
        from sailmesh.generate.gatewayapi.convert import infrastructure  # see _convert_lazily
        out = {}
        for item in body.get("items") or ():
            meta = item.get("metadata") or {}
            if item.get("status") and is_managed(item.get("spec") or {}):  # Istio deploys managed Gateways only
                ns = str(meta.get("namespace", "default"))
                extra = await self._parameter_labels(session, token, ns, item)
                if extra is None:
                    return None
                labels = {**infrastructure(item, "labels"), **extra}
                out[(ns, str(meta.get("name", "")))] = Wanted(labels, requested_address(item.get("spec") or {}))
        return out

    async def _parameter_labels(self, session: aiohttp.ClientSession, token: str, ns: str,
                                item: Mapping[str, Any]) -> dict[str, str] | None:
        """The pod template labels of the `deployment` overlay of the Gateway's infrastructure.parametersRef
        ConfigMap (gatewayapi/parameters.py; nothing else of it applies to a process), {} without one, None when
        the control plane did not answer."""
        ref = ((item.get("spec") or {}).get("infrastructure") or {}).get("parametersRef")
        if not isinstance(ref, Mapping) or ref.get("kind") != "ConfigMap" or (ref.get("group") or "") != "":
            return {}
        try:
            async with session.get(f"{self.supervisor.api_url}/api/v1/resources",
                                   params={"kind": "ConfigMap", "namespace": ns, "name": str(ref.get("name", ""))},
                                   headers={"Authorization": f"Bearer {token}"}) as r:
                if r.status != 200:
                    return None
                found = (await r.json()).get("items")
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError):
            return None
        if not found:
            return {}
        cm = Resource("v1", "ConfigMap", str(ref.get("name", "")), ns, {}, raw=found[0])
        overlays, bad = parameters.overlays(Resource("gateway.networking.k8s.io/v1", "Gateway", "", ns,
                                                     item.get("spec") or {}), lambda _ns, _name: cm)
        return {} if bad else parameters.pod_labels(overlays)

    async def reconcile(self, wanted: Collection[tuple[str, str]] | Mapping[tuple[str, str], Wanted]) -> None:
        """Start a gateway per wanted Gateway, stop those whose Gateway is gone, and restart one whose labels or
        address changed (Istio's deployment controller rolls its pods then)."""
        from sailmesh.generate.gatewayapi.convert import deployment_name  # see _convert_lazily
        wants = {key: wanted[key] if isinstance(wanted, Mapping) else Wanted() for key in wanted}
        for key in sorted(self.running):
            dep = self.running[key]
            if key not in wants or (dep.want or Wanted()) != wants[key]:
                del self.running[key]
                why = "its Gateway is gone" if key not in wants else "its labels or address changed"
                self.supervisor.say(f"stopping gateway {key[0]}/{deployment_name(key[1])} ({why})")
                self.retire(dep.proc)
        for ns, name in sorted(set(wants) - set(self.running)):
            want = wants[(ns, name)]
            used = {*self.taken(), *(d.ip for d in self.running.values())}
            ip = self._address(ns, name, want.address, used)
            self.supervisor.say(f"starting gateway {ns}/{deployment_name(name)} for Gateway {ns}/{name} on {ip} "
                                "(listener ports below 1024 + 8000)")
            proc = await self.spawn(ns, name, gateway_labels(name, want.labels), ip)
            self.running[(ns, name)] = Deployment(ns, name, ip, proc, want)

    def _address(self, ns: str, name: str, requested: str, used: Collection[str]) -> str:
        """The Gateway's requested address when it is a free loopback address, else the next free one (said)."""
        if requested:
            try:
                loopback = ipaddress.ip_address(requested).is_loopback
            except ValueError:
                loopback = False
            if loopback and requested not in used and _address_free(requested, self.proxy_ports):
                return requested
            self.supervisor.say(f"warning: Gateway {ns}/{name} asks for address {requested}, which is not a free "
                                "loopback address here; it gets the next free one")
        return next_address(self.first_ip, used, self.proxy_ports)

    async def run(self) -> None:
        """Follow the control plane's Gateways until cancelled."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), trust_env=False) as session:
            while True:
                wanted = await self.wanted(session)
                if wanted is not None:
                    try:
                        await self.reconcile(wanted)
                    except (OSError, PlatformError) as e:
                        self.supervisor.say(f"warning: cannot start a gateway: {e}")
                await asyncio.sleep(POLL_S)


def terminate(pid: int) -> None:
    """SIGTERM a gateway's process group (it drains and exits)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
