"""Run as root inside a fresh network namespace (`unshare -n python -m tests.e2e.redirect_netns BOOTSTRAP ADMIN --
ISTIO_IPTABLES_ARGS`): a pod captured in Istio's REDIRECT mode, with a real Envoy on generated config.

The "pod" namespace (this process) gets 10.77.0.1 on a veth to a "peer" namespace (10.77.0.2, a child
`unshare -n ... --peer`); the app listens on 0.0.0.0:9080 itself, as in a pod (Envoy's per-port inbound listener
must not bind it); the injector's istio-init args are applied with the real CLI (`sailmesh istio-iptables`, nat
REDIRECT: inbound TCP to 15006); Envoy runs as UID/GID 1337 (the proxy's identity the rules leave alone). The peer
sends `GET /reviews/0` to 10.77.0.1:9080, then to 7070 (the app listens there too, but no service declares it: no
inbound listener, the passthrough: Istio's HTTP catch-all chain), then a raw TCP line there (the TCP passthrough
chain), then both to 7071 (a service port without a declared protocol: sniffed). One JSON result on stdout: the
answers, Envoy's virtualInbound, inbound cluster and InboundPassthroughCluster stats, and the app's view of each
connection (its peer address: Envoy's 127.0.0.6 passthrough source). With REDIRECT_NETNS_IPV6=1 in the
environment the pod and the peer are IPv6-only (fd77::1, fd77::2): the app sees ::6. With REDIRECT_NETNS_DUAL=1
both have both addresses (the apps listen on both wildcards) and the peer also calls fd77::1:9080.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from sailmesh.processes import envoy_binary
from sailmesh.testing.netns_capture import PEER_IF, PEER_IP, PEER_IP6, POD_IF, POD_IP, POD_IP6, PROXY_ID
from tests.e2e.tproxy_netns import app

SERVICE_PORT = 9080
UNLISTED_PORT = 7070
SNIFFED_PORT = 7071  # a service port whose protocol is not declared
HOST = "reviews.default.svc.cluster.local:9080"
IPV6 = os.environ.get("REDIRECT_NETNS_IPV6") == "1"  # an IPv6-only pod and peer
DUAL = os.environ.get("REDIRECT_NETNS_DUAL") == "1"  # a dual-stack pod and peer: IPv4 first, IPv6 too
POD, PEER, ANY = (POD_IP6, PEER_IP6, "::") if IPV6 else (POD_IP, PEER_IP, "0.0.0.0")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def up(iface: str, address: str) -> None:
    if ":" in address:
        ip("-6", "addr", "add", f"{address}/64", "dev", iface, "nodad")  # usable at once (no duplicate detection)
    else:
        ip("addr", "add", f"{address}/24", "dev", iface)
        if DUAL:  # and the IPv6 address of the same side
            ip("-6", "addr", "add", f"{POD_IP6 if address == POD_IP else PEER_IP6}/64", "dev", iface, "nodad")
    ip("link", "set", iface, "up")


def get(host: str, port: int) -> dict[str, Any]:
    """`GET /reviews/0` to host:port: status, server header and body (or the error)."""
    try:
        c = http.client.HTTPConnection(host, port, timeout=10)  # an IPv6 literal as it is (the port is given)
        c.request("GET", "/reviews/0", headers={"host": HOST})
        r = c.getresponse()
        return {"status": r.status, "server": r.getheader("server"), "body": r.read().decode(errors="replace")}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}


def raw(host: str, port: int, line: bytes = b"raw tcp line\r\n\r\n") -> dict[str, Any]:
    """A raw TCP `line` to host:port and the first line that comes back (the app answers anything with HTTP)."""
    try:
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(line)
            return {"answer": s.makefile("rb").readline().decode(errors="replace")}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}


def wait_for_link(iface: str) -> bool:
    """Whether `iface` arrived in this namespace within 20 s (the pod side moves the veth end here)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.if_nametoindex(iface)
            return True
        except OSError:
            time.sleep(0.02)
    return False


def join_pod(address: str) -> bool:
    """The peer side's start: lo up, `started` on stdout (the pod side then moves the veth end here), the veth end
    up with `address`; False (and a JSON error on stdout) when the veth never arrived."""
    ip("link", "set", "lo", "up")
    print("started", flush=True)
    if not wait_for_link(PEER_IF):
        print(json.dumps({"error": "veth end never arrived"}), flush=True)
        return False
    up(PEER_IF, address)
    return True


def peer() -> int:
    """The peer namespace: wait for its veth end, then answer `get HOST PORT` lines from stdin."""
    if not join_pod(PEER):
        return 1
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] in ("get", "raw"):
            print(json.dumps((get if words[0] == "get" else raw)(words[1], int(words[2]))), flush=True)
    return 0


