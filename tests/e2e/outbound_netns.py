"""Run as root inside a fresh network namespace (`unshare -n python -m tests.e2e.outbound_netns BOOTSTRAP ADMIN --
ISTIO_IPTABLES_ARGS`): the outbound side of a pod captured in Istio's REDIRECT mode, with a real Envoy on
generated config.

The "pod" namespace (this process) gets 10.77.0.1 on a veth to a "peer" namespace (10.77.0.2, a child
`unshare -n ... --peer`) and a default route through the peer, as a pod has; the peer runs the reviews app on
0.0.0.0:9080 (the service's endpoint; the ClusterIP 10.96.0.12 exists only in the mesh's config) and a plain TCP
listener on 8080 that no service names. The injector's istio-init args are applied with the real CLI; Envoy runs
as UID/GID 1337. The app (root) then calls the reviews ClusterIP, connects to the peer's 8080 (no listener: the
passthrough), a process running as 1337 connects there too (the proxy's own traffic, not captured), and the app
calls the peer's 9080 by address (the HTTP listener of 9080, no route for that host: allow_any or block_all). The
echo service (ClusterIP 10.96.0.13, port 7070 with no declared protocol: sniffed) has the peer's 7070, which answers
HTTP requests and echoes raw TCP: the app sends it an HTTP request and a raw TCP line. One JSON result on stdout:
the answers and Envoy's stats and listeners. With OUTBOUND_NETNS_IPV6=1 in the environment the pod and the peer are
IPv6-only (fd77::1, fd77::2) and the ClusterIPs are fd00:10:96::c (reviews) and fd00:10:96::d (echo).
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
import threading
from typing import Any

from sailmesh.processes import envoy_binary
from sailmesh.testing.netns_capture import (
    PEER_IF,
    PEER_IP,
    PEER_IP6,
    POD_IF,
    POD_IP,
    POD_IP6,
    PROXY_ID,
    connect,
    connect_as,
    listen,
)
from tests.e2e.redirect_netns import admin_get, as_proxy, ip, join_pod, raw, up, wait_for_listener
from tests.e2e.tproxy_netns import app

CLUSTER_IP, SERVICE_PORT, OTHER_PORT = "10.96.0.12", 9080, 8080
ECHO_IP, ECHO_PORT = "10.96.0.13", 7070  # a service port whose protocol is not declared
CLUSTER_IP6, ECHO_IP6 = "fd00:10:96::c", "fd00:10:96::d"  # the same services' ClusterIPs for an IPv6-only pod
IPV6 = os.environ.get("OUTBOUND_NETNS_IPV6") == "1"  # an IPv6-only pod and peer (fd77::1, fd77::2)
POD, PEER, CLUSTER, ECHO, ANY = (POD_IP6, PEER_IP6, CLUSTER_IP6, ECHO_IP6, "::") if IPV6 else (
    POD_IP, PEER_IP, CLUSTER_IP, ECHO_IP, "0.0.0.0")
ECHO_HEADER = "x-echo-route"
OWN_CLUSTER_IP = "--own-cluster-ip"
STATS = ("^cluster.outbound.8080..egress.default.svc.cluster.local.upstream_cx_total$",
         "^cluster.outbound.7070..echo.default.svc.cluster.local.upstream_(cx|rq)_total$",
         "^http.outbound_.*_7070.downstream_rq_total$",
         "^tcp.outbound.7070..echo.default.svc.cluster.local.downstream_cx_total$",
         "^cluster.outbound.9080..reviews.default.svc.cluster.local.upstream_rq_total$",
         "^cluster.PassthroughCluster.upstream_cx_total$", "^listener.0.0.0.0_9080.downstream_cx_total$",
         "^cluster.BlackHoleCluster.upstream_cx_none_healthy$")


def http_get(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """`GET path` to host:port (the Host header is host:port, as an app dialling that address sends): status,
    lower-cased headers and body, or the error."""
    try:
        c = http.client.HTTPConnection(host, port, timeout=10)
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return {"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()},
                "body": r.read().decode(errors="replace")}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}


def call(host: str = CLUSTER) -> dict[str, Any]:
    """`GET /reviews/0` to host:9080 (the reviews ClusterIP, as an app resolving `reviews` would: the Host is the
    VIP; or the peer's own address, a host no route names)."""
    return http_get(host, SERVICE_PORT, "/reviews/0")


def _serve_echo(conn: socket.socket, headers: bool = False) -> None:
    """HTTP/1.1 requests answered with a JSON body (the method and path seen; `headers`: and the request headers,
    lower-cased), anything else echoed as `raw:...`."""
    with conn:
        data = conn.recv(65536)
        if not data.split(b" ", 1)[0].isupper() or b"HTTP/1." not in data:
            while data:
                conn.sendall(b"raw:" + data)
                data = conn.recv(65536)
            return
        while data:
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            head, _, data = data.partition(b"\r\n\r\n")
            first, *lines = head.decode(errors="replace").split("\r\n")
            method, path = first.split(" ")[:2]
            answer: dict[str, Any] = {"app": "echo", "method": method, "path": path}
            if headers:
                answer["headers"] = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
            body = json.dumps(answer).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            data = data or conn.recv(65536)


def echo_server(port: int = ECHO_PORT, headers: bool = False) -> None:
    """The echo service's endpoint on 0.0.0.0:`port` (threads; `headers`: answers show the request headers)."""
    server = socket.create_server((ANY, port), family=socket.AF_INET6 if IPV6 else socket.AF_INET)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_serve_echo, args=(conn, headers), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def call_echo() -> dict[str, Any]:
    """An HTTP request to the echo ClusterIP with the header its VirtualService routes on."""
    return http_get(ECHO, ECHO_PORT, "/sniffed", {ECHO_HEADER: "header-route"})


def call_peer_echo() -> dict[str, Any]:
    """An HTTP request to the peer's own echo port (no service has that address): what a Sidecar egress listener
    on 7070 takes when it binds nothing (captureMode DEFAULT/IPTABLES), the passthrough when it is bound (NONE)."""
    try:
        c = http.client.HTTPConnection(PEER_IP, ECHO_PORT, timeout=10)
        c.request("GET", "/egress-listener")
        r = c.getresponse()
        return {"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()},
                "body": r.read().decode(errors="replace")}
    except (OSError, http.client.HTTPException) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def raw_echo() -> dict[str, Any]:
    """A raw TCP line to the same ClusterIP and port, and what came back."""
    return raw(ECHO, ECHO_PORT, b"ping-raw-tcp\n")


def peer(own_cluster_ip: bool = False) -> int:
    """The peer namespace: the reviews app on 9080 and a plain listener on 8080, then wait to be killed;
    `own_cluster_ip`: the ClusterIP is also the peer's address (a connection to it lands there, as kube-proxy's
    DNAT would land it on a pod: what an ORIGINAL_DST cluster connects to)."""
    if not join_pod(PEER):
        return 1
    if own_cluster_ip:
        ip("addr", "add", f"{CLUSTER_IP}/32", "dev", PEER_IF)
    app(ANY, SERVICE_PORT)
    echo_server()
    listen({OTHER_PORT: "peer-8080"})
    print("ready", flush=True)
    sys.stdin.read()  # until the pod side closes our stdin
    return 0


def _proxy_group() -> None:
    os.setgid(PROXY_ID)


def _stats(admin: int) -> dict[str, int]:
    out = {}
    for pattern in STATS:
        for line in admin_get(admin, f"/stats?filter={pattern}").splitlines():
            name, _, value = line.partition(": ")
            out[name] = int(value)
    return out


def pod(bootstrap: str, admin: int, iptables_args: list[str], own_cluster_ip: bool = False) -> dict[str, Any]:
    """The pod namespace: link the peer, capture, start Envoy as 1337, call out every way."""
    ip("link", "set", "lo", "up")
    helper = subprocess.Popen(["unshare", "-n", sys.executable, "-m", "tests.e2e.outbound_netns", "--peer",
                               *([OWN_CLUSTER_IP] if own_cluster_ip else [])],
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
        ip(*(["-6"] if IPV6 else []), "route", "add", "default", "via", PEER)  # ClusterIPs are routed off the pod
        if helper.stdout.readline().strip() != "ready":
            return {"error": "peer not ready"}
        applied = subprocess.run([sys.executable, "-m", "sailmesh", *iptables_args],
                                 capture_output=True, text=True, timeout=60)
        if applied.returncode != 0:
            return {"error": "istio-iptables failed", "stderr": applied.stderr[-3000:]}
        os.chmod(work, 0o755)  # the proxy (UID 1337) reads its bootstrap
        config = shutil.copy(bootstrap, os.path.join(work, "envoy.json"))
        os.chmod(config, 0o644)
        # REDIRECT: the proxy runs as UID/GID 1337; TPROXY: as root in group 1337 (Istio's template: NET_ADMIN for
        # the transparent listeners), which istio-iptables' owner rules leave alone by group
        tproxy = iptables_args[iptables_args.index("-m") + 1] == "TPROXY" if "-m" in iptables_args else False
        envoy = subprocess.Popen([envoy_binary(), "-c", config, "--disable-hot-restart", "-l", "warning"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 preexec_fn=_proxy_group if tproxy else as_proxy, cwd=work)
        if not wait_for_listener(envoy, admin, "virtualOutbound"):
            envoy.kill()
            assert envoy.stdout is not None
            return {"error": "envoy never served virtualOutbound",
                    "log": envoy.stdout.read().decode(errors="replace")[-3000:]}
        out: dict[str, Any] = {"service": call()}
        out["stats_after_service"] = _stats(admin)
        out["passthrough"] = connect(PEER, OTHER_PORT)
        out["stats_after_passthrough"] = _stats(admin)
        out["proxy_own"] = connect_as(PROXY_ID, PROXY_ID, PEER, OTHER_PORT)
        out["stats_after_proxy_own"] = _stats(admin)
        out["http_unknown_host"] = call(PEER)  # port 9080 has an HTTP listener, its routes not this host
        out["stats_after_http_unknown_host"] = _stats(admin)
        out["sniffed_http"] = call_echo()
        out["sniffed_raw"] = raw_echo()
        out["stats_after_sniffed"] = _stats(admin)
        out["peer_echo"] = call_peer_echo()
        out["listeners"] = json.loads(admin_get(admin, "/listeners?format=json"))
        out["clusters"] = json.loads(admin_get(admin, "/clusters?format=json"))  # the hosts each cluster used
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
        sys.exit(peer(OWN_CLUSTER_IP in sys.argv[2:]))
    own = sys.argv[1:2] == [OWN_CLUSTER_IP]  # `--own-cluster-ip BOOTSTRAP ADMIN -- ARGS`
    argv = sys.argv[2:] if own else sys.argv[1:]
    rest = argv[2:]
    print(json.dumps(pod(argv[0], int(argv[1]), rest[1:] if rest[:1] == ["--"] else rest, own)), flush=True)
