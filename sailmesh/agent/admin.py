"""A small asyncio client for Envoy's admin interface (readiness, stats, drain)."""

from __future__ import annotations

import aiohttp

from sailmesh.errors import AgentError

# Istio's readiness counters: Envoy has received (accepted or rejected) its first CDS and LDS.
XDS_STATS = (
    "cluster_manager.cds.update_success",
    "cluster_manager.cds.update_rejected",
    "listener_manager.lds.update_success",
    "listener_manager.lds.update_rejected",
)
# HTTP connection managers whose requests are not workload traffic (admin, the 15090 stats listener).
_NOT_TRAFFIC = ("http.admin.", "http.stats.")


class EnvoyAdmin:
    """Talks to one Envoy's admin endpoint; every call raises AgentError when Envoy does not answer."""

    def __init__(self, base_url: str, timeout_s: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        """Release the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str) -> tuple[int, str]:
        try:
            async with self._client().request(method, self.base_url + path) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise AgentError(f"Envoy admin {method} {path} failed: {e!r}") from e

    async def server_state(self) -> str:
        """Envoy's `/ready` body: LIVE, PRE_INITIALIZING, INITIALIZING or DRAINING."""
        _, body = await self._request("GET", "/ready")
        return body.strip()

    async def stats(self, filter_regex: str) -> dict[str, int]:
        """Counters and gauges whose names match filter_regex (histograms are skipped)."""
        status = 0
        try:
            async with self._client().get(
                self.base_url + "/stats", params={"format": "json", "filter": filter_regex}
            ) as resp:
                status = resp.status
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            raise AgentError(f"Envoy admin /stats failed: {e!r}") from e
        if status != 200:
            raise AgentError(f"Envoy admin /stats answered {status}")
        return {s["name"]: int(s["value"]) for s in data.get("stats", []) if "value" in s}

    async def xds_stats(self) -> dict[str, int]:
        """The four CDS/LDS update counters readiness looks at (missing ones count as 0)."""
        found = await self.stats(r"^(cluster_manager\.cds|listener_manager\.lds)\.update_(success|rejected)$")
        return {name: found.get(name, 0) for name in XDS_STATS}

    async def active_requests(self) -> int:
        """In-flight downstream HTTP requests on the workload's listeners."""
        found = await self.stats(r"^http\..*\.downstream_rq_active$")
        return sum(v for k, v in found.items() if not k.startswith(_NOT_TRAFFIC))

    async def drain_listeners(self, inbound_only: bool) -> None:
        """Start Envoy's graceful listener drain (`POST /drain_listeners?graceful[&inboundonly]`)."""
        path = "/drain_listeners?graceful" + ("&inboundonly" if inbound_only else "")
        status, body = await self._request("POST", path)
        if status != 200:
            raise AgentError(f"Envoy refused {path}: {status} {body.strip()}")
