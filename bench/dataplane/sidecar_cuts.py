"""What each sidecar feature a request passes through costs, one at a time (variants of the static copies).

Each variant removes or changes one thing of `bench/dataplane/sidecar_static.py`'s copy of the real sidecar pair,
alone (not cumulative), so `python -m bench.dataplane.instructions` (or the CPU-time ablation) can rank them: the
parts of Istio's metrics (the peer-metadata headers, the stats logger's counter, histograms, CEL sizes, the long
peer-metadata tag), the HCM's tracing block and periodic access-log flush, the filters that do nothing for a plain
request, the retry policy, the HCM options, the route and cluster extras, the bootstrap's stats tags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.dataplane import sidecar_static as ss

Config = dict[str, Any]
STATS_LOGGER = "envoy.access_loggers.stats"
IDLE_FILTERS = ("envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.set_filter_state",
                "envoy.filters.http.dynamic_forward_proxy", "envoy.filters.http.grpc_stats")


def _stats_loggers(cfg: Config) -> list[Config]:
    return [al["typed_config"] for hcm in ss._all_hcms(cfg) for al in hcm.get("access_log", [])
            if al.get("name") == STATS_LOGGER]


def counter_only(cfg: Config) -> None:
    """The stats logger keeps its requests counter, not the three histograms."""
    for sl in _stats_loggers(cfg):
        sl.pop("histograms", None)


def histograms_only(cfg: Config) -> None:
    """The stats logger keeps the three histograms, not the requests counter."""
    for sl in _stats_loggers(cfg):
        sl.pop("counters", None)


def no_peer_metadata_tag(cfg: Config) -> None:
    """The stats logger's key without the peer's metadata (about 300 bytes of base64 formatted into each stat)."""
    for sl in _stats_loggers(cfg):
        for stat in [*sl.get("histograms", []), *sl.get("counters", [])]:
            for tag in stat["stat"]["tags"]:
                tag["value_format"] = tag["value_format"].replace("%DYNAMIC_METADATA(sailmesh.peer:metadata)%", "")


def no_tracing(cfg: Config) -> None:
    """HCMs without the tracing block (random sampling, custom tags; no provider in the bench mesh)."""
    for hcm in ss._all_hcms(cfg):
        hcm.pop("tracing", None)


def no_periodic_flush(cfg: Config) -> None:
    """HCMs without access_log_options (the periodic flush for CONNECT tunnels' TCP metrics: a timer per stream)."""
    for hcm in ss._all_hcms(cfg):
        hcm.pop("access_log_options", None)


def no_idle_filters(cfg: Config) -> None:
    """No fault, cors, set_filter_state, dynamic_forward_proxy, grpc_stats filters (metadata exchange kept)."""
    for hcm in ss._all_hcms(cfg):
        hcm["http_filters"] = [f for f in hcm.get("http_filters", []) if f.get("name") not in IDLE_FILTERS]


CUT_VARIANTS: list[tuple[str, Callable[[Config], None] | None]] = [
    ("sidecar config (static copy)", None),
    ("no Istio metrics", ss.drop_istio_metrics),
    ("no peer headers (stats logger kept)", ss.drop_peer_headers),
    ("no stats logger (peer headers kept)", ss.drop_access_log_stream),
    ("stats logger: counter only", counter_only),
    ("stats logger: histograms only", histograms_only),
    ("stats logger: body bytes, no CEL", ss.stats_logger_body_bytes),
    ("stats logger: key without peer metadata", no_peer_metadata_tag),
    ("no tracing block", no_tracing),
    ("no periodic access-log flush", no_periodic_flush),
    ("no idle filters (fault/cors/DFP/grpc_stats)", no_idle_filters),
    ("no retry policy + attempt count", ss.drop_retries),
    ("no HCM options (XFCC, normalize_path, ...)", ss.drop_hcm_options),
    ("no route extras (timeouts, decorator)", ss.drop_route_extras),
    ("no cluster extras (LEAST_REQUEST, CB tracking)", ss.drop_cluster_extras),
    ("no stats tags + overload manager", ss.drop_bootstrap_extras),
    ("plaintext hop", ss.plaintext_hop),
]


def short_peer_headers(cfg: Config) -> None:
    """The peer-metadata headers sent with 8-byte values instead of Istio's (~330 and ~70 bytes): what the bytes cost
    (the receiving side still reads them into metadata and the stats key)."""
    for hcm in ss._all_hcms(cfg):
        for f in hcm.get("http_filters", []):
            if f.get("name") != "istio.metadata_exchange.add":
                continue
            muts = f["typed_config"]["mutations"]
            for m in [*muts.get("request_mutations", []), *muts.get("response_mutations", [])]:
                if "append" in m:  # (the same filter also removes the peer's headers)
                    m["append"]["header"]["value"] = "AAAAAAAA"


def no_peer_header_add(cfg: Config) -> None:
    """No header_mutation filter (nothing sent; the reading filter kept, finds nothing)."""
    for hcm in ss._all_hcms(cfg):
        hcm["http_filters"] = [f for f in hcm.get("http_filters", []) if f.get("name") != "istio.metadata_exchange.add"]


CUT_VARIANTS += [
    ("peer headers with short values", short_peer_headers),
    ("no peer header sent (reading filter kept)", no_peer_header_add),
]


def peer_headers_by_route_config(cfg: Config) -> None:
    """Our headers added by the route configuration (request_headers_to_add outbound, response_headers_to_add
    inbound) instead of a header_mutation filter: what the filter itself costs (measured only: route configurations
    are shared between proxies by content, and local replies before the router would go without them)."""
    for hcm in ss._all_hcms(cfg):
        filters = hcm.get("http_filters", [])
        add = next((f for f in filters if f.get("name") == "istio.metadata_exchange.add"), None)
        if add is None or "route_config" not in hcm:
            continue
        muts = add["typed_config"]["mutations"]
        for key, out in (("request_mutations", "request_headers_to_add"),
                         ("response_mutations", "response_headers_to_add")):
            if any("append" in m for m in muts.get(key, ())):
                hcm["route_config"][out] = [{"header": m["append"]["header"], "append_action": m["append"][
                    "append_action"]} for m in muts[key] if "append" in m]
                muts[key] = [m for m in muts[key] if "append" not in m]  # the removals of the peer's stay
        if not any(muts.get(k) for k in ("request_mutations", "response_mutations")):
            hcm["http_filters"] = [f for f in filters if f is not add]


CUT_VARIANTS += [
    ("peer headers by the route configuration", peer_headers_by_route_config),
]


def peer_metadata_constant(cfg: Config) -> None:
    """The reading filter stores a one-byte constant instead of the peer's header values (headers still sent, read and
    removed): with the key's peer metadata (variant above) it tells storing from formatting."""
    for hcm in ss._all_hcms(cfg):
        for f in hcm.get("http_filters", []):
            if f.get("name") == "istio.metadata_exchange.read":
                for rules in (f["typed_config"].get("request_rules", []), f["typed_config"].get("response_rules", [])):
                    for r in rules:
                        r["on_header_present"]["value"] = "x"


CUT_VARIANTS += [("peer metadata stored as a constant", peer_metadata_constant)]


def no_peer_id_header(cfg: Config) -> None:
    """Only x-envoy-peer-metadata exchanged, not x-envoy-peer-metadata-id (sent nor read): what one header costs."""
    for hcm in ss._all_hcms(cfg):
        for f in hcm.get("http_filters", []):
            tc = f.get("typed_config", {})
            if f.get("name") == "istio.metadata_exchange.add":
                for key in ("request_mutations", "response_mutations"):
                    if key in tc["mutations"]:
                        tc["mutations"][key] = [m for m in tc["mutations"][key] if "append" not in m
                                                or m["append"]["header"]["key"] != "x-envoy-peer-metadata-id"]
            elif f.get("name") == "istio.metadata_exchange.read":
                for key in ("request_rules", "response_rules"):
                    if key in tc:
                        tc[key] = [r for r in tc[key] if r["header"] != "x-envoy-peer-metadata-id"]


CUT_VARIANTS += [("no x-envoy-peer-metadata-id header", no_peer_id_header)]
