"""Typed security.istio.io models: PeerAuthentication, AuthorizationPolicy, RequestAuthentication."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from sailmesh.api.models.base import Duration, Model
from sailmesh.api.models.networking import WorkloadSelector


class PolicyTargetReference(Model, frozen=True):
    group: str | None = None
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None


class MutualTLS(Model, frozen=True):
    mode: str | None = None


class PeerAuthentication(Model, frozen=True):
    selector: WorkloadSelector | None = None
    mtls: MutualTLS | None = None
    port_level_mtls: Mapping[str, MutualTLS] | None = None


class Source(Model, frozen=True):
    principals: tuple[str, ...] | None = None
    not_principals: tuple[str, ...] | None = None
    request_principals: tuple[str, ...] | None = None
    not_request_principals: tuple[str, ...] | None = None
    namespaces: tuple[str, ...] | None = None
    not_namespaces: tuple[str, ...] | None = None
    service_accounts: tuple[str, ...] | None = None
    not_service_accounts: tuple[str, ...] | None = None
    ip_blocks: tuple[str, ...] | None = None
    not_ip_blocks: tuple[str, ...] | None = None
    remote_ip_blocks: tuple[str, ...] | None = None
    not_remote_ip_blocks: tuple[str, ...] | None = None
    trust_domains: tuple[str, ...] | None = None
    not_trust_domains: tuple[str, ...] | None = None


class Operation(Model, frozen=True):
    hosts: tuple[str, ...] | None = None
    not_hosts: tuple[str, ...] | None = None
    ports: tuple[str, ...] | None = None
    not_ports: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    not_methods: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None
    not_paths: tuple[str, ...] | None = None


class RuleFrom(Model, frozen=True):
    source: Source | None = None


class RuleTo(Model, frozen=True):
    operation: Operation | None = None


class Condition(Model, frozen=True):
    key: str | None = None
    values: tuple[str, ...] | None = None
    not_values: tuple[str, ...] | None = None


class Rule(Model, frozen=True):
    from_: tuple[RuleFrom, ...] | None = msgspec.field(default=None, name="from")
    to: tuple[RuleTo, ...] | None = None
    when: tuple[Condition, ...] | None = None


class ExtensionProvider(Model, frozen=True):
    name: str | None = None


class AuthorizationPolicy(Model, frozen=True):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    rules: tuple[Rule, ...] | None = None
    action: str | None = None
    provider: ExtensionProvider | None = None


class JWTHeader(Model, frozen=True):
    name: str | None = None
    prefix: str | None = None


class ClaimToHeader(Model, frozen=True):
    header: str | None = None
    claim: str | None = None


class JWTRule(Model, frozen=True):
    issuer: str | None = None
    audiences: tuple[str, ...] | None = None
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: tuple[JWTHeader, ...] | None = None
    from_params: tuple[str, ...] | None = None
    from_cookies: tuple[str, ...] | None = None
    output_payload_to_header: str | None = None
    forward_original_token: bool | None = None
    output_claim_to_headers: tuple[ClaimToHeader, ...] | None = None
    space_delimited_claims: tuple[str, ...] | None = None
    timeout: Duration | None = None
    presence: str | None = None


class RequestAuthentication(Model, frozen=True):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    jwt_rules: tuple[JWTRule, ...] | None = None
