"""`sailmesh x flags [FLAGS]`: Envoy's response flags (access logs, `response_flags` metric label) in words.

Each flag's meaning, its usual causes in a mesh, and the command that shows more.

  sailmesh x flags UO            # one flag
  sailmesh x flags UF,URX        # as an access log shows several
  sailmesh x flags               # every flag
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    code: str
    meaning: str  # Envoy's definition (envoy access-log docs, %RESPONSE_FLAGS%)
    causes: str  # what usually causes it in a mesh
    next_step: str  # the command that shows more


FLAGS: tuple[Flag, ...] = (
    Flag("UH", "no healthy upstream host in the cluster (503)",
         "the destination has no ready endpoint: its pods are down or not ready, a subset selects no pods "
         "(IST0173), or outlier detection ejected every host",
         "sailmesh proxy-config endpoint SOURCE --fqdn HOST; sailmesh analyze"),
    Flag("UF", "upstream connection failure (503)",
         "nothing listens on the endpoint's port, or the TLS handshake failed: a plaintext client against STRICT "
         "mTLS, or a DestinationRule tls mode that does not fit the server",
         "sailmesh proxy-config cluster SOURCE --fqdn HOST -o json; sailmesh x describe service NAME"),
    Flag("UO", "upstream overflow: a circuit breaker tripped (503)",
         "DestinationRule trafficPolicy.connectionPool limits (http1MaxPendingRequests, maxRequestsPerConnection, "
         "tcp.maxConnections) reached under load",
         "sailmesh proxy-config cluster SOURCE --fqdn HOST -o json (circuit_breakers); Envoy stat "
         "upstream_rq_pending_overflow"),
    Flag("NR", "no route for the request (404), or no filter chain for a connection",
         "no VirtualService or service host matches the request's Host, a Sidecar's egress hosts hide the service, "
         "or a gateway VirtualService is not bound to the Gateway",
         "sailmesh proxy-config route SOURCE; sailmesh analyze"),
    Flag("URX", "retries exhausted (HTTP) or connect attempts exhausted (TCP)",
         "every attempt failed: see the flags of the attempts (UF, UH, 5xx) and the VirtualService retries policy",
         "sailmesh get vs NAME -o yaml"),
    Flag("NC", "upstream cluster not found",
         "a route names a cluster the proxy does not have: a subset without its DestinationRule, or a host "
         "outside the Sidecar's egress",
         "sailmesh proxy-config cluster SOURCE; sailmesh analyze"),
    Flag("UT", "upstream request timeout (504)",
         "the VirtualService timeout (or the default) passed before the destination answered",
         "sailmesh get vs NAME -o yaml; sailmesh proxy-config route SOURCE -o json"),
    Flag("LR", "connection reset locally (503)", "Envoy reset the connection itself (overload, drain)",
         "sailmesh proxy-config log SOURCE --level connection:debug"),
    Flag("UR", "upstream remote reset (503)", "the destination (or its sidecar) reset the stream",
         "the destination's logs; sailmesh proxy-config log DEST --level http:debug"),
    Flag("UC", "upstream connection terminated (503)",
         "the destination closed the connection: app crash, idle timeout mismatch, a TCP policy that closes "
         "connections (AuthorizationPolicy on a TCP port)", "the destination's logs"),
    Flag("LH", "the local service failed its health check (503)", "the workload is not ready",
         "sailmesh get workloads"),
    Flag("DC", "the downstream (client) closed the connection", "the caller gave up (its own timeout) or crashed",
         "the caller's logs"),
    Flag("DT", "a connection exceeded its maximum duration", "DestinationRule maxConnectionDuration",
         "sailmesh get dr -o yaml"),
    Flag("DI", "delayed by fault injection", "a VirtualService fault.delay", "sailmesh get vs -o yaml"),
    Flag("FI", "aborted by fault injection", "a VirtualService fault.abort", "sailmesh get vs -o yaml"),
    Flag("RL", "rate limited locally (429)", "a local rate limit filter",
         "sailmesh proxy-config listener SOURCE -o json"),
    Flag("RLSE", "the rate limit service failed", "the rate limit service is unreachable or errors",
         "the rate limit service's logs"),
    Flag("UAEX", "denied by the external authorizer", "an AuthorizationPolicy CUSTOM action's ext_authz server "
         "said no (or failed, when it fails closed)", "sailmesh get authorizationpolicy -A; the authorizer's logs"),
    Flag("IH", "a strictly checked header had an invalid value (400)", "a malformed x-envoy-* header",
         "the caller's request"),
    Flag("SI", "stream idle timeout (408 or 504)", "no bytes for the idle timeout", "sailmesh get dr -o yaml"),
    Flag("DPE", "downstream HTTP protocol error", "the client sent malformed HTTP", "the caller's request"),
    Flag("UPE", "upstream HTTP protocol error", "the destination answered malformed HTTP, or a protocol mismatch "
         "(port name or appProtocol says http, the server speaks something else)", "sailmesh get svc NAME -o yaml"),
    Flag("UMSDR", "upstream request reached its maximum stream duration", "route max stream duration",
         "sailmesh proxy-config route SOURCE -o json"),
    Flag("OM", "terminated by Envoy's overload manager", "the proxy is out of memory or connections",
         "sailmesh proxy-config bootstrap SOURCE"),
    Flag("DF", "DNS resolution failed", "a DNS ServiceEntry or passthrough host that does not resolve",
         "sailmesh get se -o yaml"),
)
BY_CODE = {f.code: f for f in FLAGS}


def explain(codes: str) -> list[str]:
    """Lines explaining a RESPONSE_FLAGS value (`UO`, `UF,URX`, `-` for none)."""
    if codes.strip() in ("", "-"):
        return ["-: no flag: Envoy saw nothing wrong with the request (look at the response code)"]
    out = []
    for code in (c.strip().upper() for c in codes.replace(",", " ").split()):
        f = BY_CODE.get(code)
        if f is None:
            out.append(f"{code}: not a response flag sailmesh knows; known: {', '.join(sorted(BY_CODE))}")
        else:
            out += [f"{f.code}: {f.meaning}", f"  usual causes: {f.causes}", f"  look with: {f.next_step}"]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("codes", nargs="*", help="flags as access logs show them (UO, or UF,URX); none: all")


def run(args: argparse.Namespace) -> int:
    codes = args.codes or [f.code for f in FLAGS]
    lines = [line for code in codes for line in explain(code)]
    print("\n".join(lines))
    return 1 if any("not a response flag" in line for line in lines) else 0
