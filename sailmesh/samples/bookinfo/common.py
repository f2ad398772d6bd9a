"""Shared plumbing for the Bookinfo services: env config, request logging, the listening socket, HTTP client."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Mapping

import aiohttp
from aiohttp import web

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9080
# One line per request: peer, request line, status, bytes, seconds, x-request-id, user agent.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf "%{x-request-id}i" "%{User-Agent}i"'


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def env_str(name: str, default: str) -> str:
    """The env var's value, or default when unset or empty."""
    return os.environ.get(name) or default


def listen_address() -> tuple[str, int]:
    """HOST and PORT from the environment (default 127.0.0.1:9080)."""
    host = env_str("HOST", DEFAULT_HOST)
    raw = env_str("PORT", str(DEFAULT_PORT))
    try:
        port = int(raw)
    except ValueError as e:
        raise ConfigError(f"PORT={raw!r} is not a port number") from e
    if not 0 <= port <= 65535:
        raise ConfigError(f"PORT={raw!r} is out of range")
    return host, port


def service_url(hostname_env: str, default_host: str, port_env: str, env: Mapping[str, str] | None = None) -> str:
    """http://<host><.SERVICES_DOMAIN>:<port>, built from env exactly as the original services do."""
    e = os.environ if env is None else env
    domain = e.get("SERVICES_DOMAIN")
    suffix = f".{domain}" if domain else ""
    return f"http://{e.get(hostname_env) or default_host}{suffix}:{e.get(port_env) or DEFAULT_PORT}"


def seconds(raw: str | None, name: str, default: float) -> float:
    """A positive number of seconds from an env value (default when unset or empty)."""
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r} is not a number") from e
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def configure_logging(service: str) -> logging.Logger:
    """Log to stderr, one line per event, and return the service's logger."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format=f"%(asctime)s {service} %(name)s %(levelname)s %(message)s"
    )
    return logging.getLogger(service)


def make_listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket with TCP_NODELAY set (accepted sockets inherit it on Linux)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def inherited_socket(port: int) -> socket.socket | None:
    """The listening socket for `port` the process was started with, systemd's way (sd_listen_fds: LISTEN_PID is
    this process, LISTEN_FDS sockets from fd 3 on; `sailmesh up` passes them to a LocalWorkload with
    `socketActivation: true`), else None. The variables are removed so that child processes do not read them."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    found = None
    for fd in range(3, 3 + count):
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket
            continue
        if found is None and sock.getsockname()[1] == port:
            found = sock
        else:
            sock.close()
    if found is not None:
        found.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        found.listen(1024)  # the backlog make_listen_socket gives
        found.setblocking(False)
    return found


async def serve(app: web.Application, service: str) -> None:
    """Serve app on HOST:PORT (the inherited socket when started with one) until SIGTERM or SIGINT, logging every
    request to stderr."""
    log = logging.getLogger(service)
    host, port = listen_address()
    inherited = inherited_socket(port)
    sock = inherited or make_listen_socket(host, port)
    runner = web.AppRunner(app, access_log=logging.getLogger(f"{service}.access"), access_log_format=ACCESS_LOG_FORMAT)
    await runner.setup()
    # aiohttp also sets TCP_NODELAY on every accepted connection (BaseProtocol.connection_made).
    site = web.SockSite(runner, sock)
    await site.start()
    bound = sock.getsockname()
    log.info("listening on %s:%s%s", bound[0], bound[1], " (socket passed by the supervisor)" if inherited else "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()


def run(make_app: Callable[[], web.Application], service: str) -> None:
    """Entry point shared by the four services' __main__ blocks."""
    configure_logging(service)
    try:
        asyncio.run(serve(make_app(), service))
    except (ConfigError, OSError) as e:
        logging.getLogger(service).error("cannot start: %s", e)
        raise SystemExit(1) from e


def client_session() -> aiohttp.ClientSession:
    """Outbound HTTP client that honours HTTP_PROXY/http_proxy and NO_PROXY (the sidecar is the proxy in the mesh)."""
    return aiohttp.ClientSession(trust_env=True, connector=aiohttp.TCPConnector(limit=256))


def forward_headers(incoming: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The named headers present on the incoming request, to copy onto outbound calls."""
    out: dict[str, str] = {}
    for name in names:
        value = incoming.get(name)
        if value is not None:
            out[name] = value
    return out
