"""Sidecar injection (webhook/inject.py) and offline kube-inject: Istio's rules, and golden output."""

from __future__ import annotations

import copy
import json
import os
import pathlib
from typing import Any

import pytest
import yaml

from sailmesh.install.manifests import Values, injector_webhooks
from sailmesh.webhook.inject import (
    InjectionConfig,
    inject_pod,
    injection_required,
    iptables_args,
    json_patch,
    namespace_selects,
    not_acted_on,
    workload_name,
)
from sailmesh.webhook.kubeinject import inject_text

GOLDEN = pathlib.Path(__file__).parent / "golden" / "kube_inject"
CFG = InjectionConfig(image="sailmesh/sailmesh:test")


def pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None, **spec: Any
        ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web-1", "namespace": "default", "labels": {"app": "web", **(labels or {})}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "web", "image": "httpbin", "ports": [{"name": "http",
                                                                                   "containerPort": 8080}]}],
                     **spec}}


# -- which pods: Istio's injectRequired and the webhook selectors -------------------------------------------------

def test_the_injector_skips_host_network_ignored_namespaces_injected_pods_and_opt_outs() -> None:
    assert injection_required(pod(), "default") == (True, "policy enabled")
    assert not injection_required(pod(hostNetwork=True), "default")[0]
    assert not injection_required(pod(), "kube-system")[0]
    assert not injection_required(inject_pod(pod(), CFG), "default")[0]  # never twice
    # Istio parses the value as a bool: false/no/off/n say no; the label wins over the deprecated annotation
    for no in ("false", "False", "no", "off", "n"):
        assert not injection_required(pod(labels={"sidecar.istio.io/inject": no}), "default")[0]
    assert not injection_required(pod(annotations={"sidecar.istio.io/inject": "false"}), "default")[0]
    assert injection_required(pod(labels={"sidecar.istio.io/inject": "true"},
                                  annotations={"sidecar.istio.io/inject": "false"}), "default")[0]


# Istio's docs (Installing the sidecar > Controlling the injection policy): the namespace's istio-injection
# label wins over istio.io/rev; a pod's sidecar.istio.io/inject=false opts out of an enabled namespace; in a
# namespace with neither label, a pod opts in with sidecar.istio.io/inject=true or istio.io/rev=<revision>.
PRECEDENCE = [
    ({"istio-injection": "enabled"}, {}, True),
    ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"}, False),
    ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "true"}, True),
    ({"istio-injection": "disabled"}, {"sidecar.istio.io/inject": "true"}, False),
    ({"istio-injection": "disabled"}, {}, False),
    ({"istio-injection": "enabled", "istio.io/rev": "canary"}, {}, True),  # istio-injection takes precedence
    ({"istio-injection": "disabled", "istio.io/rev": "default"}, {}, False),
    ({"istio.io/rev": "default"}, {}, True),
    ({"istio.io/rev": "default"}, {"sidecar.istio.io/inject": "false"}, False),
    ({"istio.io/rev": "canary"}, {}, False),  # another revision's namespace
    ({}, {}, False),
    ({}, {"sidecar.istio.io/inject": "true"}, True),
    ({}, {"sidecar.istio.io/inject": "false"}, False),
    ({}, {"istio.io/rev": "default"}, True),
    ({}, {"istio.io/rev": "canary"}, False),
    ({}, {"istio.io/rev": "default", "sidecar.istio.io/inject": "false"}, False),
]


@pytest.mark.parametrize(("ns", "pod_labels", "injected"), PRECEDENCE)
def test_istios_injection_precedence(ns: dict[str, str], pod_labels: dict[str, str], injected: bool) -> None:
    assert namespace_selects(ns, pod_labels) is injected


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector's matchExpressions, evaluated as the API server does."""
    for e in selector.get("matchExpressions", ()):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@pytest.mark.parametrize(("ns", "pod_labels", "injected"), PRECEDENCE)
def test_the_installed_webhook_selectors_encode_the_same_precedence(ns: dict[str, str], pod_labels: dict[str, str],
                                                                     injected: bool) -> None:
    hooks = injector_webhooks(Values())
    called = any(_matches(h["namespaceSelector"], ns) and _matches(h["objectSelector"], pod_labels) for h in hooks)
    assert called is injected


# -- what is injected ---------------------------------------------------------------------------------------------

def test_iptables_arguments_are_istios_defaults() -> None:
    assert iptables_args({}, CFG) == ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                                      "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
                                      "--log_output_level=default:info"]


