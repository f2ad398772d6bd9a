"""Applying the capture rules as istio-iptables does: `iptables-restore --noflush` with the IPv4 rules,
`ip6tables-restore --noflush` with the IPv6 ones (when the pod has IPv6), then the routing (`ip`: ::6 on lo, TPROXY's
rule and route; "File exists" is not an error, as Istio's ignoreExists)."""

from __future__ import annotations

import shutil
import subprocess

from sailmesh.errors import CaptureError
from sailmesh.iptables.rules import RuleSet

SBIN = "/usr/sbin:/sbin"


def binary(name: str) -> str | None:
    """`name` on PATH (or in /usr/sbin, /sbin), or None."""
    return shutil.which(name) or shutil.which(name, path=SBIN)



def _run(argv: list[str], data: str | None, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=data.encode() if data is not None else None, capture_output=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CaptureError(f"{argv[0]}: {e}") from e


def _restore(name: str, text: str, timeout_s: float) -> None:
    path = binary(name)
    if path is None:
        raise CaptureError(f"{name} not found (install Debian's iptables package)")
    # --wait: another iptables user holding the xtables lock (a CNI plugin) is waited for, not failed on
    done = _run([path, "--noflush", "--wait"], text, timeout_s)
    if done.returncode != 0:
        raise CaptureError(f"{name} failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")


def apply(rules: RuleSet, timeout_s: float = 30.0) -> None:
    """Install the rules in the current network namespace (one atomic commit per family; the tables' other rules
    are kept), then the routes. CaptureError when a tool is missing or refuses them (e.g. the chains exist)."""
    _restore("iptables-restore", rules.restore_text(4), timeout_s)
    if rules.ipv6 and rules.restore_text(6):
        _restore("ip6tables-restore", rules.restore_text(6), timeout_s)
    if not rules.routes:
        return
    ip = binary("ip")
    if ip is None:
        raise CaptureError("ip not found (install Debian's iproute2 package)")
    for route in rules.routes:
        done = _run([ip, *route], None, timeout_s)
        err = done.stderr.decode(errors="replace").strip()
        if done.returncode != 0 and "file exists" not in err.lower():
            raise CaptureError(f"ip {' '.join(route)} failed ({done.returncode}): {err}")


def saved(ipv6: bool = False) -> str:
    """`iptables-save` (and `ip6tables-save`), what istio-iptables logs as the final state; "" when it cannot run."""
    out = ""
    for name in ("iptables-save", "ip6tables-save") if ipv6 else ("iptables-save",):
        path = binary(name)
        if path is None:
            continue
        try:
            done = subprocess.run([path], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        out += done.stdout.decode(errors="replace")
    return out
