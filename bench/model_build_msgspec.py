"""The msgspec alternative measured by bench.model_build: frozen Structs for the kinds the benchmark mesh uses.

Only what the benchmark's VirtualServices, DestinationRules and Sidecar contain (plus their common siblings) is
declared; unknown fields are ignored, as msgspec does by default. Importing this module needs msgspec.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sailmesh.api.resource import Resource


class _S(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    pass


class StringMatch(_S):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class PortSelector(_S):
    number: int | None = None


class Destination(_S):
    host: str | None = None
    subset: str | None = None
    port: PortSelector | None = None


class HTTPRouteDestination(_S):
    destination: Destination | None = None
    weight: int | None = None


class HTTPMatchRequest(_S):
    name: str | None = None
    uri: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None
    port: int | None = None
    source_labels: dict[str, str] | None = None
    gateways: tuple[str, ...] | None = None


class HTTPRetry(_S):
    attempts: int | None = None
    per_try_timeout: str | None = None
    retry_on: str | None = None


class HTTPRoute(_S):
    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] | None = None
    route: tuple[HTTPRouteDestination, ...] | None = None
    timeout: str | None = None
    retries: HTTPRetry | None = None


class VirtualService(_S):
    hosts: tuple[str, ...] | None = None
    gateways: tuple[str, ...] | None = None
    http: tuple[HTTPRoute, ...] | None = None
    export_to: tuple[str, ...] | None = None


class LoadBalancerSettings(_S):
    simple: str | None = None
    consistent_hash: dict[str, Any] | None = None


class OutlierDetection(_S, rename={"consecutive_5xx_errors": "consecutive5xxErrors"}):
    consecutive_5xx_errors: int | None = None
    interval: str | None = None
    base_ejection_time: str | None = None


class TrafficPolicy(_S):
    load_balancer: LoadBalancerSettings | None = None
    outlier_detection: OutlierDetection | None = None
    connection_pool: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None


class Subset(_S):
    name: str | None = None
    labels: dict[str, str] | None = None
    traffic_policy: TrafficPolicy | None = None


class DestinationRule(_S):
    host: str | None = None
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] | None = None
    export_to: tuple[str, ...] | None = None


class EgressListener(_S):
    hosts: tuple[str, ...] | None = None
    bind: str | None = None


class Sidecar(_S):
    egress: tuple[EgressListener, ...] | None = None
    outbound_traffic_policy: dict[str, Any] | None = None


TYPES: dict[str, type] = {"VirtualService": VirtualService, "DestinationRule": DestinationRule, "Sidecar": Sidecar}


def build(resource: Resource) -> Any:
    """The resource's spec as a frozen Struct (None for kinds without one)."""
    tp = TYPES.get(resource.kind)
    return None if tp is None else msgspec.convert(resource.spec, tp)
