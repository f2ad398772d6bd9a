"""Run a real Envoy for tests: bootstrap in a temp dir, --disable-hot-restart, admin on loopback, kill on stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from sailmesh.errors import AgentError
from sailmesh.processes import envoy_binary

ENVOY_STOP_TIMEOUT = 5.0


def ads_bootstrap(
    node_id: str,
    xds_port: int,
    *,
    cluster: str = "sailmesh-test",
    xds_host: str = "127.0.0.1",
    delta: bool = False,
    admin_host: str = "127.0.0.1",
    retry_base_s: float = 0.1,
    retry_max_s: float = 1.0,
) -> dict[str, Any]:
    """A bootstrap that takes LDS and CDS (and so RDS/EDS) over ADS from xds_host:xds_port (plaintext gRPC)."""
    grpc_service = {
        "envoy_grpc": {
            "cluster_name": "xds-grpc",
            # Reconnect quickly after the control plane goes away (Envoy's default backoff starts at 500 ms).
            "retry_policy": {
                "retry_back_off": {"base_interval": f"{retry_base_s}s", "max_interval": f"{retry_max_s}s"}
            },
        }
    }
    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [grpc_service],
                "set_node_on_first_message_only": True,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                            "socket_address": {"address": xds_host, "port_value": xds_port}}}}]}],
                    },
                    # Without HTTP/2 here Envoy never connects to the gRPC server (and logs nothing at warning).
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ]
        },
    }


class EnvoyProcess:
    """One Envoy process with its bootstrap, log and admin address in workdir."""

    def __init__(
        self,
        bootstrap: Mapping[str, Any],
        workdir: pathlib.Path,
        *,
        log_level: str = "warning",
        extra_args: tuple[str, ...] = (),
        binary: str | None = None,
    ) -> None:
        self.bootstrap = dict(bootstrap)
        self.workdir = pathlib.Path(workdir)
        self.log_level = log_level
        self.extra_args = extra_args
        self.binary = binary or envoy_binary()
        self.bootstrap_path = self.workdir / "envoy-bootstrap.json"
        self.admin_path = self.workdir / "envoy-admin-address"
        self.log_path = self.workdir / "envoy.log"
        self.admin_address = ""
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 15.0) -> EnvoyProcess:
        """Spawn Envoy and wait until its admin endpoint answers (not until it is LIVE: see wait_ready)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path.write_text(json.dumps(self.bootstrap, indent=1))
        self.admin_path.unlink(missing_ok=True)
        args = [
            self.binary, "-c", str(self.bootstrap_path), "--disable-hot-restart",
            "--admin-address-path", str(self.admin_path), "--log-level", self.log_level,
            "--concurrency", "1", *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                                                             stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise AgentError(f"envoy exited with {self.proc.returncode}: {self.log_tail()}")
            if self.admin_path.exists():
                text = self.admin_path.read_text().strip()
                if text:
                    self.admin_address = text
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        await self.admin_get("/server_info")
                        return self
            if time.monotonic() > deadline:
                await self.stop()
                raise AgentError(f"envoy admin did not come up in {timeout}s: {self.log_tail()}")
            await asyncio.sleep(0.02)

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until /ready says LIVE (Envoy got its initial config)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise AgentError(f"envoy exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                status, last = await self.admin_get("/ready")
                if status == 200:
                    return
            await asyncio.sleep(0.02)
        raise AgentError(f"envoy not ready after {timeout}s ({last.strip()}): {self.log_tail()}")

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_address}"

    async def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(self.admin_url + path) as resp:
                return resp.status, await resp.text()

    async def config_dump(self, resource: str = "") -> dict[str, Any]:
        # a config dump of 17,500 clusters takes Envoy well over 5 s on a busy 2-core machine
        status, text = await self.admin_get("/config_dump" + (f"?resource={resource}" if resource else ""), 120.0)
        if status != 200:
            raise AgentError(f"config_dump: HTTP {status}")
        return dict(json.loads(text))

    async def stat(self, name: str) -> int | None:
        """One counter or gauge from /stats (exact name), or None if absent."""
        _, text = await self.admin_get(f"/stats?filter=^{name}$")
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name and value.strip().lstrip("-").isdigit():
                return int(value)
        return None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def stop(self) -> None:
        """Terminate, then kill if it does not exit in time. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(ENVOY_STOP_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def running_envoy(
    bootstrap: Mapping[str, Any], workdir: pathlib.Path, **kwargs: Any
) -> AsyncIterator[EnvoyProcess]:
    """Start Envoy for the duration of a block; it is stopped (killed if needed) even on failure."""
    envoy = EnvoyProcess(bootstrap, workdir, **kwargs)
    try:
        await envoy.start()
        yield envoy
    finally:
        await envoy.stop()
