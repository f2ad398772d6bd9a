"""Run as root inside a fresh network namespace (`unshare -n python -m tests.e2e.sniffing_mtls_netns CLIENT SERVER --
ISTIO_IPTABLES_ARGS`): two captured pods, each with a real Envoy on generated config and mesh mutual TLS between
them, for protocol sniffing across the mesh, and a gateway Envoy (its own generated config, UID 1337 beside the
client pod's, admin 15100, HTTP on 8080) routing to the server's sniffed port.

The "client" pod (this process, 10.77.0.1) and the "server" pod (a child `unshare -n ... --server`, 10.77.0.2) are
joined by a veth. Each applies the injector's istio-iptables args with the real CLI and runs Envoy as UID/GID 1337
(admin 127.0.0.1:15000 in its own namespace). On ports no service declares a protocol for, the server runs an app
that answers HTTP/1.1 requests with what it got (method, path, headers) and echoes anything else (7070, 7071:
outbound_netns's echo), and
the gRPC echo sample (7072). The client's app calls the echo ClusterIP 10.96.0.13 over HTTP/1.1 (a path the
server's AuthorizationPolicy allows, one it does not), sends a raw TCP line to its 7071 and makes a gRPC call (h2c)
to the grpc ClusterIP 10.96.0.15:7072; it also calls the gateway's 10.77.0.1:8080 (`/allowed/gateway`). One JSON
result on stdout: the answers and the Envoys' stats.
"""

from __future__ import annotations

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
from sailmesh.testing.netns_capture import PEER_IF, PEER_IP, POD_IF, POD_IP
from tests.e2e.outbound_netns import echo_server, http_get
from tests.e2e.redirect_netns import admin_get, as_proxy, ip, join_pod, raw, up, wait_for_listener

ECHO_IP, GRPC_IP = "10.96.0.13", "10.96.0.15"
HTTP_PORT, RAW_PORT, GRPC_PORT = 7070, 7071, 7072  # none declares a protocol: all sniffed
ADMIN = 15000
GATEWAY_ADMIN, GATEWAY_PORT = 15100, 8080
STATS = r"^(http\.inbound_|tcp\.(in|out)bound|http\.outbound_|cluster\.(in|out)bound\|70|http\..*rbac)"


