"""A kubelet's prober for one app process of the embedded platform: the startupProbe first (until it passes, no
other probe runs and the instance is out of the endpoints; failureThreshold failures kill the app), then the
livenessProbe (failureThreshold failures in a row kill the app, which its restartPolicy then restarts or not) and
the readinessProbe (failureThreshold failures take the instance out of the endpoints, successThreshold successes
bring it back). With a sidecar, every httpGet, tcpSocket and grpc probe goes through the agent's rewritten
`/app-health/...` paths on 15020, as a kubelet's probes of an Istio pod do; without one, straight to the app. An exec
probe runs its command here, as a kubelet runs it in the container: with the app's environment and working
directory, healthy on exit status 0, killed and failed after timeoutSeconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from sailmesh.agent.health import probe_check
from sailmesh.platform.probes import Probe, app_health_path
from sailmesh.platform.workloads import Instance

Check = Callable[[], Awaitable[str | None]]
# what a kubelet waits after its probe's own timeout before it gives up on the agent's answer
AGENT_SLACK_S = 0.5
# how much of an exec probe's output a failure message keeps (the kubelet keeps 10 KiB in the event)
EXEC_OUTPUT_CHARS = 200


def through_agent(inst: Instance, field: str, probe: Probe, status_port: int) -> Check:
    """The kubelet's GET of the rewritten probe on the sidecar's status port: success on 200-399, as the kubelet."""
    url = f"http://{inst.ip}:{status_port}{app_health_path(inst.workload, field)}"
    what = f"app {field.removesuffix('Probe')} probe"
    timeout = aiohttp.ClientTimeout(total=probe.timeout_s + AGENT_SLACK_S)

    async def check() -> str | None:
        try:
            async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as s:
                async with s.get(url, allow_redirects=False) as r:
                    if 200 <= r.status < 400:
                        return None
                    body = (await r.text()).strip()
                    return f"{what} {url}: HTTP {r.status}" + (f" ({body})" if body else "")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return f"{what} {url}: {str(e) or type(e).__name__}"

    return check


def exec_check(inst: Instance, field: str, probe: Probe, env: Mapping[str, str] | None) -> Check:
    """The kubelet's exec probe: run the command (its own process group, the app's environment and directory);
    healthy on exit status 0; after timeoutSeconds the command is killed and the probe fails."""
    what = f"app {field.removesuffix('Probe')} probe: exec {' '.join(probe.command)}"
    environ = dict(env) if env is not None else dict(os.environ)

    async def check() -> str | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *probe.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=environ, cwd=inst.cwd, start_new_session=True)
        except OSError as e:
            return f"{what}: {e}"
        try:
            async with asyncio.timeout(probe.timeout_s):
                out, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return f"{what}: timed out after {probe.timeout_s:g}s"
        if proc.returncode == 0:
            return None
        text = out.decode(errors="replace").strip()[:EXEC_OUTPUT_CHARS]
        return f"{what}: exit status {proc.returncode}" + (f" ({text})" if text else "")

    return check


def check_for(inst: Instance, field: str, probe: Probe, status_port: int,
              env: Mapping[str, str] | None = None) -> Check:
    """How the platform runs `field` of `inst`: an exec probe itself; the others through its sidecar's agent, or
    straight to the app."""
    if probe.kind == "exec":
        return exec_check(inst, field, probe, env)
    if inst.sidecar:
        return through_agent(inst, field, probe, status_port)
    return probe_check(inst.ip, json.loads(probe.to_json()))


@dataclass
class Hooks:
    """What the prober does to the mesh: alive() of this app process, mark(key, down) in the endpoints (True when
    that changed the instance's state), kill(reason[, grace seconds]) of this app process (SIGTERM, SIGKILL after the
    grace, by default the pod's), say(line) on the terminal."""

    alive: Callable[[], bool]
    mark: Callable[[str, bool], bool]
    kill: Callable[..., Awaitable[None]]
    say: Callable[[str], None]


async def kill_for(hooks: Hooks, probe: Probe, reason: str) -> None:
    """Kubernetes' kill after a failed liveness or startup probe: the probe's terminationGracePeriodSeconds when it
    sets one, else the pod's grace period."""
    if probe.termination_grace_s is None:
        await hooks.kill(reason)
    else:
        await hooks.kill(reason, probe.termination_grace_s)


def startup_key(inst: Instance) -> str:
    """The key under which a pending startupProbe keeps the instance out of the endpoints."""
    return f"{inst.name}.{inst.namespace}.startup"


def readiness_key(inst: Instance) -> str:
    """The key under which a failing readinessProbe keeps the instance out of the endpoints."""
    return f"{inst.name}.{inst.namespace}.probe"


class AppProber:
    """Probes one app process for its lifetime (a restarted app gets a new one)."""

    def __init__(self, inst: Instance, hooks: Hooks, status_port: int, env: Mapping[str, str] | None = None) -> None:
        self.inst = inst
        self.hooks = hooks
        self.status_port = status_port
        self.env = env  # the app process's environment (exec probes run with it)
        self.who = f"{inst.namespace}/{inst.name}"

    def _check(self, field: str, probe: Probe) -> Check:
        return check_for(self.inst, field, probe, self.status_port, self.env)

    async def run(self) -> None:
        """Startup, then liveness and readiness, until the app process exits."""
        inst = self.inst
        if inst.startup_probe is not None:
            self.hooks.mark(startup_key(inst), True)
            if not await self._until_started(inst.startup_probe):
                return
            self.hooks.mark(startup_key(inst), False)
            self.hooks.say(f"  {self.who} startup probe passed")
        loops = [self._liveness(inst.liveness_probe)] if inst.liveness_probe else []
        if inst.readiness_probe is not None:
            loops.append(self._readiness(inst.readiness_probe))
        await asyncio.gather(*loops)

    async def _until_started(self, probe: Probe) -> bool:
        check, failed = self._check("startupProbe", probe), 0
        await asyncio.sleep(probe.initial_delay_s)
        while self.hooks.alive():
            why = await check()
            if why is None:
                return True
            failed += 1
            if failed >= probe.failure_threshold:
                await kill_for(self.hooks, probe, f"{self.who} startup probe failed {failed} times ({why})")
                return False
            await asyncio.sleep(probe.period_s)
        return False

    async def _liveness(self, probe: Probe) -> None:
        check, failed = self._check("livenessProbe", probe), 0
        await asyncio.sleep(probe.initial_delay_s)
        while self.hooks.alive():
            why = await check()
            failed = 0 if why is None else failed + 1
            if failed >= probe.failure_threshold:
                await kill_for(self.hooks, probe, f"{self.who} liveness probe failed {failed} times in a row ({why})")
                return
            await asyncio.sleep(probe.period_s)

    async def _readiness(self, probe: Probe) -> None:
        check, key, ok, failed = self._check("readinessProbe", probe), readiness_key(self.inst), 0, 0
        failed_once = probe.rewritten  # an exec probe's first pass is not a return
        if not probe.rewritten:
            # Kubernetes: not ready until the probe first passes. A rewritten probe is part of the sidecar's own
            # readiness, which the platform waits for before the instance joins; an exec probe is not.
            self.hooks.mark(key, True)
        await asyncio.sleep(probe.initial_delay_s)
        while self.hooks.alive():
            why = await check()
            ok, failed = (ok + 1, 0) if why is None else (0, failed + 1)
            if why is None and ok >= probe.success_threshold and self.hooks.mark(key, False):
                self.hooks.say(f"  {self.who} readiness probe passes" + (" again" if failed_once else ""))
                failed_once = True
            elif why is not None and failed >= probe.failure_threshold and self.hooks.mark(key, True):
                self.hooks.say(f"{self.who} is not ready: {why}")
            await asyncio.sleep(probe.period_s)
