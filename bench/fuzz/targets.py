"""The properties fuzzed: what must hold for any input. Each check raises AssertionError (or the exception that
escaped) on a violation; `Harness` runs a real control plane (HTTP API + plaintext ADS) on its own event loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import urllib.parse
from collections import Counter
from typing import Any

import aiohttp
import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from bench.fuzz.strategies import SAMPLES
from sailmesh.api.parse import Source, resource_from_dict
from sailmesh.api.validate import validate
from sailmesh.cli import validate as validate_cmd
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.errors import ParseError
from sailmesh.processes import free_port
from sailmesh.settings import Settings

# The statuses a stream may end with: the client ended it (OK), or the server refused a request over a bound, a
# malformed node, or a proxy it does not accept. UNKNOWN or INTERNAL would mean an exception escaped.
EXPECTED_ENDINGS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.PERMISSION_DENIED}
# grpcio's asyncio client replaces the server's status with this when one of its writes fails because the server
# already ended the stream (grpc/grpc#36066, a client-side race): counted apart. A server-side exception would
# show as UNKNOWN and as an error logged by gRPC (Capture).
CLIENT_RACE = (grpc.StatusCode.INTERNAL, "Internal error from Core")


def check_validate_text(text: str) -> None:
    """`sailmesh validate -f FILE -o json` on the text: exits 0 or 1 with a JSON list of issues, never raises."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", encoding="utf-8", errors="surrogateescape",
                                     delete=False) as f:
        f.write(text)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = validate_cmd.run(argparse.Namespace(files=[f.name], output="json", quiet_warnings=False))
    finally:
        os.unlink(f.name)
    assert code in (0, 1), code
    issues = json.loads(out.getvalue())
    assert isinstance(issues, list)


def check_document(doc: Any) -> None:
    """A parsed document (the HTTP API's `doc`): refused with ParseError or validated into printable issues."""
    try:
        resource = resource_from_dict(doc, Source("fuzz.yaml", 1))
    except ParseError as e:
        assert str(e)
        return
    for issue in validate(resource):
        json.dumps(issue.to_dict())
        assert str(issue)


