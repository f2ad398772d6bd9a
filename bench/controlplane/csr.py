"""CSRs signed per second per core: the CA alone (in this process, CPU time), and the certificate service of a real
`sailmesh controlplane` over TLS with join tokens (the control plane's CPU from /proc), the issue's target being
at least 1,000 per second per core."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import aiohttp
import grpc
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.controlplane import procs
from bench.controlplane.procs import ControlPlaneProc
from bench.controlplane.profile import start_profiler, stop_profiler
from sailmesh.agent.identity import make_csr
from sailmesh.api.identity import Identity
from sailmesh.ca.authority import CertificateAuthority
from sailmesh.ca.rotation import INSTANCE_KEY
from sailmesh.ca.service import IstioCertificateRequest, client_call

IDENTITY = Identity("cluster.local", "bench", "client")


def _rsa_csr(uri: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = rsa.generate_private_key(65537, 2048)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def sign_only(count: int, rsa_count: int) -> dict[str, Any]:
    """The CA's signing path alone (parse, verify the CSR, build and sign the certificate), per CPU second."""
    with tempfile.TemporaryDirectory() as d:
        ca = CertificateAuthority.self_signed(d)
        out: dict[str, Any] = {}
        for kind, csrs in (("ecdsa_p256", [make_csr(IDENTITY.uri)[0] for _ in range(count)]),
                           ("rsa_2048", [_rsa_csr(IDENTITY.uri) for _ in range(rsa_count)])):
            cpu, wall = time.process_time(), time.perf_counter()
            for csr in csrs:
                ca.sign_csr(csr, IDENTITY)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            out[kind] = {"csrs": len(csrs), "cpu_s": round(cpu, 3), "per_cpu_second": round(len(csrs) / cpu, 1),
                         "per_wall_second": round(len(csrs) / wall, 1)}
        return out


SHAPES = ("one_channel", "channel_per_csr")
# What "per core" means in every figure here: CSRs divided by the CPU-seconds (user + system, every thread, from
# /proc/PID/stat) the control-plane process spent while signing them, not wall-clock seconds on one core.
PER_CORE = "CSRs per CPU-second of the control-plane process (user+system time of all its threads, /proc/PID/stat)"
TTL_S = 24 * 3600  # what the agent asks for by default (validity_duration)


class CaTarget:
    """A real control plane's CA port with a join token for bench/client (`root`: the checkout it runs from, with
    its own venv's Python when it has one, `root/.venv/bin/python`)."""

    def __init__(self, work_dir: str, root: str = "") -> None:
        os.makedirs(os.path.join(work_dir, "config"), exist_ok=True)
        workloads = os.path.join(work_dir, "workloads.json")
        with open(workloads, "w", encoding="utf-8") as fh:
            fh.write("[]")
        saved = procs.ROOT
        procs.ROOT = root or saved  # the control plane's PYTHONPATH and working directory
        try:
            venv_python = os.path.join(root, ".venv", "bin", "python") if root else ""
            self.cp = ControlPlaneProc(os.path.join(work_dir, "config"), workloads, os.path.join(work_dir, "cp.log"),
                                       extra=["--csr-rate", "0"],
                                       python=venv_python if os.path.exists(venv_python) else "")
            self.python = self.cp.proc.args[0]
        finally:
            procs.ROOT = saved
        self.token = ""
        self.root_pem = b""
        self.last_threads: dict[str, float] = {}  # the last batch's CPU seconds by thread name ("main": event loop)

    async def start(self) -> None:
        await self.cp.wait_ready()
        async with aiohttp.ClientSession(trust_env=False) as s, s.post(
                self.cp.api + "/api/v1/join-tokens", json={"namespace": "bench", "serviceAccount": "client"},
                headers=self.cp.headers) as r:
            self.token = (await r.json())["token"]
        with open(os.path.join(self.cp.state_dir, "root-cert.pem"), "rb") as fh:
            self.root_pem = fh.read()

    async def batch(self, shape: str, csrs: list[str], concurrency: int) -> tuple[float, float]:
        """Sign `csrs` in `shape`: (control-plane CPU seconds, wall seconds)."""
        metadata = (("authorization", f"Bearer {self.token}"),)
        target, creds = f"127.0.0.1:{self.cp.ca_port}", grpc.ssl_channel_credentials(self.root_pem)

        def request(csr: str, i: int) -> Any:
            req: Any = IstioCertificateRequest(csr=csr, validity_duration=TTL_S)
            req.metadata.update({INSTANCE_KEY: f"bench/client-{i}"})
            return req

        async with grpc.aio.secure_channel(target, creds) as shared:
            create = client_call(shared)
            await create(request(csrs[0], 0), metadata=metadata)  # connect, warm up (not counted)
            queue = list(reversed(list(enumerate(csrs))))

            async def worker() -> None:
                while queue:
                    i, csr = queue.pop()
                    if shape == "one_channel":
                        await create(request(csr, i), metadata=metadata)
                        continue
                    async with grpc.aio.secure_channel(target, creds) as ch:
                        await client_call(ch)(request(csr, i), metadata=metadata)

            cpu, wall, threads = self.cp.cpu(), time.perf_counter(), procs.thread_cpu_seconds(self.cp.pid)
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            after = procs.thread_cpu_seconds(self.cp.pid)
            self.last_threads = {name: after[name] - threads.get(name, 0.0) for name in after}
            return self.cp.cpu() - cpu, time.perf_counter() - wall


