"""Applying the capture rules: `iptables-restore --noflush` with the rule text, as istio-iptables does."""

from __future__ import annotations

import shutil
import subprocess

from sailmesh.errors import CaptureError
from sailmesh.iptables.rules import RuleSet

RESTORE, SAVE = "iptables-restore", "iptables-save"


def restore_binary() -> str | None:
    """The `iptables-restore` on PATH (or in /usr/sbin, /sbin), or None."""
    return shutil.which(RESTORE) or shutil.which(RESTORE, path="/usr/sbin:/sbin")


def apply(rules: RuleSet, timeout_s: float = 30.0) -> None:
    """Install the rules in the current network namespace (one atomic commit of the nat table; the table's other
    rules are kept). CaptureError when iptables-restore is missing or refuses them (e.g. the chains exist)."""
    binary = restore_binary()
    if binary is None:
        raise CaptureError(f"{RESTORE} not found (install Debian's iptables package)")
    # --wait: another iptables user holding the xtables lock (a CNI plugin) is waited for, not failed on
    try:
        done = subprocess.run([binary, "--noflush", "--wait"], input=rules.restore_text().encode(),
                              capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CaptureError(f"{RESTORE}: {e}") from e
    if done.returncode != 0:
        raise CaptureError(f"{RESTORE} failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")


def saved_nat() -> str:
    """`iptables-save -t nat` (what istio-iptables prints after applying), or "" when it cannot run."""
    binary = shutil.which(SAVE) or shutil.which(SAVE, path="/usr/sbin:/sbin")
    if binary is None:
        return ""
    try:
        done = subprocess.run([binary, "-t", "nat"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.decode(errors="replace")
