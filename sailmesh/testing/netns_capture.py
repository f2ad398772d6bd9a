"""Proves `sailmesh istio-iptables` in real network namespaces: a "pod" namespace and a "peer" one joined by a veth.

Run as root inside a fresh namespace (`unshare -n python -m sailmesh.testing.netns_capture -- istio-iptables ARGS...`):
the pod side brings lo up, starts the peer in its own namespace (`unshare -n ... --peer`), links them with a veth
pair (pod 10.77.0.1, peer 10.77.0.2), applies the rules with the real CLI and `iptables-restore`, then connects:

- as the app (root) and as the sidecar (UID/GID 1337) to the peer's ports, and
- from the peer to the pod's ports.

Every listener answers one JSON line naming itself and the connection's original destination (SO_ORIGINAL_DST,
what Envoy's original_dst listener filter reads), so the caller sees where each connection really went. The
result is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

POD_IP, PEER_IP = "10.77.0.1", "10.77.0.2"
POD_IF, PEER_IF = "sm-pod0", "sm-peer0"
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
POD_PORTS = {15001: "outbound-capture", 15006: "inbound-capture", 15021: "pod-status", 9080: "pod-app"}
PEER_PORTS = {80: "peer-80", 8080: "peer-8080"}
PROXY_ID = 1337
MODULE = "sailmesh.testing.netns_capture"


def original_dst(conn: socket.socket) -> str | None:
    """The destination the client asked for before the nat REDIRECT (None when the connection was not redirected)."""
    try:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port, = struct.unpack("!H", raw[2:4])
    return f"{socket.inet_ntoa(raw[4:8])}:{port}"


def _serve(sock: socket.socket, name: str) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            host, port = conn.getsockname()[:2]
            line = {"listener": name, "original_dst": original_dst(conn), "local": f"{host}:{port}"}
            conn.sendall((json.dumps(line) + "\n").encode())


def listen(ports: dict[int, str]) -> None:
    """One thread per port answering every connection with its JSON line."""
    for port, name in ports.items():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(16)
        threading.Thread(target=_serve, args=(s, name), daemon=True).start()


def connect(host: str, port: int) -> dict[str, Any]:
    """Connect and read the listener's line (or the error)."""
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            data = s.makefile().readline()
        return dict(json.loads(data)) if data else {"error": "closed without an answer"}
    except (OSError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def connect_as(uid: int, gid: int, host: str, port: int) -> dict[str, Any]:
    """`connect` from a child process running as uid/gid (the sidecar's identity)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to the proxy's identity, connect, report, exit
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            result = connect(host, port)
            result["uid"] = os.getuid()
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as r:
        text = r.read()
    os.waitpid(pid, 0)
    return dict(json.loads(text)) if text else {"error": "child reported nothing"}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _has_link(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def peer() -> int:
    """The peer namespace: wait for its veth end, listen, then run `connect HOST PORT` lines from stdin."""
    _ip("link", "set", "lo", "up")
    print("started", flush=True)
    deadline = time.monotonic() + 20
    while not _has_link(PEER_IF):  # (not /sys/class/net: sysfs shows the namespace that mounted it)
        if time.monotonic() > deadline:
            print(json.dumps({"error": "veth end never arrived"}), flush=True)
            return 1
        time.sleep(0.02)
    _ip("addr", "add", f"{PEER_IP}/24", "dev", PEER_IF)
    _ip("link", "set", PEER_IF, "up")
    listen(PEER_PORTS)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] == "connect":
            print(json.dumps(connect(words[1], int(words[2]))), flush=True)
    return 0


def pod(iptables_args: list[str]) -> int:
    """The pod namespace: link the peer, apply the capture with the real CLI, connect every way, print results."""
    _ip("link", "set", "lo", "up")
    helper = subprocess.Popen(["unshare", "-n", sys.executable, "-m", MODULE, "--peer"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert helper.stdin is not None and helper.stdout is not None
    out: dict[str, Any] = {}
    try:
        if helper.stdout.readline().strip() != "started":
            out["error"] = "peer namespace did not start"
            return 1
        _ip("link", "add", POD_IF, "type", "veth", "peer", "name", PEER_IF)
        _ip("link", "set", PEER_IF, "netns", str(helper.pid))
        _ip("addr", "add", f"{POD_IP}/24", "dev", POD_IF)
        _ip("link", "set", POD_IF, "up")
        if helper.stdout.readline().strip() != "ready":
            out["error"] = "peer not ready"
            return 1
        listen(POD_PORTS)
        # as the istio-init container runs it: the image's entrypoint (`sailmesh`) + the injected args
        applied = subprocess.run([sys.executable, "-m", "sailmesh", *iptables_args],
                                 capture_output=True, text=True, timeout=60)
        out["iptables"] = {"rc": applied.returncode, "stdout": applied.stdout, "stderr": applied.stderr}
        if applied.returncode != 0:
            return 1

        def from_peer(host: str, port: int) -> dict[str, Any]:
            assert helper.stdin is not None and helper.stdout is not None
            helper.stdin.write(f"connect {host} {port}\n")
            helper.stdin.flush()
            return dict(json.loads(helper.stdout.readline()))

        out["app_to_peer_80"] = connect(PEER_IP, 80)
        out["proxy_to_peer_80"] = connect_as(PROXY_ID, PROXY_ID, PEER_IP, 80)
        out["app_to_peer_8080"] = connect(PEER_IP, 8080)
        out["app_to_localhost_9080"] = connect("127.0.0.1", 9080)
        out["peer_to_pod_9080"] = from_peer(POD_IP, 9080)
        out["peer_to_pod_15021"] = from_peer(POD_IP, 15021)
        return 0
    finally:
        print(json.dumps(out), flush=True)
        helper.kill()
        helper.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--peer", action="store_true")
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="after --: the istio-init container's args (istio-iptables ...)")
    args = parser.parse_args(argv)
    if args.peer:
        return peer()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    return pod(rest)


if __name__ == "__main__":
    sys.exit(main())
