"""App ports without a pick-then-bind race: the supervisor holds each port it picks for an app, and hands a workload
that asks for it (`spec.socketActivation`) its listening sockets as systemd does (LISTEN_FDS, LISTEN_PID,
LISTEN_FDNAMES; the sockets from fd 3 on, in the order of the workload's ports). Every app still gets PORT.

A held port is a socket bound with SO_REUSEADDR and not listening: the kernel hands it to no one else (bind to port 0
and connect() skip it), while an app that binds it itself with SO_REUSEADDR still can. An app without socket
activation may not set SO_REUSEADDR, so its ports are released just before it starts; a socket-activated app gets
the held socket, listening, and the supervisor keeps no copy (a crashed app's port refuses connections, as before).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence

FIRST_FD = 3  # systemd's SD_LISTEN_FDS_START
BACKLOG = socket.SOMAXCONN

# Runs as `python -I -c EXEC FD... -- COMMAND...`: moves the sockets to fd 3.., sets LISTEN_PID to its own pid (which
# exec keeps) and execs the command; only `os` and `fcntl`, so it adds little to the app's start.
EXEC = """\
import fcntl, os, sys
args = sys.argv[1:]
cut = args.index("--")
fds, command = [int(a) for a in args[:cut]], args[cut + 1:]
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3 + len(fds)) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(moved):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execvp(command[0], command)
"""


class PortReservations:
    """The app ports the supervisor picked, held until their app starts."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, int], socket.socket] = {}

    def pick(self, host: str) -> int:
        """A port on host the kernel picks, held from now on."""
        s = _bound(host, 0)
        port = int(s.getsockname()[1])
        self._held[(host, port)] = s
        return port

    def release(self, host: str, *ports: int) -> None:
        """Stop holding these ports of host (their app binds them itself)."""
        for port in ports:
            s = self._held.pop((host, port), None)
            if s is not None:
                s.close()

    def listening(self, host: str, port: int) -> socket.socket:
        """The held socket for host:port, now listening and no longer held (a port released before, e.g. by a
        crashed app, is bound again). The caller closes it once the app has it."""
        s = self._held.pop((host, port), None) or _bound(host, port)
        try:
            s.listen(BACKLOG)
        except OSError:
            s.close()
            raise
        return s

    @contextlib.contextmanager
    def passed(self, host: str, ports: Sequence[int], names: Sequence[str], command: Sequence[str],
               env: Mapping[str, str]) -> Iterator[tuple[list[str], dict[str, str], tuple[int, ...]]]:
        """`activated` for the listening sockets of these ports of host, closed here once the block (which starts
        the command) is done."""
        sockets: list[socket.socket] = []
        try:
            for port in ports:
                sockets.append(self.listening(host, port))
            yield activated(command, env, sockets, names)
        finally:
            for s in sockets:
                s.close()

    def close(self) -> None:
        for s in self._held.values():
            s.close()
        self._held.clear()


def _bound(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    return s


def activated(command: Sequence[str], env: Mapping[str, str], sockets: Sequence[socket.socket],
              names: Sequence[str]) -> tuple[list[str], dict[str, str], tuple[int, ...]]:
    """The argv, environment and fds to pass (subprocess pass_fds) that start `command` with `sockets` as fds 3..
    and systemd's variables (LISTEN_PID is set by the exec shim, as the started process's own pid)."""
    fds = tuple(s.fileno() for s in sockets)
    out = {k: v for k, v in env.items() if k not in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
    out.update(LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=":".join(names))
    return [sys.executable, "-I", "-c", EXEC, *map(str, fds), "--", *command], out, fds
