"""Workload identity for Istio's standard metrics: the peer-metadata headers and the labels derived from them.

Istio's metadata exchange: the client's sidecar adds `x-envoy-peer-metadata` (base64 of a serialized
google.protobuf.Struct of its node metadata: NAME, NAMESPACE, LABELS, WORKLOAD_NAME, CLUSTER_ID, ...) and
`x-envoy-peer-metadata-id` (its node id) to each request; the server's sidecar adds its own to each response.
Each side strips the other's headers before its app sees them, and reports with the other side's identity.
The same encoding is used here, so each reporter knows its peer's workload, app, version and cluster.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from google.protobuf import struct_pb2

PEER_METADATA_HEADER = "x-envoy-peer-metadata"
PEER_ID_HEADER = "x-envoy-peer-metadata-id"
# Where the receiving sidecar keeps the peer's x-envoy-peer-metadata for the stats key: outbound in dynamic
# metadata (header_to_metadata; also logged), inbound in filter state (set_filter_state, a string).
PEER_NAMESPACE = "sailmesh.peer"
PEER_KEY = "metadata"
PEER_FILTER_STATE = "sailmesh.peer"
DEFAULT_CLUSTER_ID = "Kubernetes"  # Istio's default cluster id on Kubernetes (the agent's CLUSTER_ID default)
UNKNOWN = "unknown"

_INSTANCE_SUFFIX = re.compile(r"-\d+$")


def workload_of_pod(pod: str) -> str:
    """The workload a local instance belongs to: `reviews-v2-0` -> `reviews-v2` (instances are `<workload>-<n>`)."""
    return _INSTANCE_SUFFIX.sub("", pod) or pod


@dataclass(frozen=True)
class WorkloadInfo:
    """One side of a request as Istio's labels describe it."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN
    cluster: str = UNKNOWN


UNKNOWN_WORKLOAD = WorkloadInfo()


def workload_info(workload: str, namespace: str, labels: Mapping[str, str], cluster: str) -> WorkloadInfo:
    """Istio's derivation: app/version from the `app`/`version` labels; the canonical service from
    service.istio.io/canonical-name, app.kubernetes.io/name, app, else the workload name; the canonical revision
    from service.istio.io/canonical-revision, app.kubernetes.io/version, version, else `latest`."""
    return WorkloadInfo(
        workload=workload or UNKNOWN,
        namespace=namespace or UNKNOWN,
        app=labels.get("app") or UNKNOWN,
        version=labels.get("version") or UNKNOWN,
        canonical_service=labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name")
        or labels.get("app") or workload or UNKNOWN,
        canonical_revision=labels.get("service.istio.io/canonical-revision")
        or labels.get("app.kubernetes.io/version") or labels.get("version") or "latest",
        cluster=cluster or UNKNOWN,
    )


def encode(pod: str, namespace: str, labels: Mapping[str, str], workload: str = "",
           cluster: str = DEFAULT_CLUSTER_ID, service_account: str = "") -> str:
    """The `x-envoy-peer-metadata` value: base64 of a serialized Struct with Istio's node metadata keys."""
    s = struct_pb2.Struct()
    s.update({"NAME": pod, "NAMESPACE": namespace, "WORKLOAD_NAME": workload or workload_of_pod(pod),
              "CLUSTER_ID": cluster, "LABELS": dict(labels)})
    if service_account:
        s["SERVICE_ACCOUNT"] = service_account
    return base64.b64encode(s.SerializeToString(deterministic=True)).decode("ascii")


@lru_cache(maxsize=4096)
def decode(value: str) -> WorkloadInfo:
    """The peer's identity from an `x-envoy-peer-metadata` value; every field `unknown` if it cannot be read."""
    if not value:
        return UNKNOWN_WORKLOAD
    try:
        s = struct_pb2.Struct.FromString(base64.b64decode(value, validate=True))
    except Exception:  # a forged or truncated header is not an error of ours: the peer is just unknown
        return UNKNOWN_WORKLOAD
    fields = s.fields

    def text(key: str) -> str:
        v = fields.get(key)
        return v.string_value if v is not None and v.HasField("string_value") else ""

    labels_value = fields.get("LABELS")
    labels: dict[str, str] = {}
    if labels_value is not None and labels_value.HasField("struct_value"):
        labels = {k: v.string_value for k, v in labels_value.struct_value.fields.items()}
    pod = text("NAME")
    return workload_info(text("WORKLOAD_NAME") or workload_of_pod(pod), text("NAMESPACE"), labels,
                         text("CLUSTER_ID"))
