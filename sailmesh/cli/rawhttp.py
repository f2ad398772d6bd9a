"""A minimal HTTP/1.1 client over a plain socket, for the CLI's plain-HTTP calls (the control plane's API, Envoy's
admin interface).

urllib.request imports http.client, the email package and ssl: about 0.08 CPU s of every command's start-up
(`python -c 'import urllib.request, json'` 0.156 CPU s, `import json, socket` 0.072, median of 5 each). A
command's own work is one or two small loopback requests, so this client sends the request, reads the response
to its end (`Connection: close`) and decodes a Content-Length or chunked body; https stays with urllib and ssl
(apiclient's remote API). No proxy is used (as urllib with an empty ProxyHandler).
"""

from __future__ import annotations

import socket


class HTTPFailure(OSError):
    """The peer's answer is not HTTP (or was cut short)."""


def _split(url: str) -> tuple[str, int, str, str]:
    """(host, port, path, Host header) of an http:// URL."""
    if not url.startswith("http://"):
        raise ValueError(f"not an http:// URL: {url}")
    hostport, slash, path = url[len("http://"):].partition("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        host, port = hostport, "80"
    return host.strip("[]"), int(port), slash + path if slash else "/", hostport


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise HTTPFailure("chunked response cut short")
        size = int(data[pos:end].split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        if len(out[-1]) < size:
            raise HTTPFailure("chunked response cut short")
        pos = end + 2 + size + 2


def request(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30.0) -> tuple[int, bytes]:
    """(status, body) of one request; OSError (HTTPFailure included) when it cannot be made or answered."""
    host, port, path, hostport = _split(url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {hostport}", "Connection: close", "Accept-Encoding: identity",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if body is not None or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body or b'')}")
    # an ASCII host as bytes: getaddrinfo would otherwise load the idna codec (stringprep, unicodedata) for it
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    with socket.create_connection((name, port), timeout=timeout) as sock:  # type: ignore[arg-type]
        sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b""))
        chunks = []
        while data := sock.recv(1 << 16):
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(None, 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise HTTPFailure(f"not an HTTP response from {hostport}")
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in header_lines)}
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        rest = _dechunk(rest)
    elif fields.get(b"content-length", b"").isdigit():
        length = int(fields[b"content-length"])
        if len(rest) < length:
            raise HTTPFailure(f"response from {hostport} cut short ({len(rest)} of {length} bytes)")
        rest = rest[:length]
    return int(parts[1]), rest
