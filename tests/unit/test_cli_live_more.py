"""The CLI against a live control plane (issue 11): apply does only its own work ("well under a second"), and
unknown kinds and missing names are errors that name what exists.


Measured in session 9 (docs/troubleshooting.md): the control plane answers an apply or a dry run in 10-60 ms on
the demo mesh; the command's wall time was its own CPU (importing and running Istio's validators, which the
control plane runs again on every apply) waiting for a CPU on a loaded machine. These tests pin both halves
without timing anything: the apply does not wait for the push it causes, and the CLI loads the validators only
to explain a refusal (or for --dry-run=client), with each error still at its field's line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import pathlib
import subprocess
import sys

import pytest

from sailmesh import settings as settings_mod
from sailmesh.cli.describe import describe_service
from sailmesh.cli.main import main
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.platform.state import InstanceRecord, MeshState
from sailmesh.processes import free_port
from sailmesh.testing.waiting import await_for
from tests.unit.test_generate_support import resources

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"""
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec: {host: reviews}
"""
# line 9 holds the bad field; the document starts at line 1 (all the control plane knows)
BAD = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: -5
"""
VALIDATORS = ("sailmesh.api.validate", "sailmesh.api.rules")
PROBE = """
import contextlib, io, sys
args = sys.argv[1:]
from sailmesh.cli.describe import describe_service
from sailmesh.cli.main import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
    code = main(args)
print(code, out.getvalue().strip(), sep="\\n")
print("MODULES", *sorted(sys.modules))
"""


