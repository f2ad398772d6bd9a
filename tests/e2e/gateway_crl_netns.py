"""Run as root inside a fresh network namespace (`unshare -n python -m tests.e2e.gateway_crl_netns BOOTSTRAP ADMIN
DIR`): a gateway Envoy on generated config (its MUTUAL server, Gateway port 443 bound on 8443, with certificate
files and `caCrl`), asked for `GET /` with each client certificate in DIR (`<name>.pem`/`<name>.key`), trusting
DIR/ca.pem for the server's. One JSON line: per client, the response's status line or the TLS error."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys

from sailmesh.processes import envoy_binary
from tests.e2e.redirect_netns import ip, wait_for_listener

HOST, CLIENTS = "files.example.com", ("good", "revoked")
PORT = 8443  # the embedded gateway binds Gateway port 443 on 8443 (as 80 on 8080)


def request(folder: str, client: str) -> str:
    ctx = ssl.create_default_context(cafile=f"{folder}/ca.pem")
    ctx.load_cert_chain(f"{folder}/{client}.pem", f"{folder}/{client}.key")
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            return s.recv(65536).decode(errors="replace").split("\r\n", 1)[0] or "closed"
    except (OSError, ssl.SSLError) as e:
        return f"error: {type(e).__name__}: {e}"


def main(bootstrap: str, admin: int, folder: str) -> dict[str, str]:
    ip("link", "set", "lo", "up")
    envoy = subprocess.Popen([envoy_binary(), "-c", bootstrap, "--disable-hot-restart", "-l", "warning"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        if not wait_for_listener(envoy, admin, "0.0.0.0_443"):
            envoy.kill()
            assert envoy.stdout is not None
            return {"error": envoy.stdout.read().decode(errors="replace")[-3000:]}
        return {client: request(folder, client) for client in CLIENTS}
    finally:
        envoy.kill()
        envoy.wait()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3])), flush=True)
