"""App ports without a pick-then-bind race (platform/listenfds.py): the supervisor holds a port it picked for an app
until the app starts, and hands a `socketActivation` workload its listening socket as systemd does (LISTEN_FDS,
LISTEN_PID, LISTEN_FDNAMES, fds from 3; sd_listen_fds(3)), which the samples adopt (bookinfo/common.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from sailmesh.api.parse import parse_text
from sailmesh.api.validate import validate
from sailmesh.platform.listenfds import PortReservations, activated
from sailmesh.platform.workloads import plan

HOST = "127.0.0.1"


def _plain_bind(port: int) -> OSError | None:
    """What another program binding HOST:port itself (no SO_REUSEADDR, then listen) gets."""
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
            s.listen(1)
        except OSError as e:
            return e
    return None


def test_a_picked_port_is_held_until_released() -> None:
    """Held: the kernel gives it to no one asking for any port, and a program binding it itself fails; released,
    that program binds it."""
    held = PortReservations()
    try:
        port = held.pick(HOST)
        others = set()
        for _ in range(300):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((HOST, 0))
                others.add(s.getsockname()[1])
        assert port not in others
        assert _plain_bind(port) is not None
        held.release(HOST, port)
        assert _plain_bind(port) is None
    finally:
        held.close()


CHILD = """\
import json, os, socket, sys
from sailmesh.samples.bookinfo.common import inherited_socket
env = {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
sock = inherited_socket(int(sys.argv[1]))
conn, _ = sock.accept() if sock is not None else (None, None)
print(json.dumps({"pid": os.getpid(), "env": env, "fd": sock.fileno() if sock else None,
                  "after": os.environ.get("LISTEN_FDS"), "accepted": conn is not None}), flush=True)
"""


def test_a_socket_activated_command_gets_its_listening_socket() -> None:
    """The command runs with its socket at fd 3, LISTEN_FDS=1, LISTEN_PID its own pid and the port's name; the
    samples' inherited_socket() adopts it (and clears the variables) and accepts a connection made before the
    command started (the socket listened from the start: nothing else could bind the port in between)."""
    held = PortReservations()
    port = held.pick(HOST)
    sock = held.listening(HOST, port)
    client = socket.create_connection((HOST, port), timeout=5)
    try:
        argv, env, fds = activated([sys.executable, "-c", CHILD, str(port)], {"PATH": "/usr/bin:/bin"}, [sock],
                                   ["http"])
        proc = subprocess.run(argv, env={**env, "PYTHONPATH": ":".join(sys.path)}, pass_fds=fds,
                              capture_output=True, text=True, timeout=60)
    finally:
        sock.close()
        client.close()
        held.close()
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["env"] == {"LISTEN_PID": str(got["pid"]), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
    assert got["fd"] == 3 and got["after"] is None and got["accepted"]


def test_variables_meant_for_another_process_are_ignored() -> None:
    """LISTEN_PID naming another process (a parent's variables inherited): None, the sample binds PORT itself."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; os.environ.update(LISTEN_PID='1', LISTEN_FDS='1');"
         "from sailmesh.samples.bookinfo.common import inherited_socket; print(inherited_socket(1))"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == "None", out.stderr


def test_socket_activation_is_a_boolean_field_of_local_workloads() -> None:
    text = ("apiVersion: local.sailmesh.io/v1alpha1\nkind: LocalWorkload\nmetadata: {name: w}\n"
            "spec:\n  command: [python, app.py]\n  socketActivation: {value}\n")
    for value, ok in (("true", True), ("false", True), ("'yes'", False)):
        [r] = parse_text(text.replace("{value}", value)).resources
        errors = [str(i) for i in validate(r) if i.severity == "error"]
        assert (not errors) == ok, (value, errors)
        if ok:
            [inst] = plan([r], "127.0.10.2", lambda _h: 41000)
            assert inst.socket_activation is (value == "true")
