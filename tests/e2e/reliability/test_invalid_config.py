"""Reliability (issue 13): invalid config under steady traffic: one file for each kind of error the validator
knows (YAML syntax, unknown field, wrong type, invalid value, invalid name, invalid regex) dropped into the
watched directory, then a half-applied file (the VirtualService in force truncated in place, mid-write). Each is
refused, the control plane's log names its file, line, resource and field, the last good config stays in force,
and no request fails."""

from __future__ import annotations

import os
import pathlib

from sailmesh.testing.waiting import wait_for
from tests.e2e.reliability.support import Traffic, address, report, start_mesh, virtual_service

VS = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [web]\n"
ROUTE = "    route:\n    - destination:\n        host: web\n"
# file -> (its text, what the control plane's log must say about it: resource and field)
INVALID = {
    "syntax.yaml": (VS.format(name="syntax") + "  http: [oops\n", "invalid YAML"),
    "unknown.yaml": (VS.format(name="unknown-field") + "  htttp: []\n",
                     'VirtualService default/unknown-field: spec.htttp: unknown field'),
    "type.yaml": ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: wrong-type\nspec:\n"
                  "  host: web\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: many\n",
                  "DestinationRule default/wrong-type: spec.trafficPolicy.connectionPool.tcp.maxConnections"),
    "value.yaml": (VS.format(name="bad-timeout") + "  http:\n  - timeout: 10x\n" + ROUTE,
                   "VirtualService default/bad-timeout: spec.http[0].timeout"),
    "name.yaml": (VS.format(name="Bad_Name") + "  http:\n  -" + ROUTE[5:],
                  "VirtualService default/Bad_Name: metadata.name"),
    "regex.yaml": (VS.format(name="bad-regex") + "  http:\n  - match:\n    - uri:\n        regex: \"(x\"\n" + ROUTE,
                   "VirtualService default/bad-regex: spec.http[0].match[0].uri"),
}


def _write_in_place(path: pathlib.Path, text: str) -> None:
    """Overwrite the file's bytes where it is (no rename): a reader may see it at any point of the write."""
    with open(path, "r+", encoding="utf-8") as fh:
        fh.truncate(0)
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def test_invalid_and_half_applied_config_under_traffic(tmp_path: pathlib.Path) -> None:
    mesh, vs = start_mesh(tmp_path)
    cp_log = pathlib.Path(mesh.state_dir) / "logs" / "controlplane.log"
    with mesh:
        traffic = Traffic(f"http://{address(mesh, 'client-0')}:15001").start()
        try:
            traffic.wait_route("v1")
            for name, (text, _) in INVALID.items():
                (vs.parent / name).write_text(text)
            for name, (_, said) in INVALID.items():
                path = str(vs.parent / name)
                wait_for(lambda p=path, s=said: any(p in ln and s in ln for ln in cp_log.read_text().splitlines()),
                         timeout=30, what=f"the control plane to refuse {name} naming {said!r}")
            traffic.wait_requests(100)
            assert set(traffic.routes) == {"v1"}

            # half-applied: v2 cut inside a quoted string (invalid YAML), then cut at a line (valid YAML, but a
            # VirtualService with no route): both refused, v1 stays; the whole file then applies
            full = virtual_service("v2")
            cut_in_string = full[:full.index('"v2"') + 2]
            cut_at_line = full[:full.index("    route:")]
            for half, said in ((cut_in_string, "invalid YAML"), (cut_at_line, "VirtualService default/web")):
                seen = cp_log.read_text().count(f"{vs}:")
                _write_in_place(vs, half)
                wait_for(lambda s=seen, w=said: cp_log.read_text().count(f"{vs}:") > s and w in cp_log.read_text(),
                         timeout=30, what="the half-applied file to be refused")
                traffic.wait_requests(100)
                assert set(traffic.routes) == {"v1"}, traffic.summary()
            _write_in_place(vs, full)
            traffic.wait_route("v2")
            traffic.wait_requests(50)
        finally:
            traffic.stop()
        report("invalid config (6 kinds) and a half-applied file under traffic", traffic)
        assert traffic.failures == [] and traffic.refused == [], traffic.summary()