def _csrs(count: int) -> list[str]:
    return [make_csr(IDENTITY.uri)[0].decode() for _ in range(count)]


async def over_grpc(count: int, concurrency: int, work_dir: str, profile_dir: str = "") -> dict[str, Any]:
    """CreateCertificate against a real control plane's CA port over TLS with a join token, `concurrency` calls in
    flight, in each shape: every call on one TLS channel, and a new TLS channel per call, as the agent does (one
    CSR per channel: `CertificateManager.fetch`), so a fleet of agents starting costs the CA one handshake per
    CSR. The request is the agent's: validity_duration and the instance in the metadata."""
    ca = CaTarget(work_dir)
    try:
        await ca.start()
        out: dict[str, Any] = {}
        for shape in SHAPES:
            csrs = _csrs(count)
            profiler = await start_profiler(ca.cp.pid, profile_dir, f"csr-{shape}") if profile_dir else None
            cpu, wall = await ca.batch(shape, csrs, concurrency)
            profile = await stop_profiler(profiler) if profiler is not None else None
            out[shape] = {"csrs": count, "concurrency": concurrency, "controlplane_cpu_s": round(cpu, 2),
                          "wall_s": round(wall, 2), "per_cpu_second": round(count / cpu, 1) if cpu else None,
                          "per_wall_second": round(count / wall, 1), "profiled": profile is not None,
                          "threads_us_per_csr": {name: round(c / count * 1e6) for name, c in
                                                 sorted(ca.last_threads.items(), key=lambda kv: -kv[1]) if c > 0}}
            if profile is not None:
                out[shape]["profile"] = profile
        return out
    finally:
        ca.cp.stop()


async def against(other_root: str, batches: int, batch_size: int, concurrency: int, work_dir: str,
                  shapes: tuple[str, ...] = SHAPES) -> dict[str, Any]:
    """This checkout's control plane and `other_root`'s (e.g. `git archive main`) side by side, batches of CSRs
    alternating between them (which goes first alternates too), so both see the same load on a shared machine."""
    sides = {"this": CaTarget(os.path.join(work_dir, "this")),
             "other": CaTarget(os.path.join(work_dir, "other"), other_root)}
    try:
        await asyncio.gather(*(t.start() for t in sides.values()))
        out: dict[str, Any] = {"per_core": PER_CORE, "load_start": round(os.getloadavg()[0], 1),
                               "python": {name: t.python for name, t in sides.items()}}
        for shape in shapes:
            cpu: dict[str, list[float]] = {name: [] for name in sides}
            for b in range(batches):
                for name in (["this", "other"] if b % 2 == 0 else ["other", "this"]):
                    cpu[name].append((await sides[name].batch(shape, _csrs(batch_size), concurrency))[0])
            n = batches * batch_size
            out[shape] = {name: {"csrs": n, "controlplane_cpu_s": round(sum(c), 2),
                                 "per_cpu_second": round(n / sum(c), 1),
                                 "per_cpu_second_by_batch": [round(batch_size / x) for x in c]}
                          for name, c in cpu.items()}
        out["load_end"] = round(os.getloadavg()[0], 1)
        return out
    finally:
        for t in sides.values():
            t.cp.stop()


def run(count: int = 1000, rsa_count: int = 100, grpc_count: int = 2000, concurrency: int = 16,
        work_dir: str = "", profile_dir: str = "") -> dict[str, Any]:
    """Both measurements, as one JSON-able document."""
    load_start = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory() as tmp:
        return {"sign_only": sign_only(count, rsa_count),
                "grpc": asyncio.run(over_grpc(grpc_count, concurrency, work_dir or os.path.join(tmp, "cp"),
                                              profile_dir)),
                "target_per_core": 1000, "per_core": PER_CORE,
                "load": [load_start, round(os.getloadavg()[0], 1)]}


