"""The Wasm-filter variant of the static sidecar copy (bench/dataplane/wasm_variant.py): config editing only, no
Rust build (tests/e2e/test_bench_wasm_build.py builds it)."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest

from bench.dataplane import wasm_build, wasm_variant

MD_CLIENT, MD_SERVER = "Q0xJRU5U", "U0VSVkVS"


def _add(client: bool, md: str, node: str) -> dict[str, Any]:
    ours = [{"append": {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
            for k, v in (("x-envoy-peer-metadata-id", node), ("x-envoy-peer-metadata", md))]
    theirs = [{"remove": "x-envoy-peer-metadata-id"}] + ([] if client else [{"remove": "x-envoy-peer-metadata"}])
    muts = {"request_mutations": ours, "response_mutations": theirs} if client else \
        {"request_mutations": theirs, "response_mutations": ours}
    return {"name": "istio.metadata_exchange.add", "typed_config": {"mutations": muts}}


def _logger(key: str) -> dict[str, Any]:
    stat = {"name": "requests_total", "tags": [{"name": "k", "value_format": key}]}
    return {"name": "envoy.access_loggers.stats", "typed_config": {"counters": [{"stat": stat}]}}


def _hcm(client: bool) -> dict[str, Any]:
    key = "source\n\n%DYNAMIC_METADATA(sailmesh.peer:metadata)%" if client else \
        "destination\nsvc.default.svc.cluster.local\n%FILTER_STATE(sailmesh.peer:PLAIN)%"
    return {"http_filters": [{"name": "istio.metadata_exchange.read", "typed_config": {}},
                             _add(client, MD_CLIENT if client else MD_SERVER, "sidecar~x"),
                             {"name": "envoy.filters.http.router"}],
            "access_log": [_logger(key), {"name": "envoy.access_loggers.http_grpc"}]}


def _cfg(*hcms: dict[str, Any]) -> dict[str, Any]:
    chains = [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": h}]}
              for h in hcms]
    plain = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                          "typed_config": {"http_filters": [{"name": "envoy.filters.http.router"}]}}]}
    return {"static_resources": {"listeners": [{"name": "l", "filter_chains": [*chains, plain]}]}}


def _hcms(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [f["typed_config"] for fc in cfg["static_resources"]["listeners"][0]["filter_chains"]
            for f in fc["filters"]]


def test_side_of_reads_mode_key_fields_and_our_headers() -> None:
    cli, srv = wasm_variant.side_of(_hcm(True)), wasm_variant.side_of(_hcm(False))
    assert cli == wasm_variant.Side("client", "source", "", MD_CLIENT, "sidecar~x")
    assert srv == wasm_variant.Side("server", "destination", "svc.default.svc.cluster.local", MD_SERVER,
                                    "sidecar~x")
    assert srv.configuration(noop=True).splitlines()[0] == "mode=noop"
    assert wasm_variant.side_of({"http_filters": [{"name": "envoy.filters.http.router"}]}) is None


def test_wasm_variant_replaces_the_exchange_filters_and_the_stats_logger() -> None:
    """The variant's config has the Wasm filter where the reading filter was, no metadata-exchange filters, no
    stats logger (other access logs kept), and HCMs without the exchange unchanged."""
    cfg = _cfg(_hcm(True), _hcm(False))
    before = copy.deepcopy(cfg)
    code = pathlib.Path("/nonexistent/filter.wasm")
    wasm_variant.with_wasm(cfg, code)
    cli, srv, plain = _hcms(cfg)
    for hcm, mode in ((cli, "client"), (srv, "server")):
        names = [f["name"] for f in hcm["http_filters"]]
        assert names == ["envoy.filters.http.wasm", "envoy.filters.http.router"]
        assert [al["name"] for al in hcm["access_log"]] == ["envoy.access_loggers.http_grpc"]
        wasm = hcm["http_filters"][0]["typed_config"]["config"]
        assert wasm["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
        assert wasm["vm_config"]["code"]["local"]["filename"] == str(code)
        assert f"mode={mode}" in wasm["configuration"]["value"]
    assert plain == _hcms(before)[2]
    noop = copy.deepcopy(before)
    wasm_variant.with_wasm(noop, code, noop=True)
    assert all("mode=noop" in h["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
               for h in _hcms(noop)[:2])


def test_stock_exchange_only_drops_the_stats_logger_alone() -> None:
    cfg = _cfg(_hcm(True))
    wasm_variant.stock_exchange_only(cfg)
    hcm = _hcms(cfg)[0]
    assert [f["name"] for f in hcm["http_filters"]] == [f["name"] for f in _hcm(True)["http_filters"]]
    assert [al["name"] for al in hcm["access_log"]] == ["envoy.access_loggers.http_grpc"]


def test_metric_counts_reads_the_counter_and_histogram_counts() -> None:
    text = "\n".join([
        "# TYPE sailmesh_wasm_requests_total_source__abc counter",
        "sailmesh_wasm_requests_total_source__abc{} 7",
        "sailmesh_wasm_requests_total_source__def{} 3",
        "sailmesh_wasm_request_bytes_source__abc_bucket{le=\"0.5\"} 0",
        "sailmesh_wasm_request_bytes_source__abc_count{} 10",
        "sailmesh_wasm_request_duration_milliseconds_source__abc_count{} 10",
        "sailmesh_wasm_response_bytes_source__abc_sum{} 11500",
        "sailmesh_wasm_response_bytes_source__abc_count{} 10",
        "envoy_cluster_upstream_rq_total{} 99",
    ])
    assert wasm_variant.metric_counts(text) == dict.fromkeys(wasm_variant.METRICS, 10)


def test_toolchain_problem_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wasm_build.shutil, "which", lambda _: None)
    assert "cargo is not on PATH" in (wasm_build.toolchain_problem() or "")
    wasm_build.wasm_path.cache_clear()
    with pytest.raises(wasm_build.ToolchainMissing, match="cannot build the Wasm filter"):
        wasm_build.wasm_path()
    wasm_build.wasm_path.cache_clear()
