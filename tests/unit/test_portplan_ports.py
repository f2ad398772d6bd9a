"""The port plan checks the control-plane ports the user named and leaves those at 0 to the control plane, which binds
free ones itself (no pick in the supervisor that another process could take before the bind)."""

from __future__ import annotations

from sailmesh.platform.portplan import MeshOptions, mesh_ports
from sailmesh.settings import ProxyPorts


def _control_plane(opts: MeshOptions) -> dict[str, int]:
    return {p.flag: p.port for p in mesh_ports(opts, ProxyPorts(), [], []) if p.what.startswith("control plane")}


def test_ports_at_zero_are_not_picked_nor_checked() -> None:
    opts = MeshOptions(config_dirs=[], state_dir="/nonexistent", http_port=0, xds_tls_port=0, ca_port=0)
    assert _control_plane(opts) == {}
    assert (opts.http_port, opts.xds_tls_port, opts.ca_port, opts.dns_port) == (0, 0, 0, 0)


def test_ports_given_by_the_user_are_kept_and_checked() -> None:
    opts = MeshOptions(config_dirs=[], state_dir="/nonexistent", http_port=50029, xds_tls_port=15012, ca_port=0,
                       xds_plaintext=True, xds_port=15010)
    assert _control_plane(opts) == {"--http-port": 50029, "--xds-tls-port": 15012, "--xds-port": 15010}
