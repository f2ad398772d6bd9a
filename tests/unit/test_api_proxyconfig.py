"""ProxyConfig `concurrency` for a starting proxy, as Istio's EffectiveProxyConfig picks it (workload selector > the
pod's proxy.istio.io/config > namespace > root namespace, the oldest resource of each level): what the embedded
platform passes to an agent and the injection webhook writes into a pod; and what stays "accepted, not enforced"."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sailmesh.api.meshconfig import from_mapping
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.proxyconfig import concurrency
from sailmesh.api.resource import Resource
from sailmesh.errors import ModelError
from sailmesh.generate import enforcement
from sailmesh.store.base import sort_by_creation
from sailmesh.webhook.inject import InjectionConfig, inject_pod, not_acted_on
from tests.unit.test_generate_support import resources
from tests.unit.test_webhook_inject import pod

ROOT = "istio-system"


def pc(name: str, ns: str, value: int, selector: dict[str, str] | None = None,
       created: str = "2024-01-01T00:00:00Z") -> Resource:
    spec: dict[str, Any] = {"concurrency": value}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    return resource_from_dict({"apiVersion": "networking.istio.io/v1beta1", "kind": "ProxyConfig", "spec": spec,
                               "metadata": {"name": name, "namespace": ns, "creationTimestamp": created}})


def test_workload_over_annotation_over_namespace_over_root_namespace() -> None:
    """Istio's EffectiveProxyConfig: mergeWithPrecedence(workload, annotation, namespace, root namespace)."""
    docs = [pc("mesh", ROOT, 1), pc("ns", "default", 3), pc("web", "default", 4, {"app": "web"})]
    assert concurrency(docs, "default", {"app": "web"}, ROOT) == 4
    assert concurrency(docs, "default", {"app": "web"}, ROOT, {"concurrency": 6}) == 4  # the workload's wins
    assert concurrency(docs, "default", {"app": "client"}, ROOT, {"concurrency": 6}) == 6  # over the namespace's
    assert concurrency(docs, "default", {"app": "client"}, ROOT) == 3
    assert concurrency(docs, "other", {"app": "web"}, ROOT) == 1  # a selector binds its own namespace only
    assert concurrency(docs, ROOT, {"istio": "ingressgateway"}, ROOT) == 1
    assert concurrency([], "default", {}, ROOT) is None  # none: the agent's default
    # a root-namespace ProxyConfig with a selector binds only that namespace's workloads
    assert concurrency([pc("gw", ROOT, 5, {"istio": "ingressgateway"})], "default", {"istio": "ingressgateway"},
                       ROOT) is None


def test_the_oldest_of_a_level_wins_and_zero_means_every_core() -> None:
    """Istio sorts ProxyConfigs by creation time and takes each level's first match; concurrency 0 is "all cores"
    (Envoy's own 0 would run one worker)."""
    docs = sort_by_creation([pc("b", "default", 3, created="2024-02-01T00:00:00Z"),
                             pc("a", "default", 2, created="2024-03-01T00:00:00Z")])
    assert concurrency(docs, "default", {}, ROOT) == 3
    assert concurrency([pc("all", "default", 0)], "default", {}, ROOT) == (os.cpu_count() or 1)


def test_the_injected_agent_gets_the_pods_concurrency() -> None:
    """The webhook applies EffectiveProxyConfig as the pod is made: the agent's command carries `--concurrency`
    (ProxyConfigs from the control plane's config, the pod's own annotation between namespace and workload); the
    annotation's concurrency is no longer reported as not acted on."""
    cfg = InjectionConfig(image="x", proxy_configs=(pc("mesh", ROOT, 1), pc("web", "default", 3, {"app": "web"})))

    def command(p: dict[str, Any], c: InjectionConfig = cfg, namespace: str = "") -> list[str]:
        return list(inject_pod(p, c, namespace=namespace)["spec"]["initContainers"][1]["command"])

    web = command(pod())
    assert web[web.index("--concurrency") + 1] == "3"
    other = command(pod(labels={"app": "other"}))
    assert other[other.index("--concurrency") + 1] == "1"
    note = {"proxy.istio.io/config": "concurrency: 5\n"}
    annotated = command(pod(labels={"app": "other"}, annotations=note))
    assert annotated[annotated.index("--concurrency") + 1] == "5"
    assert not_acted_on(pod(annotations=note)) == []
    assert "--concurrency" not in command(pod(), InjectionConfig(image="x"))  # nothing says: the agent's default
    unnamed = pod()
    del unnamed["metadata"]["namespace"]  # an admission request's pod: the request names the namespace
    assert command(unnamed, namespace="prod").count("--concurrency") == 1


