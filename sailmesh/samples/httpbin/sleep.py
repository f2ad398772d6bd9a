"""Istio's `sleep` sample: a process that only stays up, so `sailmesh exec sleep -n NS -- curl ...` has a workload
to run as (Istio's is `sleep infinity` in a curl image)."""

from __future__ import annotations

import asyncio
import signal


async def sleep_forever() -> None:
    """Wait for SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(sleep_forever())
