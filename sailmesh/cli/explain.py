"""`sailmesh explain --from WORKLOAD METHOD URL`: what the mesh would do with a request, without sending it.

Walks the request through the Envoy config the control plane generated for the source proxy (and for each
destination proxy): the listener and the route matched (and the earlier routes that did not match, and why),
the destination cluster and subset, its endpoints with their health and outlier state as the source Envoy sees
them (its admin /clusters), the TLS mode of the hop, the authorization decision at the destination and the
policy that made it (a JWT checked against the RequestAuthentication's keys, claim rules, the CUSTOM provider
consulted), local rate limits, and the faults (with their probability), retries and timeout in effect. A TCP
connection (`tcp://HOST:PORT`) or TLS one (`tls://HOST:PORT --sni NAME`) is walked the same way.

  sailmesh explain --from productpage-v1-0 GET http://reviews:9080/reviews/0 -H end-user:jason
  sailmesh explain --from reviews-v2-0 GET http://ratings:9080/ratings/0 -o json
  sailmesh explain --from istio-ingressgateway GET http://127.0.0.1:8080/productpage
  sailmesh explain --from sleep-0 GET http://httpbin:8000/headers -H "Authorization:Bearer $TOKEN"
  sailmesh explain --from sleep-0 tcp://tcp-echo:9000
  sailmesh explain --from istio-ingressgateway tls://127.0.0.1:443 --sni nginx.example.com
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.cli.proxy_config import admin, connected, pick
from sailmesh.cli.proxy_status import COLUMNS, status_word
from sailmesh.errors import PlatformError
from sailmesh.settings import ProxyPorts

if TYPE_CHECKING:  # the walk (and Envoy's protos) load when a request is explained, not for --help
    from sailmesh.cli.routematch import Request


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True,
                        help="the sending proxy as proxy-status names it (productpage-v1-0), or a unique part")
    parser.add_argument("target", nargs="+", metavar="[METHOD] URL",
                        help="an HTTP method and the URL the app asks for (GET http://reviews:9080/reviews/0), or a "
                             "connection: tcp://HOST:PORT, tls://HOST:PORT")
    parser.add_argument("--sni", default="", help="the TLS server name of a tls:// connection (default: its host)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="NAME:VALUE",
                        help="a request header (repeatable), e.g. -H end-user:jason")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument("--admin-port", type=int, default=ProxyPorts().admin, help="Envoy admin port (15000)")
    add_state_dir(parser)


def request_of(args: argparse.Namespace) -> Request:
    """The request (or connection) the command line describes."""
    from sailmesh.cli.explain_tcp import tcp_request
    from sailmesh.cli.routematch import Request

    target = list(args.target)
    if len(target) == 1 and target[0].split("://", 1)[0] in ("tcp", "tls"):
        return tcp_request(target[0], args.sni)
    if len(target) != 2:
        raise ValueError("give METHOD URL (GET http://reviews:9080/) or tcp://HOST:PORT / tls://HOST:PORT")
    return Request.from_url(target[0], target[1], _headers(args.header))


def _shown(name: str, value: str) -> str:
    """A header value as explain prints it: credentials (a bearer token, a JWT anywhere) are never shown."""
    parts = value.split()
    if name in ("authorization", "proxy-authorization", "cookie") or any(p.count(".") == 2 and len(p) > 40
                                                                         for p in parts):
        kind = parts[0] + " " if len(parts) > 1 else ""
        return f"{kind}<{len(value)} characters, not shown>"
    return value


def _headers(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {pair!r} is not NAME:VALUE (e.g. -H end-user:jason)")
        out[name.strip().lower()] = value.strip()
    return out


def control_plane_dump(api_url: str, node_id: str, types: str = "") -> dict[str, Any]:
    """The config the control plane generates for this proxy now (/debug/config_dump), as Envoy's JSON."""
    query = {"proxyID": node_id} | ({"types": types} if types else {})
    status, body = call(api_url, "GET", "/debug/config_dump?" + urllib.parse.urlencode(query))
    if status != 200:
        raise PlatformError(f"the control plane has no config for {node_id}: HTTP {status}")
    for kind, part in body.items():
        if isinstance(part, dict) and "error" in part and isinstance(part["error"], str):
            raise PlatformError(f"the control plane cannot generate {kind} for {node_id}: {part['error']}")
    return dict(body)


