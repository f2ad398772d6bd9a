"""`python -m sailmesh.samples.ratelimit --config FILE`: serve Envoy's rate-limit service on HOST:PORT (gRPC)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import grpc
import yaml
from envoy.service.ratelimit.v3 import rls_pb2_grpc

from sailmesh.samples.ratelimit.limits import ConfigError, Node, parse
from sailmesh.samples.ratelimit.server import RateLimitService


async def serve(host: str, port: int, service: RateLimitService) -> None:
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    logging.getLogger("ratelimit").info("rate-limit service for domain %s on %s:%d", service.domain, host, bound)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sailmesh.samples.ratelimit", description=__doc__)
    p.add_argument("--config", help="envoyproxy/ratelimit's config.yaml (domain, descriptors); without it only "
                                     "descriptors that carry their own limit (sailmesh's RateLimit global mode) count")
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8081")))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    domain, nodes = "", list[Node]()
    try:
        if a.config:
            with open(a.config, encoding="utf-8") as fh:
                domain, nodes = parse(yaml.safe_load(fh))
    except (OSError, yaml.YAMLError, ConfigError) as e:
        print(f"ratelimit: {a.config}: {e}")
        return 2
    try:
        asyncio.run(serve(a.host, a.port, RateLimitService(domain, nodes)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
