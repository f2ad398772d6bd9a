"""`sailmesh verify-install`: is the running mesh healthy? (istioctl verify-install)

Checks that the control plane answers and is ready, that its CA's root certificate is valid and every proxy's
workload certificate was issued by it, that every proxy the mesh started is connected and SYNCED, and which
Envoy version each proxy runs (against the local binary's). Exits 1 when a check fails, printing the fix.

  sailmesh verify-install
  sailmesh verify-install --state-dir /tmp/mesh
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from typing import Any

from cryptography import x509

from sailmesh.cli import rawhttp
from sailmesh.cli.apiclient import call
from sailmesh.cli.checks import Check, report
from sailmesh.cli.common import add_state_dir, fail, running_mesh, state_dir
from sailmesh.cli.proxy_config import admin
from sailmesh.cli.proxy_status import COLUMNS, status_word
from sailmesh.cli.version import envoy_version
from sailmesh.errors import PlatformError
from sailmesh.settings import ProxyPorts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin-port", type=int, default=ProxyPorts().admin, help="Envoy admin port (15000)")
    add_state_dir(parser)


def same_serial(envoy: object, ours: str) -> bool:
    """Whether Envoy's hex serial (admin /certs, whole bytes: a leading zero when the top nibble is 0) is ours."""
    try:
        return isinstance(envoy, str) and bool(ours) and int(envoy, 16) == int(ours, 16)
    except ValueError:
        return False


def _root(sd: str) -> tuple[Check, str]:
    path = os.path.join(sd, "controlplane", "root-cert.pem")
    try:
        with open(path, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError) as e:
        return Check("CA root certificate", False, f"cannot read {path}: {e}",
                     "restart the mesh (sailmesh down; sailmesh up ...): the control plane writes it at start"), ""
    now = dt.datetime.now(dt.UTC)
    ok = cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    serial = format(cert.serial_number, "x")
    return Check("CA root certificate", ok, f"serial {serial}, valid until {cert.not_valid_after_utc:%Y-%m-%d}",
                 "" if ok else "the root expired: remove the state dir's controlplane/ca and restart the mesh"), serial


def _proxy(name: str, ip: str, port: int, root_serial: str, local: str) -> list[Check]:
    try:
        certs = json.loads(admin(ip, port, "/certs"))
        info = json.loads(admin(ip, port, "/server_info"))
    except (PlatformError, ValueError) as e:
        return [Check(f"{name} Envoy", False, f"admin interface unreadable: {e}",
                      f"see its log (sailmesh bug-report, or the state dir's logs/{name}.sidecar.log)")]
    version = str(info.get("version", "")).split("/")
    envoy = version[1] if len(version) > 2 else str(info.get("version", "?"))
    out = [Check(f"{name} Envoy", envoy == local, f"Envoy {envoy} ({info.get('state', '?')})" +
                 ("" if envoy == local else f"; the local binary is {local}"),
                 "restart the proxy so it runs the installed Envoy (sailmesh down; sailmesh up ...)")]
    chains = [c for c in certs.get("certificates", []) if c.get("cert_chain")]
    if not chains:
        if name.startswith("istio-ingressgateway") or not root_serial:
            return out
        return [*out, Check(f"{name} certificate", False, "no workload certificate",
                            "check the agent's log for CSR errors (sailmesh bug-report)")]
    issued = all(any(same_serial(ca.get("serial_number"), root_serial) for ca in c.get("ca_cert", [])) for c in chains)
    until = min(str(cert.get("expiration_time", "")) for c in chains for cert in c["cert_chain"])
    sans = sorted({s.get("uri", "") for c in chains for cert in c["cert_chain"] for s in cert.get("subject_alt_names",
                                                                                                   [])})
    out.append(Check(f"{name} certificate", issued, f"{', '.join(sans) or 'no SAN'}, valid until {until}" +
                     ("" if issued else ", NOT issued by this mesh's root"),
                     "the proxy trusts another root: restart it so it asks this control plane's CA"))
    return out


def _ready(api_url: str) -> int:
    """The control plane's /ready status (plain text, not JSON); 0 when it does not answer."""
    try:
        return rawhttp.request(api_url + "/ready", timeout=5)[0]
    except (OSError, ValueError):  # ValueError: not an http:// URL (the remote API answers /ready to nobody)
        return 0


def checks(args: argparse.Namespace) -> list[Check]:
    sd = state_dir(args)
    mesh = running_mesh(args)
    status = _ready(mesh.api_url)
    out = [Check("control plane", status == 200, f"{mesh.api_url} answers /ready with HTTP {status}",
                 "see the state dir's logs/controlplane.log")]
    _, ver = call(mesh.api_url, "GET", "/version", timeout=5)
    out.append(Check("control plane version", True, str((ver or {}).get("version", "?"))))
    root, serial = _root(sd)
    out.append(root)
    status, proxies = call(mesh.api_url, "GET", "/debug/syncz")
    rows: list[dict[str, Any]] = list(proxies) if status == 200 else []
    connected = {str(p.get("name", "")) for p in rows}
    expected = {f"{i.name}.{i.namespace}" for i in mesh.instances if getattr(i, "sidecar", True)}
    missing = sorted(n for n in expected if n not in connected)
    out.append(Check("proxies connected", not missing, f"{len(connected)} connected" +
                     (f"; not connected: {', '.join(missing)}" if missing else ""),
                     "sailmesh proxy-status; the missing proxy's log in the state dir's logs/"))
    for p in rows:
        name = str(p.get("name", ""))
        words = {c: status_word(p.get("types", {}).get(c)) for c in COLUMNS}
        bad = {c: w for c, w in words.items() if w != "SYNCED"}
        out.append(Check(f"{name} sync", not bad, "SYNCED" if not bad else ", ".join(f"{c} {w}" for c, w in
                                                                                      bad.items()),
                         f"sailmesh proxy-status {name} (a NACK names the rejected config)"))
    local = envoy_version()
    for p in rows:
        node = str(p.get("proxy", ""))
        out.extend(_proxy(str(p.get("name", "")), node.split("~")[1], args.admin_port, serial, local))
    return out


def run(args: argparse.Namespace) -> int:
    try:
        found = checks(args)
    except PlatformError as e:
        return fail(f"{e}\nfix: start the mesh (sailmesh up -f DIR, or sailmesh demo), or pass its --state-dir")
    return report(found, "verify-install")
