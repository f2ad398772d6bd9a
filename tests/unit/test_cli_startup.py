"""CLI start-up cost: what each command imports before it does anything (a module list, not a timing).

`sailmesh --help` lists every verb without importing any verb's module, and the operating commands (`version`,
`proxy-status`, `proxy-config`, `get`, `explain --help`, `x flags|describe|authz`) start without grpc, protobuf
and Envoy's generated protos, aiohttp, cryptography or YAML: those load only where a command uses them (explain's
walk, `-o yaml`, a secret's certificate, `x load`, `x ca`). Importing them is most of a command's CPU time
(docs/troubleshooting.md, "How long the commands take").
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from sailmesh.cli import main as main_mod

# what a command line imports, run in a fresh interpreter as the `sailmesh` entry point would
PROBE = """
import contextlib, io, sys
args = sys.argv[1:]
sys.argv = ["sailmesh", *args]
from sailmesh.cli.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(args)
    except SystemExit:
        pass
print("\\n".join(sorted(sys.modules)))
"""

# ("envoy" itself is also the package that ships the Envoy binary, which `version` asks: its protos are *_pb2)
HEAVY = ("grpc", "google.protobuf", "envoy.config", "envoy.extensions", "envoy.type", "udpa", "xds", "aiohttp",
         "cryptography", "yaml", "sailmesh.generate", "sailmesh.controlplane", "sailmesh.analysis", "sailmesh.server",
         # urllib.request brings http.client, the email package and ssl (~0.08 CPU s): plain-HTTP calls to the
         # control plane and Envoy's admin go through cli.rawhttp (ssl itself also comes with asyncio, which
         # `x precheck` uses; test_cli_start_cost checks the commands against a running mesh load none of it)
         "urllib.request", "http.client", "email")


def imported(*args: str, state_dir: str = "") -> set[str]:
    extra = ["--state-dir", state_dir] if state_dir else []
    out = subprocess.run([sys.executable, "-c", PROBE, *args, *extra], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return set(out.split())


def heavy(modules: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(m for m in modules if m.endswith("_pb2") or any(
        (m == h or m.startswith(h + ".")) and h not in allowed for h in HEAVY))


def test_top_level_help_imports_no_verb_module() -> None:
    mods = imported("--help")
    assert not heavy(mods), heavy(mods)
    verbs = sorted(m for m in mods if m.startswith("sailmesh.cli.") and m != "sailmesh.cli.main")
    assert not verbs, verbs


@pytest.mark.parametrize("args", [
    ("explain", "--help"), ("x", "describe", "--help"), ("x", "flags", "UO"),
])
def test_operating_commands_start_without_protobuf_grpc_or_yaml(args: tuple[str, ...]) -> None:
    mods = imported(*args)
    assert not heavy(mods), (args, heavy(mods))


@pytest.mark.parametrize("args", [("version", "--no-remote"), ("proxy-status",), ("get", "vs"),
                                  ("proxy-config", "cluster", "p")])
def test_running_against_no_mesh_still_imports_nothing_heavy(args: tuple[str, ...], tmp_path: object) -> None:
    # the command runs its real path up to "no mesh running here", with everything it imports on the way
    mods = imported(*args, state_dir=str(tmp_path))
    assert not heavy(mods), (args, heavy(mods))


def test_x_imports_only_the_subcommand_that_runs() -> None:
    mods = imported("x", "authz", "check", "--help")
    assert "sailmesh.cli.authz_check" in mods
    assert not {"sailmesh.cli.load", "sailmesh.cli.ca", "sailmesh.cli.precheck", "sailmesh.cli.describe"} & mods


def _help(*argv: str) -> str:
    """The --help text of `sailmesh ARGV...` as its parser prints it (only that verb's module is imported)."""
    parser = main_mod.build_parser(argv[0])
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = action.choices[argv[0]]
    for name in argv[1:]:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return p.format_help()


X_SUBCOMMANDS = [("x", name) for name in ("flags", "describe", "load", "ca", "token", "precheck")] + \
    [("x", "authz", "check")]


@pytest.mark.parametrize("argv", [(verb,) for verb in main_mod.COMMANDS] + X_SUBCOMMANDS)
def test_every_command_help_has_an_example(argv: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    # the quality bar: every command has --help with an example (a `sailmesh VERB ...` line)
    monkeypatch.setattr(sys, "argv", ["sailmesh", *argv, "--help"])  # `x` imports the subcommand on its line
    text = _help(*argv)
    verb = " ".join(a for a in argv if a != "check") if argv[:2] != ("x", "authz") else "x authz check"
    examples = [line for line in text.splitlines() if line.strip().startswith(f"sailmesh {verb}")]
    assert examples, f"`sailmesh {' '.join(argv)} --help` shows no example:\n{text}"
