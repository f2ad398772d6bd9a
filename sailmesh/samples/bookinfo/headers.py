"""The request headers each Bookinfo service copies onto its outbound calls (trace context and user context)."""

from __future__ import annotations

# Trace context both services pass on (the B3 set, W3C, Datadog, SkyWalking, Google, OpenTracing).
TRACE_HEADERS = (
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "sw8",
)

# Istio's productpage forwards these (its tracer re-injects the B3 headers; we pass them through unchanged,
# which is what the sidecar needs to join its spans, and add the single-header `b3` form).
PRODUCTPAGE_FORWARD = (
    *TRACE_HEADERS,
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
)

# Istio's reviews (Java) forwards these to ratings; `end-user` lets routing rules match the signed-in user.
REVIEWS_FORWARD = (
    *TRACE_HEADERS,
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
)