def _identity(ip: str, port: int) -> tuple[str, str]:
    """The source Envoy's workload certificate identity (spiffe://...) from its /certs; a note when unreadable."""
    try:
        certs = json.loads(admin(ip, port, "/certs"))
    except (PlatformError, ValueError) as e:
        return "", f"could not read the source's certificate ({e}); assuming no peer identity"
    for c in certs.get("certificates", []):
        for cert in c.get("cert_chain", []):
            for san in cert.get("subject_alt_names", []):
                if str(san.get("uri", "")).startswith("spiffe://"):
                    return str(san["uri"]), ""
    return "", "the source holds no mesh certificate: it cannot send mutual TLS"


def _envoy_clusters(ip: str, port: int) -> tuple[dict[str, Any], str]:
    """The source Envoy's /clusters (health and outlier state); a note instead when unreadable."""
    try:
        return dict(json.loads(admin(ip, port, "/clusters?format=json"))), ""
    except (PlatformError, ValueError) as e:
        return {}, f"endpoint health as Envoy sees it is unknown: {e}"


DRAINING = "/stats?filter=^listener_manager.total_(listeners|filter_chains)_draining$"


def _draining(ip: str, port: int) -> str:
    """A note when the source Envoy still serves connections with a previous listener config (draining)."""
    try:
        text = admin(ip, port, DRAINING).decode()
        count = sum(int(line.rpartition(":")[2]) for line in text.splitlines() if ":" in line)
    except (PlatformError, ValueError):
        return ""
    return (f"the source Envoy is still draining {count} listener(s)/filter chain(s) of a previous config: "
            "connections opened before the last change keep it until drained (the agent's drain time)") \
        if count else ""


def gather(args: argparse.Namespace, req: Request) -> dict[str, Any]:
    """Read what the walk needs (control plane dumps, the source Envoy's /clusters and /certs, fetched at once)
    and walk."""
    from sailmesh.cli import explain_steps, explain_tcp

    proxies = connected(args)
    name, node_id = pick(proxies, args.source)
    ip = node_id.split("~")[1]
    api_url = running_mesh(args).api_url
    notes = []
    row = next(p for p in proxies if p.get("proxy") == node_id)
    unsynced = [c for c in COLUMNS if status_word(row.get("types", {}).get(c)) != "SYNCED"]
    if unsynced:
        notes.append(f"{name} is not SYNCED for {', '.join(unsynced)}: its Envoy may run older config than this "
                     f"walk uses (sailmesh proxy-status {name})")
    with ThreadPoolExecutor(max_workers=4) as pool:
        source_f = pool.submit(control_plane_dump, api_url, node_id)
        clusters_f = pool.submit(_envoy_clusters, ip, args.admin_port)
        identity_f = pool.submit(_identity, ip, args.admin_port)
        draining_f = pool.submit(_draining, ip, args.admin_port)
        source = source_f.result()
        envoy_clusters, note = clusters_f.result()
        notes.extend([note] if note else [])
        principal, note = identity_f.result()
        notes.extend([draining_f.result()] if draining_f.result() else [])
    if note:
        notes.append(note)
    names = {str(p.get("proxy", "")).split("~")[1]: str(p.get("name", "")) for p in proxies
             if str(p.get("proxy", "")).count("~") >= 2}
    nodes = {str(p.get("proxy", "")).split("~")[1]: str(p.get("proxy", "")) for p in proxies
             if str(p.get("proxy", "")).count("~") >= 2}
    sidecar = row.get("type", "sidecar") == "sidecar"
    walk = explain_tcp.explain if req.scheme in ("tcp", "tls") else explain_steps.explain
    first = walk(req, source, envoy_clusters, principal, ip, {}, names, sidecar)
    wanted = sorted({e["address"].rpartition(":")[0] for c in first.get("clusters", [])
                     for e in c.get("endpoints", [])} & set(nodes))
    with ThreadPoolExecutor(max_workers=4) as pool:  # every destination's listeners at once
        dumps = pool.map(lambda dip: control_plane_dump(api_url, nodes[dip], "listeners"), wanted)
        drains = pool.map(lambda dip: _draining(dip, args.admin_port), wanted)
        destinations = dict(zip(wanted, dumps, strict=True))
        notes.extend(n.replace("the source Envoy", f"destination {names.get(dip, dip)}")
                     for dip, n in zip(wanted, drains, strict=True) if n)
    out = walk(req, source, envoy_clusters, principal, ip, destinations, names, sidecar)
    out["request"]["headers"] = {k: _shown(k, v) for k, v in out["request"].get("headers", {}).items()}
    out["source"] = {"proxy": name, "identity": principal or "(none: plaintext only)"}
    out["notes"] = notes + [f"endpoint {e['address']} is not a mesh proxy: no inbound policy to simulate"
                            for c in out.get("clusters", []) for e in c.get("endpoints", [])
                            if e["address"].rpartition(":")[0] not in nodes]
    return out


