"""Istio's `istio.config` metadata read back: which config (VirtualService, ...) an Envoy route comes from."""

from __future__ import annotations

from typing import Any


def config_ref(metadata: dict[str, Any] | None) -> str:
    """Istio's `istio.config` metadata (/apis/.../namespaces/NS/KIND/NAME) as `NAME.NS`, "-" when absent."""
    ref = str(((metadata or {}).get("filter_metadata", {}).get("istio", {})).get("config", ""))
    parts = ref.strip("/").split("/")
    if len(parts) >= 4 and "namespaces" in parts:
        i = parts.index("namespaces")
        if len(parts) > i + 3:
            return f"{parts[i + 3]}.{parts[i + 1]}"
    return "-"
