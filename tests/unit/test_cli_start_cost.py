"""What a command costs besides its work (issue 11: under load a command's wall time is its CPU waiting for a
CPU, and most of that CPU is start-up): cli.rawhttp, the plain-HTTP client (control plane API, Envoy admin)
without urllib's http.client, email and ssl imports, and the Envoy version cache that spares `version` and
`bug-report` starting Envoy."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from sailmesh.cli import rawhttp
from tests.unit.test_cli_live_more import PROBE, mesh  # noqa: F401  (the fixture: a control plane + its state)


@pytest.fixture
def canned() -> Iterator[tuple[list[bytes], list[bytes]]]:
    """A one-shot-per-connection server on loopback: answers[i] is sent to the i-th connection, which sent
    requests[i]."""
    srv = socket.create_server(("127.0.0.1", 0))
    answers: list[bytes] = []
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(4096)
                requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(answers[len(requests) - 1])

    threading.Thread(target=serve, daemon=True).start()
    answers.append(srv.getsockname()[1].to_bytes(2, "big"))  # the port, for the test (never sent)
    try:
        yield answers, requests
    finally:
        srv.close()


def test_content_length_chunked_and_post(canned: tuple[list[bytes], list[bytes]]) -> None:
    answers, requests = canned
    port = int.from_bytes(answers.pop(), "big")
    url = f"http://127.0.0.1:{port}"
    answers += [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{}"]  # to the end: Connection close
    assert rawhttp.request(url + "/a?b=c", headers={"Authorization": "Bearer t"}) == (200, b"hello")
    assert requests[0].startswith(b"GET /a?b=c HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer t\r\n" in requests[0] and b"Connection: close" in requests[0]
    assert rawhttp.request(url + "/x") == (404, b"abcde")
    assert rawhttp.request(url, "POST", b'{"k": 1}') == (201, b"{}")
    assert requests[2].startswith(b"POST / HTTP/1.1\r\n") and requests[2].endswith(b'Content-Length: 8\r\n\r\n{"k": 1}')


def test_what_is_not_http_is_an_os_error(canned: tuple[list[bytes], list[bytes]]) -> None:
    answers, _ = canned
    port = int.from_bytes(answers.pop(), "big")
    answers += [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]
    for _ in answers:
        with pytest.raises(OSError):
            rawhttp.request(f"http://127.0.0.1:{port}/")
    with pytest.raises(ValueError):
        rawhttp.request("https://127.0.0.1:1/")


@pytest.mark.parametrize("args", [("get", "ns"), ("proxy-status",), ("get", "vs", "-A"),
                                  ("get", "pods", "-A", "-o", "json")])
async def test_commands_against_a_control_plane_load_no_urllib_or_ssl(mesh, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, state = mesh
    cmd = [sys.executable, "-c", PROBE, *args, "--state-dir", state]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=120, check=True)
    code, _, modules = done.stdout.split("\n", 2)
    assert code == "0", done.stdout
    loaded = [m for m in modules.split()[1:] if m.split(".")[0] in ("ssl", "email") or m in (
        "urllib.request", "http.client")]
    assert not loaded, loaded


def test_the_envoy_version_cache_keeps_every_binary(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # two installs (two venvs' Envoy packages) each asking `version`: with one entry in the cache they replaced
    # each other's and every `version` / `bug-report` started Envoy again (seen in a bug-report profile)
    from sailmesh.cli import version

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    binaries = []
    for name in ("a", "b"):
        b = tmp_path / name / "envoy"
        b.parent.mkdir()
        b.write_text(f"#!/bin/sh\necho 'envoy  version: abc/1.40.{len(binaries)}/Clean/RELEASE/BoringSSL'\n")
        b.chmod(0o755)
        binaries.append(b)
    for b in (*binaries, *binaries):
        monkeypatch.setattr(version, "envoy_binary", lambda b=b: str(b))
        assert version.envoy_version() == f"1.40.{binaries.index(b)}"
        b.chmod(0o644)  # no longer runnable: the second round must come from the cache
    cached = json.loads((tmp_path / "cache" / "sailmesh" / "envoy-version.json").read_text())
    assert sorted(cached.values()) == ["1.40.0", "1.40.1"], cached
