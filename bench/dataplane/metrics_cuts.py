"""Cheaper mechanisms for Istio's standard metrics, as variants of the static sidecar copy (session 14, issue 10).

Each variant changes how the copy keeps Istio's metrics (bench/dataplane/sidecar_static.py), alone, so
`python -m bench.dataplane.instructions --features mx` counts what it saves: fewer stats per request (the requests
counter taken from the duration histogram's count), a key formatted with fewer command operators (the request-time
part of it formatted once into filter state), the peer's header kept as a string in filter state instead of
dynamic metadata, the id header removed instead of stored, and diagnostics (a literal key: what formatting costs
against the stat's own work). Written against a capture of the generator before session 14 (`--capture` keeps one):
on a newer capture the variants that the generator now does change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from bench.dataplane import sidecar_static as ss

Config = dict[str, Any]
STATS_LOGGER = "envoy.access_loggers.stats"
MX_READ, MX_ADD = "istio.metadata_exchange.read", "istio.metadata_exchange.add"
PEER_MD = "%DYNAMIC_METADATA(sailmesh.peer:metadata)%"
PEER_HEADERS = ("x-envoy-peer-metadata", "x-envoy-peer-metadata-id")
GRPC_MESSAGES = "%FILTER_STATE(envoy.filters.http.grpc_stats:PLAIN)%"
FS_PEER, FS_KEY = "sailmesh.peer", "sailmesh.key"


def _stats_logs(cfg: Config) -> Iterator[tuple[list[Config], Config]]:
    """(the access_log list, one stats logger in it) for every HCM."""
    for hcm in ss._all_hcms(cfg):
        logs = hcm.get("access_log", [])
        for al in list(logs):
            if al.get("name") == STATS_LOGGER:
                yield logs, al


def _stats(sl: Config) -> list[Config]:
    return [s["stat"] for s in [*sl.get("histograms", []), *sl.get("counters", [])]]


def _key_tags(sl: Config) -> Iterator[Config]:
    for stat in _stats(sl):
        for tag in stat["tags"]:
            if tag["name"] == "k":
                yield tag


def counter_from_histogram(cfg: Config) -> None:
    """No requests counter: the duration histogram's count is the request count, and it carries the gRPC message
    counts tag the counter had (the agent multiplies per series)."""
    for _, al in _stats_logs(cfg):
        sl = al["typed_config"]
        counters = sl.pop("counters", [])
        gm = [t for c in counters for t in c["stat"]["tags"] if t["name"] == "gm"]
        for h in sl.get("histograms", []):
            if h["stat"]["name"] == "request_duration_milliseconds":
                h["stat"]["tags"].extend(gm)


def grpc_counter_logger(cfg: Config) -> None:
    """No requests counter in the logger; a second stats logger, for gRPC requests only (content-type), keeps it
    for the message counts: what the filter costs a request that is not gRPC."""
    for logs, al in _stats_logs(cfg):
        sl = al["typed_config"]
        counters = sl.pop("counters", [])
        if not counters:
            continue
        grpc = {"header_filter": {"header": {"name": "content-type",
                                             "string_match": {"prefix": "application/grpc"}}}}
        filt = {"and_filter": {"filters": [al["filter"], grpc]}} if "filter" in al else grpc
        logs.append({"name": STATS_LOGGER, "filter": filt,
                     "typed_config": {"@type": sl["@type"], "stat_prefix": sl["stat_prefix"], "counters": counters}})


def literal_key(cfg: Config) -> None:
    """Diagnostic: the key tag a literal of about the formatted key's length (no command operator evaluated)."""
    for _, al in _stats_logs(cfg):
        for tag in _key_tags(al["typed_config"]):
            tag["value_format"] = "x" * 560


def _server_hcms(cfg: Config) -> Iterator[Config]:
    """HCMs whose reading filter takes the peer's identity off requests (inbound)."""
    for hcm in ss._all_hcms(cfg):
        read = next((f for f in hcm.get("http_filters", []) if f.get("name") == MX_READ), None)
        if read is not None and read["typed_config"].get("request_rules"):
            yield hcm


