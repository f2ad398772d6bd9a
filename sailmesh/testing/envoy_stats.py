"""Reading one counter from a sidecar's Envoy admin (tests)."""

from __future__ import annotations

import http.client
import json


def envoy_stat(address: str, name: str, port: int = 15000) -> int:
    """The value of the stat `name` on the Envoy whose admin listens on address:port (0 when absent)."""
    c = http.client.HTTPConnection(address, port, timeout=5)
    try:
        c.request("GET", "/stats?format=json&filter=" + name.replace("|", "%7C"))
        stats = json.loads(c.getresponse().read())["stats"]
    finally:
        c.close()
    return sum(int(s.get("value", 0)) for s in stats if s.get("name") == name)
