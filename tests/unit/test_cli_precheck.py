"""`sailmesh x precheck`: Envoy, state dir, config and ports checked before `up`, each failure with its fix."""

from __future__ import annotations

import os
import pathlib
import socket

import pytest

from sailmesh.cli.demo import BOOKINFO
from sailmesh.cli.main import main
from sailmesh.processes import free_port
from sailmesh.testing.waiting import random_loopback_block


def precheck(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    block = random_loopback_block()
    ports = ["--http-port", str(free_port()), "--xds-tls-port", str(free_port()), "--ca-port", str(free_port())]
    code = main(["x", "precheck", "--base-ip", f"{block}.2", "--gateway-ip", f"{block}.1", *ports, *args])
    return code, capsys.readouterr().out


def test_all_clear_with_the_bookinfo_config(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = precheck(capsys, "-f", os.path.join(BOOKINFO, "mesh"), "-f", os.path.join(BOOKINFO, "networking"),
                         "--state-dir", str(tmp_path / "state"))
    assert code == 0, out
    assert "OK    Envoy binary" in out and "6 workload instance(s) planned" in out and "all 5 checks passed" in out


def test_each_failure_says_what_to_do(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: [1\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SAILMESH_ENVOY", str(tmp_path / "no-envoy"))
    code, out = precheck(capsys, "-f", str(bad), "--state-dir", str(blocker / "state"))
    assert code == 1
    assert "FAIL  Envoy binary" in out and "SAILMESH_ENVOY" in out, out
    assert "FAIL  state dir" in out and "fix: pass --state-dir" in out, out
    assert "FAIL  config" in out and "bad.yaml" in out and "sailmesh validate" in out, out


def test_a_taken_port_names_its_holder(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        code = main(["x", "precheck", "--state-dir", str(tmp_path), "--http-port", str(port),
                     "--xds-tls-port", str(free_port()), "--ca-port", str(free_port()),
                     "--gateway-ip", f"{random_loopback_block()}.1"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL  ports free" in out and f"127.0.0.1:{port}" in out and "--http-port" in out, out


def test_precheck_plans_ports_without_the_process_supervisor(tmp_path: pathlib.Path) -> None:
    """Issue 11: `x precheck` imports the port planning (platform/portplan.py), not platform/local.py and what it
    pulls in (aiohttp, the forwarder, the gateways' Envoy config generators); a module list, not a timing."""
    from tests.unit.test_cli_startup import heavy, imported

    block = random_loopback_block()
    mods = imported("x", "precheck", "-f", os.path.join(BOOKINFO, "mesh"), "-f", os.path.join(BOOKINFO, "networking"),
                    "--base-ip", f"{block}.2", "--gateway-ip", f"{block}.1", "--http-port", str(free_port()),
                    "--xds-tls-port", str(free_port()), "--ca-port", str(free_port()),
                    state_dir=str(tmp_path / "state"))
    assert "sailmesh.platform.portplan" in mods and "sailmesh.platform.local" not in mods
    # YAML is the config it parses; of the generators only names.py (a gateway's bind port, no protobufs)
    rest = heavy(mods - {"sailmesh.generate", "sailmesh.generate.names"}, allowed=("yaml",))
    assert not rest, rest


def test_ports_left_at_zero_are_said_not_checked(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Control-plane ports given as 0 are bound by the control plane itself as `up` starts it: precheck cannot check
    a port nobody picked yet, and says so instead of checking one `up` would not use."""
    code, out = precheck(capsys, "--state-dir", str(tmp_path / "state"), "--http-port", "0", "--xds-tls-port", "0")
    assert code == 0, out
    assert "--http-port, --xds-tls-port 0: the control plane binds free ones as it starts" in out, out
    assert "127.0.0.1:0" not in out
