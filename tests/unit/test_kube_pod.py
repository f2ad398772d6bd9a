"""The test node's pod translation: Kubernetes' $(VAR) expansion and downward API, mount paths into the pod's
folders, and an injected pod's explicit capture (app on a free port, --app-ports, HTTP_PROXY, control plane)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from sailmesh.testing.kube_node import container_command
from sailmesh.testing.kube_pod import ControlPlaneAddresses, Volumes, container_env, expand, plan_pod

POD: dict[str, Any] = {
    "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {
        "serviceAccountName": "web",
        "containers": [{"name": "app", "image": "docker.io/mccutchen/go-httpbin:v2.15.0",
                        "ports": [{"containerPort": 8080, "name": "http"}]}],
        "initContainers": [
            {"name": "istio-init", "image": "x", "args": ["istio-iptables", "-p", "15001"]},
            {"name": "istio-proxy", "image": "x", "restartPolicy": "Always",
             "command": ["sailmesh", "agent", "--ip", "$(INSTANCE_IP)", "--name", "$(POD_NAME)", "--xds-address",
                         "istiod.istio-system.svc:15012", "--state-dir", "/etc/istio/proxy"],
             "env": [{"name": "INSTANCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                     {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                     {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                     {"name": "GREETING", "value": "hi $(POD_NAME) $(UNKNOWN)"}],
             "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
             "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}]}],
        "volumes": [{"name": "istio-envoy", "emptyDir": {}}],
    },
}


def test_env_from_the_downward_api_and_var_expansion() -> None:
    env = container_env(POD, POD["spec"]["initContainers"][1], "127.9.9.2")
    assert env == {"INSTANCE_IP": "127.9.9.2", "POD_NAME": "web-1", "APP": "web",
                   "GREETING": "hi web-1 $(UNKNOWN)"}  # an unknown $(VAR) stays as written, as in Kubernetes
    assert expand("--ip=$(INSTANCE_IP)", env) == "--ip=127.9.9.2"


def test_mount_paths_point_into_the_pods_folders(tmp_path: Path) -> None:
    vols = Volumes(None, POD, tmp_path)  # type: ignore[arg-type]
    proxy = POD["spec"]["initContainers"][1]
    assert vols.rewrite(proxy, "/etc/istio/proxy") == str(tmp_path / "istio-envoy")
    assert vols.rewrite(proxy, "/etc/istio/proxy/sds.sock") == str(tmp_path / "istio-envoy" / "sds.sock")
    assert vols.rewrite(proxy, "/etc/istio/proxyless") == "/etc/istio/proxyless"  # a prefix, not a path


async def test_an_injected_pod_gets_explicit_capture_and_the_tests_control_plane(tmp_path: Path) -> None:
    cp = ControlPlaneAddresses("127.0.0.1:4000", "127.0.0.1:4001")
    plan = await plan_pod(None, POD, "127.9.9.2", tmp_path, container_command, cp)  # type: ignore[arg-type]
    assert plan.skipped == ["istio-init"] and not plan.missing
    assert [c.name for c in plan.containers] == ["istio-proxy", "app"]  # the native sidecar first
    proxy, app = plan.containers
    assert proxy.command[:4] == [sys.executable, "-m", "sailmesh", "agent"]
    args = proxy.command
    app_port = int(app.env["PORT"])
    assert args[args.index("--app-ports") + 1] == f"8080:{app_port}" and app_port != 8080
    assert args[args.index("--ca-address") + 1] == "127.0.0.1:4001"
    assert args[args.index("--xds-address") + 1] == "127.0.0.1:4000"
    assert args[args.index("--ip") + 1] == "127.9.9.2" and args[args.index("--name") + 1] == "web-1"
    assert args[args.index("--state-dir") + 1] == str(tmp_path / "volumes" / "istio-envoy")
    assert (tmp_path / "volumes" / "istio-envoy").stat().st_mode & 0o777 == 0o700
    assert app.env["HTTP_PROXY"] == "http://127.9.9.2:15001" and app.env["HOST"] == "127.9.9.2"
    assert plan.readiness == ["http://127.9.9.2:15021/healthz/ready"]


async def test_an_uncaptured_injected_pod_declares_no_interception_mode(tmp_path: Path) -> None:
    """The injector's ISTIO_META_INTERCEPTION_MODE=REDIRECT says istio-init captures the pod; the test node skips
    istio-init, so its agent must not declare it (it would serve inbound on 15006, which nothing redirects to)."""
    pod = copy.deepcopy(POD)
    pod["spec"]["initContainers"][1]["env"].append({"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"})
    plan = await plan_pod(None, pod, "127.9.9.2", tmp_path, container_command, None)  # type: ignore[arg-type]
    assert plan.skipped == ["istio-init"]
    assert "ISTIO_META_INTERCEPTION_MODE" not in plan.containers[0].env