def test_what_is_not_applied_is_reported() -> None:
    """environmentVariables and image are not applied (concurrency is: no note)."""
    (r,) = resources("apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: p, namespace: "
                     "default}\nspec:\n  concurrency: 2\n  environmentVariables: {A: b}\n  image: {imageType: debug}\n")
    assert enforcement.not_enforced(r) == [
        "ProxyConfig default/p: accepted, not enforced: spec.environmentVariables, spec.image"]
    (only,) = resources("apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: q, "
                        "namespace: default}\nspec:\n  selector: {matchLabels: {app: web}}\n  concurrency: 2\n")
    assert enforcement.not_enforced(only) == []


def test_the_mesh_configs_default_is_the_lowest_level() -> None:
    """Istio's ProxyConfig reference (istio.io, networking/proxy-config: "If a ProxyConfig CR is defined that matches a
    workload it will merge with its meshConfig.defaultConfig if that exists", each more specific level winning for
    the fields it sets) and pilot/pkg/model/proxy_config.go EffectiveProxyConfig, which merges, highest first: the
    workload-selecting ProxyConfig, the pod's proxy.istio.io/config, the namespace's ProxyConfig, the root
    namespace's, then meshConfig.defaultConfig, then Istio's DefaultProxyConfig (here the agent's own default)."""
    docs = [pc("mesh", ROOT, 1), pc("ns", "default", 3), pc("web", "default", 4, {"app": "web"})]
    assert concurrency([], "default", {}, ROOT, mesh_concurrency=5) == 5  # nothing else: the mesh config's
    assert concurrency([pc("ns", "default", 3)], "other", {}, ROOT, mesh_concurrency=5) == 5  # not that namespace
    assert concurrency(docs[:1], "default", {}, ROOT, mesh_concurrency=5) == 1  # the root namespace's wins
    assert concurrency(docs[1:2], "default", {}, ROOT, mesh_concurrency=5) == 3  # the namespace's wins
    assert concurrency(docs, "default", {"app": "web"}, ROOT, mesh_concurrency=5) == 4  # the workload's wins
    assert concurrency([], "default", {}, ROOT, {"concurrency": 6}, mesh_concurrency=5) == 6  # the annotation's
    assert concurrency([], "default", {}, ROOT, mesh_concurrency=0) == (os.cpu_count() or 1)  # 0: every core
    assert concurrency([], "default", {}, ROOT, mesh_concurrency=None) is None


def test_the_injector_follows_the_mesh_configs_default() -> None:
    """The webhook's EffectiveProxyConfig starts from meshConfig.defaultConfig.concurrency (same rule as above)."""
    def command(c: InjectionConfig) -> list[str]:
        return list(inject_pod(pod(), c)["spec"]["initContainers"][1]["command"])

    meshwide = command(InjectionConfig(image="x", mesh_concurrency=5))
    assert meshwide[meshwide.index("--concurrency") + 1] == "5"
    over = command(InjectionConfig(image="x", mesh_concurrency=5, proxy_configs=(pc("ns", "default", 3),)))
    assert over[over.index("--concurrency") + 1] == "3"


def test_mesh_config_default_concurrency_is_modelled_and_checked() -> None:
    """defaultConfig.concurrency is read (no longer "accepted, not enforced"); a negative count is refused."""
    mc = from_mapping({"defaultConfig": {"concurrency": 3}})
    assert mc.default_config.concurrency == 3 and mc.unmodelled == ()
    with pytest.raises(ModelError, match=r"defaultConfig\.concurrency"):
        from_mapping({"defaultConfig": {"concurrency": -1}})