def _fs_filter(key: str, fmt: str) -> Config:
    return {"name": "envoy.filters.http.set_filter_state", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
        "on_request_headers": [{"object_key": key, "factory_key": "envoy.string", "skip_if_empty": True,
                                "format_string": {"text_format_source": {"inline_string": fmt},
                                                  "omit_empty_values": True}}]}}


def _remove_peer_headers(hcm: Config) -> None:
    """The reading filter replaced by a header_mutation removing the peer's headers (nothing stored)."""
    hcm["http_filters"] = [
        {"name": MX_READ, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": h} for h in PEER_HEADERS]}}}
        if f.get("name") == MX_READ else f for f in hcm["http_filters"]]


def server_peer_in_filter_state(cfg: Config) -> None:
    """Inbound: the client's x-envoy-peer-metadata kept as a string in filter state (set_filter_state before the
    headers are removed by header_mutation) instead of dynamic metadata; the key reads it from there."""
    for hcm in _server_hcms(cfg):
        _remove_peer_headers(hcm)
        hcm["http_filters"].insert(0, _fs_filter(FS_PEER, "%REQ(x-envoy-peer-metadata)%"))
        for al in hcm.get("access_log", []):
            if al.get("name") == STATS_LOGGER:
                for tag in _key_tags(al["typed_config"]):
                    tag["value_format"] = tag["value_format"].replace(PEER_MD, f"%FILTER_STATE({FS_PEER}:PLAIN)%")


RESPONSE_FIELDS = ("%RESPONSE_CODE%", "%GRPC_STATUS_NUMBER%", "%RESPONSE_FLAGS%")


def server_key_in_filter_state(cfg: Config) -> None:
    """Inbound: the key's request-time fields (reporter, services, the client's metadata, content type, both URI
    SANs) formatted once per request into filter state; each stat formats that and the response's three fields."""
    for hcm in _server_hcms(cfg):
        _remove_peer_headers(hcm)
        for al in hcm.get("access_log", []):
            if al.get("name") != STATS_LOGGER:
                continue
            for tag in _key_tags(al["typed_config"]):
                fields = tag["value_format"].split("\n")
                request = [f.replace(PEER_MD, "%REQ(x-envoy-peer-metadata)%") for f in fields
                           if f not in RESPONSE_FIELDS]
                tag["value_format"] = "\n".join([f"%FILTER_STATE({FS_KEY}:PLAIN)%", *RESPONSE_FIELDS])
        hcm["http_filters"].insert(0, _fs_filter(FS_KEY, "\n".join(request)))


def client_no_peer_store(cfg: Config) -> None:
    """Diagnostic, outbound: the server's headers removed by header_mutation, not stored; no peer metadata in the
    key (what reading the response's header into the key costs the client)."""
    for hcm in ss._all_hcms(cfg):
        filters = hcm.get("http_filters", [])
        read = next((f for f in filters if f.get("name") == MX_READ), None)
        if read is None or not read["typed_config"].get("response_rules"):
            continue
        read["typed_config"] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"response_mutations": [{"remove": h} for h in PEER_HEADERS]}}
        for al in hcm.get("access_log", []):
            if al.get("name") == STATS_LOGGER:
                for tag in _key_tags(al["typed_config"]):
                    tag["value_format"] = tag["value_format"].replace(PEER_MD, "")


def client_id_removed_not_stored(cfg: Config) -> None:
    """Outbound: the server's x-envoy-peer-metadata-id removed by the adding filter (header_mutation), not stored
    (nothing reads it); x-envoy-peer-metadata still read into dynamic metadata by header_to_metadata."""
    for hcm in ss._all_hcms(cfg):
        filters = hcm.get("http_filters", [])
        read = next((f for f in filters if f.get("name") == MX_READ), None)
        add = next((f for f in filters if f.get("name") == MX_ADD), None)
        if read is None or add is None or not read["typed_config"].get("response_rules"):
            continue
        rules = read["typed_config"]["response_rules"]
        read["typed_config"]["response_rules"] = [r for r in rules if r["header"] != PEER_HEADERS[1]]
        add["typed_config"]["mutations"]["response_mutations"] = [{"remove": PEER_HEADERS[1]}]


