"""Istio's mutual TLS tasks on `sailmesh demo httpbin`, end to end (agents, certificates over SDS, real Envoys).

istio.io docs/tasks/security/authentication/authn-policy and mtls-migration: sleep in foo, bar (sidecars) and
legacy (none) call httpbin in foo, bar and legacy with
`curl http://httpbin.${to}:8000/ip -s -o /dev/null -w "%{http_code}"`; PeerAuthentication moves the mesh from
PERMISSIVE (everything 200) to STRICT per mesh, namespace, workload and port, where a plaintext client gets `000`.
The policies are ../shared/conformance/security/policies/authn-policy.yaml, applied one section at a time.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from sailmesh.cli.exec import find_instance
from sailmesh.platform.state import MeshState
from sailmesh.testing.envoy_stats import envoy_stat
from sailmesh.testing.mesh import RunningMesh, httpbin_demo
from sailmesh.testing.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")]
NAMESPACES = ("foo", "bar", "legacy")
SECTION = "---\n"


def policy_sections(conformance: pathlib.Path) -> list[str]:
    """authn-policy.yaml's documents, in the task's order (1 mesh STRICT, 2 foo STRICT, 3 bar/httpbin + port,
    4 foo overwrite-example, ...)."""
    text = (conformance / "security" / "policies" / "authn-policy.yaml").read_text()
    return [d for d in text.split(SECTION) if "kind:" in d]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    m = httpbin_demo(str(tmp_path_factory.mktemp("mtls-demo")))
    yield m
    m.stop()


def sm_exec(mesh: RunningMesh, src: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sailmesh", "exec", "sleep", "-n", src, "--state-dir",
                           mesh.state_dir, "--", *command], capture_output=True, text=True, timeout=120)


def sleep_env(mesh: RunningMesh, src: str) -> dict[str, str]:
    """The environment `sailmesh exec sleep -n SRC` runs its command with (cli/exec.py: this process's environment
    plus the instance's platform env, HTTP_PROXY on its sidecar, or on the plain forwarder for legacy)."""
    inst = find_instance(MeshState.load(mesh.state_dir), "sleep", src)
    assert inst is not None, f"no sleep in {src}"
    return {**os.environ, **inst.env}


def matrix(mesh: RunningMesh) -> dict[tuple[str, str], str]:
    """The task's loop: every sleep to every httpbin, curl's status code (000 when the connection closes).

    The loop runs in sleep's environment as `sailmesh exec sleep -n SRC -- sh -c LOOP` would run it, without the
    CLI's Python start-up per call (about 1 s at load; converge() runs the matrix dozens of times). `sailmesh exec`
    itself stays covered by headers() and the STRICT test below."""
    out: dict[tuple[str, str], str] = {}
    for src in NAMESPACES:
        loop = "; ".join(f'curl -s --max-time 5 "http://httpbin.{dst}:8000/ip" -o /dev/null -w "{dst}=%{{http_code}} "'
                         for dst in NAMESPACES)
        r = subprocess.run(["sh", "-c", loop], env=sleep_env(mesh, src), capture_output=True, text=True, timeout=120)
        for item in r.stdout.split():
            dst, _, code = item.partition("=")
            out[(src, dst)] = code
    return out


def expect(**overrides: str) -> dict[tuple[str, str], str]:
    """All 200, except `src_dst="000"` overrides."""
    want = {(s, d): "200" for s in NAMESPACES for d in NAMESPACES}
    for key, code in overrides.items():
        src, dst = key.split("_")
        want[(src, dst)] = code
    return want


def converge(mesh: RunningMesh, want: dict[tuple[str, str], str], what: str) -> None:
    """Poll the matrix until it is `want` three times in a row (the push reached every proxy).

    In a row, not once then twice more: a client's sidecar may hold a connection it opened before the server's
    listener changed; Envoy drains it by closing it after its next response, so one answer may still follow the
    old policy (Istio behaves the same) before every connection is a new one.
    """
    last: list[dict[tuple[str, str], str]] = []

    def ok() -> bool:
        last.append(matrix(mesh))
        return len(last) >= 3 and all(m == want for m in last[-3:])

    try:
        wait_for(ok, timeout=90, interval=0.2, what=what)
    except BaseException:
        raise AssertionError(f"{what}: last matrix {last[-1] if last else None}, want {want}") from None


def apply(mesh: RunningMesh, tmp: pathlib.Path, name: str, text: str) -> None:
    mesh.apply_text(tmp, name, text)


def delete(mesh: RunningMesh, tmp: pathlib.Path, name: str) -> None:
    mesh.delete_text(tmp, name)


def headers(mesh: RunningMesh, src: str, dst: str) -> dict[str, str]:
    r = sm_exec(mesh, src, "curl", "-s", "--max-time", "5", f"http://httpbin.{dst}:8000/headers")
    assert r.returncode == 0, r.stderr
    got: dict[str, str] = json.loads(r.stdout)["headers"]
    return got


def sidecar_stat(mesh: RunningMesh, ns: str, workload: str, name: str) -> int:
    items = json.loads(mesh.cli("get", "workloads", "-n", ns, "-o", "json", check=True).stdout)
    address = next(i["address"] for i in items if i["workload"] == workload)
    return envoy_stat(address, name)


def test_sidecars_talk_mtls_without_destination_rule(mesh: RunningMesh) -> None:
    """Auto mTLS: httpbin sees both SPIFFE IDs in X-Forwarded-Client-Cert; the client's sidecar counted TLS
    handshakes to httpbin; to legacy (no sidecar) it sends plaintext (no XFCC)."""
    h = headers(mesh, "foo", "bar")
    xfcc = dict(part.split("=", 1) for part in h["X-Forwarded-Client-Cert"].split(";"))
    assert xfcc["By"] == "spiffe://cluster.local/ns/bar/sa/httpbin"
    assert xfcc["URI"] == "spiffe://cluster.local/ns/foo/sa/sleep"
    assert xfcc["Subject"] == '""' and len(xfcc["Hash"]) == 64
    assert sidecar_stat(mesh, "foo", "sleep", "cluster.outbound|8000||httpbin.bar.svc.cluster.local.ssl.handshake") >= 1
    assert "X-Forwarded-Client-Cert" not in headers(mesh, "foo", "legacy")
    assert "X-Forwarded-Client-Cert" not in headers(mesh, "legacy", "foo")  # PERMISSIVE: plaintext accepted


def test_migration_matrix(mesh: RunningMesh, conformance: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """The task, step by step: PERMISSIVE, then STRICT per mesh, namespace, workload and port, and precedence."""
    mesh_strict, foo_strict, bar_workload, foo_overwrite = policy_sections(conformance)[:4]
    converge(mesh, expect(), "PERMISSIVE (no policy): everything 200")

    apply(mesh, tmp_path, "mesh", mesh_strict)
    converge(mesh, expect(legacy_foo="000", legacy_bar="000"), "mesh-wide STRICT")
    delete(mesh, tmp_path, "mesh")
    converge(mesh, expect(), "mesh policy removed")

    apply(mesh, tmp_path, "foo", foo_strict)
    converge(mesh, expect(legacy_foo="000"), "namespace foo STRICT")

    # workload STRICT on bar/httpbin (without the port exception first), then with port 8080 DISABLE
    bar_only = bar_workload.split("  portLevelMtls:")[0]
    apply(mesh, tmp_path, "bar", bar_only)
    converge(mesh, expect(legacy_foo="000", legacy_bar="000"), "workload bar/httpbin STRICT")
    apply(mesh, tmp_path, "bar", bar_workload)
    # The port is plaintext now: legacy gets through. Sidecar clients still send mTLS, as Istio's do: auto mTLS
    # reads only namespace- and mesh-level policies (BestEffortInferServiceMTLSMode; istio/istio#32079), so the
    # server's plaintext port answers their TLS with an error (503 at the client) ...
    converge(mesh, expect(legacy_foo="000", foo_bar="503", bar_bar="503"), "bar/httpbin port 8080 DISABLE")
    # ... until a DestinationRule turns TLS off for them, Istio's documented fix.
    apply(mesh, tmp_path, "bar-dr", dr_disable("bar"))
    converge(mesh, expect(legacy_foo="000"), "bar/httpbin port DISABLE with a DestinationRule tls DISABLE")
    delete(mesh, tmp_path, "bar-dr")
    delete(mesh, tmp_path, "bar")
    converge(mesh, expect(legacy_foo="000"), "bar policy removed")

    # precedence: the workload policy DISABLE overrides the namespace's STRICT in foo (legacy gets through;
    # sidecar clients need the DestinationRule again, for the same reason)
    apply(mesh, tmp_path, "overwrite", foo_overwrite)
    converge(mesh, expect(foo_foo="503", bar_foo="503"), "workload DISABLE over namespace STRICT in foo")
    apply(mesh, tmp_path, "foo-dr", dr_disable("foo"))
    converge(mesh, expect(), "workload DISABLE with a DestinationRule tls DISABLE")

    for name in ("foo-dr", "overwrite", "foo"):
        delete(mesh, tmp_path, name)
    converge(mesh, expect(), "all policies removed")


def dr_disable(ns: str) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: httpbin, namespace: {ns}}}\n"
            f"spec:\n  host: httpbin.{ns}.svc.cluster.local\n  trafficPolicy:\n    tls: {{mode: DISABLE}}\n")


