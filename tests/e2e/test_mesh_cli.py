"""kubectl-style verbs against a running embedded mesh (delta xDS), and `sailmesh down` cleaning up."""

from __future__ import annotations

import json
import os
import pathlib
import urllib.request

import yaml

from sailmesh.cli.demo import BOOKINFO
from sailmesh.platform.state import pid_alive
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

VS_V2 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
"""

BAD_VS = VS_V2.replace("        subset: v2\n", "        subset: v2\n      weight: -5\n")


def colors(mesh: RunningMesh, n: int) -> set[str]:
    out = set()
    for _ in range(n):
        with NO_PROXY.open(mesh.gateway_url() + "/api/v1/products/0/reviews", timeout=10) as r:
            rating = json.loads(r.read())["reviews"][0].get("rating")
        out.add(rating["color"] if rating else "none")
    return out


def test_cli_verbs_with_delta_xds_and_down(tmp_path: pathlib.Path) -> None:
    mesh = RunningMesh(str(tmp_path / "state"), dirs=[os.path.join(BOOKINFO, "mesh"),
                                                       os.path.join(BOOKINFO, "networking")],
                       extra=["--delta", "--proxy-concurrency", "1"])
    try:
        # every proxy is on delta xDS and in sync
        ps = json.loads(mesh.cli("proxy-status", "-o", "json", check=True).stdout)
        assert len(ps) == 7 and all(p["delta"] for p in ps)
        table = mesh.cli("proxy-status", check=True).stdout
        assert "reviews-v2-0.default" in table and "SYNCED" in table

        # --proxy-concurrency reaches every Envoy
        pidfile = os.path.join(mesh.state_dir, "proxies", "reviews-v1-0.default", "envoy.pid")
        with open(pidfile, encoding="ascii") as fh, open(f"/proc/{fh.read().strip()}/cmdline", "rb") as cmd:
            argv = cmd.read().split(b"\0")
        assert argv[argv.index(b"--concurrency") + 1] == b"1"

        # proxy-config: what the real Envoy runs, istioctl's tables and filters, its raw dump, its log levels
        out = mesh.cli("proxy-config", "cluster", "productpage-v1-0", "--fqdn", "reviews.default.svc.cluster.local",
                       check=True).stdout
        lines = out.splitlines()
        assert lines[0].split() == ["SERVICE", "FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION", "RULE"]
        assert {tuple(line.split()[1:4]) for line in lines[1:]} >= {("9080", "v1", "outbound"),
                                                                    ("9080", "v2", "outbound")}, out
        eps = mesh.cli("proxy-config", "endpoint", "productpage-v1-0", "--fqdn", "reviews.default.svc.cluster.local",
                       check=True).stdout
        assert eps.count("HEALTHY") >= 3, eps  # the unsubsetted cluster has all three reviews pods
        routes = json.loads(mesh.cli("proxy-config", "route", "productpage-v1-0", "-o", "json", check=True).stdout)
        assert routes["@type"].endswith("RoutesConfigDump"), routes
        assert [r["route_config"]["name"] for r in routes.get("dynamic_route_configs", [])] == ["http_proxy"], \
            str(routes)[:3000]
        table = mesh.cli("proxy-config", "route", "productpage-v1-0", check=True).stdout
        assert "reviews.default.svc.cluster.local:9080" in table, table
        assert "virtualOutbound" not in mesh.cli("proxy-config", "listener", "reviews-v1-0", check=True).stdout
        assert "Route: " in mesh.cli("proxy-config", "listener", "reviews-v1-0", "--port", "15001", check=True).stdout
        assert "rbac: debug" in mesh.cli("proxy-config", "log", "reviews-v1-0", "--level", "rbac:debug",
                                        check=True).stdout
        # proxy-status PROXY: what the control plane would send now is what Envoy runs
        same = mesh.cli("proxy-status", "reviews-v1-0.default")
        assert same.returncode == 0 and "Clusters Match" in same.stdout and "Routes Match" in same.stdout, same.stdout
        missing = mesh.cli("proxy-config", "cluster", "nope")
        assert missing.returncode == 1 and "reviews-v1-0.default" in missing.stderr  # names what exists

        # get: table and YAML
        assert "reviews" in mesh.cli("get", "svc", check=True).stdout
        docs = list(yaml.safe_load_all(mesh.cli("get", "dr", "reviews", "-o", "yaml", check=True).stdout))
        assert docs[0]["kind"] == "DestinationRule" and docs[0]["spec"]["host"] == "reviews"

        # apply: routed to v2 (black stars) over delta xDS
        vs = tmp_path / "vs.yaml"
        vs.write_text(VS_V2)
        out = mesh.cli("apply", "-f", str(vs), check=True).stdout
        assert "VirtualService default/reviews created" in out
        wait_for(lambda: colors(mesh, 5) == {"black"}, timeout=15, what="reviews on v2")
        assert mesh.cli("apply", "-f", str(vs), check=True).stdout.strip().endswith("unchanged")

        # invalid: refused with file, line and field; nothing changes
        bad = tmp_path / "bad.yaml"
        bad.write_text(BAD_VS)
        r = mesh.cli("apply", "-f", str(bad))
        assert r.returncode != 0
        assert "bad.yaml:" in r.stderr and "spec.http[0].route[0].weight" in r.stderr, r.stderr
        assert colors(mesh, 5) == {"black"}

        # delete: back to round robin over v1/v2/v3
        assert "VirtualService default/reviews deleted" in mesh.cli("delete", "-f", str(vs), check=True).stdout
        wait_for(lambda: len(colors(mesh, 15)) == 3, timeout=15, what="all versions again")
        assert "not found" in mesh.cli("get", "vs", "reviews").stderr

        with open(os.path.join(mesh.state_dir, "mesh.json"), encoding="utf-8") as fh:
            pids = [p["pid"] for p in json.load(fh)["processes"]]
        assert len(pids) == 14  # control plane, gateway, 6 apps, 6 sidecars

        # down: a clean stop of everything, state removed
        r = mesh.cli("down", check=True)
        assert "mesh stopped" in r.stdout
        assert mesh.proc.wait(timeout=30) == 0
        assert not any(pid_alive(p) for p in pids)
        assert not os.path.exists(os.path.join(mesh.state_dir, "mesh.json"))
        assert "no running mesh" in mesh.cli("get", "vs").stderr
    finally:
        mesh.stop()
