"""The control plane's ready record: its pid, API URL and every port it bound, written into its state dir once it
serves; the operating commands find a standalone control plane by it, and `sailmesh up` reads the ports it bound."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# What `sailmesh controlplane` writes into its state dir while it serves, so the operating commands find a control
# plane that runs without `up`/`demo` (e.g. on Kubernetes, `--kubeconfig`): `--state-dir` names that state dir, or
# the default one holds it under controlplane/ (the control plane's default state dir).
CONTROLPLANE_RECORD = "controlplane.json"


@dataclass(frozen=True)
class Record:
    """A serving control plane: its pid, API URL and the ports it bound (by name: http, xdsTls, ca, xds, dns; 0 =
    that listener is off)."""

    pid: int
    api_url: str
    ports: Mapping[str, int] = field(default_factory=dict)


def write(cp_state_dir: str, api_url: str, ports: Mapping[str, int] | None = None) -> str:
    """Record this process as the control plane serving `api_url` (and bound to `ports`); the record's path."""
    path = os.path.join(cp_state_dir, CONTROLPLANE_RECORD)
    os.makedirs(cp_state_dir, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump({"apiUrl": api_url, "pid": os.getpid(), "ports": dict(ports or {})}, fh)
    os.replace(path + ".tmp", path)
    return path


def read(cp_state_dir: str) -> Record | None:
    """The record in cp_state_dir, None when there is none (or it does not parse)."""
    try:
        with open(os.path.join(cp_state_dir, CONTROLPLANE_RECORD), encoding="utf-8") as fh:
            raw = json.load(fh)
        ports = raw.get("ports") or {}
        return Record(int(raw["pid"]), str(raw["apiUrl"]), {str(k): int(v) for k, v in ports.items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove(cp_state_dir: str) -> None:
    """Forget a record left by an earlier control plane (before starting another one there)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(cp_state_dir, CONTROLPLANE_RECORD))
