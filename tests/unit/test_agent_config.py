"""Agent config: flag parsing, validation, Envoy command line and the app's environment."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sailmesh.agent.admin import EnvoyAdmin
from sailmesh.agent.app import app_environment
from sailmesh.agent.bootstrap import build
from sailmesh.agent.config import AgentConfig, parse_address, parse_app_ports, parse_labels
from sailmesh.agent.envoy import EnvoyOptions, EnvoySupervisor
from sailmesh.cli import agent as cli
from sailmesh.errors import AgentError
from sailmesh.webhook.inject import InjectionConfig, proxy_container


def test_parse_labels() -> None:
    assert parse_labels("app=reviews, version=v1") == {"app": "reviews", "version": "v1"}
    assert parse_labels("") == {}
    with pytest.raises(AgentError):
        parse_labels("app")


def test_parse_app_ports() -> None:
    assert parse_app_ports("9080:41234,9090") == ((9080, 41234), (9090, 9090))
    with pytest.raises(AgentError):
        parse_app_ports("x:1")
    with pytest.raises(AgentError):
        parse_app_ports("70000:1")


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:15010", 1) == ("127.0.0.1", 15010)
    assert parse_address("istiod", 15012) == ("istiod", 15012)
    with pytest.raises(AgentError):
        parse_address("h:port", 1)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(AgentError):
        AgentConfig(ip="127.0.0.2", name="p", proxy_type="waypoint")
    with pytest.raises(AgentError):  # admin/health bind the pod ip: loopback only
        AgentConfig(ip="10.0.0.2", name="p")
    with pytest.raises(AgentError):
        AgentConfig(ip="127.0.0.2", name="p", drain_seconds=-1)


def test_cli_flags_to_config() -> None:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(
        "--ip 127.0.3.4 --name productpage-v1-0 --labels app=productpage,version=v1 --app-ports 9080:41000 "
        "--xds-address 127.0.0.1:25010 --delta --drain-seconds 2 -- python -m app".split()
    )
    cfg = cli.config_from_args(args)
    assert (cfg.ip, cfg.name, cfg.namespace, cfg.proxy_type) == ("127.0.3.4", "productpage-v1-0", "default", "sidecar")
    assert cfg.labels == {"app": "productpage", "version": "v1"}
    assert cfg.app_ports == ((9080, 41000),)
    assert (cfg.xds_host, cfg.xds_port, cfg.delta, cfg.drain_seconds) == ("127.0.0.1", 25010, True, 2.0)
    assert args.command[-3:] == ["python", "-m", "app"]


def test_envoy_command_line(tmp_path: Path) -> None:
    sup = EnvoySupervisor(
        EnvoyOptions(bootstrap_path=tmp_path / "b.json", drain_seconds=2.5, binary="/bin/envoy"),
        EnvoyAdmin("http://127.0.0.1:1"),
    )
    cmd = sup.command()
    assert cmd[:3] == ["/bin/envoy", "-c", str(tmp_path / "b.json")]
    assert "--disable-hot-restart" in cmd
    assert cmd[cmd.index("--drain-time-s") + 1] == "3"  # whole seconds, rounded up
    assert cmd[cmd.index("--drain-strategy") + 1] == "immediate"
    assert cmd[cmd.index("--concurrency") + 1] == "2"


def test_app_environment() -> None:
    env = app_environment(AgentConfig(ip="127.0.5.6", name="r-0", app_ports=((9080, 41234),)))
    assert env["HOST"] == "127.0.5.6" and env["PORT"] == "41234"
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.5.6:15001"
    router = app_environment(AgentConfig(ip="127.0.5.6", name="gw-0", proxy_type="router"))
    assert "HTTP_PROXY" not in router


def test_a_pod_on_a_network_may_have_a_non_loopback_ip_when_it_declares_its_interception_mode() -> None:
    """An injected agent gets the pod's real address (`--ip $(INSTANCE_IP)`, status.podIP) and the injector's
    ISTIO_META_INTERCEPTION_MODE: any declared mode (REDIRECT, TPROXY, Istio's NONE) is a pod on a network and
    may use it; the embedded mesh (no mode) keeps the loopback rule. Envoy's admin then binds 127.0.0.1 (Istio's
    localhost admin), never the pod address."""
    for mode in ("REDIRECT", "TPROXY", "NONE"):
        cfg = AgentConfig(ip="10.244.1.5", name="reviews-v1-0", interception_mode=mode)
        assert cfg.node_id == "sidecar~10.244.1.5~reviews-v1-0.default~default.svc.cluster.local"
        assert (cfg.admin_host, cfg.admin_url) == ("127.0.0.1", "http://127.0.0.1:15000")
    with pytest.raises(AgentError, match="loopback"):
        AgentConfig(ip="10.244.1.5", name="reviews-v1-0")
    embedded = AgentConfig(ip="127.0.1.3", name="reviews-v1-0")
    assert (embedded.admin_host, embedded.admin_url) == ("127.0.1.3", "http://127.0.1.3:15000")


def test_the_injected_agent_command_builds_a_config_on_the_pod_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    """The injector's own container command and env, with the values the kubelet would fill in, give a config
    (before this, the agent refused the pod ip and an injected pod's proxy never started)."""
    pod = {"metadata": {"name": "reviews-v1-0", "namespace": "default"},
           "spec": {"containers": [{"name": "reviews", "ports": [{"containerPort": 9080}]}]}}
    container = proxy_container(pod, {"app": "reviews"}, {}, "reviews-v1", InjectionConfig())
    values = {"INSTANCE_IP": "10.244.1.5", "POD_NAME": "reviews-v1-0", "POD_NAMESPACE": "default",
              "SERVICE_ACCOUNT": "bookinfo-reviews"}
    for e in container["env"]:
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    argv = [values.get(a[2:-1], a) if a.startswith("$(") else a for a in container["command"][2:]]
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    cfg = cli.config_from_args(p.parse_args(argv))
    assert (cfg.ip, cfg.interception_mode) == ("10.244.1.5", "REDIRECT")
    boot = build(cfg)
    assert boot["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    stats = next(li for li in boot["static_resources"]["listeners"] if li["name"] == "prometheus_stats")
    assert stats["address"]["socket_address"]["address"] == "10.244.1.5"  # Prometheus scrapes the pod's 15090
