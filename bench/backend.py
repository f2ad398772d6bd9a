"""A fast benchmark backend: raw asyncio HTTP/1.1 server, 1 kB responses, keep-alive, TCP_NODELAY."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

BODY_SIZE = 1024
MAX_HEADER = 64 * 1024


def build_response(size: int = BODY_SIZE) -> bytes:
    """The one response the backend sends: 200 with a `size`-byte body."""
    body = (b"sailmesh-bench-" * (size // 15 + 1))[:size]
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n\r\n".encode()
    return head + body


class _Conn(asyncio.Protocol):
    """One client connection: answers every complete request in the buffer (pipelining works)."""

    def __init__(self, response: bytes, close_response: bytes) -> None:
        self.response = response
        self.close_response = close_response
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.skip = 0  # request-body bytes still to discard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        out: list[bytes] = []
        close = False
        while True:
            if self.skip:
                n = min(self.skip, len(self.buf))
                del self.buf[:n]
                self.skip -= n
                if self.skip:
                    break
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEADER:
                    close = True
                break
            head = bytes(self.buf[:end]).lower()
            del self.buf[: end + 4]
            for line in head.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    self.skip = int(line.split(b":", 1)[1].strip() or b"0")
                elif line.startswith(b"connection:") and b"close" in line:
                    close = True
            out.append(self.close_response if close else self.response)
            if close:
                break
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()


async def serve(host: str, port: int, size: int = BODY_SIZE) -> asyncio.Server:
    """Start the backend on host:port (port 0 = any) and return the listening server."""
    response = build_response(size)
    close_response = response.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Conn(response, close_response), host, port,
                                    backlog=1024, reuse_address=True)


async def _main(host: str, port: int, size: int) -> None:
    server = await serve(host, port, size)
    bound = server.sockets[0].getsockname()
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.backend --host 127.0.0.1 --port 8080 [--size 1024]`."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--size", type=int, default=BODY_SIZE)
    a = p.parse_args(argv)
    try:
        asyncio.run(_main(a.host, a.port, a.size))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
