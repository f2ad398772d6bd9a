"""Injection with DNS capture (proxyMetadata ISTIO_META_DNS_CAPTURE) and TPROXY interception, as Istio's template."""

from __future__ import annotations

from typing import Any

from sailmesh.agent.config import AgentConfig
from sailmesh.cli.agent import add_arguments, config_from_args
from sailmesh.webhook.inject import InjectionConfig, inject_pod, not_acted_on
from tests.unit.test_webhook_inject import CFG, pod

DNS = {"proxy.istio.io/config": "proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n"}


def _containers(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in out["spec"]["initContainers"]}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env") or ()}


def test_dns_capture_from_the_pods_proxy_config_reaches_istio_init_and_the_agent() -> None:
    """Istio's template puts ProxyConfig.proxyMetadata into both containers' environment; istio-iptables reads
    ISTIO_META_DNS_CAPTURE from it (and here also gets --redirect-dns), pilot-agent starts its DNS proxy."""
    c = _containers(inject_pod(pod(annotations=DNS), CFG))
    assert "--redirect-dns" in c["istio-init"]["args"]
    assert _env(c["istio-init"])["ISTIO_META_DNS_CAPTURE"] == "true"
    assert _env(c["istio-proxy"])["ISTIO_META_DNS_CAPTURE"] == "true"
    assert not_acted_on(pod(annotations=DNS)) == []  # proxyMetadata alone is acted on: no warning
    both = {"proxy.istio.io/config": "proxyMetadata: {A: b}\nholdApplicationUntilProxyStarts: true\n"}
    assert not_acted_on(pod(annotations=both)) == [
        "proxyMetadata A is accepted, not acted on by sailmesh",
        "annotation proxy.istio.io/config is accepted, not acted on by sailmesh's injector (but its proxyMetadata)"]
    auto = InjectionConfig(proxy_metadata=(("ISTIO_META_DNS_AUTO_ALLOCATE", "true"), ("X_OTHER", "1")))
    assert not_acted_on(pod(annotations=DNS), auto) == [  # the mesh's metadata too (auto-allocation is acted on)
        "proxyMetadata X_OTHER is accepted, not acted on by sailmesh"]
    plain = _containers(inject_pod(pod(), CFG))
    assert "--redirect-dns" not in plain["istio-init"]["args"] and "env" not in plain["istio-init"]
    assert "ISTIO_META_DNS_CAPTURE" not in _env(plain["istio-proxy"])


def test_mesh_default_proxy_metadata_and_the_pods_override() -> None:
    mesh = InjectionConfig(image="x", proxy_metadata=(("ISTIO_META_DNS_CAPTURE", "true"),))
    assert "--redirect-dns" in _containers(inject_pod(pod(), mesh))["istio-init"]["args"]
    off = {"proxy.istio.io/config": "proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"false\"\n"}
    c = _containers(inject_pod(pod(annotations=off), mesh))  # the pod's key wins over the mesh's
    assert "--redirect-dns" not in c["istio-init"]["args"] and _env(c["istio-proxy"])["ISTIO_META_DNS_CAPTURE"] == \
        "false"


def test_tproxy_pod_gets_net_admin_and_its_mode_everywhere() -> None:
    """Istio's template for interceptionMode TPROXY: the proxy runs as root in group 1337 with NET_ADMIN (its
    transparent listeners), istio-init gets `-m TPROXY`, the agent ISTIO_META_INTERCEPTION_MODE=TPROXY."""
    c = _containers(inject_pod(pod(annotations={"sidecar.istio.io/interceptionMode": "TPROXY"}), CFG))
    args = c["istio-init"]["args"]
    assert args[args.index("-m") + 1] == "TPROXY"
    sc = c["istio-proxy"]["securityContext"]
    assert sc["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (0, 1337, False)
    assert _env(c["istio-proxy"])["ISTIO_META_INTERCEPTION_MODE"] == "TPROXY"
    redirect = _containers(inject_pod(pod(), CFG))["istio-proxy"]
    assert redirect["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert redirect["securityContext"]["runAsUser"] == 1337
    assert _env(redirect)["ISTIO_META_INTERCEPTION_MODE"] == "REDIRECT"


def test_the_agent_reads_the_injected_environment(monkeypatch) -> None:
    import argparse

    monkeypatch.setenv("ISTIO_META_DNS_CAPTURE", "true")
    monkeypatch.setenv("ISTIO_META_INTERCEPTION_MODE", "TPROXY")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg: AgentConfig = config_from_args(parser.parse_args(["--ip", "127.0.0.5", "--name", "web-1"]))
    assert cfg.dns_capture and cfg.dns_proxy_address == "127.0.0.1:15053" and cfg.interception_mode == "TPROXY"
