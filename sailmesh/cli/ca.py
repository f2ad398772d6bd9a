"""`sailmesh x ca ...` and `sailmesh x token ...`: the mesh CA's root rotation and join tokens.

  sailmesh x ca status                 # roots, which signs, the next step, who would block it
  sailmesh x ca rotate-root            # add a new root, wait until every workload holds it, switch signing to
                                       # it, wait until every workload renewed onto it, drop the old root
  sailmesh x ca rotate-root --step add|switch|drop [--force]   # one step only
                                       # (Kubernetes replicas: writes a new root into istio-ca-secret; every
                                       # replica then takes the steps itself)
  sailmesh x ca admin-cert DIR         # a client certificate for remote callers of the API (key made here)
  sailmesh x token revoke NS SA        # revoke every join token of one identity
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sailmesh.ca.authority import key_pem, write_private
from sailmesh.cli.apiclient import CERT, CERT_DIR_ENV, KEY, ROOT, call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError

STEPS = ("add", "switch", "drop")
POLL_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ca_command", metavar="COMMAND")
    s = sub.add_parser("status", help="the CA's roots, the signing root, the next rotation step and who blocks it")
    add_state_dir(s)
    r = sub.add_parser("rotate-root", help="rotate the self-signed root without breaking traffic")
    r.add_argument("--step", choices=STEPS, default="", help="run this step only (default: all three, waiting)")
    r.add_argument("--force", action="store_true", help="take the step even if live workloads are not ready")
    r.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the workloads at each step")
    add_state_dir(r)
    a = sub.add_parser("admin-cert", help="issue the admin client certificate remote API callers present (mTLS)")
    a.add_argument("directory", help="where to write cert.pem, key.pem (0600) and root-cert.pem")
    a.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds (default one hour)")
    add_state_dir(a)


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="token_command", metavar="COMMAND")
    r = sub.add_parser("revoke", help="revoke every join token of one namespace/service account")
    r.add_argument("namespace")
    r.add_argument("service_account")
    add_state_dir(r)


def _rotate(api: str, phase: str, force: bool = False) -> tuple[int, Any]:
    return call(api, "POST", "/api/v1/ca/rotate-root", {"phase": phase, "force": force})


def _show(status: dict[str, Any]) -> None:
    print(f"roots (trust bundle): {', '.join(r[:16] for r in status['roots'])}")
    print(f"signing:              {status['signing'][:16]}")
    if status.get("next"):
        print(f"next root:            {status['next'][:16]} (trusted, not signing yet)")
    print(f"next step:            {status['phase']}")
    print(f"live workloads:       {status['instances']} ({len(status['withoutBundle'])} without the current "
          f"bundle, {len(status['onOldRoot'])} on an older root)")


def _wait(api: str, key: str, timeout: float, what: str) -> dict[str, Any] | None:
    """Poll the status until `key` lists nobody; None (after saying who) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        code, status = _rotate(api, "status")
        if code != 200:
            return None
        if not status[key]:
            return dict(status)
        if time.monotonic() >= deadline:
            print(f"timed out after {timeout:.0f}s waiting for {what}: {', '.join(status[key])}")
            return None
        time.sleep(POLL_S)


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "ca_command", None)
    if command is None:
        print("usage: sailmesh x ca {status,rotate-root} ...")
        return 2
    try:
        api = running_mesh(args).api_url
        if command == "admin-cert":
            return admin_cert(api, args.directory, args.ttl)
        if command == "status":
            code, shown = _rotate(api, "status")
            if code != 200:
                return fail("; ".join(shown.get("errors", [])) if isinstance(shown, dict) else f"HTTP {code}")
            _show(shown)
            return 0
        steps = [args.step] if args.step else list(STEPS)
        status: dict[str, Any] = {}
        for step in steps:
            if not args.step:  # the whole rotation: each step waits until the mesh followed the previous one
                wait_key = {"switch": "withoutBundle", "drop": "onOldRoot"}.get(step)
                if wait_key and _wait(api, wait_key, args.timeout, "workloads to follow the last step") is None:
                    return fail(f"not taking step {step!r}; run `sailmesh x ca rotate-root --step {step}` later "
                                f"(or with --force)")
            code, status = _rotate(api, step, args.force)
            if code != 200:
                return fail(f"step {step}: " + "; ".join(status.get("errors", [])))
            if status.get("shared"):  # Kubernetes replicas: the new root went into istio-ca-secret
                print(f"new root {status['written'][:16]} written into Secret istio-ca-secret: every replica trusts "
                      "it now, signs with it once its workloads hold it, then drops the old root (`sailmesh x ca "
                      "status` shows the steps)")
                return 0
            print(f"step {step}: done")
        _show(status)
        return 0
    except PlatformError as e:
        return fail(str(e))


def admin_cert(api: str, directory: str, ttl: float) -> int:
    """Make a key here, have the CA sign it for the admin identity, write the three files."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
           .public_bytes(serialization.Encoding.PEM).decode())
    code, body = call(api, "POST", "/api/v1/ca/admin-certificate", {"csr": csr, "ttlSeconds": ttl})
    if code != 200:
        return fail("; ".join(body.get("errors", [])) if isinstance(body, dict) else f"HTTP {code}")
    chain = body["certChain"]
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(folder / KEY, key_pem(key))
    (folder / CERT).write_text("".join(chain[:-1]))
    (folder / ROOT).write_text(chain[-1])
    print(f"wrote {folder / CERT}, {folder / KEY} (0600) and {folder / ROOT}: the admin identity for {ttl:.0f}s; "
          f"remote callers use them with {CERT_DIR_ENV}={folder}")
    return 0


def run_token(args: argparse.Namespace) -> int:
    if getattr(args, "token_command", None) != "revoke":
        print("usage: sailmesh x token revoke NAMESPACE SERVICE_ACCOUNT")
        return 2
    try:
        api = running_mesh(args).api_url
        code, body = call(api, "POST", "/api/v1/join-tokens/revoke",
                          {"namespace": args.namespace, "serviceAccount": args.service_account})
    except PlatformError as e:
        return fail(str(e))
    if code != 200:
        return fail("; ".join(body.get("errors", [])) if isinstance(body, dict) else f"HTTP {code}")
    print(f"revoked {body['revoked']} join token(s) of {args.namespace}/{args.service_account}")
    return 0
