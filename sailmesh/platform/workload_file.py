"""The local workload file: how the embedded platform tells the control plane which instances run where."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from sailmesh.errors import RegistryError
from sailmesh.registry.model import Workload


def dump(workloads: Iterable[Workload]) -> str:
    """Serialise workloads (stable order) to the file's JSON text."""
    items = [
        {
            "name": w.name,
            "namespace": w.namespace,
            "address": w.address,
            "labels": dict(w.labels),
            "serviceAccount": w.service_account,
            "appPorts": {str(k): v for k, v in w.app_ports.items()},
            "locality": w.locality,
            "network": w.network,
            "healthy": w.healthy,
            "origin": w.origin,
            "ports": dict(w.ports),  # named ports: how a Service's named targetPort finds the workload
            "weight": w.weight,
        }
        for w in sorted(workloads, key=lambda w: (w.namespace, w.name))
    ]
    return json.dumps({"workloads": items}, indent=1)


def write(path: str, workloads: Iterable[Workload]) -> None:
    """Atomically replace the workload file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(dump(workloads))
    os.replace(tmp, path)


def read(path: str) -> list[Workload]:
    """Workloads in the file; a missing file means none."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise RegistryError(f"{path}: unreadable workload file: {e}") from e
    out: list[Workload] = []
    try:
        for item in data.get("workloads", []):
            out.append(
                Workload(
                    name=item["name"],
                    namespace=item["namespace"],
                    address=item["address"],
                    labels=dict(item.get("labels") or {}),
                    service_account=item.get("serviceAccount") or "default",
                    app_ports={int(k): int(v) for k, v in (item.get("appPorts") or {}).items()},
                    locality=str(item.get("locality") or ""),
                    network=str(item.get("network") or ""),
                    healthy=bool(item.get("healthy", True)),
                    origin=item.get("origin", ""),
                    ports={str(k): int(v) for k, v in (item.get("ports") or {}).items()},
                    weight=int(item.get("weight", 1)),
                )
            )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RegistryError(f"{path}: malformed workload entry: {e}") from e
    return out
