"""The control plane's HTTP API is authenticated: the local CLI sends the token the control plane wrote 0600 into
its state dir; every other caller gets 401 and a log line (without the token it sent). `/ready` and `/metrics`
stay open, as on istiod's 15014 (probes and Prometheus scrapes carry no credentials)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import stat
import tempfile

import aiohttp
import pytest

from sailmesh.cli.apiclient import call
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.processes import free_port
from sailmesh.settings import Settings

VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
      "metadata": {"name": "reviews", "namespace": "default"},
      "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}


@pytest.fixture
async def cp():
    state = tempfile.mkdtemp(prefix="smcp")
    plane = ControlPlane(ControlPlaneOptions(xds_tls_port=0, ca_port=0, http_port=free_port(), state_dir=state),
                         Settings())
    await plane.start()
    yield plane
    await plane.stop()
    shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("method,path", [
    ("POST", "/api/v1/apply"), ("POST", "/api/v1/delete"), ("GET", "/api/v1/resources"),
    ("GET", "/api/v1/rejected"), ("GET", "/debug/syncz"), ("GET", "/debug/config_dump?proxyID=x"),
    ("POST", "/api/v1/join-tokens"),
])
async def test_every_api_call_without_the_token_gets_401_and_is_logged(cp: ControlPlane, caplog, method, path):
    caplog.set_level(logging.WARNING)
    url = f"http://127.0.0.1:{cp.opts.http_port}{path}"
    async with aiohttp.ClientSession(trust_env=False) as s:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic eDp5"}):
            async with s.request(method, url, json={"documents": [{"doc": VS}]}, headers=headers) as r:
                assert r.status == 401
    assert caplog.text.count(f"unauthenticated {method} {path.split('?')[0]}") == 3
    assert "not-the-token" not in caplog.text
    assert not cp.store.list("VirtualService")  # nothing was applied


async def test_the_cli_token_works_and_probes_stay_open(cp: ControlPlane):
    assert cp.identity is not None
    path = cp.identity.api_token_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    api = f"http://127.0.0.1:{cp.opts.http_port}"
    docs = {"documents": [{"file": "t", "line": 1, "doc": VS}]}  # the CLI's client is synchronous: off the loop
    status, body = await asyncio.to_thread(call, api, "POST", "/api/v1/apply", docs, token=path.read_text().strip())
    assert status == 200 and body["results"] == ["VirtualService default/reviews created"]
    status, _ = await asyncio.to_thread(call, api, "GET", "/api/v1/resources?kind=VirtualService")
    assert status == 401
    async with aiohttp.ClientSession(trust_env=False) as s:
        for open_path in ("/ready", "/metrics"):
            async with s.get(api + open_path) as r:
                assert r.status == 200, open_path
