"""Istio's global rate-limit sample through real Envoy: `bookinfo/policy/productpage_envoy_ratelimit.yaml` applied
unchanged makes the ingress gateway ask a rate-limit service (Envoy's RLS protocol) running in the mesh as
`ratelimit`, found by the mesh's DNS: /productpage is limited to 1 request per minute, other paths to 100."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from sailmesh.cli.demo import BOOKINFO
from sailmesh.dnsio import read_resolv_conf
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

CONFORMANCE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance"
SAMPLE = CONFORMANCE / "bookinfo" / "policy" / "productpage_envoy_ratelimit.yaml"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Istio's task (istio.io/latest/docs/tasks/policy-enforcement/rate-limit/): the ratelimit-config ConfigMap's
# config.yaml, and the rate-limit service as a workload of the mesh (without a sidecar, as a plain server)
RATELIMIT_CONFIG = """\
domain: productpage-ratelimit
descriptors:
  - key: PATH
    value: "/productpage"
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: PATH
    rate_limit:
      unit: minute
      requests_per_unit: 100
"""
RATELIMIT_WORKLOAD = """\
apiVersion: v1
kind: Service
metadata: {name: ratelimit, namespace: default, labels: {app: ratelimit}}
spec:
  selector: {app: ratelimit}
  ports: [{name: grpc-server, port: 8081, targetPort: 8081}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: ratelimit, namespace: default, labels: {app: ratelimit}}
spec:
  command: ["python", "-m", "sailmesh.samples.ratelimit", "--config", "{config}"]
  ports: [{name: grpc-server, containerPort: 8081, protocol: GRPC}]
  sidecar: false
"""

pytestmark = pytest.mark.skipif(not SAMPLE.is_file(), reason="../shared/conformance is missing (Istio's samples)")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("mesh-config")
    rls = tmp_path_factory.mktemp("ratelimit") / "config.yaml"  # outside the watched directory: not a resource
    rls.write_text(RATELIMIT_CONFIG)
    shutil.copytree(os.path.join(BOOKINFO, "mesh"), config / "mesh")
    shutil.copytree(os.path.join(BOOKINFO, "networking"), config / "networking")
    (config / "ratelimit").mkdir()
    (config / "ratelimit" / "ratelimit.yaml").write_text(RATELIMIT_WORKLOAD.replace("{config}", str(rls)))
    m = RunningMesh(str(tmp_path_factory.mktemp("mesh-state")), dirs=[str(config)])
    yield m
    m.stop()


def status(url: str) -> int:
    try:
        with NO_PROXY.open(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_mesh_dns_answers_service_names_and_forwards_others(mesh: RunningMesh) -> None:
    port = _dns_port(mesh)
    def ask(name: str) -> dns.message.Message:
        q = dns.message.make_query(name, "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(15)
            s.sendto(q.to_wire(), ("127.0.0.1", port))
            return dns.message.from_wire(s.recv(4096))
    r = ask("ratelimit.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1 and r.flags & dns.flags.AA
    assert all(a.address.startswith("127.") for a in r.answer[0])
    tcp = dns.query.tcp(dns.message.make_query("ratelimit.default.svc.cluster.local", "A"), "127.0.0.1",
                        timeout=5, port=port)
    assert [a.address for a in tcp.answer[0]] == [a.address for a in r.answer[0]]  # TCP too
    # not the mesh's: forwarded to the system's nameservers, whose NXDOMAIN comes back (RFC 6761: .invalid never
    # resolves); SERVFAIL only on a machine with no nameserver to forward to
    expected = dns.rcode.NXDOMAIN if read_resolv_conf().servers else dns.rcode.SERVFAIL
    assert ask("nowhere.invalid").rcode() == expected


def _dns_port(mesh: RunningMesh) -> int:
    """The mesh DNS's port as the control plane bound it (its ready record: `up` passes it port 0 to bind)."""
    assert mesh.dns_port, "the control plane recorded no DNS port"
    return mesh.dns_port


def test_istio_global_rate_limit_sample_works_unchanged(mesh: RunningMesh) -> None:
    url = mesh.gateway_url() + "/productpage"
    wait_for(lambda: status(url) == 200, timeout=30, what="productpage answering")
    r = mesh.cli("apply", "-f", str(SAMPLE))
    assert r.returncode == 0, r.stderr
    # the gateway now asks the service for every request (failure_mode_deny: a 500 until it can reach it);
    # /productpage's limit is 1 per minute: after the filter is in, the second request in a minute is 429. The
    # service counts in fixed clock minutes (as envoyproxy/ratelimit does), so a round that a new minute cut into
    # (its first request admitted again) is run again
    for _round in range(3):
        minute = int(time.time()) // 60
        wait_for(lambda: status(url) == 429, timeout=30, interval=0.5, what="a 429 from the global limit")
        got = [status(url) for _ in range(3)]
        if int(time.time()) // 60 == minute:
            break
    assert got == [429] * 3
    # another path falls under the PATH wildcard's 100 per minute
    assert status(mesh.gateway_url() + "/static/bookinfo.css") == 200