def as_proxy() -> None:
    os.setgroups([])
    os.setgid(PROXY_ID)
    os.setuid(PROXY_ID)


def admin_get(port: int, path: str) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path)
    return c.getresponse().read().decode()


def wait_for_listener(envoy: subprocess.Popen[bytes], admin: int, name: str) -> bool:
    """Whether Envoy serves listener `name` within 30 s (False when it exits first)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and envoy.poll() is None:
        try:
            statuses = json.loads(admin_get(admin, "/listeners?format=json")).get("listener_statuses", ())
            if any(s["name"] == name for s in statuses):
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def pod(bootstrap: str, admin: int, iptables_args: list[str]) -> dict[str, Any]:
    """The pod namespace: link the peer, start the app, capture, start Envoy as 1337, have the peer call 9080."""
    ip("link", "set", "lo", "up")
    helper = subprocess.Popen(["unshare", "-n", sys.executable, "-m", "tests.e2e.redirect_netns", "--peer"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert helper.stdin is not None and helper.stdout is not None
    work = tempfile.mkdtemp()
    envoy: subprocess.Popen[bytes] | None = None
    try:
        if helper.stdout.readline().strip() != "started":
            return {"error": "peer namespace did not start"}
        ip("link", "add", POD_IF, "type", "veth", "peer", "name", PEER_IF)
        ip("link", "set", PEER_IF, "netns", str(helper.pid))
        up(POD_IF, POD)
        if helper.stdout.readline().strip() != "ready":
            return {"error": "peer not ready"}
        for port in (SERVICE_PORT, UNLISTED_PORT, SNIFFED_PORT):  # 9080 as a pod's container listens: the whole
            app(ANY, port)  # pod's port; 7070 no service declares (no inbound listener); 7071 sniffed
            if DUAL:
                app("::", port)
        applied = subprocess.run([sys.executable, "-m", "sailmesh", *iptables_args],
                                 capture_output=True, text=True, timeout=60)
        if applied.returncode != 0:
            return {"error": "istio-iptables failed", "stderr": applied.stderr[-3000:]}
        os.chmod(work, 0o755)  # the proxy (UID 1337) reads its bootstrap
        config = shutil.copy(bootstrap, os.path.join(work, "envoy.json"))
        os.chmod(config, 0o644)
        envoy = subprocess.Popen([envoy_binary(), "-c", config, "--disable-hot-restart", "-l", "warning"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=as_proxy, cwd=work)
        if not wait_for_listener(envoy, admin, "virtualInbound"):
            envoy.kill()
            assert envoy.stdout is not None
            return {"error": "envoy never served virtualInbound",
                    "log": envoy.stdout.read().decode(errors="replace")[-3000:]}
        helper.stdin.write(f"get {POD} {SERVICE_PORT}\n")
        helper.stdin.flush()
        out: dict[str, Any] = json.loads(helper.stdout.readline())
        out["virtual_inbound_stats"] = admin_get(admin, "/stats?filter=^listener.*_15006.downstream_cx_total$")
        out["inbound_cluster_stats"] = admin_get(admin, "/stats?filter=^cluster.inbound.9080...upstream_rq_total")
        helper.stdin.write(f"get {POD} {UNLISTED_PORT}\n")
        helper.stdin.flush()
        out["unlisted"] = json.loads(helper.stdout.readline())
        out["inbound_passthrough_stats"] = admin_get(
            admin, "/stats?filter=^cluster.InboundPassthroughCluster.upstream_cx_total$")
        for name, command in (("unlisted_raw", f"raw {POD} {UNLISTED_PORT}"),
                              ("sniffed", f"get {POD} {SNIFFED_PORT}"),
                              ("sniffed_raw", f"raw {POD} {SNIFFED_PORT}")):
            helper.stdin.write(command + "\n")
            helper.stdin.flush()
            out[name] = json.loads(helper.stdout.readline())
        out["chain_stats"] = admin_get(admin, "/stats?filter=^(http|tcp).(InboundPassthroughCluster|inbound).*"
                                              "(downstream_rq_total|downstream_cx_total)$")
        for name, port in (("ipv6", SERVICE_PORT), ("ipv6_unlisted", UNLISTED_PORT)) if DUAL else ():
            helper.stdin.write(f"get {POD_IP6} {port}\n")  # the same pod ports over IPv6
            helper.stdin.flush()
            out[name] = json.loads(helper.stdout.readline())
        out["listeners"] = json.loads(admin_get(admin, "/listeners?format=json"))
        return out
    finally:
        if envoy is not None:
            envoy.kill()
            envoy.wait()
        helper.kill()
        helper.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peer"]:
        sys.exit(peer())
    rest = sys.argv[3:]
    print(json.dumps(pod(sys.argv[1], int(sys.argv[2]), rest[1:] if rest[:1] == ["--"] else rest)), flush=True)
