"""Base of every analyzer: a name (Istio's analyzer name), the codes it may emit and analyze(ctx)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.messages import MessageType
from sailmesh.api.resource import Resource


class Analyzer:
    """One concern; subclasses set `name` (as in Istio, e.g. `virtualservice.GatewayAnalyzer`)."""

    name: ClassVar[str] = ""
    messages: ClassVar[tuple[MessageType, ...]] = ()

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        raise NotImplementedError


def diag(mtype: MessageType, resource: Resource | None, *args: Any, path: str = "") -> Diagnostic:
    """Shorthand for building a Diagnostic."""
    return Diagnostic(mtype, tuple(args), resource, path)