def id_removed_not_stored(cfg: Config) -> None:
    """Both sides: the peer's x-envoy-peer-metadata-id removed by the adding filter (header_mutation, on the
    message it does not add to), not stored; header_to_metadata keeps only x-envoy-peer-metadata."""
    for hcm in ss._all_hcms(cfg):
        filters = hcm.get("http_filters", [])
        read = next((f for f in filters if f.get("name") == MX_READ), None)
        add = next((f for f in filters if f.get("name") == MX_ADD), None)
        if read is None or add is None:
            continue
        for rules, muts in (("request_rules", "request_mutations"), ("response_rules", "response_mutations")):
            if read["typed_config"].get(rules):
                read["typed_config"][rules] = [r for r in read["typed_config"][rules]
                                               if r["header"] != PEER_HEADERS[1]]
                add["typed_config"]["mutations"][muts] = [{"remove": PEER_HEADERS[1]}]


def counter_and_id(cfg: Config) -> None:
    """The counter from the duration histogram and the id header not stored, together."""
    counter_from_histogram(cfg)
    id_removed_not_stored(cfg)


def server_fs_in_add_filter(cfg: Config) -> None:
    """Inbound: set_filter_state keeps the client's x-envoy-peer-metadata in filter state; the adding filter
    (header_mutation, already there) removes both of the client's headers; no header_to_metadata."""
    for hcm in _server_hcms(cfg):
        filters = hcm["http_filters"]
        add = next(f for f in filters if f.get("name") == MX_ADD)
        add["typed_config"]["mutations"]["request_mutations"] = [{"remove": h} for h in PEER_HEADERS]
        hcm["http_filters"] = [_fs_filter(FS_PEER, "%REQ(x-envoy-peer-metadata)%") if f.get("name") == MX_READ
                               else f for f in filters]
        for al in hcm.get("access_log", []):
            if al.get("name") == STATS_LOGGER:
                for tag in _key_tags(al["typed_config"]):
                    tag["value_format"] = tag["value_format"].replace(PEER_MD, f"%FILTER_STATE({FS_PEER}:PLAIN)%")


def all_three(cfg: Config) -> None:
    """The counter from the histogram, the server's peer in filter state, the client's id header not stored."""
    counter_from_histogram(cfg)
    server_fs_in_add_filter(cfg)
    client_id_removed_not_stored(cfg)


def combined(cfg: Config) -> None:
    """The counter from the histogram's count and the server's key in filter state together."""
    counter_from_histogram(cfg)
    server_key_in_filter_state(cfg)


def no_gm_without_grpc_stats(cfg: Config) -> None:
    """No `gm` tag where the chain has no grpc_stats filter (the outbound sidecar: its value is always empty)."""
    for hcm in ss._all_hcms(cfg):
        if any(f.get("name") == "envoy.filters.http.grpc_stats" for f in hcm.get("http_filters", [])):
            continue
        for al in hcm.get("access_log", []):
            if al.get("name") == STATS_LOGGER:
                for stat in _stats(al["typed_config"]):
                    stat["tags"] = [t for t in stat["tags"] if t["name"] != "gm"]


MX_VARIANTS: list[tuple[str, Callable[[Config], None] | None]] = [
    ("sidecar config (static copy)", None),
    ("counter from the duration histogram", counter_from_histogram),
    ("gRPC-only logger for the counter", grpc_counter_logger),
    ("literal key (diagnostic)", literal_key),
    ("server: peer metadata in filter state", server_peer_in_filter_state),
    ("server: request part of the key in filter state", server_key_in_filter_state),
    ("client: peer headers removed, not stored (diagnostic)", client_no_peer_store),
    ("counter from histogram + server key in filter state", combined),
    ("client: id header removed, not stored", client_id_removed_not_stored),
    ("server: peer in filter state, removed by the adding filter", server_fs_in_add_filter),
    ("all three: counter, server filter state, client id", all_three),
    ("both: id header removed, not stored", id_removed_not_stored),
    ("counter from histogram + id header not stored", counter_and_id),
    ("no gm tag without a grpc_stats filter", no_gm_without_grpc_stats),
]