def test_iptables_arguments_honour_istios_traffic_annotations() -> None:
    args = iptables_args({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
                          "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
                          "traffic.sidecar.istio.io/includeInboundPorts": "9080,9090",
                          "traffic.sidecar.istio.io/excludeInboundPorts": "8081",
                          "traffic.sidecar.istio.io/excludeOutboundPorts": "3306"}, CFG)
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["-i"] == "10.0.0.0/8" and pairs["-x"] == "10.96.0.1/32" and pairs["-b"] == "9080,9090"
    # Istio's excludeInboundPort: the user's ports, then the status port
    assert pairs["-d"] == "15090,15021,8081,15020"
    assert pairs["-o"] == "3306"
    # a status port the user already excludes is not added twice
    again = iptables_args({"traffic.sidecar.istio.io/excludeInboundPorts": "15020,8081"}, CFG)
    assert again[again.index("-d") + 1] == "15090,15021,15020,8081"


def test_the_injected_pod_has_a_native_sidecar_with_istios_token_and_root() -> None:
    out = inject_pod(pod(), CFG)
    init = out["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["istio-init", "istio-proxy"]
    proxy = init[1]
    assert proxy["restartPolicy"] == "Always"  # native sidecar: jobs finish, the app starts after the proxy
    cmd = proxy["command"]
    assert cmd[:2] == ["sailmesh", "agent"] and "--xds-tls" in cmd
    assert cmd[cmd.index("--token-file") + 1] == "/var/run/secrets/tokens/istio-token"
    assert cmd[cmd.index("--ca-root") + 1] == "/var/run/secrets/istio/root-cert.pem"
    assert cmd[cmd.index("--xds-address") + 1] == "istiod.istio-system.svc:15012"
    vols = {v["name"]: v for v in out["spec"]["volumes"]}
    token = vols["istio-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}
    assert vols["istiod-ca-cert"]["configMap"]["name"] == "istio-ca-root-cert"
    assert proxy["securityContext"]["runAsUser"] == 1337
    meta = out["metadata"]
    assert meta["labels"]["security.istio.io/tlsMode"] == "istio"
    assert meta["labels"]["service.istio.io/canonical-name"] == "web"
    assert meta["labels"]["service.istio.io/canonical-revision"] == "latest"
    status = json.loads(meta["annotations"]["sidecar.istio.io/status"])
    assert status["initContainers"] == ["istio-init", "istio-proxy"] and status["containers"] is None
    assert meta["annotations"]["kubectl.kubernetes.io/default-container"] == "web"


def test_interception_mode_none_injects_no_istio_init() -> None:
    # Istio's sidecar template: `if ne (annotation ... sidecar.istio.io/interceptionMode ...) NONE` around istio-init
    out = inject_pod(pod(annotations={"sidecar.istio.io/interceptionMode": "NONE"}), CFG)
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["istio-proxy"]
    status = json.loads(out["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["initContainers"] == ["istio-proxy"]


def test_probes_are_rewritten_to_the_status_port_as_istio_does() -> None:
    p = pod()
    c = p["spec"]["containers"][0]
    c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": "http"}, "timeoutSeconds": 2, "periodSeconds": 5}
    c["livenessProbe"] = {"tcpSocket": {"port": 8080}}
    c["startupProbe"] = {"exec": {"command": ["true"]}}
    out = inject_pod(p, CFG)
    app = out["spec"]["containers"][0]
    assert app["readinessProbe"] == {"httpGet": {"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"},
                                     "timeoutSeconds": 2, "periodSeconds": 5}
    assert app["livenessProbe"]["httpGet"]["path"] == "/app-health/web/livez"
    assert app["startupProbe"] == {"exec": {"command": ["true"]}}  # exec probes are not rewritten
    env = {e["name"]: e.get("value") for e in out["spec"]["initContainers"][1]["env"]}
    probers = json.loads(env["ISTIO_KUBE_APP_PROBERS"])
    # the named port is resolved: the agent runs the original probe against the app
    assert probers == {"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080}, "timeoutSeconds": 2},
                       "/app-health/web/livez": {"tcpSocket": {"port": 8080}}}
    off = inject_pod(pod(annotations={"sidecar.istio.io/rewriteAppHTTPProbers": "false"}) | {
        "spec": copy.deepcopy(p["spec"])}, CFG)
    assert off["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == "http"


def test_workload_and_canonical_names_follow_the_pods_controller() -> None:
    p = pod(labels={"pod-template-hash": "5d7c9f", "app": "reviews", "version": "v2"})
    p["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "reviews-v2-5d7c9f", "controller": True}]
    assert workload_name(p) == "reviews-v2"
    labels = inject_pod(p, CFG)["metadata"]["labels"]
    assert (labels["service.istio.io/canonical-name"], labels["service.istio.io/canonical-revision"]) == (
        "reviews", "v2")


def _apply(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/replace/remove, enough to check the webhook's patches."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for key in parts[:-1]:
            parent = parent[int(key)] if isinstance(parent, list) else parent[key]
        if op["op"] == "remove":
            del parent[parts[-1]]
        else:
            parent[parts[-1]] = op["value"]
    return doc


def test_the_webhooks_json_patch_turns_the_pod_into_the_injected_pod() -> None:
    p = pod(annotations={"a/b~c": "1"})
    p["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    injected = inject_pod(p, CFG)
    ops = json_patch(p, injected)
    assert _apply(p, ops) == injected
    assert all(o["path"].startswith(("/metadata/", "/spec/")) for o in ops)


# -- kube-inject: golden files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.in.yaml")))
def test_kube_inject_golden(name: str) -> None:
    stem = name.removesuffix(".in")
    src = GOLDEN / f"{stem}.in.yaml"
    want = GOLDEN / f"{stem}.injected.yaml"
    got = inject_text(src.read_text(), CFG)
    if os.environ.get("SAILMESH_UPDATE_GOLDEN"):
        want.write_text(got)
    assert got == want.read_text()


def test_kube_inject_passes_other_kinds_through_and_skips_opted_out_templates() -> None:
    text = (GOLDEN / "bookinfo-mixed.in.yaml").read_text()
    docs = list(yaml.safe_load_all(inject_text(text, CFG)))
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["Service"] == next(d for d in yaml.safe_load_all(text) if d["kind"] == "Service")
    job = by_kind["Job"]["spec"]["template"]
    assert [c["name"] for c in job["spec"]["initContainers"]] == ["istio-init", "istio-proxy"]
    cron = by_kind["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]
    assert "initContainers" not in cron["spec"]  # sidecar.istio.io/inject: "false"


def test_istios_proxy_annotations_set_image_resources_and_log_level() -> None:
    out = inject_pod(pod(annotations={"sidecar.istio.io/proxyImage": "example/proxy:1",
                                      "sidecar.istio.io/proxyCPU": "50m", "sidecar.istio.io/proxyMemoryLimit": "256Mi",
                                      "sidecar.istio.io/logLevel": "debug"}), CFG)
    proxy = out["spec"]["initContainers"][1]
    assert proxy["image"] == "example/proxy:1"
    assert proxy["resources"]["requests"]["cpu"] == "50m" and proxy["resources"]["limits"]["memory"] == "256Mi"
    assert proxy["command"][-2:] == ["--log-level", "debug"]


def test_annotations_not_acted_on_are_said_not_dropped() -> None:
    p = pod(annotations={"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"})
    assert not_acted_on(p) == ["annotation proxy.istio.io/config is accepted, not acted on by sailmesh's injector"]
    warnings: list[str] = []
    inject_text(yaml.safe_dump(p), CFG, warnings=warnings)
    assert warnings == ["Pod default/web-1: annotation proxy.istio.io/config is accepted, not acted on by "
                        "sailmesh's injector"]


def test_kube_inject_of_istios_bookinfo_injects_every_deployment(conformance: pathlib.Path) -> None:
    text = (conformance / "bookinfo" / "platform-kube" / "bookinfo.yaml").read_text()
    before = [d for d in yaml.safe_load_all(text) if d]
    after = [d for d in yaml.safe_load_all(inject_text(text, CFG)) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in after] == [(d["kind"], d["metadata"]["name"]) for d in before]
    deployments = [d for d in after if d["kind"] == "Deployment"]
    assert len(deployments) == 6
    for d in deployments:
        tmpl = d["spec"]["template"]
        assert [c["name"] for c in tmpl["spec"]["initContainers"]] == ["istio-init", "istio-proxy"]
        assert tmpl["metadata"]["labels"]["service.istio.io/canonical-name"] == tmpl["metadata"]["labels"]["app"]
    assert [d for d in after if d["kind"] != "Deployment"] == [d for d in before if d["kind"] != "Deployment"]
