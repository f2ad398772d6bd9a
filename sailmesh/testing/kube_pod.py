"""How the test node (kube_node.py) turns a Pod into local processes: what a kubelet and the pod's network would do.

- environment: `value` with `$(VAR)` expansion, `valueFrom.fieldRef` (name, namespace, uid, labels, podIP,
  hostIP, serviceAccountName, nodeName), then `$(VAR)` in command and args, as Kubernetes expands them;
- volumes as folders under the pod's work directory: emptyDir, configMap, secret, downwardAPI (labels,
  annotations) and projected sources, including `serviceAccountToken` through the TokenRequest API with the
  volume's audience and lifetime, bound to the pod (written 0600: the agent insists). Paths under a container's
  mountPath in its command, args and env point into the folder instead (there is no mount namespace here);
- an injected pod (a container running `sailmesh agent`, a native sidecar or not) gets, instead of the iptables
  capture its `istio-init` container would install (skipped: no network namespace here, so the agent is given no
  ISTIO_META_INTERCEPTION_MODE: it is not captured), the embedded platform's explicit capture: the sidecar owns
  the container ports on the pod address and the app listens on a free port (`--app-ports containerPort:appPort`),
  the app's HTTP_PROXY is the sidecar's 15001, and the agent reaches the control plane at the test's addresses
  (`ControlPlaneAddresses`, the part cluster DNS and the istiod Service play in a cluster).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.processes import free_port

Obj = Mapping[str, Any]
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
CONFIGMAP_WAIT_S = 60.0  # a kubelet keeps the pod in ContainerCreating until the ConfigMap exists


@dataclass(frozen=True)
class ControlPlaneAddresses:
    """Where injected agents find the control plane: xDS over mTLS (15012's role) and the CA (15013's)."""

    xds: str
    ca: str


@dataclass
class Container:
    name: str
    command: list[str]
    env: dict[str, str]


@dataclass
class PodPlan:
    """What to start (native sidecars first), what cannot run, and the readiness URLs to poll."""

    containers: list[Container] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # images this node has no program for
    skipped: list[str] = field(default_factory=list)  # init containers not run (istio-init's iptables)
    readiness: list[str] = field(default_factory=list)


def is_agent(command: list[str]) -> bool:
    return command[:2] == ["sailmesh", "agent"]


def field_value(pod: Obj, path: str, ip: str) -> str:
    """A downward API fieldRef's value."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if found:
        return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
    return str({"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
                "metadata.uid": meta.get("uid"), "status.podIP": ip, "status.hostIP": "127.0.0.1",
                "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
                "spec.nodeName": spec.get("nodeName")}.get(path) or "")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion (an unknown variable stays as written)."""
    return VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def container_env(pod: Obj, container: Obj, ip: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in container.get("env") or ():
        if not isinstance(e, Mapping) or not e.get("name"):
            continue
        if "value" in e:
            env[str(e["name"])] = expand(str(e["value"]), env)
        elif isinstance((e.get("valueFrom") or {}).get("fieldRef"), Mapping):
            env[str(e["name"])] = field_value(pod, str(e["valueFrom"]["fieldRef"].get("fieldPath")), ip)
    return env


class Volumes:
    """The pod's volumes as folders; `rewrite` maps a container's mount paths into them."""

    def __init__(self, conn: KubeConnection, pod: Obj, folder: Path) -> None:
        self.conn = conn
        self.pod = pod
        self.folder = folder
        self.meta = pod.get("metadata") or {}
        self.ns = str(self.meta.get("namespace"))

    async def make(self) -> None:
        for vol in (self.pod.get("spec") or {}).get("volumes") or ():
            d = self.folder / str(vol.get("name"))
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)  # one user runs every container here: private (the agent insists for its sockets)
            if "configMap" in vol:
                await self._config_map(d, vol["configMap"])
            elif "secret" in vol:
                await self._secret(d, vol["secret"])
            elif "downwardAPI" in vol:
                self._downward(d, vol["downwardAPI"])
            projected = vol.get("projected") or {}
            for src in projected.get("sources") or ():
                if "serviceAccountToken" in src:
                    # the kubelet's mode: the volume's defaultMode, 0644 unless set (a pod whose containers run as
                    # different users, as an injected pod's do, gets no 0600 token)
                    await self._token(d, src["serviceAccountToken"], int(projected.get("defaultMode") or 0o644))
                elif "configMap" in src:
                    await self._config_map(d, src["configMap"])
                elif "downwardAPI" in src:
                    self._downward(d, src["downwardAPI"])

    async def _config_map(self, d: Path, ref: Obj) -> None:
        path = f"/api/v1/namespaces/{self.ns}/configmaps/{ref.get('name')}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIGMAP_WAIT_S
        data: Mapping[str, Any] = {}
        while True:
            try:
                data = (await self.conn.get_json(path)).get("data") or {}
                break
            except KubeApiError as e:
                if e.code != 404 or ref.get("optional") or loop.time() > deadline:
                    return
                await asyncio.sleep(0.3)
        self._write_items(d, {str(k): str(v).encode() for k, v in data.items()}, ref.get("items"))

    async def _secret(self, d: Path, ref: Obj) -> None:
        try:
            data = (await self.conn.get_json(f"/api/v1/namespaces/{self.ns}/secrets/{ref.get('secretName')}")
                    ).get("data") or {}
        except KubeApiError:
            return
        self._write_items(d, {str(k): base64.b64decode(str(v)) for k, v in data.items()}, ref.get("items"),
                          mode=0o600)

    @staticmethod
    def _write_items(d: Path, data: Mapping[str, bytes], items: Any, mode: int = 0o644) -> None:
        paths = {str(i["key"]): str(i.get("path") or i["key"]) for i in items or () if isinstance(i, Mapping)}
        for key, value in data.items():
            if items and key not in paths:
                continue
            target = d / paths.get(key, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(value)
            target.chmod(mode)

    def _downward(self, d: Path, spec: Obj) -> None:
        for item in spec.get("items") or ():
            ref = str((item.get("fieldRef") or {}).get("fieldPath") or "")
            if ref in ("metadata.labels", "metadata.annotations"):
                values = self.meta.get(ref.split(".")[1]) or {}
                text = "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
            else:
                text = field_value(self.pod, ref, "")
            (d / str(item.get("path"))).write_text(text)

    async def _token(self, d: Path, spec: Obj, mode: int) -> None:
        """The kubelet's TokenRequest for a projected token: the volume's audience and lifetime, bound to the pod."""
        sa = str((self.pod.get("spec") or {}).get("serviceAccountName") or "default")
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "audiences": [str(spec["audience"])] if spec.get("audience") else [],
            "expirationSeconds": int(spec.get("expirationSeconds") or 3600),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.meta.get("name"),
                               "uid": self.meta.get("uid")}}}
        got = await self.conn.send_json("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        target = d / str(spec.get("path") or "token")
        target.write_text(str((got.get("status") or {}).get("token") or ""))
        target.chmod(mode)

    def rewrite(self, container: Obj, text: str) -> str:
        """`text` with a leading mount path of the container replaced by the volume's folder."""
        mounts = sorted(((str(m.get("mountPath")).rstrip("/"), str(m.get("name")), str(m.get("subPath") or ""))
                         for m in container.get("volumeMounts") or ()), key=lambda m: -len(m[0]))
        for mount, name, sub in mounts:
            if text == mount or text.startswith(mount + "/"):
                return str(self.folder / name / sub) + text[len(mount):]
        return text


