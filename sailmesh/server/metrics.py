"""The ADS server's metrics, named and bucketed as Istio's pilot exports them (on the shared registry)."""

from __future__ import annotations

from sailmesh.metrics import Registry
from sailmesh.xds.types import SHORT_NAMES

# Istio's pilot_proxy_convergence_time buckets (seconds).
CONVERGENCE_BUCKETS = (0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0)
# Istio's pilot_xds_push_time buckets (seconds, pilot/pkg/xds/monitoring.go).
PUSH_TIME_BUCKETS = (0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0)


class XdsMetrics:
    """The ADS server's metrics, named as Istio's pilot exports them."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self.pushes = r.counter("pilot_xds_pushes", "Pilot build and send errors for lds, rds, cds and eds.",
                                ["type"])
        self.connected = r.gauge("pilot_xds", "Number of endpoints connected to this pilot using XDS.", [])
        self.rejects = r.counter("pilot_total_xds_rejects",
                                 "Total number of XDS responses from pilot rejected by proxy.", ["type"])
        self.expired_nonce = r.counter("pilot_xds_expired_nonce", "Total number of XDS requests with an expired nonce.",
                                       ["type"])
        self.convergence = r.histogram(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration.",
            CONVERGENCE_BUCKETS,
            ["type"],
        )
        self.push_time = r.histogram("pilot_xds_push_time",
                                     "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
                                     PUSH_TIME_BUCKETS, ["type"])
        self.queue_time = r.histogram("pilot_proxy_queue_time",
                                      "Time in seconds, a proxy is in the push queue before being dequeued.",
                                      CONVERGENCE_BUCKETS, [])
        self.rate_limited = r.counter("sailmesh_xds_streams_rate_limited",
                                      "New xDS streams refused by the request rate limit (RESOURCE_EXHAUSTED).")
        self.internal_errors = r.counter("pilot_total_xds_internal_errors",
                                         "Total number of internal XDS errors in pilot.")
        self.write_timeouts = r.counter("pilot_xds_write_timeout", "Pilot XDS response write timeouts.")
        self.send_errors = r.counter("pilot_xds_send_errors", "Errors while sending an xDS response.", ["type"])


def type_label(type_url: str) -> str:
    """A metric's `type` label: Istio's short name for the types served, "other" for anything a client sent
    (a label per client-chosen type URL would grow the registry without bound)."""
    return SHORT_NAMES.get(type_url, "other")
