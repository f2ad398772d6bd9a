"""PushRequest: what a change means for the proxies, the only thing the ADS server is told about a change."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PushRequest:
    """Which xDS types may have changed, for which proxies, at which source version.

    Made from a `sailmesh.api.change.Change` by `sailmesh.generate.affect.push_request` (the one place that decides
    what a change affects) or by a test driving the server directly.
    """

    version: str
    type_urls: frozenset[str] | None = None  # None = every type
    proxies: frozenset[str] | None = None  # node ids; None = every proxy
    reason: str = ""