def render(ex: dict[str, Any]) -> list[str]:
    """The walk as numbered steps."""
    r = ex["request"]
    hdrs = ", ".join(f"{k}: {v}" for k, v in r["headers"].items())
    lines = [f"{r['method']} {r['scheme']}://{r['authority']}{r['path']} from {ex['source']['proxy']}"
             f" (identity {ex['source']['identity']})" + (f", headers {hdrs}" if hdrs else "")
             + (f", SNI {r['sni']}" if r.get("sni") else "")]
    if "listener" in ex:
        lis = ex["listener"]
        lines.append(f"1. Listener {lis['name']} ({lis['address']}), route config {lis['route_config']}"
                     + (f": {lis['note']}" if lis.get("note") else ""))
    if "filter_chain" in ex:
        lines.append(f"2. Filter chain {ex['filter_chain']['name'] or '(unnamed)'}: {ex['filter_chain']['reason']}")
    if "virtual_host" in ex:
        vh = ex["virtual_host"]
        lines.append(f"2. Virtual host {vh['name'] or '(none)'}: {vh['reason']}")
    if "routes_tried" in ex:
        lines.append("3. Routes, in order:")
        for t in ex["routes_tried"]:
            lines.append(f"     {'MATCH' if t['matched'] else 'no   '} route {t['index']} {t['name']!r}: {t['reason']}")
    if "route" in ex:
        rt = ex["route"]
        lines.append(f"   route from VirtualService {rt['config']}" if rt["config"] != "-"
                     else "   route generated by default (no VirtualService)")
        lines.append(f"   timeout {rt['timeout']}; retries {rt['retries']}")
        lines.extend(f"   fault: {f}" for f in rt["faults"])
        lines.extend(f"   {o}" for o in rt["other"])
    lines.extend(f"   {s['filter']} at the source: {s['decision']}" for s in ex.get("source_filters", []))
    for i, c in enumerate(ex.get("clusters", [])):
        lines.append(f"{4 + i}. Cluster {c['name']}" + (f" (subset {c['subset']})" if c.get("subset") else "")
                     + f", {c['weight']} of requests")
        for key in ("error", "note"):
            if c.get(key):
                lines.append(f"     {c[key]}")
        if not c.get("endpoints") and not c.get("error") and not c.get("note"):
            lines.append("     no endpoints: 503 no healthy upstream (UH)")
        for e in c.get("endpoints", []):
            lines.extend(_endpoint(e))
    if ex.get("error"):
        lines.append(f"error: {ex['error']}")
    lines.append(f"Result: {ex.get('result', ex.get('error', '?'))}")
    lines.extend(f"note: {n}" for n in ex.get("notes", []))
    return lines


def _endpoint(e: dict[str, Any]) -> list[str]:
    out = [f"     endpoint {e['address']} {e['proxy'] or ''}: EDS {e['eds_health']}, Envoy {e['envoy_health']}, "
           f"outlier {'EJECTED' if e['outlier_ejected'] else 'not ejected'}"]
    tls = e["tls"]
    text = f"       TLS: {tls['mode']} via {tls['via']}"
    if tls.get("sni"):
        text += f", SNI {tls['sni']}"
    if tls.get("server_identity"):
        text += f", server must be {', '.join(tls['server_identity'])}"
    out.append(text)
    inbound = e.get("inbound")
    if inbound:
        out.append(f"       at the destination: {inbound['error']}" if "error" in inbound else
                   f"       at the destination: listener {inbound['listener']}, chain accepting {inbound['accepts']}")
    authz = e.get("authorization")
    if authz:
        out.append(f"       authorization: {authz['decision']}")
        for s in authz["steps"]:
            out.append(f"         {s['filter']}: {s['decision']}")
            out.extend(f"           {c}" for c in s.get("checks", []))
        if authz.get("unknown"):
            out.append("         (not simulated, counted as not matching: " + ", ".join(sorted(set(authz["unknown"])))
                       + ")")
    return out


def run(args: argparse.Namespace) -> int:
    try:
        req = request_of(args)
        ex = gather(args, req)
    except ValueError as e:
        return fail(str(e), 2)
    except PlatformError as e:
        return fail(str(e))
    if args.output == "json":
        print(json.dumps(ex, indent=2))
    else:
        print("\n".join(render(ex)))
    return 1 if ex.get("error") else 0
