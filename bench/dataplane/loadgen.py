"""Load generators: wrk (paced and saturation), hey (fixed rate, per-request CSV), a small asyncio fallback."""

from __future__ import annotations

import asyncio
import json
import math
import pathlib
import re
import shutil
import statistics
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field

from bench.dataplane.errors import LoadGenError

HEY_RESOLUTION_S = 1e-4  # hey prints times with 4 decimals (seconds)


@dataclass
class FixedRateResult:
    """One paced run: latency percentiles (ms, successful requests) and the achieved rate."""

    tool: str
    requests: int
    errors: int
    duration_s: float
    percentiles_ms: dict[str, float]  # p50, p90, p99
    mean_ms: float
    resolution_s: float

    @property
    def rps(self) -> float:
        """Achieved successful requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def summarise_latencies(latencies_s: list[float]) -> tuple[dict[str, float], float]:
    """(p50/p90/p99 in ms by nearest rank, mean in ms) of per-request latencies in seconds."""
    s = sorted(latencies_s)
    if not s:
        return {f"p{p}": math.nan for p in (50, 90, 99)}, math.nan
    pct = {f"p{p}": s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))] * 1000.0 for p in (50, 90, 99)}
    return pct, statistics.fmean(s) * 1000.0


@dataclass
class SaturationResult:
    """Throughput of one closed-loop run as fast as the set-up answers."""

    tool: str
    requests: int
    errors: int
    duration_s: float
    rps: float
    percentiles_ms: dict[str, float] = field(default_factory=dict)


def tools_available() -> dict[str, str | None]:
    """Paths of hey and wrk (None when missing)."""
    return {"hey": shutil.which("hey"), "wrk": shutil.which("wrk")}


def hey_per_worker_qps(rate: float, connections: int) -> float:
    """hey's -q is a per-worker limit (each worker ticks every 1/q s): total rate / workers."""
    return rate / connections


def run_hey(url: str, rate: float, connections: int, duration: float, host: str | None = None) -> FixedRateResult:
    """Run hey at `rate` total requests/s over `connections` workers for `duration` s; parse its CSV."""
    args = ["hey", "-z", f"{duration:g}s", "-c", str(connections), "-q", f"{hey_per_worker_qps(rate, connections):g}",
            "-t", "10", "-o", "csv"]
    if host:
        args += ["-host", host]
    started = time.monotonic()
    r = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration + 60)
    wall = time.monotonic() - started
    if r.returncode != 0:
        raise LoadGenError(f"hey exited {r.returncode}: {r.stderr.strip()[:500]}")
    latencies, errors = parse_hey_csv(r.stdout)
    # hey's CSV lists completed requests only (transport errors are missing: a shortfall shows in the
    # achieved rate). The duration is hey's -z: it stops sending at that deadline.
    pct, mean = summarise_latencies(latencies)
    return FixedRateResult("hey", len(latencies), errors, min(duration, wall), pct, mean, HEY_RESOLUTION_S)


def parse_hey_csv(text: str) -> tuple[list[float], int]:
    """(latencies in s of 2xx/3xx rows, number of other rows) from `hey -o csv` output."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("response-time,"):
        raise LoadGenError(f"unexpected hey CSV header: {lines[:1]!r}")
    cols = lines[0].split(",")
    i_lat, i_status = cols.index("response-time"), cols.index("status-code")
    latencies: list[float] = []
    errors = 0
    for line in lines[1:]:
        parts = line.split(",")
        if len(parts) != len(cols):
            raise LoadGenError(f"malformed hey CSV row: {line!r}")
        if 200 <= int(parts[i_status]) < 400:
            latencies.append(float(parts[i_lat]))
        else:
            errors += 1
    return latencies, errors


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
PACING_SCRIPT = pathlib.Path(__file__).with_name("fixed_rate.lua")


def run_wrk_paced(url: str, rate: float, connections: int, duration: float, host: str | None = None) -> FixedRateResult:
    """wrk at `rate` requests/s, sends spread evenly over time by fixed_rate.lua's schedule."""
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(duration))}s", "-s", str(PACING_SCRIPT)]
    if host:
        args += ["-H", f"Host: {host}"]
    r = subprocess.run([*args, url, "--", f"{rate:g}"], capture_output=True, text=True, timeout=duration + 60)
    if r.returncode != 0:
        raise LoadGenError(f"wrk exited {r.returncode}: {r.stderr.strip()[:500]}")
    return parse_wrk_paced(r.stdout)


