"""Istio's distribution reports: each replica publishes how many of its proxies hold each Istio object's generation,
and the Lease holder adds every replica's report up for the Reconciled condition (pilot/pkg/status/distribution).

A report is a ConfigMap `<replica>-distribution` in the root namespace, labelled
`internal.istio.io/distribution-report: "true"`, whose `distribution-report` key holds Istio's DistributionReport
as YAML: `reporter`, `dataPlaneCount` (the replica's connected proxies) and `inProgressResources` (per object,
`group/version/plural/namespace/name/generation`, the proxies holding that generation). A replica writes its report
when it changes and at least every HEARTBEAT_S (an extra `heartbeat` field; Istio rewrites every 500 ms), and
deletes it when it stops. The leader counts, per object, the acked proxies and the connected proxies of every
report naming the object, leaving out reporters not heard from for STALE_S (Istio's StaleInterval, a minute). The
kube store leaves these ConfigMaps out: they are no mesh config.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx2 as httpx
import yaml

from sailmesh.api.resource import Resource
from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.platform.kube.informer import KubeResource
from sailmesh.platform.kube.store import REPORT_LABEL

log = logging.getLogger(__name__)

LABEL = REPORT_LABEL
DATA_KEY = "distribution-report"
STALE_S = 60.0
HEARTBEAT_S = 20.0
FIELD_MANAGER = "sailmesh-distribution-report"


def resource_string(where: KubeResource, r: Resource, generation: int) -> str:
    """Istio's status.Resource string: group/version/plural/namespace/name/generation."""
    return "/".join((where.group, where.version, where.plural, r.namespace, r.name, str(generation)))


def report(reporter: str, data_planes: int, in_progress: Mapping[str, int]) -> dict[str, Any]:
    """Istio's DistributionReport."""
    return {"reporter": reporter, "dataPlaneCount": data_planes, "inProgressResources": dict(in_progress)}


def add_up(reports: Iterable[tuple[Mapping[str, Any], float]], now: float,
           stale_s: float = STALE_S) -> dict[str, tuple[int, int]]:
    """Per object string, (acked, total) over the reports heard from within `stale_s` (each with when it was last
    heard from), as Istio's writeAllStatus: a report counts for the objects it names."""
    out: dict[str, tuple[int, int]] = {}
    for rep, seen in reports:
        if now - seen > stale_s:
            continue
        total = int(rep.get("dataPlaneCount") or 0)
        for key, acked in (rep.get("inProgressResources") or {}).items():
            a, t = out.get(str(key), (0, 0))
            out[str(key)] = (a + int(acked), t + total)
    return out


class DistributionReports:
    """This replica's report writer (`publish`, on every replica) and the reports' reader (`read`, the leader)."""

    def __init__(self, conn: KubeConnection, namespace: str, reporter: str, interval_s: float = 0.5) -> None:
        self.conn, self.namespace, self.reporter, self.interval_s = conn, namespace, reporter, interval_s
        # Istio's `<pod name>-distribution`; an identity with a random suffix (`host_1a2b3c4d`) made a valid name
        self.name = re.sub(r"[^a-z0-9.-]+", "-", reporter.lower()).strip("-.")[:230] + "-distribution"
        self._seen: dict[str, tuple[str, float]] = {}  # reporter -> (report text, when it last changed)

    async def publish(self, build: Callable[[], dict[str, Any]]) -> None:
        """Write this replica's report when it changes (and every HEARTBEAT_S) until cancelled; then delete it."""
        last, written_at = None, 0.0
        try:
            while True:
                try:
                    current = build()
                    if current != last or time.monotonic() - written_at >= HEARTBEAT_S:
                        await self._write(current)
                        last, written_at = current, time.monotonic()
                except (KubeApiError, httpx.HTTPError) as e:
                    log.warning("distribution report %s/%s not written: %s", self.namespace, self.name, e)
                except Exception:  # a bug here must not end the loop
                    log.exception("distribution report: building or writing failed")
                await asyncio.sleep(self.interval_s)
        finally:
            try:
                await self.conn.delete(f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}")
            except (KubeApiError, httpx.HTTPError, RuntimeError):
                pass  # the connection may be gone at shutdown: a stale report ages out (STALE_S)

    async def _write(self, rep: dict[str, Any]) -> None:
        text = yaml.safe_dump({**rep, "heartbeat": int(time.time())}, sort_keys=True)
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": {LABEL: "true"}},
                "data": {DATA_KEY: text}}
        await self.conn.send_json("PATCH", f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}", body,
                                  "application/apply-patch+yaml", {"fieldManager": FIELD_MANAGER, "force": "true"})

    async def read(self) -> dict[str, tuple[int, int]]:
        """Every replica's report added up (`add_up`); reports unreadable or stale are left out."""
        listed = await self.conn.get_json(f"/api/v1/namespaces/{self.namespace}/configmaps",
                                          {"labelSelector": f"{LABEL}=true"})
        now = time.monotonic()
        reports = []
        for cm in listed.get("items") or ():
            text = str((cm.get("data") or {}).get(DATA_KEY, ""))
            try:
                rep = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if not isinstance(rep, dict):
                continue
            who = str(rep.get("reporter", ""))
            before = self._seen.get(who)
            seen = before[1] if before is not None and before[0] == text else now
            self._seen[who] = (text, seen)
            reports.append((rep, seen))
        return add_up(reports, now)
