"""Status of the Istio kinds on the API server (Istio's PILOT_ENABLE_STATUS), written by the Lease holder.

Two parts, each behind Istio's own switch (settings.IstioStatusSwitches), as istiod writes them:

- `validationMessages` (PILOT_ENABLE_ANALYSIS, Istio's in-process analysis controller): the analyzers' messages
  about the object, each `{documentationUrl, level, type: {code}}` (Istio's AnalysisMessageBase: level ERROR /
  WARNING / INFO); an object without messages has none (the field is removed);
- the `Reconciled` condition under `conditions` (PILOT_ENABLE_STATUS and PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING,
  Istio's distribution controller): status "True" once every connected proxy ACKed a push holding the object's
  current generation, message `N/M proxies up to date.`, lastProbeTime and lastTransitionTime the time of the
  write; written only when its status or message changes (Istio's ReconcileStatuses), only for an object some
  proxy could hold (M > 0), and other conditions are kept;
- `observedGeneration`: the object's metadata.generation these describe (Istio's status manager sets it on every
  write: IstioGenerationProvider.SetObservedGeneration), an int64 in proto3 JSON, so a string.

Writes go to the status subresource (a JSON merge patch) only when the status differs from what this replica last
wrote (else from the object's): a status write changes no generation, so it triggers no push and no other write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.platform.kube.informer import KubeResource

log = logging.getLogger(__name__)

RECONCILED = "Reconciled"
LEVELS = {"Error": "ERROR", "Warning": "WARNING", "Info": "INFO"}  # analysis levels as AnalysisMessageBase.Level


@dataclass(frozen=True)
class StatusParts:
    """What sailmesh says about one object: analysis messages (None: not written) and distribution progress
    (acked, total; None: not written)."""

    messages: tuple[Mapping[str, Any], ...] | None = None
    progress: tuple[int, int] | None = None
    generation: int | None = None  # the object's metadata.generation the parts are about (observedGeneration)


def validation_message(code: str, level: str, documentation_url: str) -> dict[str, Any]:
    """One entry of `status.validationMessages` (Istio's Message.AnalysisMessageBase)."""
    return {"documentationUrl": documentation_url, "level": LEVELS.get(level, level.upper()), "type": {"code": code}}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconciled_conditions(current: Any, acked: int, total: int, now: str) -> list[dict[str, Any]]:
    """`current` conditions with Istio's Reconciled condition for acked/total proxies (kept as it is when its
    status and message are unchanged; other conditions untouched)."""
    conditions = [dict(c) for c in current or () if isinstance(c, Mapping)]
    want = {"type": RECONCILED, "status": "True" if acked == total else "False",
            "lastProbeTime": now, "lastTransitionTime": now, "message": f"{acked}/{total} proxies up to date."}
    for i, c in enumerate(conditions):
        if c.get("type") == RECONCILED:
            if (c.get("status"), c.get("message")) != (want["status"], want["message"]):
                conditions[i] = want
            return conditions
    return [*conditions, want]


def desired_status(current: Mapping[str, Any], parts: StatusParts, now: str) -> dict[str, Any]:
    """The object's status with sailmesh's parts in place (everything else in it kept)."""
    out = dict(current)
    if parts.messages is not None:
        if parts.messages:
            out["validationMessages"] = [dict(m) for m in parts.messages]
        else:
            out.pop("validationMessages", None)
    if parts.progress is not None and parts.progress[1] > 0:
        out["conditions"] = reconciled_conditions(current.get("conditions"), *parts.progress, now)
    if parts.generation is not None and (parts.messages is not None or parts.progress is not None):
        out["observedGeneration"] = str(parts.generation)  # int64 in proto3 JSON, as Istio's status manager writes
    return out


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch of `status` from `current` to `desired` (a field gone is written null)."""
    return {**{k: None for k in current if k not in desired}, **desired}


class IstioStatusWriter:
    """Keeps the status of the API server's Istio objects as `parts_of` says (`lead()` while leading)."""

    def __init__(self, conn: KubeConnection, objects: Callable[[], list[tuple[Resource, KubeResource]]],
                 parts_of: Callable[[], Awaitable[Mapping[ResourceKey, StatusParts]]], interval_s: float = 0.5) -> None:
        self.conn = conn
        self.objects = objects  # the Istio objects from the API server, each with where its kind lives
        self.parts_of = parts_of
        self.interval_s = interval_s  # Istio's reporter: every 500 ms (PILOT_STATUS_UPDATE_INTERVAL)
        self.writes = 0
        self._written: dict[ResourceKey, dict[str, Any]] = {}  # what was last written (the store keeps the status
        # it first read while the object's config is unchanged)

    async def lead(self) -> None:
        """Reconcile every interval until cancelled (ACKs come from the proxies, not from the API server)."""
        while True:
            try:
                await self.reconcile()
            except Exception:  # a bug here must not end the leader's other work, nor this loop
                log.exception("Istio status writer: reconcile failed; retrying")
            await asyncio.sleep(self.interval_s)

    async def reconcile(self) -> int:
        """Write every status that differs; the number written."""
        parts = await self.parts_of()
        now = _now()
        written = 0
        present = set()
        for r, where in self.objects():
            present.add(r.key)
            p = parts.get(r.key)
            if p is None:
                continue
            raw_status = r.raw.get("status")
            stored: Mapping[str, Any] = raw_status if isinstance(raw_status, Mapping) else {}
            current = self._written.get(r.key, stored)
            status = desired_status(current, p, now)
            if status == current:
                continue
            if await self._write(r, where, merge_patch(current, status)):
                self._written[r.key] = status
                written += 1
        for gone in [k for k in self._written if k not in present]:
            del self._written[gone]
        self.writes += written
        return written

    async def _write(self, r: Resource, where: KubeResource, status: dict[str, Any]) -> bool:
        path = where.path(r.namespace, r.name) + "/status"
        try:
            await self.conn.send_json("PATCH", path, {"status": status}, "application/merge-patch+json")
        except KubeApiError as e:
            if e.code not in (404, 409):  # gone meanwhile / changed meanwhile: the next round sees it
                log.warning("status of %s %s/%s not written: %s", r.kind, r.namespace, r.name, e)
            return False
        except httpx.HTTPError as e:
            log.warning("status of %s %s/%s not written: %s", r.kind, r.namespace, r.name, e)
            return False
        log.info("wrote the status of %s %s/%s", r.kind, r.namespace, r.name)
        return True