def parse_wrk_paced(text: str) -> FixedRateResult:
    """The SAILMESH-BENCH JSON line that fixed_rate.lua prints from wrk's done()."""
    m = re.search(r"^SAILMESH-BENCH (\{.*\})$", text, re.M)
    if not m:
        raise LoadGenError(f"no SAILMESH-BENCH line in wrk output: {text[:300]!r}")
    d = json.loads(m.group(1))
    pct = {f"p{p}": d[f"p{p}_us"] / 1000.0 for p in (50, 90, 99)}
    ok = max(0, int(d["requests"]) - int(d["errors"]))
    return FixedRateResult("wrk-paced", ok, int(d["errors"]), d["duration_us"] / 1e6, pct, d["mean_us"] / 1000.0, 1e-6)


def run_wrk(url: str, connections: int, duration: float, threads: int = 1, host: str | None = None) -> SaturationResult:
    """Run wrk closed-loop for `duration` s and parse requests/s, errors and its latency distribution."""
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency"]
    if host:
        args += ["-H", f"Host: {host}"]
    r = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration + 60)
    if r.returncode != 0:
        raise LoadGenError(f"wrk exited {r.returncode}: {r.stderr.strip()[:500]}")
    return parse_wrk(r.stdout)


def parse_wrk(text: str) -> SaturationResult:
    """Parse wrk's text report (with --latency)."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m or not rps:
        raise LoadGenError(f"cannot parse wrk output: {text[:300]!r}")
    dur = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    pct: dict[str, float] = {}
    for p, val, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        pct[f"p{p}"] = float(val) * _UNITS[unit]
    return SaturationResult("wrk", int(m.group(1)), errors, dur, float(rps.group(1)), pct)


# ---- fallback: a small asyncio generator, used only in smoke mode when hey/wrk are missing ----


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def _worker(url: urllib.parse.SplitResult, host: str | None, interval: float | None, start: float,
                  deadline: float, lat: list[float], errs: list[int]) -> None:
    req = f"GET {url.path or '/'} HTTP/1.1\r\nHost: {host or url.netloc}\r\nUser-Agent: sailmesh-bench\r\n\r\n"
    req_bytes = req.encode()
    reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
    try:
        nxt = start
        while True:
            now = time.perf_counter()
            if interval is not None:
                if nxt > now:
                    await asyncio.sleep(nxt - now)  # pacing the schedule, not synchronisation
                nxt += interval
                while nxt < time.perf_counter():  # like hey: a missed tick is dropped, not queued
                    nxt += interval
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                status = await _request(reader, writer, req_bytes)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errs.append(1)
                return
            if 200 <= status < 400:
                lat.append(time.perf_counter() - t0)
            else:
                errs.append(1)
    finally:
        writer.close()


async def _run_fallback(url: str, rate: float | None, connections: int, duration: float,
                        host: str | None) -> tuple[list[float], int, float]:
    u = urllib.parse.urlsplit(url)
    lat: list[float] = []
    errs: list[int] = []
    start = time.perf_counter()
    interval = connections / rate if rate else None
    await asyncio.gather(*(
        _worker(u, host, interval, start + (i * interval / connections if interval else 0), start + duration, lat, errs)
        for i in range(connections)
    ))
    return lat, len(errs), time.perf_counter() - start


def run_fallback_fixed(url: str, rate: float, connections: int, duration: float,
                       host: str | None = None) -> FixedRateResult:
    """Fixed-rate run with the asyncio fallback generator (smoke mode only)."""
    lat, errors, wall = asyncio.run(_run_fallback(url, rate, connections, duration, host))
    pct, mean = summarise_latencies(lat)
    return FixedRateResult("python-fallback", len(lat), errors, min(duration, wall), pct, mean, 1e-6)


def run_fallback_saturation(url: str, connections: int, duration: float, host: str | None = None) -> SaturationResult:
    """Closed-loop run with the asyncio fallback generator (smoke mode only)."""
    lat, errors, wall = asyncio.run(_run_fallback(url, None, connections, duration, host))
    d = min(duration, wall)
    return SaturationResult("python-fallback", len(lat), errors, d, len(lat) / d if d else 0.0)
