"""Envoy in TPROXY interception mode with generated config: accepted by a real Envoy, and, in a private network
namespace (root), a captured connection to the pod's port reaches the app through the transparent virtualInbound."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from types import MappingProxyType

import pytest

from sailmesh.processes import envoy_binary, free_port
from tests.conftest import ROOT
from tests.e2e.test_generate_envoy import static_bootstrap, write_bootstrap
from tests.e2e.tproxy_netns import APP_PORT, CLIENT_IP, POD_IP
from tests.unit.test_generate_support import bookinfo, sidecar

pytestmark = pytest.mark.e2e


def _tproxy_bootstrap(tmp_path: pathlib.Path, admin: int) -> pathlib.Path:
    proxy = dataclasses.replace(sidecar(name="reviews-v1-0", ip=POD_IP, app_ports={9080: APP_PORT}),
                                metadata=MappingProxyType({"INTERCEPTION_MODE": "TPROXY"}))
    b = static_bootstrap(bookinfo(), proxy, admin)
    assert any(li.name == "virtualInbound" and li.transparent.value for li in b.static_resources.listeners)
    return write_bootstrap(tmp_path, b)


def test_envoy_validates_tproxy_config(tmp_path: pathlib.Path) -> None:
    path = _tproxy_bootstrap(tmp_path, free_port())
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                        "-l", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])


def test_captured_inbound_reaches_the_app_through_the_transparent_virtual_inbound(tmp_path: pathlib.Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a network namespace, iptables and IP_TRANSPARENT")
    probe = subprocess.run(["unshare", "-n", "iptables", "-t", "nat", "-L"], capture_output=True, timeout=20)
    if probe.returncode != 0:
        pytest.skip(f"no network namespace with iptables here: {probe.stderr.decode()[-300:]}")
    path = _tproxy_bootstrap(tmp_path, 15000)  # inside the private namespace: no other Envoy there
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.e2e.tproxy_netns", str(path), "15000"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got.get("status") == 200, got
    assert json.loads(got["body"])["app"] == "reviews" and got["server"] == "istio-envoy"
    # the connection went through 15006 (virtualInbound), and original_src kept the client's address upstream
    assert "downstream_cx_total: 1" in got["virtual_inbound_stats"], got
    assert json.loads(got["body"])["peer"] == CLIENT_IP  # not the pod address Envoy would otherwise leave from
