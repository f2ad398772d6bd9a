"""A captured sidecar's sniffed service ports take their HTTP routes over RDS under Istio's names, from a real Envoy
on ADS: `host:port` for a listener on the service's ClusterIP (its virtual host alone, domains `*`, no catch-all)
and the port (`7001`) for a service without an address on the wildcard listener (ending in allow_any).

Envoy runs in a network namespace of its own (`unshare --net`, root): a captured sidecar binds 15001 and 15006,
which must not meet anything else on this machine. It reaches the control plane, and the test its admin API,
through Unix sockets (the file system is shared). Envoy keeps a listener warming until the route configuration
its HCM names arrives over RDS, so an active listener shows the name was served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.processes import envoy_binary, free_port
from sailmesh.settings import Settings
from sailmesh.testing.envoy_proc import ads_bootstrap
from sailmesh.testing.waiting import await_for

pytestmark = pytest.mark.e2e
ECHO = "echo.default.svc.cluster.local"
LOOSE = "loose.default.svc.cluster.local"
NODE = "sidecar~10.77.0.1~client-v1-0.default~default.svc.cluster.local"
DOCS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.40", "selector": {"app": "echo"}, "ports": [{"port": 7000}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "loose", "namespace": "default"},
     "spec": {"clusterIP": "None", "selector": {"app": "loose"}, "ports": [{"port": 7001}]}},
    {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
     "metadata": {"name": "echo", "namespace": "default"},
     "spec": {"hosts": ["echo"], "http": [{"match": [{"headers": {"x-version": {"exact": "v2"}}}],
                                           "route": [{"destination": {"host": "echo", "port": {"number": 7000}}}],
                                           "headers": {"response": {"add": {"x-echo-vs": "v2"}}}},
                                          {"route": [{"destination": {"host": "echo"}}]}]}},
]


def _skip_reason() -> str:
    if os.geteuid() != 0:
        return "needs root (a network namespace for the captured Envoy's 15001/15006)"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip"
    return ""


@contextlib.asynccontextmanager
async def relay(socket_path: pathlib.Path, port: int) -> AsyncIterator[None]:
    """A Unix socket forwarding each connection to 127.0.0.1:port (Envoy's ADS from its own namespace)."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_unix_server(handle, path=str(socket_path))
    try:
        yield
    finally:
        server.close()


@contextlib.asynccontextmanager
async def envoy_in_netns(workdir: pathlib.Path, xds_socket: pathlib.Path) -> AsyncIterator[pathlib.Path]:
    """A captured sidecar's Envoy (INTERCEPTION_MODE REDIRECT) in a fresh network namespace; yields its admin
    socket."""
    bootstrap = ads_bootstrap(NODE, 0)
    bootstrap["node"]["metadata"] = {"INTERCEPTION_MODE": "REDIRECT", "NAMESPACE": "default"}
    admin = workdir / "admin.sock"
    bootstrap["admin"] = {"address": {"pipe": {"path": str(admin)}}}
    endpoint = bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    endpoint["endpoint"]["address"] = {"pipe": {"path": str(xds_socket)}}
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    log = open(workdir / "envoy.log", "ab")
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--net", "--", "sh", "-c",
        f'ip link set lo up && exec "$0" -c {path} --disable-hot-restart --log-level warning --concurrency 1',
        envoy_binary(), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        yield admin
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def config_dump(admin: pathlib.Path) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(admin)),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get("http://envoy/config_dump") as resp:
            return dict(json.loads(await resp.text()))


def _section(dump: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in dump["configs"] if c["@type"].endswith("." + kind))


async def test_sniffed_ports_take_their_routes_over_rds_with_istios_names(tmp_path: pathlib.Path) -> None:
    """Istio's buildSidecarOutboundListener / buildSidecarOutboundHTTPRouteConfig for an Auto-protocol port: RDS
    `host:port` on the service's VIP (getVirtualHostsForSniffedServicePort: its one virtual host, domains `*`), RDS
    `PORT` on the wildcard (with the catch-all); both served to a real Envoy, which ACKs them."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = pathlib.Path(tmp_path)
    cp = ControlPlane(ControlPlaneOptions(xds_port=0, xds_tls_port=0, ca_port=0, xds_plaintext=True,
                                          http_port=free_port(), state_dir=str(work / "cp")), Settings())
    await cp.start()
    try:
        outcome = await cp.apply_documents([{"doc": d} for d in DOCS])
        assert len(outcome.results) == len(DOCS), outcome
        async with relay(work / "xds.sock", cp.opts.xds_port), envoy_in_netns(work, work / "xds.sock") as admin:
            async def served() -> dict[str, Any] | None:
                with contextlib.suppress(aiohttp.ClientError, OSError, StopIteration, KeyError):
                    dump = await config_dump(admin)
                    routes = {r["route_config"]["name"]: r["route_config"]
                              for r in _section(dump, "RoutesConfigDump").get("dynamic_route_configs", ())}
                    active = {li["name"] for li in _section(dump, "ListenersConfigDump").get("dynamic_listeners", ())
                              if "active_state" in li}
                    if {f"{ECHO}:7000", "7001"} <= set(routes) and {"10.96.0.40_7000", "0.0.0.0_7001"} <= active:
                        return {"routes": routes, "dump": dump}
                return None

            got = await await_for(served, timeout=60, interval=0.5,
                                  what="the sniffed listeners active with their RDS route configs")
        routes = got["routes"]
        [vhost] = routes[f"{ECHO}:7000"]["virtual_hosts"]
        assert (vhost["name"], vhost["domains"]) == (f"{ECHO}:7000", ["*"])
        assert vhost["routes"][0]["match"]["headers"][0]["name"] == "x-version"  # the VirtualService applies
        assert [v["name"] for v in routes["7001"]["virtual_hosts"]] == [f"{LOOSE}:7001", "allow_any"]
        dynamic = _section(got["dump"], "ListenersConfigDump")["dynamic_listeners"]
        listeners = {li["name"]: li["active_state"]["listener"] for li in dynamic if "active_state" in li}
        for name, rds in (("10.96.0.40_7000", f"{ECHO}:7000"), ("0.0.0.0_7001", "7001")):
            hcms = [f["typed_config"] for fc in listeners[name]["filter_chains"] for f in fc["filters"]
                    if f["name"] == "envoy.filters.network.http_connection_manager"]
            assert len(hcms) == 2 and all(h["rds"]["route_config_name"] == rds and "route_config" not in h
                                          for h in hcms), hcms
    finally:
        await cp.stop()
