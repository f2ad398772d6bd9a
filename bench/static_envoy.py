"""The physical floor: two Envoys (A -> B -> backend) with a minimal hand-written static config."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from functools import partial

from sailmesh.processes import die_with_parent, envoy_binary, free_port
from sailmesh.testing.waiting import wait_for

# preexec_fn for the harness's children: SIGTERM when the harness dies, so a `sailmesh up` it started
# can still stop its own processes in order and no Envoy outlives a killed run.
DIE_WITH_HARNESS = partial(die_with_parent, signal.SIGTERM)
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


@dataclass
class MtlsSide:
    """One end of a hand-written mutual-TLS hop with the sidecars' TLS settings (generate/tls.py): TLS 1.2-1.3,
    ECDSA P-256 SPIFFE certificates from one CA (Bootstrap secrets `default` and `ROOTCA`), Istio's ALPN, and
    the peer's SPIFFE URI checked; no SDS, no metadata exchange, no RBAC."""

    server: bool
    secrets: list[dict[str, object]]
    peer_uri: str

    def transport_socket(self) -> dict[str, object]:
        """The listener's DownstreamTlsContext (server) or the cluster's UpstreamTlsContext (client)."""
        common = {
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
            "tls_certificate_sds_secret_configs": [{"name": "default"}],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"exact": self.peer_uri}}]},
                "validation_context_sds_secret_config": {"name": "ROOTCA"},
            },
            "alpn_protocols": ["istio-http/1.1", "istio", "http/1.1"] if self.server
            else ["istio-peer-exchange", "istio"],
        }
        if self.server:
            ctx: dict[str, object] = {"@type": TLS_TYPE + "DownstreamTlsContext", "common_tls_context": common,
                                      "require_client_certificate": True}
        else:
            ctx = {"@type": TLS_TYPE + "UpstreamTlsContext", "common_tls_context": common, "sni": "bench-b"}
        return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def proxy_config(listen_port: int, upstream_port: int, admin_port: int, host: str = "127.0.0.1",
                 tls: MtlsSide | None = None) -> dict[str, object]:
    """Bootstrap of one plain-HTTP proxy: one listener, router filter only, one static cluster; no stats sinks.

    With `tls`, the listener (server side) or the cluster (client side) speaks mutual TLS as two sidecars do."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "bench",
        "codec_type": "HTTP1",
        "route_config": {
            "name": "local",
            "virtual_hosts": [{"name": "all", "domains": ["*"],
                               "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}],
        },
        "http_filters": [
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ],
    }
    listener: dict[str, object] = {
        "name": "in",
        "address": {"socket_address": {"address": host, "port_value": listen_port}},
        "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }
    cluster: dict[str, object] = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": upstream_port}}}}
        ]}]},
    }
    boot: dict[str, object] = {
        "node": {"id": f"bench-static-{listen_port}", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": host, "port_value": admin_port}}},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }
    if tls is not None:
        static = boot["static_resources"]
        assert isinstance(static, dict)
        static["secrets"] = tls.secrets
        if tls.server:
            listener["filter_chains"][0]["transport_socket"] = tls.transport_socket()  # type: ignore[index]
        else:
            cluster["transport_socket"] = tls.transport_socket()
    return boot


@dataclass
class EnvoyProcess:
    """One running Envoy with its admin port, listener port and log file."""

    proc: subprocess.Popen[bytes]
    listen_port: int
    admin_port: int
    log: pathlib.Path

    @property
    def pid(self) -> int:
        """The Envoy's process id."""
        return self.proc.pid

    def stop(self) -> None:
        """Terminate, then kill if it does not exit within 5 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _ready(admin_port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as r:
        return r.status == 200


def start_envoy(config: dict[str, object], workdir: pathlib.Path, name: str, concurrency: int = 1) -> EnvoyProcess:
    """Write the config, start Envoy with it and wait until its admin /ready answers 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"{name}.json"
    cfg.write_text(json.dumps(config))
    log = workdir / f"{name}.log"
    static = config["static_resources"]
    assert isinstance(static, dict)
    listen_port = int(static["listeners"][0]["address"]["socket_address"]["port_value"])
    admin = config["admin"]
    assert isinstance(admin, dict)
    admin_port = int(admin["address"]["socket_address"]["port_value"])
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [envoy_binary(), "-c", str(cfg), "--disable-hot-restart", "--concurrency", str(concurrency),
             "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=DIE_WITH_HARNESS,
        )
    env = EnvoyProcess(proc, listen_port, admin_port, log)
    try:
        wait_for(lambda: proc.poll() is None and _ready(admin_port), timeout=15, what=f"envoy {name} ready")
    except BaseException:
        env.stop()
        raise
    return env


@dataclass
class StaticPair:
    """Envoy A (client side) -> Envoy B (server side) -> backend."""

    a: EnvoyProcess
    b: EnvoyProcess
    extra: list[EnvoyProcess] = field(default_factory=list)

    def stop(self) -> None:
        """Stop both Envoys."""
        for e in (self.a, self.b, *self.extra):
            e.stop()


def start_static_pair(backend_port: int, workdir: pathlib.Path, concurrency: int = 1,
                      host: str = "127.0.0.1", mtls: tuple[MtlsSide, MtlsSide] | None = None) -> StaticPair:
    """Start B in front of the backend, then A in front of B; A's listener is the client-facing port.
    `mtls`: (A's client side, B's server side) for a mutual-TLS hop between them."""
    b_port, a_port = free_port(host), free_port(host)
    a_tls, b_tls = mtls if mtls is not None else (None, None)
    b = start_envoy(proxy_config(b_port, backend_port, free_port(host), host, tls=b_tls), workdir, "envoy-b",
                    concurrency)
    try:
        a = start_envoy(proxy_config(a_port, b_port, free_port(host), host, tls=a_tls), workdir, "envoy-a",
                        concurrency)
    except BaseException:
        b.stop()
        raise
    return StaticPair(a, b)


if __name__ == "__main__":  # print one proxy's config, for reading
    print(json.dumps(proxy_config(10000, 8080, 9901), indent=2))
