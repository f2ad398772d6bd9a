"""Ports of an embedded mesh: every one is checked free before anything starts, and a taken one is explained
(which process holds it, and for another mesh the `sailmesh down` that frees it)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sailmesh.api.resource import Resource
from sailmesh.errors import PlatformError
from sailmesh.generate.names import gateway_bind_port
from sailmesh.processes import proc_cmdline


@dataclass(frozen=True)
class Port:
    """One address a process of the mesh will listen on."""

    host: str
    port: int
    what: str  # "control plane HTTP API", "sidecar of reviews-v1-0 (health)", ...
    flag: str = ""  # the option that moves it, e.g. --http-port

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def gateway_ports(resources: Iterable[Resource], labels: dict[str, str]) -> list[int]:
    """The ports the ingress gateway will bind for Gateways that select it (Istio's server ports, shifted)."""
    out: set[int] = set()
    for r in resources:
        if r.kind != "Gateway":
            continue
        selector = r.spec.get("selector") or {}
        if not isinstance(selector, dict) or any(labels.get(k) != v for k, v in selector.items()):
            continue
        for server in r.spec.get("servers") or []:
            number = (server.get("port") or {}).get("number") if isinstance(server, dict) else None
            if isinstance(number, int) and 0 < number < 65536:
                out.add(gateway_bind_port(number))
    return sorted(out)


def _bind_error(p: Port) -> OSError | None:
    """None when p can be bound now (as a listener without SO_REUSEPORT would), else the error."""
    family = socket.AF_INET6 if ":" in p.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            s.bind((p.host, p.port))
            s.listen(1)
        except OSError as e:
            return e
    return None


def _hex_addr(host: str, port: int) -> str:
    """/proc/net/tcp's local_address form of an IPv4 address (little-endian hex) and port."""
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def listener_pids(host: str, port: int) -> list[int]:
    """Pids holding a listening TCP socket on host:port (or the wildcard), from /proc (Linux; [] elsewhere)."""
    inodes: set[str] = set()
    try:
        wanted = {_hex_addr(host, port), _hex_addr("0.0.0.0", port)}
        with open("/proc/net/tcp", encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[1] in wanted and cols[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{cols[9]}]")
    except (OSError, ValueError):
        return []
    if not inodes:
        return []
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    pids.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(pids)


def mesh_state_dir_of(argv: Sequence[str]) -> str:
    """The state dir of the mesh a process belongs to, from its command line ("" if it is not a mesh's)."""
    for flag in ("--workload-file", "--state-dir"):
        if flag in argv[:-1]:
            value = argv[argv.index(flag) + 1]
            if flag == "--workload-file":
                return os.path.dirname(value)
            head, sep, _ = value.rpartition(os.sep + "proxies" + os.sep)
            if sep:
                return head
    return ""


def explain_taken(p: Port, error: OSError) -> str:
    """The message for a port that cannot be bound: the cause, who holds it, and the fix."""
    cause = "address already in use" if error.errno == errno.EADDRINUSE else os.strerror(error.errno or 0).lower()
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{cause} on {p} ({p.what}): the address is not on this machine"
    holders = listener_pids(p.host, p.port)
    for pid in holders:
        sdir = mesh_state_dir_of(proc_cmdline(pid))
        if sdir and not os.path.isabs(sdir):
            try:
                sdir = os.path.join(os.readlink(f"/proc/{pid}/cwd"), sdir)
            except OSError:
                pass
        if sdir:
            return f"{cause} on {p} (another mesh runs: `sailmesh down --state-dir {sdir}`)"
    who = ", ".join(f"pid {pid} `{' '.join(proc_cmdline(pid))[:80]}`" for pid in holders) or "another process"
    fix = f"stop it or move the {p.what} with {p.flag}" if p.flag else "stop it"
    return f"{cause} on {p} ({p.what}; held by {who}): {fix}"


def check_free(ports: Iterable[Port]) -> None:
    """Raise PlatformError for the first port that is taken (or listed twice), saying why and what to do."""
    seen: dict[tuple[str, int], Port] = {}
    for p in ports:
        if (p.host, p.port) in seen:
            raise PlatformError(f"port clash: {seen[(p.host, p.port)].what} and {p.what} both need {p}")
        seen[(p.host, p.port)] = p
        err = _bind_error(p)
        if err is not None:
            raise PlatformError(explain_taken(p, err))
