"""Errors the data-plane benchmark raises on purpose."""

from __future__ import annotations

from sailmesh.errors import SailmeshError


class BenchError(SailmeshError):
    """The benchmark could not set up or measure something."""


class LoadGenError(BenchError):
    """A load generator failed or printed output the harness cannot parse."""
