"""`sailmesh explain --from W tcp://host:port` (and `tls://host:port --sni NAME`): one TCP connection walked through
the generated Envoy config. Pure.

A sidecar's app opens TCP connections to mesh services through its HTTP proxy listener as `CONNECT host:port`
(architecture.md: explicit capture), so the walk is the `http_proxy` route config's CONNECT virtual host for that
authority: its route is the VirtualService `tcp` route (or, on TLS ports, the `tls` route whose sniHosts cover the
service's name, chosen when the config was generated) or the service's default cluster. A gateway accepts the
connection on the listener bound to the port, picks the filter chain by SNI as Envoy does (exact server name, then
the longest wildcard, then a chain without server names) and its tcp_proxy names the clusters. Then, as for HTTP:
each cluster's endpoints, the TLS of the hop, the destination's inbound chain and its network RBAC filters.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from sailmesh.explain import explain_steps as steps
from sailmesh.explain import routematch
from sailmesh.explain.refs import config_ref
from sailmesh.explain.routematch import Request

TCP_PROXY = "envoy.filters.network.tcp_proxy"


def tcp_request(url: str, sni: str = "") -> Request:
    """`tcp://host:port` or `tls://host:port` as the CONNECT a sidecar's app sends (SNI: given, else the host)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("tcp", "tls") or not u.hostname or not u.port:
        raise ValueError(f"{url!r} is not tcp://HOST:PORT or tls://HOST:PORT")
    return Request("CONNECT", f"{u.hostname}:{u.port}", "", {}, u.scheme,
                   sni or (u.hostname if u.scheme == "tls" else ""))


def _server_name_rank(names: list[str], sni: str) -> tuple[int, int] | None:
    """Envoy's server_names preference: exact (2), else the longest matching `*.suffix` (1); None: no match."""
    best = None
    for n in names:
        if n == sni:
            return (2, len(n))
        if n.startswith("*.") and sni.endswith(n[1:]) and (best is None or len(n) > best[1]):
            best = (1, len(n))
    return best


def filter_chain(lis: Mapping[str, Any], req: Request) -> tuple[dict[str, Any] | None, str]:
    """The chain a connection lands on (by transport and SNI), with the reason."""
    chains = [*lis.get("filter_chains", []), *([lis["default_filter_chain"]] if lis.get("default_filter_chain")
                                               else [])]
    tls = req.scheme == "tls"
    fitting = [c for c in chains if (c.get("filter_chain_match") or {}).get("transport_protocol", "") in
               ("", "tls" if tls else "raw_buffer")]
    ranked = [(r, c) for c in fitting if (names := (c.get("filter_chain_match") or {}).get("server_names"))
              and (r := _server_name_rank(list(names), req.sni))]
    if ranked:
        rank, chain = max(ranked, key=lambda x: x[0])
        kind = "exact" if rank[0] == 2 else "wildcard"
        return dict(chain), f"server name {req.sni!r} ({kind} match of {chain['filter_chain_match']['server_names']})"
    plain = [c for c in fitting if not (c.get("filter_chain_match") or {}).get("server_names")]
    if plain:
        return dict(plain[0]), "the chain without server names" + (f" (SNI {req.sni!r})" if req.sni else "")
    offered = sorted({n for c in chains for n in (c.get("filter_chain_match") or {}).get("server_names", [])})
    return None, f"no filter chain matches SNI {req.sni!r} (server names: {', '.join(offered) or 'none'})"


def _tcp_destinations(chain: Mapping[str, Any]) -> list[routematch.Destination]:
    for f in chain.get("filters", []):
        if f.get("name") == TCP_PROXY:
            tc = f.get("typed_config", {})
            if tc.get("cluster"):
                return [routematch.Destination(str(tc["cluster"]), 1, 1)]
            cs = tc.get("weighted_clusters", {}).get("clusters", [])
            total = sum(int(c.get("weight", 0)) for c in cs)
            return [routematch.Destination(str(c.get("name")), int(c.get("weight", 0)), total) for c in cs]
    return []


def _gateway_listener(listeners: Mapping[str, Any], port: int) -> tuple[str, dict[str, Any]] | None:
    from sailmesh.generate.names import gateway_bind_port

    for p in (port, gateway_bind_port(port)):
        for name, lis in listeners.items():
            if steps._address(lis)[1] == p:
                return name, dict(lis)
    return None