def test_strict_refuses_plaintext_http_and_tcp_every_time(mesh: RunningMesh, conformance: pathlib.Path,
                                                         tmp_path: pathlib.Path) -> None:
    """Under STRICT a plaintext client never gets through: many attempts, curl and a raw TCP connection."""
    apply(mesh, tmp_path, "strict", policy_sections(conformance)[0])
    try:
        converge(mesh, expect(legacy_foo="000", legacy_bar="000"), "mesh-wide STRICT")
        items = json.loads(mesh.cli("get", "workloads", "-n", "foo", "-o", "json", check=True).stdout)
        httpbin = next(i for i in items if i["workload"] == "httpbin")
        script = (
            "import socket, sys\n"
            f"addr = ('{httpbin['address']}', 8080)\n"
            "through = 0\n"
            "for _ in range(50):\n"
            "    try:\n"
            "        with socket.create_connection(addr, timeout=5) as s:\n"
            "            s.sendall(b'GET /ip HTTP/1.1\\r\\nHost: httpbin.foo:8000\\r\\n\\r\\n')\n"
            "            through += len(s.recv(100)) > 0\n"
            "    except OSError:\n"
            "        pass\n"
            "print(through)\n"
        )
        r = sm_exec(mesh, "legacy", sys.executable, "-c", script)  # raw TCP straight to the sidecar's port
        assert r.returncode == 0 and r.stdout.strip() == "0", (r.stdout, r.stderr)
        codes = sm_exec(mesh, "legacy", "sh", "-c", "for i in $(seq 20); do curl -s --max-time 5 "
                        "http://httpbin.foo:8000/ip -o /dev/null -w '%{http_code} '; done").stdout.split()
        assert codes == ["000"] * 20
        # the ingress gateway has a mesh identity too: it reaches httpbin.foo over mTLS under STRICT
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                mesh.gateway_url(8080) + "/headers", timeout=10) as resp:
            seen = json.loads(resp.read())["headers"]
        xfcc = dict(part.split("=", 1) for part in seen["X-Forwarded-Client-Cert"].split(";"))
        assert xfcc["URI"] == "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
        assert xfcc["By"] == "spiffe://cluster.local/ns/foo/sa/httpbin"
    finally:
        delete(mesh, tmp_path, "strict")
        converge(mesh, expect(), "policy removed")
