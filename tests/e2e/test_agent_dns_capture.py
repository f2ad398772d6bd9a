"""DNS capture end to end in network namespaces (root): the injected istio-init args with DNS capture
(`--redirect-dns`) send the app's queries to the resolver of /etc/resolv.conf to the agent's DNS proxy, which answers
mesh names itself (short names through the app's search list) and forwards the rest to that resolver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from sailmesh.webhook.inject import InjectionConfig, iptables_args
from tests.conftest import ROOT
from tests.e2e.test_istio_iptables import _unavailable

pytestmark = pytest.mark.e2e

DNS = {"proxy.istio.io/config": "proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n"}


def test_the_apps_dns_lands_on_the_agent_and_the_rest_goes_upstream() -> None:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    args = iptables_args(DNS, InjectionConfig())
    assert "--redirect-dns" in args
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin", "PYTHONPATH": str(ROOT)}
    for name in ("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE", "CAPTURE_ALL_DNS"):
        env.pop(name, None)  # only the args decide
    done = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", sys.executable, "-m",
                           "tests.e2e.dns_netns", "--", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no result (rc {done.returncode}): {done.stderr[-3000:]}"
    got: dict[str, Any] = json.loads(lines[-1])
    assert got.get("iptables_rc") == 0, got
    assert got["getaddrinfo"] == {"reviews": ["10.96.0.10"], "reviews.default": ["10.96.0.10"],
                                  "api.example.com": ["240.0.0.1"], "outside.test": ["192.0.2.7"]}, got
    assert got["udp"] == {"answer": ["10.96.0.10"], "aa": True}, got  # the agent's answer, from the resolver's address
    assert got["tcp"] == {"answer": ["240.0.0.1"], "aa": True}, got
    # the resolver saw only what the agent forwarded: outside.test (its search-list expansions first, as glibc
    # tries them with ndots:5), never a mesh name
    saw = got["resolver_saw"]
    assert saw and all("outside.test." in q for q in saw), saw
    assert any(q.startswith("udp outside.test. A") for q in saw), saw
