"""The running embedded mesh's state file: where its control plane listens and which processes it owns."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from sailmesh.errors import PlatformError

STATE_FILE = "mesh.json"
REGISTRY_FILE = "workloads.json"


@dataclass
class ProcessRecord:
    """One process the supervisor started."""

    name: str
    role: str  # controlplane | gateway | agent | app
    pid: int
    log: str
    address: str = ""


@dataclass
class InstanceRecord:
    """One workload instance ("pod") the supervisor runs: what `get workloads` lists and `exec` runs as."""

    name: str  # sleep-0
    workload: str  # sleep
    namespace: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = "default"
    ports: list[dict[str, Any]] = field(default_factory=list)  # {name, containerPort, protocol, appPort}
    sidecar: bool = True
    env: dict[str, str] = field(default_factory=dict)  # what the platform adds to the app's environment


@dataclass
class MeshState:
    """What `sailmesh up` writes so that `down`, `apply`, `get` and `proxy-status` can find the mesh."""

    supervisor_pid: int
    api_url: str  # control-plane HTTP API, e.g. http://127.0.0.1:15014
    xds_address: str  # host:port of the plaintext ADS server
    config_dirs: list[str] = field(default_factory=list)
    gateway_urls: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    instances: list[InstanceRecord] = field(default_factory=list)
    api_token_file: str = ""  # 0600: the control plane's API token (the CLI sends it as Authorization: Bearer)

    def api_token(self) -> str:
        """The API token, or "" when this mesh has none; PlatformError when it cannot be read."""
        if not self.api_token_file:
            return ""
        try:
            with open(self.api_token_file, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as e:
            raise PlatformError(f"cannot read the control plane's API token {self.api_token_file}: {e}") from e

    def save(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        tmp = os.path.join(state_dir, STATE_FILE + ".tmp")
        # 0600: it holds the apps' environments (a LocalWorkload's env may carry credentials)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=2)
        os.replace(tmp, os.path.join(state_dir, STATE_FILE))

    @classmethod
    def load(cls, state_dir: str) -> MeshState:
        path = os.path.join(state_dir, STATE_FILE)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError as e:
            raise PlatformError(f"no running mesh found (no {path}); start one with `sailmesh up` or `demo`") from e
        except (OSError, ValueError) as e:
            raise PlatformError(f"cannot read mesh state {path}: {e}") from e
        try:
            procs = [ProcessRecord(**p) for p in data.pop("processes", [])]
            insts = [InstanceRecord(**i) for i in data.pop("instances", [])]
            return cls(processes=procs, instances=insts, **data)
        except TypeError as e:
            raise PlatformError(f"cannot read mesh state {path}: {e}") from e


def remove(state_dir: str) -> None:
    """Forget the mesh state (after a clean stop)."""
    try:
        os.remove(os.path.join(state_dir, STATE_FILE))
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and has not exited (an unreaped zombie counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True
