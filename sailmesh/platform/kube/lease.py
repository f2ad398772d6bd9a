"""Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection package does it.

Several control-plane replicas serve xDS at once; one of them, the Lease's holder, does the writes (the CA root
ConfigMap in each namespace, the webhook's caBundle, status). The rules are client-go's (leaderelection.go,
resourcelock/leaselock.go):

- every `retry_period` a candidate tries to acquire or renew: GET the Lease (create it when missing, holding it);
  a Lease held by someone else is taken only when its record has not changed for `lease_duration`, measured on
  the candidate's own clock from when it last *saw* the record change (never the renewTime written by another
  host, so clock skew between hosts does not matter);
- taking it over writes holderIdentity, acquireTime, renewTime and leaseTransitions + 1; renewing writes renewTime;
  every write is an update with the resourceVersion read (optimistic concurrency: of two candidates, one gets 409);
- a leader that has not renewed within `renew_deadline` stops leading (its leader-only work is cancelled at once,
  before another can have taken over, since renew_deadline < lease_duration);
- on a clean stop the leader releases the Lease (holderIdentity "" and a 1 s duration), so another replica takes
  over within a retry period instead of a lease duration. A killed leader releases nothing: the others wait out
  the lease duration.

Defaults are client-go's (15 s / 10 s / 2 s); tests shorten them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx

from sailmesh.errors import PlatformError
from sailmesh.platform.kube.client import KubeApiError, KubeConnection

log = logging.getLogger(__name__)

LEASE_NAME = "sailmesh-controlplane-leader"
LeaderTask = Callable[[], Awaitable[None]]


def _micro_time(t: float) -> str:
    """Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """The pod's name when running in one (POD_NAME), else the host name, plus a random suffix as client-go's
    callers do (two replicas on one host must not share an identity)."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseTimings:
    """client-go's LeaseDuration, RenewDeadline and RetryPeriod (seconds)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # client-go's NewLeaderElector checks
        if not self.lease_duration > self.renew_deadline > 0 or self.renew_deadline <= 1.2 * self.retry_period:
            raise PlatformError("lease timings: need lease_duration > renew_deadline > 1.2 * retry_period > 0")

    @classmethod
    def scaled(cls, lease_duration: float) -> LeaseTimings:
        """client-go's 15/10/2 proportions for another lease duration."""
        return cls(lease_duration, lease_duration * 2 / 3, lease_duration * 2 / 15)


@dataclass
class LeaderElector:
    """Runs the election for one identity; `run()` until cancelled. While leading, every registered leader task
    runs (a task that ends or fails is logged; it is not restarted until leadership is won again)."""

    conn: KubeConnection
    namespace: str
    name: str = LEASE_NAME
    identity: str = field(default_factory=default_identity)
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    clock: Callable[[], float] = time.monotonic
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    transitions: int = 0  # how often this elector became leader
    _tasks: list[tuple[str, LeaderTask]] = field(default_factory=list)
    _running: list[asyncio.Task[None]] = field(default_factory=list)
    _observed: dict[str, Any] = field(default_factory=dict)  # the Lease spec last seen
    _observed_at: float = 0.0  # when (our clock) it last changed

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    def add_task(self, name: str, task: LeaderTask) -> None:
        """Run `task` while this replica leads (cancelled when it stops leading)."""
        self._tasks.append((name, task))
        if self.is_leader:
            self._running.append(asyncio.create_task(self._guard(name, task), name=f"leader-{name}"))

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    async def run(self) -> None:
        """Acquire, lead while renewing, fall back to candidate when a renewal deadline passes; release on cancel."""
        try:
            while True:
                await self._acquire()
                await self._lead()
        finally:
            if self.is_leader:
                self._stop_leading()
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release())

    async def _acquire(self) -> None:
        while not await self._try():
            await asyncio.sleep(self.timings.retry_period)
        self.leading.set()
        self.transitions += 1
        log.info("leader election: %s leads (lease %s/%s)", self.identity, self.namespace, self.name)
        self._running = [asyncio.create_task(self._guard(n, t), name=f"leader-{n}") for n, t in self._tasks]

    async def _lead(self) -> None:
        last_renew = self.clock()
        while True:
            await asyncio.sleep(self.timings.retry_period)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result when the renewal completes
            # as the task is cancelled, and the cancellation is lost (the elector then never stops)
            try:
                async with asyncio.timeout(self.timings.renew_deadline):
                    renewed = await self._try()
            except TimeoutError:
                renewed = False
            if renewed:
                last_renew = self.clock()
            elif self.clock() - last_renew >= self.timings.renew_deadline or self._held_by_other():
                log.warning("leader election: %s lost the lease %s/%s", self.identity, self.namespace, self.name)
                self._stop_leading()
                return

    def _held_by_other(self) -> bool:
        holder = str(self._observed.get("holderIdentity") or "")
        return bool(holder) and holder != self.identity

    def _stop_leading(self) -> None:
        self.leading.clear()
        for t in self._running:
            t.cancel()
        self._running = []

    async def _guard(self, name: str, task: LeaderTask) -> None:
        try:
            await task()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one leader task failing must not end the election
            log.error("leader task %s failed: %s", name, e)

    # -- one try, client-go's tryAcquireOrRenew -------------------------------------------------------
    def _record(self, now_wall: float, old: dict[str, Any] | None) -> dict[str, Any]:
        mine = old is not None and old.get("holderIdentity") == self.identity
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": max(1, round(self.timings.lease_duration)),
                                "renewTime": _micro_time(now_wall)}
        if old is None:
            spec.update(acquireTime=_micro_time(now_wall), leaseTransitions=0)
        elif mine:
            spec.update(acquireTime=old.get("acquireTime") or _micro_time(now_wall),
                        leaseTransitions=int(old.get("leaseTransitions") or 0))
        else:
            spec.update(acquireTime=_micro_time(now_wall), leaseTransitions=int(old.get("leaseTransitions") or 0) + 1)
        return spec

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = dict(spec)
            self._observed_at = self.clock()

    async def _try(self) -> bool:
        """One attempt to acquire or renew; False when someone else validly holds it or the write lost a race."""
        try:
            return await self._try_once()
        except (KubeApiError, httpx.HTTPError) as e:
            log.info("leader election: %s: %s", self.identity, e)
            return False

    async def _try_once(self) -> bool:
        now_wall = time.time()
        try:
            lease = await self.conn.get_json(f"{self.path}/{self.name}")
        except KubeApiError as e:
            if e.code != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._record(now_wall, None)}
            created = await self.conn.send_json("POST", self.path, body)
            self._observe(created.get("spec") or {})
            return True
        spec = lease.get("spec") or {}
        self._observe(spec)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or self.timings.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > self.clock():
            return False  # held, and not yet expired by our own clock
        lease["spec"] = self._record(now_wall, spec)
        updated = await self.conn.send_json("PUT", f"{self.path}/{self.name}", lease)  # 409 if it moved meanwhile
        self._observe(updated.get("spec") or {})
        return True

    async def _release(self) -> None:
        """Give the Lease up (client-go's ReleaseOnCancel): no holder, a 1 s duration."""
        lease = await self.conn.get_json(f"{self.path}/{self.name}")
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        now = _micro_time(time.time())
        lease["spec"] = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now,
                         "acquireTime": now}
        await self.conn.send_json("PUT", f"{self.path}/{self.name}", lease)
        log.info("leader election: %s released the lease %s/%s", self.identity, self.namespace, self.name)
