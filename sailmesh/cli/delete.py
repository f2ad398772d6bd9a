"""`sailmesh delete -f FILE`: remove the resources named in FILE from the running mesh."""

from __future__ import annotations

import argparse

from sailmesh.cli.apply import add_arguments as _apply_arguments
from sailmesh.cli.apply import send


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _apply_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return send(args, "/api/v1/delete", "results", check=False)  # deleting needs names only