def explain(req: Request, source: Mapping[str, Any], envoy_clusters: Mapping[str, Any], principal: str,
            source_ip: str, destinations: Mapping[str, Mapping[str, Any]], names: Mapping[str, str],
            sidecar: bool = True) -> dict[str, Any]:
    """The whole walk of one connection, in explain_steps.explain's shape."""
    port = int(req.authority.rpartition(":")[2])
    out: dict[str, Any] = {"request": {"method": req.scheme.upper(), "scheme": req.scheme,
                                       "authority": req.authority, "path": "", "headers": {},
                                       **({"sni": req.sni} if req.sni else {})}}
    if sidecar:
        found = steps.outbound_listener(source.get("listeners", {}), port, True)
        if found is None:
            out["error"] = "the sidecar has no HTTP proxy listener (15001) to tunnel through"
            return out
        lname, lis = found
        hcm = steps._hcm(steps._plain_chain(lis) or {}) or {}
        rname, rdata = steps._routes_of(hcm, source.get("routes", {}))
        out["listener"] = {"name": lname, "address": "{}:{}".format(*steps._address(lis)), "route_config": rname,
                           "http_filters": [f.get("name", "") for f in hcm.get("http_filters", [])],
                           "note": f"the app tunnels the connection as CONNECT {req.authority}"}
        if rdata is None:
            out["error"] = f"route config {rname!r} is not in the control plane's config for this proxy"
            return out
        sel = routematch.select_route(steps.route_config(rdata), req)
        out["virtual_host"] = {"name": sel.virtual_host.name if sel.virtual_host else "", "reason": sel.host_reason}
        out["routes_tried"] = [{"index": v.index, "name": v.name, "matched": v.matched, "reason": v.reason}
                               for v in sel.tried]
        if sel.chosen is None:
            out["result"] = (f"404 to the CONNECT: {req.authority} is not a TCP port of a mesh service this proxy "
                             "sees (HTTP ports take http:// requests); the app's connection fails")
            return out
        oc = routematch.outcome(sel.chosen.route, sel.virtual_host)
        dests = list(oc.destinations)
        out["route"] = {"name": sel.chosen.name, "timeout": "-", "retries": "none", "faults": [], "other": [],
                        "config": steps._config_ref(sel)}
        if req.scheme == "tls":
            out["route"]["other"].append("the tunnel is chosen by the CONNECT authority; a VirtualService `tls` "
                                         "route applies through the service's own name as SNI")
    else:
        gl = _gateway_listener(source.get("listeners", {}), port)
        if gl is None:
            out["error"] = f"the gateway has no listener on port {port}: connection refused"
            return out
        lname, lis = gl
        out["listener"] = {"name": lname, "address": "{}:{}".format(*steps._address(lis)), "route_config": "-"}
        chain, why = filter_chain(lis, req)
        out["filter_chain"] = {"name": (chain or {}).get("name", ""), "reason": why}
        if chain is None:
            out["result"] = f"connection closed: {why}"
            return out
        if steps._hcm(chain):
            out["result"] = ("the chain terminates TLS and serves HTTP: explain an https:// (or http://) request "
                             "to see its routes")
            return out
        dests = _tcp_destinations(chain)
        out["route"] = {"name": "tcp_proxy", "timeout": "-", "retries": "none", "faults": [], "other": [],
                        "config": config_ref(chain.get("metadata"))}  # the chain's `istio.config`, as a route's
    out["clusters"] = [steps._cluster(d, source, envoy_clusters, principal, source_ip, destinations, names, req)
                       for d in dests]
    out["result"] = _result(out["clusters"])
    return out


def _result(clusters: list[dict[str, Any]]) -> str:
    results = []
    for c in clusters:
        if c.get("error") or c.get("note"):
            results.append(f"{c['name']}: {c.get('error') or c.get('note')}")
            continue
        usable = [e for e in c["endpoints"] if e["eds_health"] in ("HEALTHY", "UNKNOWN") and not e["outlier_ejected"]]
        denied = [e for e in usable if e.get("authorization", {}).get("allowed") is False]
        blocked = [e for e in usable if "error" in e.get("inbound", {})]
        if not usable:
            results.append(f"{c['name']}: no usable endpoint: the connection is closed (UH)")
        elif blocked and len(blocked) == len(usable):
            results.append(f"{c['name']}: {blocked[0]['inbound']['error']}")
        elif denied and len(denied) == len(usable):
            results.append(f"{c['name']}: {denied[0]['authorization']['decision']}")
        else:
            results.append(f"{c['name']} ({c['weight']}): connection forwarded to "
                           f"{', '.join(e['proxy'] or e['address'] for e in usable)}")
    return "; ".join(results) or "no cluster: the connection is closed"
