"""The control-plane benchmark's error type."""

from __future__ import annotations

from sailmesh.errors import SailmeshError


class BenchError(SailmeshError):
    """A benchmark step failed (a process died, a wait ran out)."""
