"""The test node as the kubelet's pod workers: a pod whose start fails (here its TokenRequest, as on a loaded API
server) is retried rather than left without processes, the node keeps serving, and deleting the pod stops them.
Driven through a scripted API connection (list, watch, TokenRequest, status writes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from sailmesh.platform.kube.client import KubeApiError
from sailmesh.testing.kube_node import KubeNode
from sailmesh.testing.waiting import await_for

POD: dict[str, Any] = {
    "metadata": {"name": "sleep-1", "namespace": "ns1", "uid": "u1", "resourceVersion": "5"},
    "spec": {"nodeName": "node-u", "serviceAccountName": "sleep",
             "containers": [{"name": "app", "command": ["python", "-c", "import time; time.sleep(120)"]}],
             "volumes": [{"name": "tok", "projected": {"sources": [
                 {"serviceAccountToken": {"audience": "istio-ca", "path": "istio-token"}}]}}]},
}


class ScriptedApi:
    """Answers the calls the node makes; the first TokenRequest fails with a 503 (an overloaded API server)."""

    def __init__(self) -> None:
        self.token_requests = 0
        self.status_writes: list[str] = []
        self.events: asyncio.Queue[str] = asyncio.Queue()

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        assert path == "/api/v1/pods"
        return {"items": [POD], "metadata": {"resourceVersion": "5"}}

    async def send_json(self, method: str, path: str, body: Mapping[str, Any], content_type: str = "",
                        params: Mapping[str, str] | None = None) -> dict[str, Any]:
        if path.endswith("/token"):
            self.token_requests += 1
            if self.token_requests == 1:
                raise KubeApiError(503, "ServiceUnavailable", "the server is busy")
            return {"status": {"token": "t0k3n"}}
        if path.endswith("/status") and "/pods/" in path:
            self.status_writes.append(path)
        return {}

    async def stream_lines(self, path: str, params: Mapping[str, str], timeout_s: float) -> AsyncIterator[str]:
        while True:
            yield await self.events.get()


async def test_a_failed_pod_start_is_retried_and_a_delete_stops_the_pod(tmp_path: Path) -> None:
    api = ScriptedApi()
    node = KubeNode(api, "node-u", "127.77.1", tmp_path)  # type: ignore[arg-type]
    task = asyncio.create_task(node.run())
    try:
        running = await await_for(lambda: _get(node, ("ns1", "sleep-1")), timeout=20,
                                  what="the pod's process after a retried start")
        assert api.token_requests == 2  # the first attempt failed, the second started the container
        assert api.status_writes and not task.done()
        proc = running.procs["app"]
        assert proc.poll() is None
        assert (tmp_path / "pods/ns1/sleep-1/volumes/tok/istio-token").stat().st_mode & 0o777 == 0o644
        # the watch says the pod is gone: its process is stopped
        api.events.put_nowait(json.dumps({"type": "DELETED", "object": POD}))
        await await_for(lambda: _async(("ns1", "sleep-1") not in node.pods and proc.poll() is not None),
                        timeout=20, what="the deleted pod's process stopped")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _get(node: KubeNode, key: tuple[str, str]) -> Any:
    running = node.pods.get(key)
    return running if running is not None and running.procs.get("app") is not None else None


async def _async(value: bool) -> bool:
    return value
