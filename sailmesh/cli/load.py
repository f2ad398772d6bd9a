"""`sailmesh x load URL -c N -n M`: a small load client for the mesh's tasks (Istio's use fortio).

  sailmesh exec fortio -- sailmesh x load -c 2 -n 20 http://httpbin:8000/get
  sailmesh x load --from fortio -c 3 -n 30 http://httpbin:8000/get      # the same, without exec

N workers each keep one HTTP/1.1 connection (as `fortio load -c N -qps 0`) and send M requests between them as
fast as answers come, through the proxy in HTTP_PROXY (a workload's sidecar when run under `sailmesh exec`, or
the one of `--from NAME`). It prints fortio's code histogram; 503s Envoy answered because a circuit breaker
overflowed carry `x-envoy-overloaded: true` and are counted apart (their access-log response flag is UO).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError

OVERLOADED = "x-envoy-overloaded"


@dataclass
class LoadResult:
    """What a run observed: status codes (0 = no answer), overflow 503s, errors and timing."""

    codes: Counter[int] = field(default_factory=Counter)
    overloaded: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(self.codes.values())

    def to_json(self) -> dict[str, object]:
        return {"calls": self.calls, "codes": {str(k): v for k, v in sorted(self.codes.items())},
                "overloaded": self.overloaded, "errors": dict(self.errors), "seconds": round(self.seconds, 4)}

    def report(self) -> str:
        """fortio's summary lines: the code histogram, then averages."""
        lines = []
        n = self.calls or 1
        for code, count in sorted(self.codes.items()):
            extra = f"  ({self.overloaded} with {OVERLOADED}: circuit breaker overflow, flag UO)" \
                if code == 503 and self.overloaded else ""
            lines.append(f"Code {code:3d} : {count} ({100.0 * count / n:.1f} %){extra}")
        for err, count in sorted(self.errors.items()):
            lines.append(f"  error {err}: {count}")
        avg = 1000.0 * sum(self.latencies) / len(self.latencies) if self.latencies else 0.0
        qps = self.calls / self.seconds if self.seconds else 0.0
        lines.append(f"All done {self.calls} calls {avg:.3f} ms avg, {qps:.1f} qps")
        return "\n".join(lines)


async def run_load(url: str, concurrency: int, requests: int, proxy: str | None,
                   timeout: float = 10.0) -> LoadResult:
    """Send `requests` GETs to url over `concurrency` connections (one each), through `proxy` when given."""
    result = LoadResult()
    remaining = [requests]
    start = time.monotonic()

    async def worker() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = time.monotonic()
                try:
                    async with session.get(url, proxy=proxy or None) as r:
                        await r.read()
                        result.codes[r.status] += 1
                        if r.status == 503 and r.headers.get(OVERLOADED) == "true":
                            result.overloaded += 1
                except (TimeoutError, aiohttp.ClientError) as e:
                    result.codes[0] += 1
                    result.errors[type(e).__name__] += 1
                result.latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    result.seconds = time.monotonic() - start
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="http://service:port/path (resolved by the sidecar)")
    parser.add_argument("-c", dest="concurrency", type=int, default=4, help="connections (fortio's -c, default 4)")
    parser.add_argument("-n", dest="requests", type=int, default=100, help="requests in all (default 100)")
    parser.add_argument("--from", dest="source", default="",
                        help="send through this workload's sidecar (deploy/NAME or NAME-0), as `sailmesh exec` would")
    parser.add_argument("--namespace", default="default", help="the --from workload's namespace")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text")
    add_state_dir(parser)


def _proxy(args: argparse.Namespace) -> str | None:
    if not args.source:
        return os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy") or None
    from sailmesh.cli.exec import find_instance

    state = running_mesh(args)
    inst = find_instance(state, args.source, args.namespace)
    if inst is None:
        raise PlatformError(f'workload "{args.source}" not found in namespace "{args.namespace}"')
    return inst.env.get("HTTP_PROXY")


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.requests < 1:
        return fail("-c and -n must be at least 1")
    try:
        proxy = _proxy(args)
    except PlatformError as e:
        return fail(str(e))
    result = asyncio.run(run_load(args.url, args.concurrency, args.requests, proxy, args.timeout))
    print(json.dumps(result.to_json()) if args.output == "json" else result.report())
    return 0
