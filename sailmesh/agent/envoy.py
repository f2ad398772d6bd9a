"""Runs one Envoy: start it, restart it with backoff when it dies, drain it gracefully, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from sailmesh.agent.admin import EnvoyAdmin
from sailmesh.errors import AgentError
from sailmesh.processes import die_with_parent, envoy_binary

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class EnvoyOptions:
    """How to run Envoy."""

    bootstrap_path: Path
    drain_seconds: float = 5.0
    concurrency: int = 2
    log_level: str = "warning"
    log_path: Path | None = None  # None: inherit the agent's stdout/stderr
    pid_path: Path | None = None  # the current Envoy pid, rewritten on every (re)start
    binary: str = ""
    # Restart policy: a run shorter than stable_s is a quick failure; give up after max_quick_failures in a row.
    stable_s: float = 5.0
    max_quick_failures: int = 6
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0


class EnvoySupervisor:
    """Owns the Envoy child process for the agent's lifetime."""

    def __init__(self, options: EnvoyOptions, admin: EnvoyAdmin) -> None:
        self.options = options
        self.admin = admin
        self.restarts = 0
        self.gave_up = asyncio.Event()
        self.error: AgentError | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._draining = False  # no restarts once the drain has begun
        self._watcher: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The running Envoy's pid, if any."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def command(self) -> list[str]:
        """Envoy's command line."""
        o = self.options
        return [
            o.binary or envoy_binary(),
            "-c", str(o.bootstrap_path),
            "--disable-hot-restart",
            "--drain-time-s", str(max(1, math.ceil(o.drain_seconds))),
            "--drain-strategy", "immediate",
            "--concurrency", str(o.concurrency),
            "--log-level", o.log_level,
            "--local-address-ip-version", "v4",
        ]  # fmt: skip

    async def _spawn(self) -> asyncio.subprocess.Process:
        cmd = self.command()
        out = open(self.options.log_path, "ab") if self.options.log_path else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent,
                start_new_session=True,  # a terminal's Ctrl-C reaches the agent only, which then drains
            )
        except OSError as e:
            raise AgentError(f"cannot start Envoy ({cmd[0]}): {e}") from e
        finally:
            if out is not None:
                out.close()
        if self.options.pid_path is not None:
            self.options.pid_path.write_text(f"{proc.pid}\n")
        log.info("envoy started (pid %d)", proc.pid)
        return proc

    async def start(self) -> None:
        """Start Envoy and the watcher that restarts it if it dies while it should be running."""
        self._proc = await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name="envoy-watch")

    async def _watch(self) -> None:
        quick_failures = 0
        while True:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            rc = await proc.wait()
            if self._stopping.is_set() or self._draining:
                return
            lived = time.monotonic() - started
            quick_failures = quick_failures + 1 if lived < self.options.stable_s else 1
            if quick_failures > self.options.max_quick_failures:
                self.error = AgentError(
                    f"Envoy keeps exiting (last exit code {rc}); giving up after {quick_failures - 1} restarts"
                )
                log.error("%s", self.error)
                self.gave_up.set()
                return
            delay = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** (quick_failures - 1))
            log.warning("envoy exited unexpectedly with code %s after %.1fs; restarting in %.2fs", rc, lived, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
                return  # stop() was called while we waited
            try:
                self._proc = await self._spawn()
            except AgentError as e:
                self.error = e
                self.gave_up.set()
                return
            self.restarts += 1

    async def drain(self, inbound_only: bool, timeout: float, minimum: float = 0.0) -> bool:
        """Drain listeners gracefully (they still accept, answering with `Connection: close`); return True once no
        request is in flight and at least `minimum` seconds passed (time for the endpoint to leave every other proxy,
        Istio's MINIMUM_DRAIN_DURATION), False at the timeout."""
        loop = asyncio.get_running_loop()
        earliest = loop.time() + min(minimum, timeout)
        deadline = loop.time() + timeout
        self._draining = True
        if self.pid is None:
            return True
        try:
            await self.admin.drain_listeners(inbound_only)
        except AgentError as e:
            log.warning("drain: %s", e)
            return False
        zero_seen = 0
        while loop.time() < deadline:
            try:
                active = await self.admin.active_requests()
            except AgentError as e:
                log.warning("drain: %s", e)
                return False
            zero_seen = zero_seen + 1 if active == 0 else 0
            # two polls in a row, so a request just being accepted is not missed
            if zero_seen >= 2 and loop.time() >= earliest:
                return True
            await asyncio.sleep(0.05)
        log.warning("drain: requests still in flight after %.1fs", timeout)
        return False

    async def stop(self, timeout: float = 5.0) -> int | None:
        """Stop restarting, SIGTERM Envoy, SIGKILL it after timeout; return its exit code."""
        self._stopping.set()
        proc = self._proc
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self.options.pid_path is not None:
            with contextlib.suppress(OSError):
                self.options.pid_path.unlink()
        return proc.returncode
