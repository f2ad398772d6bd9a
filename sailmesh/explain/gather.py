"""What explain's walk needs, read and walked: the source's generated config, its Envoy's /clusters, /certs and
drain state, then every destination's listeners (each set fetched at once), then the walk.

The reading is given as two functions, so the control plane (its own config dumps, in process) and the CLI (over
the HTTP API, against a control plane that does not walk) run the same code:
  dump(node_id, types) -> the proxy's config as /debug/config_dump serves it (PlatformError when it has none)
  admin(ip, port, path) -> bytes from that Envoy's admin interface (PlatformError when unreachable)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sailmesh.errors import PlatformError
from sailmesh.explain import explain_steps, explain_tcp
from sailmesh.explain.routematch import Request

Dump = Callable[[str, str], dict[str, Any]]
Admin = Callable[[str, int, str], bytes]
DRAINING = "/stats?filter=^listener_manager.total_(listeners|filter_chains)_draining$"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def envoy_admin(ip: str, port: int, path: str) -> bytes:
    """A GET to a proxy's Envoy admin interface (loopback), never through an HTTP proxy."""
    try:
        with _NO_PROXY.open(f"http://{ip}:{port}{path}", timeout=10) as r:
            return bytes(r.read())
    except (urllib.error.URLError, OSError) as e:
        raise PlatformError(f"cannot read Envoy's admin interface at {ip}:{port}: {e}") from e


def checked(node_id: str, dump: Mapping[str, Any] | None) -> dict[str, Any]:
    """A proxy's config dump, or PlatformError when the control plane has none or could not generate a part."""
    if dump is None:
        raise PlatformError(f"the control plane has no config for {node_id}: it is not connected")
    for kind, part in dump.items():
        if isinstance(part, dict) and "error" in part and isinstance(part["error"], str):
            raise PlatformError(f"the control plane cannot generate {kind} for {node_id}: {part['error']}")
    return dict(dump)


def request_from(target: Sequence[str], sni: str, headers: Mapping[str, str]) -> Request:
    """The request (or connection) of explain's command line: METHOD URL, or tcp:// / tls:// HOST:PORT."""
    if len(target) == 1 and target[0].split("://", 1)[0] in ("tcp", "tls"):
        return explain_tcp.tcp_request(target[0], sni)
    if len(target) != 2:
        raise ValueError("give METHOD URL (GET http://reviews:9080/) or tcp://HOST:PORT / tls://HOST:PORT")
    return Request.from_url(target[0], target[1], dict(headers))


def _identity(admin: Admin, ip: str, port: int) -> tuple[str, str]:
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


def _envoy_clusters(admin: Admin, ip: str, port: int) -> tuple[dict[str, Any], str]:
    """The source Envoy's /clusters (health and outlier state); a note instead when unreadable."""
    try:
        return dict(json.loads(admin(ip, port, "/clusters?format=json"))), ""
    except (PlatformError, ValueError) as e:
        return {}, f"endpoint health as Envoy sees it is unknown: {e}"


def _draining(admin: Admin, ip: str, port: int) -> str:
    """A note when the source Envoy still serves connections with a previous listener config (draining)."""
    try:
        text = admin(ip, port, DRAINING).decode()
        count = sum(int(line.rpartition(":")[2]) for line in text.splitlines() if ":" in line)
    except (PlatformError, ValueError):
        return ""
    return (f"the source Envoy is still draining {count} listener(s)/filter chain(s) of a previous config: "
            "connections opened before the last change keep it until drained (the agent's drain time)") \
        if count else ""


def walk(req: Request, node_id: str, proxies: list[dict[str, Any]], dump: Dump, admin: Admin,
         admin_port: int) -> dict[str, Any]:
    """The walk of `req` from the proxy `node_id` (a row of /debug/syncz's `proxies`), with its notes; raises
    PlatformError when the control plane has no config for the source."""
    ip = node_id.split("~")[1]
    row = next((p for p in proxies if p.get("proxy") == node_id), {})
    notes = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        source_f = pool.submit(dump, node_id, "")
        clusters_f = pool.submit(_envoy_clusters, admin, ip, admin_port)
        identity_f = pool.submit(_identity, admin, ip, admin_port)
        draining_f = pool.submit(_draining, admin, ip, admin_port)
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
    step = explain_tcp.explain if req.scheme in ("tcp", "tls") else explain_steps.explain
    first = step(req, source, envoy_clusters, principal, ip, {}, names, sidecar)
    wanted = sorted({e["address"].rpartition(":")[0] for c in first.get("clusters", [])
                     for e in c.get("endpoints", [])} & set(nodes))
    with ThreadPoolExecutor(max_workers=4) as pool:  # every destination's listeners at once
        dumps = pool.map(lambda dip: dump(nodes[dip], "listeners"), wanted)
        drains = pool.map(lambda dip: _draining(admin, dip, admin_port), wanted)
        destinations = dict(zip(wanted, dumps, strict=True))
        notes.extend(n.replace("the source Envoy", f"destination {names.get(dip, dip)}")
                     for dip, n in zip(wanted, drains, strict=True) if n)
    out = step(req, source, envoy_clusters, principal, ip, destinations, names, sidecar)
    out["source"] = {"proxy": str(row.get("name", node_id)), "identity": principal or "(none: plaintext only)"}
    out["notes"] = notes + [f"endpoint {e['address']} is not a mesh proxy: no inbound policy to simulate"
                            for c in out.get("clusters", []) for e in c.get("endpoints", [])
                            if e["address"].rpartition(":")[0] not in nodes]
    return out