def _wait_port(port: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def _stats(admin: int = ADMIN) -> dict[str, int]:
    out = {}
    for line in admin_get(admin, "/stats?filter=" + STATS.replace("|", "%7C")).splitlines():
        name, _, value = line.partition(": ")
        if value.isdigit():
            out[name] = int(value)
    return out


def _start_envoy(bootstrap: str, work: str, ready: str,
                 admin: int = ADMIN) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Envoy as UID/GID 1337 on `bootstrap`; (the process, "") once it serves listener `ready`, else (None, log)."""
    os.chmod(work, 0o755)  # the proxy reads its bootstrap
    config = shutil.copy(bootstrap, os.path.join(work, "envoy.json"))
    os.chmod(config, 0o644)
    envoy = subprocess.Popen([envoy_binary(), "-c", config, "--disable-hot-restart", "-l", "warning"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=as_proxy, cwd=work)
    if wait_for_listener(envoy, admin, ready):
        return envoy, ""
    envoy.kill()
    assert envoy.stdout is not None
    return None, envoy.stdout.read().decode(errors="replace")[-3000:]


def _capture(iptables_args: list[str]) -> str:
    applied = subprocess.run([sys.executable, "-m", "sailmesh", *iptables_args], capture_output=True, text=True,
                             timeout=60)
    return "" if applied.returncode == 0 else applied.stderr[-3000:]


def server(bootstrap: str, iptables_args: list[str]) -> int:
    """The server pod: the apps, the capture, Envoy; then answer `stats` lines from stdin with its Envoy's stats."""
    if not join_pod(PEER_IP):
        return 1
    echo_server(HTTP_PORT, headers=True)
    echo_server(RAW_PORT)
    grpc_app = subprocess.Popen([sys.executable, "-m", "sailmesh.samples.grpcecho"],
                                env={**os.environ, "HOST": "0.0.0.0", "PORT": str(GRPC_PORT)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tempfile.mkdtemp()
    envoy = None
    try:
        if not _wait_port(GRPC_PORT):
            print(json.dumps({"error": "the gRPC echo app never listened"}), flush=True)
            return 1
        failed = _capture(iptables_args)
        if failed:
            print(json.dumps({"error": "istio-iptables failed (server)", "stderr": failed}), flush=True)
            return 1
        envoy, log = _start_envoy(bootstrap, work, "virtualInbound")
        if envoy is None:
            print(json.dumps({"error": "server envoy never served virtualInbound", "log": log}), flush=True)
            return 1
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(_stats()), flush=True)
        return 0
    finally:
        if envoy is not None:
            envoy.kill()
            envoy.wait()
        grpc_app.kill()
        grpc_app.wait()
        shutil.rmtree(work, ignore_errors=True)


def get(path: str) -> dict[str, Any]:
    """`GET path` to the echo ClusterIP's sniffed HTTP port, as an app resolving `echo` would (Host: the VIP)."""
    return http_get(ECHO_IP, HTTP_PORT, path)


def grpc_call() -> dict[str, Any]:
    """A unary gRPC call (HTTP/2 without TLS: h2c) to the grpc ClusterIP: the echoed message or the error."""
    import grpc  # imported here: after this process's last fork (Envoy, the server pod)

    channel = grpc.insecure_channel(f"{GRPC_IP}:{GRPC_PORT}", options=[("grpc.enable_http_proxy", 0)])
    try:
        unary: Any = channel.unary_unary("/sailmesh.Echo/Unary")
        return {"answer": unary(b"ping-over-h2c", timeout=10).decode()}
    except grpc.RpcError as e:
        return {"error": f"{e.code()}: {e.details()}"}
    finally:
        channel.close()


def client(client_bootstrap: str, server_bootstrap: str, gateway_bootstrap: str,
           iptables_args: list[str]) -> dict[str, Any]:
    """The client pod: start the server pod, link it, capture, start Envoy and the gateway as 1337, call the server
    every way."""
    ip("link", "set", "lo", "up")
    helper = subprocess.Popen(["unshare", "-n", sys.executable, "-m", "tests.e2e.sniffing_mtls_netns", "--server",
                               server_bootstrap, "--", *iptables_args],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert helper.stdin is not None and helper.stdout is not None
    work, gateway_work = tempfile.mkdtemp(), tempfile.mkdtemp()
    envoy = gateway = None
    try:
        if helper.stdout.readline().strip() != "started":
            return {"error": "server namespace did not start"}
        ip("link", "add", POD_IF, "type", "veth", "peer", "name", PEER_IF)
        ip("link", "set", PEER_IF, "netns", str(helper.pid))
        up(POD_IF, POD_IP)
        ip("route", "add", "default", "via", PEER_IP)  # ClusterIPs are routed off the pod, as in a cluster
        ready = helper.stdout.readline().strip()
        if ready != "ready":
            return {"error": f"server pod not ready: {ready}"}
        failed = _capture(iptables_args)
        if failed:
            return {"error": "istio-iptables failed (client)", "stderr": failed}
        envoy, log = _start_envoy(client_bootstrap, work, "virtualOutbound")
        if envoy is None:
            return {"error": "client envoy never served virtualOutbound", "log": log}
        gateway, log = _start_envoy(gateway_bootstrap, gateway_work, f"0.0.0.0_{GATEWAY_PORT}", GATEWAY_ADMIN)
        if gateway is None:
            return {"error": "gateway envoy never served its listener", "log": log}
        out: dict[str, Any] = {"allowed": get("/allowed/x"), "denied": get("/denied")}
        out["raw"] = raw(ECHO_IP, RAW_PORT, b"ping-raw-tcp\n")
        out["grpc"] = grpc_call()
        out["gateway"] = http_get(POD_IP, GATEWAY_PORT, "/allowed/gateway")  # the gateway binds the pod IP
        out["client_stats"] = _stats()
        out["gateway_stats"] = _stats(GATEWAY_ADMIN)
        helper.stdin.write("stats\n")
        helper.stdin.flush()
        out["server_stats"] = json.loads(helper.stdout.readline())
        return out
    finally:
        for proxy in (envoy, gateway):
            if proxy is not None:
                proxy.kill()
                proxy.wait()
        helper.stdin.close()
        try:
            helper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(gateway_work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--server"]:
        rest = sys.argv[3:]
        sys.exit(server(sys.argv[2], rest[1:] if rest[:1] == ["--"] else rest))
    rest = sys.argv[4:]
    print(json.dumps(client(sys.argv[1], sys.argv[2], sys.argv[3], rest[1:] if rest[:1] == ["--"] else rest)),
          flush=True)