def _flag(args: list[str], flag: str) -> int:
    return args.index(flag) if flag in args else -1


async def plan_pod(conn: KubeConnection, pod: Obj, ip: str, folder: Path, programs: Any,
                   control_plane: ControlPlaneAddresses | None) -> PodPlan:
    """The processes for `pod` at address `ip`; `programs(container)` maps an image/command to (argv, env) or
    None (kube_node.container_command)."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    volumes = Volumes(conn, pod, folder / "volumes")
    await volumes.make()
    plan = PodPlan()
    sidecars = [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in spec.get("initContainers") or ():
        if c.get("restartPolicy") != "Always":
            words = [str(w) for w in [*(c.get("command") or ()), *(c.get("args") or ())]]
            (plan.skipped if "istio-iptables" in words else plan.missing).append(str(c.get("name")))
    everything = [*sidecars, *(spec.get("containers") or ())]
    raw = {str(c.get("name")): [str(w) for w in [*(c.get("command") or ()), *(c.get("args") or ())]]
           for c in everything}
    injected = any(is_agent(cmd) for cmd in raw.values())
    app_ports: list[tuple[int, int]] = []
    for c in everything:
        name = str(c.get("name"))
        env = container_env(pod, c, ip)
        words = [volumes.rewrite(c, expand(w, env)) for w in raw[name]]
        env = {k: volumes.rewrite(c, v) for k, v in env.items()}
        found = programs({**c, "command": words, "args": []})
        if found is None:
            plan.missing.append(name)
            continue
        argv, extra = found
        ports = [int(p["containerPort"]) for p in c.get("ports") or () if isinstance(p, Mapping)
                 and isinstance(p.get("containerPort"), int)]
        base = {"HOST": ip, "POD_NAME": str(meta.get("name")), "POD_NAMESPACE": str(meta.get("namespace")),
                "INSTANCE_IP": ip, "SERVICE_ACCOUNT": str(spec.get("serviceAccountName") or "default")}
        if injected and not is_agent(words):
            mapped = [(p, free_port(ip)) for p in ports]
            app_ports += mapped
            base.update(HTTP_PROXY=f"http://{ip}:15001", http_proxy=f"http://{ip}:15001")
            if mapped:
                base["PORT"] = str(mapped[0][1])
        elif ports:
            base["PORT"] = str(ports[0])
        plan.containers.append(Container(name, argv, {**os.environ, **base, **extra, **env}))
        probe = (c.get("readinessProbe") or {}).get("httpGet")
        if isinstance(probe, Mapping):
            port = probe.get("port")
            named = {str(p.get("name")): p.get("containerPort") for p in c.get("ports") or ()}
            port = named.get(str(port), port)
            plan.readiness.append(f"http://{ip}:{port}{probe.get('path') or '/'}")
    for c in plan.containers:
        if c.command[:4] != [sys.executable, "-m", "sailmesh", "agent"]:
            continue
        agent_at = 3
        args = c.command
        if plan.skipped:  # istio-init did not run: the sidecar is not captured, so it declares no interception mode
            c.env.pop("ISTIO_META_INTERCEPTION_MODE", None)
        if control_plane is not None:
            at = _flag(args, "--xds-address")
            if at >= 0:
                args[at + 1] = control_plane.xds
            if _flag(args, "--ca-address") < 0:
                args[agent_at + 1:agent_at + 1] = ["--ca-address", control_plane.ca]
        if app_ports and _flag(args, "--app-ports") < 0:
            args[agent_at + 1:agent_at + 1] = ["--app-ports", ",".join(f"{p}:{a}" for p, a in app_ports)]
    return plan
