"""envoy.filters.http.rbac and envoy.filters.network.rbac from the AuthorizationPolicies selecting a proxy.

HTTP (inbound sidecar listeners and gateways, as Istio's authz Builder.BuildHTTP skips only sidecar outbound): one
RBAC filter per action in Istio's order, AUDIT (RBAC action LOG), DENY, ALLOW. A denied request gets Envoy's
403 with the body `RBAC: access denied`. TCP (sidecar inbound ports that are not HTTP): the same policies built
for TCP (Istio's `forTCP`: see authz_model.py for what an HTTP-only field does there) in network RBAC filters
with stat prefix `tcp.` before tcp_proxy; a denied connection is closed.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac

from sailmesh.generate import authz
from sailmesh.generate.common import pack
from sailmesh.generate.filters.context import FilterContext

RBAC_FILTER = "envoy.filters.http.rbac"  # Istio's wellknown.HTTPRoleBasedAccessControl
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"  # Istio's wellknown.RoleBasedAccessControl


def http_filter(built: authz.Built) -> hcm_pb2.HttpFilter:
    """One action's HTTP RBAC filter (Istio's buildHTTP for ALLOW/DENY/AUDIT)."""
    cfg = http_rbac.RBAC(shadow_rules_stat_prefix=authz.shadow_prefix(built.shadow))
    if built.rules is not None:
        cfg.rules.CopyFrom(built.rules)
    if built.shadow is not None:
        cfg.shadow_rules.CopyFrom(built.shadow)
    return hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=pack(cfg))


def network_filter(built: authz.Built) -> lc.Filter:
    """One action's network RBAC filter (Istio's buildTCP for ALLOW/DENY/AUDIT)."""
    cfg = net_rbac.RBAC(stat_prefix=authz.TCP_STAT_PREFIX, shadow_rules_stat_prefix=authz.shadow_prefix(built.shadow))
    if built.rules is not None:
        cfg.rules.CopyFrom(built.rules)
    if built.shadow is not None:
        cfg.shadow_rules.CopyFrom(built.shadow)
    return lc.Filter(name=NETWORK_RBAC_FILTER, typed_config=pack(cfg))


def http_filters_for(selected: authz.Selected, ctx: authz.Context) -> list[hcm_pb2.HttpFilter]:
    """AUDIT, DENY, ALLOW HTTP RBAC filters for these policies (none when no such policy applies)."""
    return [http_filter(b) for b in authz.local_rbacs(selected, False, ctx)]


def rbac(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """The chain slot: the proxy's ALLOW/DENY/AUDIT policies as HTTP RBAC filters."""
    return http_filters_for(authz.select(ctx.snapshot, ctx.proxy), authz.context(ctx.snapshot, ctx.proxy))


def network_filters_for(selected: authz.Selected, ctx: authz.Context) -> list[lc.Filter]:
    """AUDIT, DENY, ALLOW network RBAC filters for these policies built for TCP (none when no policy applies)."""
    return [network_filter(b) for b in authz.local_rbacs(selected, True, ctx)]
