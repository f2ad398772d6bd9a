"""Proves `sailmesh istio-iptables` in real network namespaces: a "pod" namespace and a "peer" one joined by a veth.

Run as root inside a fresh network and mount namespace
(`unshare -n -m --propagation private python -m sailmesh.testing.netns_capture --scenario S -- istio-iptables ARGS`):
the pod side brings lo up, starts the peer in its own namespace (`unshare -n ... --peer`), links them with a veth
pair, applies the rules with the real CLI (`iptables-restore`, `ip6tables-restore`, `ip`), then connects:

- as the app (root) and as the sidecar (UID/GID 1337) to the peer's ports, and
- from the peer to the pod's ports.

Scenarios (addresses: pod 10.77.0.1 / fd77::1, peer 10.77.0.2 / fd77::2):
- redirect: IPv4 only, Istio's REDIRECT mode;
- dns: as redirect, plus /etc/resolv.conf (bind-mounted in this mount namespace) naming the peer as the resolver,
  a peer DNS stand-in on UDP+TCP 53 and the agent's DNS stand-in on 127.0.0.1:15053 running as UID 1337;
- ipv6: the veth has IPv6 addresses only (the pod is an IPv6 pod: istio-iptables must find that by itself);
- dual: both families (with `--dual-stack` in the args both are captured);
- tproxy: IPv4, the inbound capture listener is transparent (IP_TRANSPARENT), as Envoy's is in TPROXY mode.

Every TCP listener answers one JSON line naming itself, its local address (the original destination under TPROXY)
and the connection's original destination (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST, what Envoy's original_dst
listener filter reads); UDP listeners answer a JSON datagram with their name, and the client records the
address the answer came from. The result is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

POD_IP, PEER_IP, PEER_IP_OTHER = "10.77.0.1", "10.77.0.2", "10.77.0.9"
POD_IP6, PEER_IP6 = "fd77::1", "fd77::2"
POD_IF, PEER_IF = "sm-pod0", "sm-peer0"
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h) is 80 too
SOL_IPV6 = 41
IP_TRANSPARENT = 19
POD_PORTS = {15001: "outbound-capture", 15006: "inbound-capture", 15021: "pod-status", 9080: "pod-app"}
PEER_PORTS = {80: "peer-80", 8080: "peer-8080", 53: "peer-dns-tcp"}
AGENT_DNS = 15053
PROXY_ID = 1337
MODULE = "sailmesh.testing.netns_capture"
SCENARIOS = ("redirect", "dns", "ipv6", "dual", "tproxy")


def _families(scenario: str) -> tuple[bool, bool]:
    """(IPv4, IPv6) on the veth."""
    return scenario != "ipv6", scenario in ("ipv6", "dual")


def original_dst(conn: socket.socket) -> str | None:
    """The destination the client asked for before the nat REDIRECT (None when the kernel has none)."""
    try:
        if conn.family == socket.AF_INET6:
            raw = conn.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28)  # sockaddr_in6
            port, = struct.unpack("!H", raw[2:4])
            return f"[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{port}"
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port, = struct.unpack("!H", raw[2:4])
    return f"{socket.inet_ntoa(raw[4:8])}:{port}"


def _hostport(addr: tuple[Any, ...]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"


def _serve(sock: socket.socket, name: str) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            line = {"listener": name, "original_dst": original_dst(conn), "local": _hostport(conn.getsockname())}
            conn.sendall((json.dumps(line) + "\n").encode())


def _serve_udp(sock: socket.socket, name: str) -> None:
    while True:
        _, addr = sock.recvfrom(512)
        sock.sendto(json.dumps({"listener": name}).encode(), addr)


def _bind(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int,
          transparent: bool = False) -> socket.socket:
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if transparent:  # Envoy's `transparent: true` listener in TPROXY mode (needs CAP_NET_ADMIN)
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    s.bind((host, port))
    return s


def listen(ports: dict[int, str], transparent: tuple[int, ...] = ()) -> None:
    """One thread per port and family answering every connection with its JSON line."""
    for port, name in ports.items():
        for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = _bind(family, socket.SOCK_STREAM, host, port, port in transparent)
            s.listen(16)
            threading.Thread(target=_serve, args=(s, name), daemon=True).start()


def listen_udp(host: str, port: int, name: str) -> None:
    s = _bind(socket.AF_INET, socket.SOCK_DGRAM, host, port)
    threading.Thread(target=_serve_udp, args=(s, name), daemon=True).start()


def connect(host: str, port: int) -> dict[str, Any]:
    """Connect and read the listener's line (or the error)."""
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            data = s.makefile().readline()
        return dict(json.loads(data)) if data else {"error": "closed without an answer"}
    except (OSError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def query_udp(host: str, port: int) -> dict[str, Any]:
    """One datagram to host:port; the answer and the address it came from (the resolver's, if NAT was undone)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"query", (host, port))
            data, addr = s.recvfrom(512)
        return {**json.loads(data), "from": _hostport(addr)}
    except (OSError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def _as_proxy(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`fn` in a child process running as the sidecar's UID/GID 1337."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to the proxy's identity, run, report, exit
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(PROXY_ID)
            os.setuid(PROXY_ID)
            result = fn()
            result["uid"] = os.getuid()
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as r:
        text = r.read()
    os.waitpid(pid, 0)
    return dict(json.loads(text)) if text else {"error": "child reported nothing"}


def connect_as(uid: int, gid: int, host: str, port: int) -> dict[str, Any]:
    """`connect` from a child process running as the sidecar (uid/gid must be the proxy's 1337)."""
    assert uid == gid == PROXY_ID
    return _as_proxy(lambda: connect(host, port))


def fork_as_proxy(serve: Callable[[Callable[[], None]], None]) -> int:
    """A child process running `serve(ready)` as the sidecar's UID/GID 1337 (its sockets are the proxy's, which
    istio-iptables leaves alone); returns the child's pid once it called `ready()`. `serve` returns only when the
    child should exit."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(PROXY_ID)
            os.setuid(PROXY_ID)

            def ready() -> None:
                os.write(write, b"ready")
                os.close(write)

            serve(ready)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as r:
        if r.read() != b"ready":
            raise RuntimeError("the proxy's child process did not start")
    return pid


def agent_dns() -> int:
    """The agent's DNS proxy stand-in: a child as UID/GID 1337 on 127.0.0.1:15053, UDP and TCP, as Istio's agent
    listens; returns its pid once it listens."""
    def serve(ready: Callable[[], None]) -> None:
        listen_udp("127.0.0.1", AGENT_DNS, "agent-dns-udp")
        tcp = _bind(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", AGENT_DNS)
        tcp.listen(16)
        threading.Thread(target=_serve, args=(tcp, "agent-dns-tcp"), daemon=True).start()
        ready()
        while True:
            time.sleep(3600)

    return fork_as_proxy(serve)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _has_link(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def _address(iface: str, scenario: str, v4: str, v6: str) -> None:
    has4, has6 = _families(scenario)
    if has4:
        _ip("addr", "add", f"{v4}/24", "dev", iface)
    if has6:
        _ip("-6", "addr", "add", f"{v6}/64", "dev", iface, "nodad")  # usable at once (no duplicate detection)
    _ip("link", "set", iface, "up")


def peer(scenario: str) -> int:
    """The peer namespace: wait for its veth end, listen, then run `connect HOST PORT` lines from stdin."""
    _ip("link", "set", "lo", "up")
    print("started", flush=True)
    deadline = time.monotonic() + 20
    while not _has_link(PEER_IF):  # (not /sys/class/net: sysfs shows the namespace that mounted it)
        if time.monotonic() > deadline:
            print(json.dumps({"error": "veth end never arrived"}), flush=True)
            return 1
        time.sleep(0.02)
    _address(PEER_IF, scenario, PEER_IP, PEER_IP6)
    if scenario == "dns":
        _ip("addr", "add", f"{PEER_IP_OTHER}/24", "dev", PEER_IF)  # a port-53 server that is not a resolver
        listen_udp(PEER_IP, 53, "peer-dns-udp")
        listen_udp(PEER_IP_OTHER, 53, "peer-dns-udp-other")
    listen(PEER_PORTS)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] == "connect":
            print(json.dumps(connect(words[1], int(words[2]))), flush=True)
    return 0


def _resolv_conf() -> None:
    """/etc/resolv.conf naming the peer, bind-mounted in this (private) mount namespace only."""
    with tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False) as f:
        f.write(f"nameserver {PEER_IP}\n")
    os.chmod(f.name, 0o644)
    subprocess.run(["mount", "--bind", f.name, "/etc/resolv.conf"], check=True, capture_output=True, timeout=10)


def _connections(scenario: str, from_peer: Callable[[str, int], dict[str, Any]]) -> dict[str, Any]:
    """Connect every way the scenario's claims need."""
    out: dict[str, Any] = {}
    has4, has6 = _families(scenario)
    if has4:
        out["app_to_peer_80"] = connect(PEER_IP, 80)
        out["proxy_to_peer_80"] = connect_as(PROXY_ID, PROXY_ID, PEER_IP, 80)
        out["app_to_peer_8080"] = connect(PEER_IP, 8080)
        out["app_to_localhost_9080"] = connect("127.0.0.1", 9080)
        out["peer_to_pod_9080"] = from_peer(POD_IP, 9080)
        out["peer_to_pod_15021"] = from_peer(POD_IP, 15021)
    if has6:
        out["app_to_peer6_80"] = connect(PEER_IP6, 80)
        out["proxy_to_peer6_80"] = connect_as(PROXY_ID, PROXY_ID, PEER_IP6, 80)
        out["app_to_localhost6_9080"] = connect("::1", 9080)
        out["peer_to_pod6_9080"] = from_peer(POD_IP6, 9080)
        out["peer_to_pod6_15021"] = from_peer(POD_IP6, 15021)
    if scenario == "dns":
        out["app_dns_udp"] = query_udp(PEER_IP, 53)
        out["app_dns_tcp"] = connect(PEER_IP, 53)
        out["proxy_dns_udp"] = _as_proxy(lambda: query_udp(PEER_IP, 53))
        out["proxy_dns_tcp"] = connect_as(PROXY_ID, PROXY_ID, PEER_IP, 53)
        out["app_dns_udp_not_a_resolver"] = query_udp(PEER_IP_OTHER, 53)
    return out


def pod(scenario: str, iptables_args: list[str]) -> int:
    """The pod namespace: link the peer, apply the capture with the real CLI, connect every way, print results."""
    _ip("link", "set", "lo", "up")
    helper = subprocess.Popen(["unshare", "-n", sys.executable, "-m", MODULE, "--peer", "--scenario", scenario],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert helper.stdin is not None and helper.stdout is not None
    out: dict[str, Any] = {"scenario": scenario}
    dns_pid = 0
    try:
        if helper.stdout.readline().strip() != "started":
            out["error"] = "peer namespace did not start"
            return 1
        _ip("link", "add", POD_IF, "type", "veth", "peer", "name", PEER_IF)
        _ip("link", "set", PEER_IF, "netns", str(helper.pid))
        _address(POD_IF, scenario, POD_IP, POD_IP6)
        if helper.stdout.readline().strip() != "ready":
            out["error"] = "peer not ready"
            return 1
        if scenario == "dns":
            _resolv_conf()
            dns_pid = agent_dns()
        listen(POD_PORTS, transparent=(15006,) if scenario == "tproxy" else ())
        # as the istio-init container runs it: the image's entrypoint (`sailmesh`) + the injected args
        applied = subprocess.run([sys.executable, "-m", "sailmesh", *iptables_args],
                                 capture_output=True, text=True, timeout=60)
        out["iptables"] = {"rc": applied.returncode, "stdout": applied.stdout, "stderr": applied.stderr}
        if applied.returncode != 0:
            return 1
        rules = subprocess.run(["ip", "rule", "show"], capture_output=True, text=True, timeout=10)
        out["ip_rules"] = rules.stdout

        def from_peer(host: str, port: int) -> dict[str, Any]:
            assert helper.stdin is not None and helper.stdout is not None
            helper.stdin.write(f"connect {host} {port}\n")
            helper.stdin.flush()
            return dict(json.loads(helper.stdout.readline()))

        out.update(_connections(scenario, from_peer))
        return 0
    finally:
        print(json.dumps(out), flush=True)
        if dns_pid:
            os.kill(dns_pid, 9)
            os.waitpid(dns_pid, 0)
        helper.kill()
        helper.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--peer", action="store_true")
    parser.add_argument("--scenario", choices=SCENARIOS, default="redirect")
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="after --: the istio-init container's args (istio-iptables ...)")
    args = parser.parse_args(argv)
    if args.peer:
        return peer(args.scenario)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    return pod(args.scenario, rest)


if __name__ == "__main__":
    sys.exit(main())