async def _cli(*argv: str) -> tuple[int, str, str]:
    def run() -> tuple[int, str, str]:
        out, err, old = io.StringIO(), io.StringIO(), (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = out, err
        try:
            return main(list(argv)), out.getvalue(), err.getvalue()
        finally:
            sys.stdout, sys.stderr = old
    return await asyncio.to_thread(run)


@pytest.fixture
async def mesh(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    # A push waits an hour after a change (Istio's PILOT_DEBOUNCE_AFTER): whatever the apply returns before the
    # snapshot moves, it returned without waiting for the push.
    settings = dataclasses.replace(settings_mod.load(), debounce=settings_mod.Debounce(after_s=3600, max_s=3600))
    opts = ControlPlaneOptions(xds_port=0, http_port=free_port(), xds_tls_port=0, ca_port=0,
                               state_dir=str(tmp_path / "cp"))
    cp = ControlPlane(opts, settings)
    await cp.start()
    MeshState(supervisor_pid=0, api_url=f"http://127.0.0.1:{opts.http_port}",
              xds_address=f"127.0.0.1:{opts.xds_tls_port}",
              api_token_file=str(cp.identity.api_token_path)).save(str(tmp_path))
    try:
        yield cp, str(tmp_path)
    finally:
        await cp.stop()


async def test_apply_returns_before_the_push_it_causes(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    cp, state = mesh
    first = tmp_path / "dr.yaml"
    first.write_text(DR)
    start = cp.snapshot.version
    rc, _, _ = await _cli("apply", "-f", str(first), "--state-dir", state)
    assert rc == 0
    # the first change after a quiet period is pushed at once (the debouncer's leading edge); the next one waits
    await await_for(lambda: asyncio.sleep(0, cp.snapshot.version > start), what="the leading-edge push")
    before = cp.snapshot.version
    f = tmp_path / "vs.yaml"
    f.write_text(VS)
    rc, out, err = await _cli("apply", "-f", str(f), "--state-dir", state)
    assert rc == 0 and out.strip() == "VirtualService default/reviews created", (out, err)
    assert cp.store.get("VirtualService", "default", "reviews") is not None
    assert cp.snapshot.version == before  # its push is an hour away: apply did not wait for it
    rc, out, _ = await _cli("apply", "-f", str(f), "--dry-run=server", "--state-dir", state)
    assert rc == 0 and out.strip() == "VirtualService default/reviews unchanged (dry run)"
    assert cp.snapshot.version == before


@pytest.mark.parametrize("dry_run", ["none", "server"])
async def test_apply_loads_no_validator_when_the_control_plane_accepts(mesh, tmp_path: pathlib.Path,  # type: ignore[no-untyped-def]
                                                                       dry_run: str) -> None:
    _, state = mesh
    f = tmp_path / "vs.yaml"
    f.write_text(VS)
    cmd = [sys.executable, "-c", PROBE, "apply", "-f", str(f), f"--dry-run={dry_run}", "--state-dir", state]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=120, check=True)
    code, said, modules = done.stdout.split("\n", 2)
    assert code == "0" and "VirtualService default/reviews" in said, done.stdout
    loaded = [m for m in modules.split()[1:] if m.startswith(VALIDATORS)]
    assert not loaded, loaded


async def test_a_refused_apply_names_the_field_line(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    cp, state = mesh
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    for dry_run in ("none", "server", "client"):
        rc, out, err = await _cli("apply", "-f", str(f), f"--dry-run={dry_run}", "--state-dir", state)
        assert rc == 1 and not out, (dry_run, out)
        assert f"{f}:9: VirtualService default/reviews: spec.http[0].route[0].weight" in err, (dry_run, err)
        assert err.rstrip().endswith("error: nothing was changed"), err
    assert cp.store.get("VirtualService", "default", "reviews") is None


async def test_unknown_kinds_and_missing_proxies_are_errors_naming_what_exists(mesh) -> None:  # type: ignore[no-untyped-def]
    _, state = mesh
    for verb in (("get", "foo"), ("delete", "foo", "x")):
        rc, out, err = await _cli(*verb, "--state-dir", state)
        assert rc == 1 and not out and 'unknown kind "foo"; known kinds: ' in err, (verb, err)
        assert "VirtualService" in err and "DestinationRule" in err, err
    # kinds as kubectl takes them: alias, plural, any case
    for kind in ("vs", "VirtualServices", "virtualservice"):
        rc, out, err = await _cli("get", kind, "--state-dir", state)
        assert rc == 0 and out.strip() == "No resources found.", (kind, out, err)
    rc, out, err = await _cli("proxy-status", "nope", "--state-dir", state)
    assert rc == 1 and 'no connected proxy matches "nope" (connected: none)' in err, err


BOOKINFO_GATEWAY_VS = """apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec: {selector: {app: productpage}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http: [{match: [{uri: {exact: /productpage}}], route: [{destination: {host: productpage, port: {number: 9080}}}]}]
"""


def test_describe_names_a_gateway_virtual_service_only_for_the_service_it_routes_to() -> None:
    # Bookinfo's gateway VirtualService has hosts "*" (the names clients use at the gateway), bound only to the
    # gateway: it routes to productpage and says nothing about the mesh's requests to reviews. It was listed,
    # "Exposed through Gateway bookinfo-gateway", under reviews too.
    live = resources(BOOKINFO_GATEWAY_VS)
    reviews = "\n".join(describe_service(live, "reviews", "default"))
    assert "VirtualService" not in reviews and "Exposed" not in reviews, reviews
    productpage = describe_service(live, "productpage", "default")
    assert "VirtualService: bookinfo.default (gateways: bookinfo-gateway)" in productpage, productpage
    assert "   Exposed through Gateway bookinfo-gateway" in productpage, productpage


VS_TO_V2 = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default, labels: {team: books}}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v2}}]}]
"""


async def test_describe_shows_the_resource_and_what_the_mesh_says_about_it(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    # kubectl's habit `describe KIND NAME` (issue 11): the resource, then the analyzers' messages about it
    _, state = mesh
    f = tmp_path / "vs.yaml"
    f.write_text(VS_TO_V2)
    rc, _, _ = await _cli("apply", "-f", str(f), "--state-dir", state)
    assert rc == 0
    rc, out, err = await _cli("describe", "vs", "reviews", "--state-dir", state)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:3] == ["Name:        reviews", "Namespace:   default", "Labels:      team=books"], out
    spec = lines[lines.index("Spec:") + 1:]
    assert "Kind:        VirtualService" in lines and spec[:2] == ["  hosts:", "  - reviews"], out
    assert any(line.startswith("  Error [IST0101] (VirtualService default/reviews") and '"reviews+v2"' in line
               for line in lines[lines.index("Analysis:"):]), out
    rc, _, err = await _cli("describe", "virtualservices", "nope", "--state-dir", state)
    assert rc == 1 and 'VirtualService "nope" not found in namespace default; there: reviews' in err, err
    rc, _, err = await _cli("describe", "foo", "x", "--state-dir", state)
    assert rc == 1 and 'unknown kind "foo"' in err, err


async def test_get_pods_lists_the_embedded_platforms_instances(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    # kubectl's `get pods` on the embedded mesh: no Pod objects in the config, so the workload instances (what
    # `analyze` counts as pods) answer, as `get workloads` lists them
    _, state = mesh
    with_pods = tmp_path / "with-pods"
    saved = MeshState.load(state)
    saved.instances = [InstanceRecord("reviews-v1-0", "reviews-v1", "default", "127.0.1.1", {"app": "reviews"},
                                      "bookinfo-reviews")]
    saved.save(str(with_pods))
    rc, out, err = await _cli("get", "pods", "--state-dir", str(with_pods))
    assert rc == 0, err
    assert out.splitlines()[0].split()[:2] == ["NAME", "ADDRESS"] and "reviews-v1-0" in out, out
    rc, out, _ = await _cli("get", "pods", "--state-dir", state)  # no instances there: kubectl's answer
    assert rc == 0 and out.strip() == "No resources found."


async def test_a_server_dry_run_shows_what_would_change(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    # issue 11: "--dry-run shows what would change": a resource in force gets the diff of its spec and labels
    cp, state = mesh
    f = tmp_path / "vs.yaml"
    f.write_text(VS_TO_V2)
    rc, out, _ = await _cli("apply", "-f", str(f), "--dry-run=server", "--state-dir", state)
    assert rc == 0 and out.strip() == "VirtualService default/reviews created (dry run)", out  # all new: no diff
    rc, _, _ = await _cli("apply", "-f", str(f), "--state-dir", state)
    assert rc == 0
    f.write_text(VS_TO_V2.replace("subset: v2", "subset: v3").replace("team: books", "team: reads"))
    rc, out, _ = await _cli("apply", "-f", str(f), "--dry-run=server", "--state-dir", state)
    assert rc == 0, out
    assert out.splitlines()[0] == "VirtualService default/reviews configured (dry run)", out
    changed = [line[4:] for line in out.splitlines()[1:] if line.startswith(("    -", "    +"))]
    assert changed == ["--- in force", "+++ after apply", "-    team: books", "+    team: reads",
                       "-        subset: v2", "+        subset: v3"], out
    rc, out, _ = await _cli("apply", "-f", str(f), "--state-dir", state)
    assert rc == 0 and cp.store.get("VirtualService", "default", "reviews").spec["http"][0]["route"][0][
        "destination"]["subset"] == "v3"
    rc, out, _ = await _cli("apply", "-f", str(f), "--dry-run=server", "--state-dir", state)
    assert out.strip() == "VirtualService default/reviews unchanged (dry run)", out
