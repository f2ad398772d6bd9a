"""`sailmesh install` / `manifest generate`: profiles, Istio's names and ports, CRDs equal to Istio's."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml

from sailmesh.api import meshconfig
from sailmesh.cli.install import RESOURCES, resource_of
from sailmesh.install.crds import istio_crds
from sailmesh.install.manifests import Values, generate


def _names(objs: list[dict[str, Any]], kind: str) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs if o["kind"] == kind)


def test_profiles_are_istios_minimal_default_demo() -> None:
    minimal = generate(Values.for_profile("minimal"))
    default = generate(Values.for_profile("default"))
    demo = generate(Values.for_profile("demo"))
    assert _names(minimal, "Deployment") == ["istiod"]
    assert _names(default, "Deployment") == ["istio-ingressgateway", "istiod"]
    assert _names(demo, "Deployment") == ["istio-egressgateway", "istio-ingressgateway", "istiod"]
    for objs in (minimal, default, demo):
        assert _names(objs, "ValidatingWebhookConfiguration") == ["istio-validator-istio-system"]
        assert _names(objs, "MutatingWebhookConfiguration") == ["istio-sidecar-injector"]
        assert len(_names(objs, "CustomResourceDefinition")) == 14
        # every object is of a kind the installer knows where to apply
        assert all((o["apiVersion"], o["kind"]) in RESOURCES for o in objs)
    mesh = yaml.safe_load(next(o for o in demo if o["kind"] == "ConfigMap")["data"]["mesh"])
    assert mesh["accessLogFile"] == "/dev/stdout"  # demo: access logs on, as Istio's demo profile
    with pytest.raises(ValueError, match="unknown profile"):
        Values.for_profile("ambient")


def test_istiod_service_has_istiods_ports() -> None:
    svc = next(o for o in generate(Values()) if o["kind"] == "Service" and o["metadata"]["name"] == "istiod")
    ports = {p["name"]: (p["port"], p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]}
    assert ports == {"grpc-xds": (15010, 15010), "https-dns": (15012, 15012), "grpc-ca": (15013, 15013),
                     "https-webhook": (443, 15017), "http-monitoring": (15014, 15014)}


def test_webhooks_call_the_service_or_the_given_url_and_validation_starts_ignored() -> None:
    objs = generate(Values())
    v = next(o for o in objs if o["kind"] == "ValidatingWebhookConfiguration")
    hook = v["webhooks"][0]
    assert hook["name"] == "validation.istio.io"
    assert hook["clientConfig"] == {"service": {"name": "istiod", "namespace": "istio-system", "path": "/validate",
                                                "port": 443}}
    assert hook["failurePolicy"] == "Ignore"  # the control plane arms it (Fail) once its caBundle is in
    url = generate(Values(webhook_url="https://127.0.0.1:15017/"))
    m = next(o for o in url if o["kind"] == "MutatingWebhookConfiguration")
    assert {h["clientConfig"]["url"] for h in m["webhooks"]} == {"https://127.0.0.1:15017/inject"}
    assert [h["name"] for h in m["webhooks"]] == [
        "rev.namespace.sidecar-injector.istio.io", "rev.object.sidecar-injector.istio.io",
        "namespace.sidecar-injector.istio.io", "object.sidecar-injector.istio.io"]


def test_resource_paths() -> None:
    res, ns, name = resource_of({"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": {"name": "istiod", "namespace": "istio-system"}})
    assert res.path(ns, name) == "/apis/apps/v1/namespaces/istio-system/deployments/istiod"
    res, ns, name = resource_of({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
    assert res.path(ns, name) == "/api/v1/namespaces/istio-system"


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def test_generated_crds_are_istios_but_for_descriptions(conformance: pathlib.Path) -> None:
    """Names, scope, versions (served, storage), schemas, subresources and printer columns equal Istio's
    crd-all.gen.yaml with descriptions removed (Istio's file is read by path, never copied)."""
    text = (conformance / "crds" / "crd-all.gen.yaml").read_text()
    istio = {d["metadata"]["name"]: d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d}
    ours = {c["metadata"]["name"]: c for c in istio_crds()}
    # Istio's file also has TrafficExtension, which the kind table does not serve (yet)
    assert set(ours) == set(istio) - {"trafficextensions.extensions.istio.io"}
    for name, crd in ours.items():
        theirs = istio[name]
        assert crd["spec"]["names"] == theirs["spec"]["names"], name
        assert crd["spec"]["scope"] == theirs["spec"]["scope"], name
        want = {v["name"]: _strip(v) for v in theirs["spec"]["versions"]}
        got = {v["name"]: _strip(v) for v in crd["spec"]["versions"]}
        assert got == want, name


def test_manifest_generate_prints_the_install(tmp_path: pathlib.Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sailmesh", "manifest", "generate", "--profile", "minimal"],
                         capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.load_all(out, Loader=yaml.CSafeLoader) if d]
    assert docs == generate(Values.for_profile("minimal"))


def test_set_pilot_env_adds_the_control_planes_environment() -> None:
    """istioctl's `--set values.pilot.env.NAME=VALUE` (how Istio's docs switch on PILOT_ENABLE_STATUS and friends)
    adds the variable to istiod's container, and `values.global.istiod.enableAnalysis` PILOT_ENABLE_ANALYSIS (Istio's
    chart does the same: its docs' install line for status works unchanged); any other value path is refused."""
    out = subprocess.run([sys.executable, "-m", "sailmesh", "manifest", "generate", "--profile", "minimal",
                          "--set", "values.pilot.env.PILOT_ENABLE_STATUS=true",
                          "--set", "values.global.istiod.enableAnalysis=true"],
                         capture_output=True, text=True, check=True).stdout
    istiod = next(d for d in yaml.load_all(out, Loader=yaml.CSafeLoader) if d and d["kind"] == "Deployment")
    env = istiod["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[2:] == [{"name": "PILOT_ENABLE_ANALYSIS", "value": "true"},
                       {"name": "PILOT_ENABLE_STATUS", "value": "true"}]
    for bad, says in (("values.global.hub=x", "only values.pilot.env.NAME and"),
                      ("values.pilot.env.1X=y", "not an environment variable name"),
                      ("values.pilot.env.X", "PATH=VALUE")):
        done = subprocess.run([sys.executable, "-m", "sailmesh", "manifest", "generate", "--set", bad],
                              capture_output=True, text=True)
        assert done.returncode == 2 and says in done.stderr and not done.stdout, (bad, done.stderr)


@pytest.mark.parametrize("profile", ["minimal", "default", "demo"])
def test_the_installed_mesh_config_has_nothing_the_control_plane_would_not_act_on(profile: str) -> None:
    cm = next(o for o in generate(Values.for_profile(profile)) if o["kind"] == "ConfigMap")
    assert meshconfig.from_mapping(yaml.safe_load(cm["data"]["mesh"])).unmodelled == ()