def render(doc: dict[str, Any]) -> str:
    s, g = doc["sign_only"], doc["grpc"]
    load = doc.get("load")
    return "\n".join([
        "CSRs signed per second per core (target >= 1,000 through the service on one channel)",
        "  per core = CSRs per CPU-second: the CA alone, this process's CPU time; through the service, the "
        "control-plane process's user+system time, all threads (/proc/PID/stat)"
        + (f"; load average {load[0]} -> {load[1]}" if load else ""),
        f"  CA alone, ECDSA P-256 CSRs: {s['ecdsa_p256']['per_cpu_second']:.0f}/CPU-s "
        f"({s['ecdsa_p256']['csrs']} CSRs)",
        f"  CA alone, RSA 2048 CSRs:    {s['rsa_2048']['per_cpu_second']:.0f}/CPU-s ({s['rsa_2048']['csrs']} CSRs)",
        *(f"  control plane's first-CSR port (gRPC+TLS, join token), {label}: "
          f"{g[shape]['per_cpu_second'] or 0:.0f}/CPU-s of the control plane, "
          f"{g[shape]['per_wall_second']:.0f}/s wall ({g[shape]['csrs']} CSRs, "
          f"{g[shape]['concurrency']} in flight{', py-spy attached' if g[shape]['profiled'] else ''}); us of CPU "
          "per CSR by thread: " + ", ".join(f"{k} {v}" for k, v in g[shape].get("threads_us_per_csr", {}).items())
          for shape, label in (("one_channel", "one channel"), ("channel_per_csr", "a channel per CSR (the agent)"))),
    ])


def profile_create(count: int, top: int = 25) -> str:
    """The certificate service's whole per-request path in this process (request parsed from its wire bytes, join
    token, limits, CSR parse and verification, certificate built, signed and PEM-encoded, bookkeeping), `count`
    CSRs timed without a profiler (CPU time), then once more under cProfile: the functions by own time."""
    import cProfile
    import io
    import pstats

    from sailmesh.ca.limits import Limit
    from sailmesh.ca.rotation import Holders
    from sailmesh.ca.service import CertificateService, instance_of
    from sailmesh.ca.tokens import JoinTokens

    with tempfile.TemporaryDirectory() as d:
        tokens = JoinTokens()
        token = tokens.issue(IDENTITY.namespace, IDENTITY.service_account)
        service = CertificateService(CertificateAuthority.self_signed(d), tokens, None, Holders(),
                                     csr_limit=Limit(rate=0, burst=0))  # `--csr-rate 0`, as the bench runs the CA
        wire = []
        for i, csr in enumerate(_csrs(count)):
            req: Any = IstioCertificateRequest(csr=csr, validity_duration=TTL_S)
            req.metadata.update({INSTANCE_KEY: f"bench/client-{i}"})
            wire.append(req.SerializeToString())

        def loop() -> None:
            for data in wire:
                r: Any = IstioCertificateRequest.FromString(data)
                service.create(r.csr, int(r.validity_duration), token, [], instance_of(r))

        cpu = time.process_time()
        loop()
        cpu = time.process_time() - cpu
        profiler = cProfile.Profile(time.process_time)  # CPU time: preemption on a busy machine is not counted
        profiler.runcall(loop)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        return (f"{count} CSRs through CertificateService.create: {cpu / count * 1e6:.0f} us CPU each unprofiled "
                f"({count / cpu:.0f} per CPU-second); load average {os.getloadavg()[0]:.1f}\n{out.getvalue()}")


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.controlplane.csr --against DIR`: this checkout against another, interleaved;
    `--cprofile N`: the service's per-request path in-process under cProfile."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m bench.controlplane.csr", description=main.__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--against", metavar="DIR", help="another checkout's root (git archive REV)")
    what.add_argument("--cprofile", type=int, metavar="N", help="profile N CSRs through the service in-process")
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--shape", choices=SHAPES, action="append", help="only these shapes (default: both)")
    a = p.parse_args(argv)
    if a.cprofile:
        print(profile_create(a.cprofile))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        doc = asyncio.run(against(os.path.abspath(a.against), a.batches, a.batch_size, a.concurrency, tmp,
                                  tuple(a.shape or SHAPES)))
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
