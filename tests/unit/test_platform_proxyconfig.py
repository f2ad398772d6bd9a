"""ProxyConfig `concurrency` for a starting proxy, as Istio's EffectiveProxyConfig picks it (workload selector >
namespace > root namespace, the oldest resource of each level), and what stays "accepted, not enforced"."""

from __future__ import annotations

import os
from typing import Any

from sailmesh.generate import enforcement
from sailmesh.platform.proxyconfig import concurrency
from tests.unit.test_generate_support import resources

ROOT = "istio-system"


def pc(name: str, ns: str, value: int, selector: dict[str, str] | None = None,
       created: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
    spec: dict[str, Any] = {"concurrency": value}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "ProxyConfig", "spec": spec,
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created}}


def test_workload_over_namespace_over_root_namespace() -> None:
    """Istio's EffectiveProxyConfig: mergeWithPrecedence(workload, namespace, root namespace)."""
    docs = [pc("mesh", ROOT, 1), pc("ns", "default", 3), pc("web", "default", 4, {"app": "web"})]
    assert concurrency(docs, "default", {"app": "web"}, ROOT) == 4
    assert concurrency(docs, "default", {"app": "client"}, ROOT) == 3
    assert concurrency(docs, "other", {"app": "web"}, ROOT) == 1  # a selector binds its own namespace only
    assert concurrency(docs, ROOT, {"istio": "ingressgateway"}, ROOT) == 1
    assert concurrency([], "default", {}, ROOT) is None  # none: the platform's default
    # a root-namespace ProxyConfig with a selector binds only that namespace's workloads
    assert concurrency([pc("gw", ROOT, 5, {"istio": "ingressgateway"})], "default", {"istio": "ingressgateway"},
                       ROOT) is None


def test_the_oldest_of_a_level_wins_and_zero_means_every_core() -> None:
    """Istio sorts ProxyConfigs by creation time and takes each level's first match; concurrency 0 is "all cores"
    (Envoy's own 0 would run one worker)."""
    docs = [pc("b", "default", 3, created="2024-02-01T00:00:00Z"),
            pc("a", "default", 2, created="2024-03-01T00:00:00Z")]
    assert concurrency(docs, "default", {}, ROOT) == 3
    assert concurrency([pc("all", "default", 0)], "default", {}, ROOT) == (os.cpu_count() or 1)


def test_what_is_not_applied_is_reported() -> None:
    """concurrency is applied by the embedded platform (said, because the injection webhook does not);
    environmentVariables and image are not applied."""
    (r,) = resources("apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: p, namespace: "
                     "default}\nspec:\n  concurrency: 2\n  environmentVariables: {A: b}\n  image: {imageType: debug}\n")
    (note,) = enforcement.not_enforced(r)
    assert note.startswith("ProxyConfig default/p: accepted, not enforced: spec.concurrency (applied when a proxy")
    assert note.endswith("spec.environmentVariables, spec.image")
    (selector_only,) = resources("apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: q, "
                                 "namespace: default}\nspec:\n  selector: {matchLabels: {app: web}}\n")
    assert enforcement.not_enforced(selector_only) == []