class Capture(logging.Handler):
    """Every log record while fuzzing: none may carry an unescaped control character or be an error from a
    library that caught our exception (aiohttp's 'Error handling request', gRPC's servicer errors)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.name.startswith("sailmesh") and any(c in msg for c in "\n\r\x1b\x00"):
            self.problems.append(f"unescaped control character in a log line: {msg[:300]!r}")
        if record.levelno >= logging.ERROR and not record.name.startswith("sailmesh"):
            self.problems.append(f"{record.name}: {msg[:300]} {record.exc_info[1] if record.exc_info else ''}")


class Harness:
    """A control plane with the bookinfo sample config on loopback, driven from one event loop of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.state = tempfile.mkdtemp(prefix="smfuzz")
        self.capture = Capture()
        self.endings: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        for name in ("sailmesh", "aiohttp", "grpc"):
            logging.getLogger(name).addHandler(self.capture)
        self._level = logging.getLogger("sailmesh").level
        logging.getLogger("sailmesh").setLevel(logging.INFO)  # the lines with client input are info lines
        opts = ControlPlaneOptions(config_dirs=[str(SAMPLES / "bookinfo" / "networking")], xds_port=free_port(),
                                   xds_plaintext=True, xds_tls_port=0, ca_port=0, http_port=free_port(),
                                   state_dir=self.state)
        self.cp = ControlPlane(opts, Settings())
        self.loop.run_until_complete(self.cp.start())
        assert self.cp.identity is not None
        self.token = self.cp.identity.api_token_path.read_text().strip()
        self.api = f"http://127.0.0.1:{opts.http_port}"
        self.xds = f"127.0.0.1:{opts.xds_port}"
        self.session, self.channel = self.loop.run_until_complete(self._clients())

    async def _clients(self) -> tuple[aiohttp.ClientSession, grpc.aio.Channel]:
        """Made on the harness's loop (both bind to the loop running when they are made)."""
        return (aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=30)),
                grpc.aio.insecure_channel(self.xds))

    def close(self) -> None:
        self.loop.run_until_complete(self.session.close())
        self.loop.run_until_complete(self.channel.close())
        self.loop.run_until_complete(self.cp.stop())
        self.loop.close()
        for name in ("sailmesh", "aiohttp", "grpc"):
            logging.getLogger(name).removeHandler(self.capture)
        logging.getLogger("sailmesh").setLevel(self._level)
        shutil.rmtree(self.state, ignore_errors=True)

    def check_problems(self) -> None:
        problems, self.capture.problems = self.capture.problems, []
        assert not problems, problems

    # -- HTTP API -------------------------------------------------------------------------------------------
    def check_http(self, req: dict[str, Any]) -> None:
        """Any request: never a 5xx; an error from /api/ or /debug/ is JSON with a list of messages."""
        status, ctype, text = self.loop.run_until_complete(self._http(req))
        self.statuses[status] += 1
        assert status < 500, (status, text[:500], req)
        if status >= 400 and req["path"].startswith(("/api/v1/", "/debug/")) and status != 404 and \
                status != 405:
            assert ctype == "application/json", (status, ctype, text[:200], req)
            assert isinstance(json.loads(text).get("errors"), list)
        self.check_problems()

    async def _http(self, req: dict[str, Any]) -> tuple[int, str, str]:
        headers = {"Content-Type": req["content_type"]}
        if req["auth"] == "token":
            headers["Authorization"] = f"Bearer {self.token}"
        elif req["auth"] == "wrong":
            headers["Authorization"] = "Bearer wrong"
        url = self.api + urllib.parse.quote(req["path"], safe="/")
        if req["query"]:
            url += "?" + urllib.parse.urlencode(req["query"])
        async with self.session.request(req["method"], url, data=req["body"] or None, headers=headers) as r:
            return r.status, r.content_type, await r.text(errors="replace")

    # -- xDS --------------------------------------------------------------------------------------------------
    def check_xds(self, script: dict[str, Any]) -> None:
        """Any stream: ends with an expected status, leaves no connection behind, logs nothing unescaped."""
        code, details = self.loop.run_until_complete(self._xds(script))
        if (code, details) == CLIENT_RACE:
            self.endings["INTERNAL (client race, grpc#36066)"] += 1
        else:
            self.endings[code.name] += 1
            assert code in EXPECTED_ENDINGS, (code, details, script)
        assert self.cp.server is not None and self.cp.server.connection_count() == 0
        self.check_problems()

    async def _xds(self, script: dict[str, Any]) -> tuple[grpc.StatusCode, str]:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        delta = script["delta"]
        call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        last: dict[str, str] = {}

        async def read() -> tuple[grpc.StatusCode, str]:
            try:
                async for resp in call:
                    last[resp.type_url] = resp.nonce
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details() or ""
            return await call.code(), await call.details()

        reader = asyncio.create_task(read())
        md = struct_pb2.Struct()
        with contextlib.suppress(ValueError, TypeError):
            md.update(script["metadata"])
        for i, step in enumerate(script["steps"]):
            nonce = {"": "", "stale": "stale-nonce", "last": last.get(step["type_url"], "")}[step["nonce"]]
            fields: dict[str, Any] = {"type_url": step["type_url"], "response_nonce": nonce}
            if i == 0:
                fields["node"] = base_pb2.Node(id=script["node_id"], metadata=md)
            if step["error"] is not None:
                fields["error_detail"] = step["error"]
            if delta:
                request: Any = discovery_pb2.DeltaDiscoveryRequest(
                    resource_names_subscribe=step["subscribe"], resource_names_unsubscribe=step["unsubscribe"],
                    initial_resource_versions=step["initial"], **fields)
            else:
                request = discovery_pb2.DiscoveryRequest(version_info=step["version"],
                                                         resource_names=step["names"], **fields)
            try:
                await call.write(request)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                break  # the server ended the stream; the reader has its status
            for _ in range(5):  # let the server answer (same loop): responses arrive for `last` nonces
                await asyncio.sleep(0.002)
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.done_writing()
        try:
            return await asyncio.wait_for(reader, 30)
        finally:
            call.cancel()
