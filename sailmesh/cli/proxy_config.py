"""`sailmesh proxy-config cluster|listener|route|endpoint|secret|bootstrap|log|all PROXY`: what Envoy runs.

Reads the proxy's own Envoy admin interface (its config dump, /clusters for endpoints, /logging), as istioctl
does through a port-forward, and prints istioctl's tables, or the raw dump with `-o json|yaml`.

  sailmesh proxy-config cluster productpage-v1-0 --fqdn reviews.default.svc.cluster.local
  sailmesh proxy-config route istio-ingressgateway --name http.8080 -o json   # a sidecar's: --name http_proxy
  sailmesh proxy-config listener istio-ingressgateway --port 31400   # each chain: match, destination, VirtualService
  sailmesh proxy-config log reviews-v1-0 --level rbac:debug
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any

from sailmesh.cli import envoy_dump as dump
from sailmesh.cli import rawhttp
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, print_table, running_mesh
from sailmesh.errors import PlatformError
from sailmesh.settings import ProxyPorts

SECTIONS = ("cluster", "listener", "route", "endpoint", "secret", "bootstrap", "log", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("section", choices=SECTIONS, help="which part of the proxy's config")
    parser.add_argument("proxy", help="proxy name as proxy-status shows it (reviews-v1-0.default), or a unique part")
    parser.add_argument("--fqdn", default="", help="clusters/endpoints of this service FQDN")
    parser.add_argument("--port", type=int, default=0, help="clusters, listeners or endpoints of this port")
    parser.add_argument("--subset", default="", help="clusters of this subset")
    parser.add_argument("--direction", choices=("inbound", "outbound"), default=None)
    parser.add_argument("--name", default="", help="route config name (route), or listener name")
    parser.add_argument("--status", default="", help="endpoints with this health status (HEALTHY, UNHEALTHY)")
    parser.add_argument("--level", default="", help="log: set levels, `debug` or `rbac:debug,http:info`")
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    parser.add_argument("--admin-port", type=int, default=ProxyPorts().admin, help="Envoy admin port (15000)")
    add_state_dir(parser)


def connected(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The control plane's list of connected proxies (/debug/syncz): node id, name, sync state per type."""
    mesh = running_mesh(args)
    status, body = call(mesh.api_url, "GET", "/debug/syncz")
    if status != 200:
        raise PlatformError(f"the control plane answered HTTP {status}")
    return list(body)


def pick(proxies: list[dict[str, Any]], wanted: str) -> tuple[str, str]:
    """(name, node id) of the proxy the user named: exactly, by its short name, or by a unique part."""
    known = [(str(p.get("name", "")), str(p.get("proxy", ""))) for p in proxies]
    exact = [p for p in known if wanted in (p[0], p[1], p[0].split(".")[0])]
    found = exact or [p for p in known if wanted in p[1]]
    if len(found) != 1:
        names = ", ".join(sorted(n for n, _ in known)) or "none connected"
        what = "matches several proxies" if found else "is not a connected proxy"
        raise PlatformError(f"{wanted!r} {what}; proxies: {names}")
    return found[0]


def find_proxy(args: argparse.Namespace) -> tuple[str, str]:
    """(name, ip) of the proxy the user named, from the control plane's list of connected proxies."""
    name, node_id = pick(connected(args), args.proxy)
    return name, node_id.split("~")[1]


def admin(ip: str, port: int, path: str, method: str = "GET") -> bytes:
    """A request to the proxy's Envoy admin interface (loopback); PlatformError unless it answers 2xx."""
    try:
        status, body = rawhttp.request(f"http://{ip}:{port}{path}", method, timeout=10)
    except OSError as e:
        raise PlatformError(f"cannot read Envoy's admin interface at {ip}:{port}: {e}") from e
    if not 200 <= status < 300:
        raise PlatformError(f"cannot read Envoy's admin interface at {ip}:{port}: HTTP {status} for {path}: "
                            f"{body[:200].decode('utf-8', 'replace').strip()}")
    return body


def _listener_port(listener: dict[str, Any]) -> str:
    return str(listener.get("address", {}).get("socket_address", {}).get("port_value", ""))


