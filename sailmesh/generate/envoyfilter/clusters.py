"""EnvoyFilter patches on clusters: CLUSTER MERGE, REMOVE and ADD (pilot's cluster_patch)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from sailmesh.api.envoyfilter_values import merge, merge_any
from sailmesh.generate.envoyfilter.select import MERGE_OPS, ConfigPatch, PatchSet

INBOUND = "SIDECAR_INBOUND"


def _subset_key(name: str) -> tuple[str, int, str, str]:
    """(direction, port, subset, host) of `outbound|9080|v1|reviews.default.svc.cluster.local`."""
    parts = name.split("|")
    if len(parts) != 4:
        return "", 0, "", ""
    return parts[0], int(parts[1]) if parts[1].isdigit() else 0, parts[2], parts[3]


def cluster_matches(cluster: cluster_pb2.Cluster, cp: ConfigPatch, hosts: tuple[str, ...] = ()) -> bool:
    """Istio's clusterMatch: by name alone when given, else by port, subset and service (an inbound cluster
    matches the services its workload backs)."""
    m = cp.cluster
    if m is None:
        return True
    if m.get("name"):
        return bool(m.get("name") == cluster.name)
    direction, port, subset, host = _subset_key(cluster.name)
    candidates = hosts if direction == "inbound" and hosts else (host,)
    if m.get("subset") and m.get("subset") != subset:
        return False
    if m.get("service") and m.get("service") not in candidates:
        return False
    return not m.get("portNumber") or int(m["portNumber"]) == port


def _merge_transport_socket(cluster: cluster_pb2.Cluster, value: cluster_pb2.Cluster) -> bool:
    """Istio's mergeTransportSocketCluster: a patch carrying a transport socket merges into the socket of the
    same name (Any with Any) or sets it; True when the patch was handled here."""
    if not value.HasField("transport_socket"):
        return False
    name = value.transport_socket.name
    target = None
    if cluster.transport_socket_matches:
        target = next((m.transport_socket for m in cluster.transport_socket_matches
                       if m.HasField("transport_socket") and m.transport_socket.name == name), None)
        if target is None:
            return True
    elif cluster.HasField("transport_socket") and cluster.transport_socket.name == name:
        target = cluster.transport_socket
    if target is None:
        cluster.transport_socket.CopyFrom(value.transport_socket)
    elif target.HasField("typed_config") and value.transport_socket.HasField("typed_config"):
        target.typed_config.CopyFrom(merge_any(target.typed_config, value.transport_socket.typed_config))
    return True


def patch_cluster(context: str, patches: PatchSet, cluster: cluster_pb2.Cluster,
                  hosts: tuple[str, ...] = ()) -> bool:
    """Apply MERGE/REMOVE patches to one cluster in place; False when a patch removes it."""
    for cp in patches.of("CLUSTER"):
        if not (cp.context_matches(context) and cluster_matches(cluster, cp, hosts)):
            continue
        if cp.operation == "REMOVE":
            return False
        if cp.operation in MERGE_OPS and isinstance(cp.value, cluster_pb2.Cluster):
            if not _merge_transport_socket(cluster, cp.value):
                merge(cluster, cp.value, replace_lists=cp.operation == "MERGE_AND_REPLACE_LIST")
    return True


def added_clusters(context: str, patches: PatchSet) -> list[cluster_pb2.Cluster]:
    """Clusters ADDed for this context; an ADD for ANY context counts once, with the outbound/gateway clusters."""
    out = []
    for cp in patches.of("CLUSTER"):
        if cp.operation != "ADD" or not isinstance(cp.value, cluster_pb2.Cluster):
            continue
        if cp.context == "ANY" and context not in ("SIDECAR_OUTBOUND", "GATEWAY"):
            continue
        if cp.context_matches(context):
            c = cluster_pb2.Cluster()
            c.CopyFrom(cp.value)
            out.append(c)
    return out
