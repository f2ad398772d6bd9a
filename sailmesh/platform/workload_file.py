"""The local workload file: how the embedded platform tells the control plane which instances run where."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import msgspec

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
    write_text(path, dump(workloads))


def write_text(path: str, text: str) -> None:
    """Atomically replace the workload file with `text` (dump()'s output)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read(path: str) -> list[Workload]:
    """Workloads in the file; a missing file means none."""
    return [from_item(path, item) for item in read_items(path)]


def read_items(path: str) -> list[dict[str, Any]]:
    """The file's workload entries as parsed JSON (from_item() makes each a Workload); a missing file means none."""
    try:
        with open(path, "rb") as fh:
            data = msgspec.json.decode(fh.read())  # 2-3x json.load: re-read on every workload change
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:  # msgspec.DecodeError is a ValueError
        raise RegistryError(f"{path}: unreadable workload file: {e}") from e
    items = data.get("workloads", []) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise RegistryError(f"{path}: malformed workload file: `workloads` must be a list of objects")
    return items


def item_key(path: str, item: dict[str, Any]) -> tuple[str, str]:
    """An entry's (namespace, name)."""
    try:
        return str(item["namespace"]), str(item["name"])
    except KeyError as e:
        raise RegistryError(f"{path}: malformed workload entry: {e}") from e


def from_item(path: str, item: dict[str, Any]) -> Workload:
    """One parsed entry of the file as a Workload."""
    try:
        return Workload(
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
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RegistryError(f"{path}: malformed workload entry: {e}") from e
