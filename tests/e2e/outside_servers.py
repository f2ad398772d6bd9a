"""Loopback HTTP(S) servers outside the mesh that answer with who they are and who called (for egress/DR e2e tests)."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import random
import ssl
import threading
from typing import Any

from tests.e2e.test_mesh_gateway_tls import issue


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every GET with JSON: the server's name and scheme, the path, the headers and the client cert's CN."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        client = next((v for rdn in (peer or {}).get("subject", ()) for k, v in rdn if k == "commonName"), "")
        body = json.dumps({"server": self.server.name, "path": self.path,  # type: ignore[attr-defined]
                           "scheme": self.server.scheme, "client": client,  # type: ignore[attr-defined]
                           "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def server_tls(root: pathlib.Path, ca: Any, host: str, client_ca: str = "") -> ssl.SSLContext:
    """A server context with a certificate for `host` from `ca`; with `client_ca`, client certificates required."""
    cert, key = issue(ca, host)
    (root / f"{host}.crt").write_bytes(cert)
    (root / f"{host}.key").write_bytes(key)
    os.chmod(root / f"{host}.key", 0o600)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(root / f"{host}.crt"), str(root / f"{host}.key"))
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


class OutsideServers:
    """Named echo servers on one random loopback address (its last octet given), each in its own thread."""

    def __init__(self, last_octet: int) -> None:
        self.address = f"127.{random.randint(10, 250)}.{random.randint(1, 250)}.{last_octet}"
        self.servers: dict[str, http.server.ThreadingHTTPServer] = {}

    def add(self, key: str, name: str, tls: ssl.SSLContext | None = None, port: int = 0) -> None:
        srv = http.server.ThreadingHTTPServer((self.address, port), _Echo)
        srv.name, srv.scheme = name, "https" if tls else "http"  # type: ignore[attr-defined]
        if tls is not None:
            srv.socket = tls.wrap_socket(srv.socket, server_side=True)
        self.servers[key] = srv
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    def port(self, which: str) -> int:
        return int(self.servers[which].server_address[1])

    def close(self) -> None:
        for s in self.servers.values():
            s.shutdown()
            s.server_close()
