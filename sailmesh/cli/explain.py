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
from typing import Any

from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.cli.proxy_config import admin, connected, pick
from sailmesh.cli.proxy_status import COLUMNS, status_word
from sailmesh.errors import PlatformError
from sailmesh.settings import ProxyPorts


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
    from sailmesh.explain.gather import checked

    query = {"proxyID": node_id} | ({"types": types} if types else {})
    status, body = call(api_url, "GET", "/debug/config_dump?" + urllib.parse.urlencode(query))
    if status != 200:
        raise PlatformError(f"the control plane has no config for {node_id}: HTTP {status}")
    return checked(node_id, body)


def _walk_here(args: argparse.Namespace, api_url: str, node_id: str, proxies: list[dict[str, Any]],
               headers: dict[str, str]) -> dict[str, Any]:
    """The walk in this process, for a control plane that does not walk (older): the walk and Envoy's protos load
    here, which takes a while."""
    from sailmesh.explain import gather

    req = gather.request_from(args.target, args.sni, headers)
    return gather.walk(req, node_id, proxies, lambda n, t: control_plane_dump(api_url, n, t), admin, args.admin_port)


def gather(args: argparse.Namespace) -> dict[str, Any]:
    """The walk of the command line's request, by the control plane (POST /api/v1/explain: the CLI loads no walk
    and no Envoy protos), else here; ValueError for a request that cannot be walked."""
    headers = _headers(args.header)
    proxies = connected(args)
    name, node_id = pick(proxies, args.source)
    api_url = running_mesh(args).api_url
    row = next(p for p in proxies if p.get("proxy") == node_id)
    unsynced = [c for c in COLUMNS if status_word(row.get("types", {}).get(c)) != "SYNCED"]
    notes = [f"{name} is not SYNCED for {', '.join(unsynced)}: its Envoy may run older config than this walk uses "
             f"(sailmesh proxy-status {name})"] if unsynced else []
    status, out = call(api_url, "POST", "/api/v1/explain", {"proxy": node_id, "target": list(args.target),
                                                             "sni": args.sni, "headers": headers,
                                                             "adminPort": args.admin_port})
    if status == 404:
        out = _walk_here(args, api_url, node_id, proxies, headers)
    elif status == 400:
        raise ValueError("; ".join((out or {}).get("errors", [])))
    elif status != 200 or not isinstance(out, dict):
        raise PlatformError("; ".join((out or {}).get("errors", [f"the control plane answered HTTP {status}"])))
    out["request"]["headers"] = {k: _shown(k, v) for k, v in out["request"].get("headers", {}).items()}
    out["notes"] = notes + list(out.get("notes", []))
    return dict(out)


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
        ex = gather(args)
    except ValueError as e:
        return fail(str(e), 2)
    except PlatformError as e:
        return fail(str(e))
    if args.output == "json":
        print(json.dumps(ex, indent=2))
    else:
        print("\n".join(render(ex)))
    return 1 if ex.get("error") else 0
