"""Reading counters and loaded certificates from a sidecar's Envoy admin (tests)."""

from __future__ import annotations

import http.client
import json
from typing import Any


def envoy_stat(address: str, name: str, port: int = 15000) -> int:
    """The value of the stat `name` on the Envoy whose admin listens on address:port (0 when absent)."""
    c = http.client.HTTPConnection(address, port, timeout=5)
    try:
        c.request("GET", "/stats?format=json&filter=" + name.replace("|", "%7C"))
        stats = json.loads(c.getresponse().read())["stats"]
    finally:
        c.close()
    return sum(int(s.get("value", 0)) for s in stats if s.get("name") == name)


def envoy_certs(address: str, port: int = 15000) -> list[dict[str, Any]]:
    """Envoy's admin /certs entries (each with `cert_chain` and `ca_cert` details: serial, SANs, expiry)."""
    c = http.client.HTTPConnection(address, port, timeout=5)
    try:
        c.request("GET", "/certs")
        data = json.loads(c.getresponse().read())
    finally:
        c.close()
    return list(data.get("certificates", []))
