"""Optionally runs the workload's own process beside Envoy (HOST/PORT/HTTP_PROXY in its environment)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence

from sailmesh.agent.config import AgentConfig
from sailmesh.errors import AgentError
from sailmesh.processes import die_with_parent

log = logging.getLogger(__name__)


def app_environment(cfg: AgentConfig, outbound_port: int = 15001) -> dict[str, str]:
    """The variables the embedded platform gives an app: its address, its port, its sidecar as HTTP proxy."""
    env = {"HOST": cfg.ip, "POD_IP": cfg.ip, "POD_NAME": cfg.name, "POD_NAMESPACE": cfg.namespace}
    if cfg.app_ports:
        env["PORT"] = str(cfg.app_ports[0][1])
    if cfg.proxy_type == "sidecar":
        proxy = f"http://{cfg.ip}:{outbound_port}"
        env.update(HTTP_PROXY=proxy, http_proxy=proxy)
    return env


class AppProcess:
    """One child process started with the agent and stopped after Envoy has drained."""

    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        if not command:
            raise AgentError("empty app command")
        self.command = list(command)
        self.env = {**os.environ, **env}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the app."""
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )
        except OSError as e:
            raise AgentError(f"cannot start app {self.command[0]!r}: {e}") from e
        log.info("app started (pid %d): %s", self.proc.pid, " ".join(self.command))

    async def wait(self) -> int:
        """Wait for the app to exit on its own; its exit code."""
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after timeout."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode
