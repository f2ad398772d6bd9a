"""assign_free_ports never hands out a port the mesh's options already name (a CI run's mesh was refused when the CA
port probe returned the HTTP API's port)."""

from __future__ import annotations

from sailmesh.platform.portplan import MeshOptions, assign_free_ports


def test_a_probed_port_the_options_already_name_is_skipped() -> None:
    opts = MeshOptions(config_dirs=[], state_dir="/nonexistent", http_port=50029)
    probes = iter([50029, 50029, 41000, 50029, 41000, 42000])
    assign_free_ports(opts, pick=lambda: next(probes))
    assert (opts.xds_tls_port, opts.ca_port) == (41000, 42000)


def test_ports_given_by_the_user_are_kept() -> None:
    opts = MeshOptions(config_dirs=[], state_dir="/nonexistent", http_port=50029, xds_tls_port=15012, ca_port=15013)
    assign_free_ports(opts, pick=lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    assert (opts.http_port, opts.xds_tls_port, opts.ca_port) == (50029, 15012, 15013)
