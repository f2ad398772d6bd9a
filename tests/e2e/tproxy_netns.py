"""Run inside a fresh network namespace as root (`unshare -n python -m tests.e2e.tproxy_netns BOOTSTRAP`): a real
Envoy with generated TPROXY-mode config (its transparent virtualInbound on 15006) serves a connection to the pod's
port 9080 that the nat table diverts to 15006 (the original destination kept), through to the app.

The pod address 10.77.0.1 sits on lo; the app listens on 10.77.0.1:41000 and answers one JSON line with the peer
address it saw; Envoy runs as root in group 1337 (Istio's TPROXY proxy: NET_ADMIN for IP_TRANSPARENT), whose own
connections the rule leaves alone (the owner match on GID 1337, as istio-iptables' rules). One JSON result on stdout.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from sailmesh.processes import envoy_binary

POD_IP, APP_PORT, SERVICE_PORT, CAPTURE_PORT, PROXY_GID = "10.77.0.1", 41000, 9080, 15006, 1337
CLIENT_IP = "127.0.0.1"


def app(host: str = POD_IP, port: int = APP_PORT) -> None:
    """The app on host:port (a thread): one JSON body naming the peer address it saw."""
    server = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)

    def serve() -> None:
        while True:
            conn, peer = server.accept()
            with conn:
                conn.recv(65536)
                body = json.dumps({"app": "reviews", "peer": peer[0]}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)

    threading.Thread(target=serve, daemon=True).start()


def _as_proxy_group() -> None:
    os.setgid(PROXY_GID)


def main(bootstrap: str, admin: int) -> dict[str, Any]:
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, timeout=20)  # noqa: E731
    run("ip", "link", "set", "lo", "up")
    run("ip", "addr", "add", f"{POD_IP}/32", "dev", "lo")
    run("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", POD_IP, "--dport", str(SERVICE_PORT),
        "-m", "owner", "!", "--gid-owner", str(PROXY_GID), "-j", "REDIRECT", "--to-ports", str(CAPTURE_PORT))
    app()
    envoy = subprocess.Popen([envoy_binary(), "-c", bootstrap, "--disable-hot-restart", "-l", "warning"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_as_proxy_group)
    out: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and envoy.poll() is None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
                c.request("GET", "/listeners?format=json")
                listeners = json.loads(c.getresponse().read())
                if any(s["name"] == "virtualInbound" for s in listeners.get("listener_statuses", ())):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        if envoy.poll() is not None:
            assert envoy.stdout is not None
            return {"error": "envoy exited", "log": envoy.stdout.read().decode(errors="replace")[-3000:]}
        # from 127.0.0.1: Envoy's own upstream connection would leave from the pod address, original_src keeps this
        c = http.client.HTTPConnection(POD_IP, SERVICE_PORT, timeout=10, source_address=(CLIENT_IP, 0))
        c.request("GET", "/reviews/0", headers={"host": "reviews.default.svc.cluster.local:9080"})
        r = c.getresponse()
        out = {"status": r.status, "body": r.read().decode(errors="replace"), "server": r.getheader("server")}
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        c.request("GET", "/stats?filter=^listener.0.0.0.0_15006.downstream_cx_total")
        out["virtual_inbound_stats"] = c.getresponse().read().decode()
        return out
    finally:
        envoy.kill()
        envoy.wait()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))), flush=True)
