"""Istio standard-metric pages as sidecars serve them, for the dashboard's tests (Bookinfo's hops)."""

from __future__ import annotations

NS = "default"
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
           3600000)  # Istio's default buckets for istio_request_duration_milliseconds


def series(reporter: str, src: str, dst_svc: str, dst: str, code: int, mtls: str = "unknown",
           flags: str = "-") -> str:
    svc_name = dst_svc.split(".")[0]
    return (f'reporter="{reporter}",source_workload="{src}",source_workload_namespace="{NS}",'
            f'source_app="{src.split("-")[0]}",source_version="{src.split("-")[-1]}",'
            f'destination_service="{dst_svc}",destination_service_name="{svc_name}",'
            f'destination_service_namespace="{NS}",destination_workload="{dst}",'
            f'destination_workload_namespace="{NS}",destination_app="{dst.split("-")[0]}",'
            f'request_protocol="http",response_code="{code}",response_flags="{flags}",'
            f'connection_security_policy="{mtls}"')


def page(rows: list[tuple[str, float, float]]) -> str:
    """Prometheus text as a sidecar serves it: (labels, request count, every request's latency in ms)."""
    out = ["# HELP envoy_cluster_upstream_rq_total x", "# TYPE envoy_cluster_upstream_rq_total counter",
           'envoy_cluster_upstream_rq_total{envoy_cluster_name="x"} 99',
           "# TYPE istio_requests_total counter"]
    for labels, count, _ in rows:
        out.append(f"istio_requests_total{{{labels}}} {count}")
    out.append("# TYPE istio_request_duration_milliseconds histogram")
    for labels, count, ms in rows:
        for b in BUCKETS:
            out.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{b}"}} {count if ms <= b else 0}')
        out.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {count}')
        out.append(f"istio_request_duration_milliseconds_sum{{{labels}}} {count * ms}")
        out.append(f"istio_request_duration_milliseconds_count{{{labels}}} {count}")
    return "\n".join(out) + "\n"


PP = "productpage.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"


def bookinfo(n: float, aborted: float = 0) -> dict[str, str]:
    """Pages of the gateway, productpage, reviews-v2 and ratings sidecars after n requests (aborted of them on
    ratings, injected by reviews-v2's sidecar: the client reports 500 FI, ratings never sees them)."""
    ok = n - aborted
    return {
        "gw": page([(series("source", "istio-ingressgateway", PP, "productpage-v1", 200), n, 30)]),
        "pp": page([
            (series("destination", "istio-ingressgateway", PP, "productpage-v1", 200, "mutual_tls"), n, 30),
            (series("source", "productpage-v1", REVIEWS, "reviews-v2", 200), n, 12),
        ]),
        "rv2": page([
            (series("destination", "productpage-v1", REVIEWS, "reviews-v2", 200, "mutual_tls"), n, 12),
            (series("source", "reviews-v2", RATINGS, "ratings-v1", 200), ok, 3),
            *([(series("source", "reviews-v2", RATINGS, "unknown", 500, flags="FI"), aborted, 0.2)] if aborted else []),
        ]),
        "ratings": page([(series("destination", "reviews-v2", RATINGS, "ratings-v1", 200, "mutual_tls"), ok, 3)]),
    }
