"""The test node runs injected pods against the real API server: the native sidecar `istio-proxy` runs `sailmesh
agent` with its projected service-account token (audience istio-ca, minted by the node through TokenRequest), the
CA checks it with TokenReview, and two injected pods talk mTLS through their sidecars.

The pods are injected by hand here, in the shape of the injection template (native sidecar, istio-token projected
volume, istio-ca-root-cert ConfigMap volume, the agent's flags as $(VAR)s); the Bookinfo test uses the webhook.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import urllib.request

import pytest

from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.kube_pod import ControlPlaneAddresses
from sailmesh.testing.waiting import await_for, random_loopback_block
from tests.e2e.kube_support import (
    control_plane,
    kubectl,
    module_cluster,
    running_node,
    short_dir,
    wait_service_account,
)

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(module_cluster)
NS = "kt-inj"


def injected_pod(name: str, app: str, image: str, port: int | None) -> str:
    ports = f"\n    ports: [{{containerPort: {port}, name: http}}]" if port else ""
    env = "".join(f"""
    - name: {var}
      valueFrom: {{fieldRef: {{fieldPath: {path}}}}}""" for var, path in (
        ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("INSTANCE_IP", "status.podIP"),
        ("SERVICE_ACCOUNT", "spec.serviceAccountName")))
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}, labels: {{app: {app}, security.istio.io/tlsMode: istio}}}}
spec:
  serviceAccountName: {app}
  containers:
  - name: {app}
    image: {image}{ports}
  initContainers:
  - name: istio-init
    image: sailmesh/sailmesh:test
    args: [istio-iptables, -p, "15001", -z, "15006", -u, "1337", -m, REDIRECT, -i, "*", -b, "*"]
  - name: istio-proxy
    image: sailmesh/sailmesh:test
    restartPolicy: Always
    command: [sailmesh, agent, --type, sidecar, --ip, $(INSTANCE_IP), --name, $(POD_NAME), --namespace,
              $(POD_NAMESPACE), --service-account, $(SERVICE_ACCOUNT), --labels,
              "app={app},security.istio.io/tlsMode=istio", --xds-address, "istiod.istio-system.svc:15012",
              --xds-tls, --ca-root, /var/run/secrets/istio/root-cert.pem, --token-file,
              /var/run/secrets/tokens/istio-token, --state-dir, /etc/istio/proxy]
    env:{env}
    readinessProbe:
      httpGet: {{path: /healthz/ready, port: 15021}}
    volumeMounts:
    - {{name: istiod-ca-cert, mountPath: /var/run/secrets/istio}}
    - {{name: istio-envoy, mountPath: /etc/istio/proxy}}
    - {{name: istio-token, mountPath: /var/run/secrets/tokens}}
  volumes:
  - name: istio-envoy
    emptyDir: {{medium: Memory}}
  - name: istio-token
    projected:
      sources:
      - serviceAccountToken: {{audience: istio-ca, expirationSeconds: 43200, path: istio-token}}
  - name: istiod-ca-cert
    configMap: {{name: istio-ca-root-cert}}
"""


APPS = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: httpbin, namespace: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: sleep, namespace: {NS}}}
---
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: {NS}}}
spec:
  selector: {{app: httpbin}}
  ports: [{{name: http, port: 8000, targetPort: 8080}}]
---
{injected_pod("httpbin-1", "httpbin", "docker.io/mccutchen/go-httpbin:v2.15.0", 8080)}
---
{injected_pod("sleep-1", "sleep", "curlimages/curl:8.16.0", None)}
"""


def through_proxy(proxy: str, url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    with opener.open(url, timeout=5) as resp:
        return int(resp.status), resp.read().decode()


@pytest.mark.timeout(900)  # a cluster start plus several meshed processes on a loaded 2-core machine
async def test_injected_pods_get_certificates_with_their_service_account_tokens_and_talk_mtls(
        kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    # loopback pod addresses: the agent binds its admin and health endpoints on the pod address and accepts only
    # loopback there (secure by default), so injected pods here cannot use 198.18.0.0/15 (nor get EndpointSlices)
    block = random_loopback_block()
    for ns in ("istio-system", NS):
        await kubectl(kube, "create", "namespace", ns, check=False)
    await wait_service_account(kube, NS)
    with short_dir("kn-") as short:  # the agents' SDS sockets: Unix paths stay short
        async with asyncio.timeout(360):  # a hang fails with the awaiting frame in its traceback, not pytest's kill
            await run_pods(kube, tmp_path, block, short)


async def run_pods(kube: KubeCluster, tmp_path: pathlib.Path, block: str, short: pathlib.Path) -> None:
    async with control_plane(kube, tmp_path / "cp", leader_lease_s=3.0, webhook_port=0) as cp, \
            running_node(kube, "node-inj", block, short) as node:
        node.control_plane = ControlPlaneAddresses(f"127.0.0.1:{cp.opts.xds_tls_port}", f"127.0.0.1:{cp.opts.ca_port}")
        await kubectl(kube, "apply", "-f", "-", input=APPS)

        async def both_ready() -> bool:
            got = json.loads(await kubectl(kube, "get", "pods", "-n", NS, "-o", "json"))
            ready = [p for p in got["items"] if {c["type"]: c["status"] for c in p["status"].get(
                "conditions") or ()}.get("Ready") == "True"]
            return len(ready) == 2

        await await_for(both_ready, timeout=120, interval=0.5, what="both injected pods Ready (agent /healthz/ready)")
        assert cp.identity is not None and cp.identity.certificates.token_verifier is not None
        assert cp.identity.certificates.token_verifier.reviews >= 2  # type: ignore[attr-defined]
        ips = {k[1]: r.ip for k, r in node.pods.items()}
        # the test talks to the sleep pod's sidecar as its app does (HTTP_PROXY): sidecar -> mTLS -> sidecar -> app
        status, body = await await_for(lambda: asyncio.to_thread(
            through_proxy, f"http://{ips['sleep-1']}:15001", f"http://httpbin.{NS}:8000/headers"),
            timeout=60, what="httpbin through both sidecars")
        assert status == 200
        xfcc = json.loads(body)["headers"].get("X-Forwarded-Client-Cert", "")
        xfcc = " ".join(xfcc) if isinstance(xfcc, list) else str(xfcc)
        # Istio's XFCC from the server sidecar: both SPIFFE IDs (each certificate came through TokenReview)
        assert f"By=spiffe://cluster.local/ns/{NS}/sa/httpbin;" in xfcc
        assert f"URI=spiffe://cluster.local/ns/{NS}/sa/sleep" in xfcc