def selected(args: argparse.Namespace, config: dict[str, Any], clusters: dict[str, Any]) -> Any:
    """What `-o json|yaml` prints: with a filter (--fqdn, --port, --name, ...), the clusters, listeners or route
    configurations it selects, as istioctl prints them (a list); without one, the section's dump."""
    filtered = any((args.fqdn, args.port, args.subset, args.direction, args.name))
    if args.section == "cluster" and filtered:
        return [c for c in dump.clusters_of(config) if _match(args, dump.cluster_row(c))]
    if args.section == "listener" and filtered:
        return [li for li in dump.listeners_of(config) if (not args.port or _listener_port(li) == str(args.port))
                and (not args.name or li.get("name") == args.name)]
    if args.section == "route" and filtered:
        return [rc for rc in dump.route_configs_of(config) if not args.name or rc.get("name") == args.name]
    return dump.section(config, clusters, args.section)


def _match(args: argparse.Namespace, row: dump.ClusterRow) -> bool:
    return (not args.fqdn or row.fqdn == args.fqdn) and (not args.port or row.port == str(args.port)) \
        and (not args.subset or row.subset == args.subset) and (not args.direction or row.direction == args.direction)


def _sections(args: argparse.Namespace) -> Iterator[str]:
    return iter(("cluster", "listener", "route", "endpoint", "secret")) if args.section == "all" \
        else iter((args.section,))


def render(section: str, args: argparse.Namespace, config: dict[str, Any], clusters: dict[str, Any]) -> None:
    """One section as istioctl's table."""
    if section == "cluster":
        print_table([("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"),
                     *((r.fqdn, r.port, r.subset, r.direction, r.type, r.destination_rule)
                       for r in dump.cluster_rows(config) if _match(args, r))])
    elif section == "listener":
        # istioctl's columns, then the VirtualService a chain comes from (as its route table names it)
        print_table([("ADDRESSES", "PORT", "MATCH", "DESTINATION", "VIRTUAL SERVICE"),
                     *((*r[:4], r[5]) for r in dump.listener_rows(config)
                       if (not args.port or r[1] == str(args.port)) and (not args.name or r[4] == args.name))])
    elif section == "route":
        print_table([("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"),
                     *(r for r in dump.route_rows(config) if not args.name or r[0] == args.name)])
    elif section == "endpoint":
        print_table([("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"),
                     *(r for r in dump.endpoint_rows(clusters)
                       if (not args.status or r[1] == args.status.upper())
                       and (not args.port or r[0].rpartition(":")[2] == str(args.port))
                       and (not args.fqdn or r[3].endswith("|" + args.fqdn)))])
    elif section == "secret":
        print_table([("RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"),
                     *dump.secret_rows(config)])


def _print_data(data: Any, fmt: str) -> None:
    if fmt == "yaml":
        import yaml  # only for -o yaml: every other output starts without it

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    else:
        print(json.dumps(data, indent=2))


def run(args: argparse.Namespace) -> int:
    try:
        name, ip = find_proxy(args)
        if args.section == "log":
            path = "/logging" + ("?" + urllib.parse.urlencode(_levels(args.level)) if args.level else "")
            print(admin(ip, args.admin_port, path, "POST").decode().rstrip())
            return 0
        config = json.loads(admin(ip, args.admin_port, "/config_dump?include_eds"))
        clusters = json.loads(admin(ip, args.admin_port, "/clusters?format=json")) \
            if args.section in ("endpoint", "all") else {}
    except PlatformError as e:
        return fail(str(e))
    if args.output != "table" or args.section == "bootstrap":
        _print_data(selected(args, config, clusters), args.output)
        return 0
    for i, section in enumerate(_sections(args)):
        if args.section == "all":
            print(("\n" if i else "") + f"{section.upper()}S of {name}:")
        render(section, args, config, clusters)
    return 0


def _levels(text: str) -> dict[str, str]:
    """`debug` -> {"level": "debug"}; `rbac:debug,http:info` -> {"paths": "rbac:debug,http:info"} (Envoy's form)."""
    return {"paths": text} if ":" in text else {"level": text}
