"""The kube e2e tests' Gateway API CRDs (sailmesh/testing/gatewayapi_crds.py): the experimental channel's kinds the
standard channel lacks (BackendTLSPolicy, TCPRoute, TLSRoute, ...) are installed beside the standard CRDs, which
stay the standard channel's."""

from __future__ import annotations

import pathlib

from sailmesh.testing.gatewayapi_crds import experimental_only


def test_experimental_only_lists_the_kinds_standard_lacks(tmp_path: pathlib.Path) -> None:
    for channel, names in (("standard", ["gateways", "httproutes"]),
                           ("experimental", ["gateways", "httproutes", "backendtlspolicies", "tcproutes"])):
        (tmp_path / channel).mkdir()
        for n in names:
            (tmp_path / channel / f"gateway.networking.k8s.io_{n}.yaml").write_text("kind: CustomResourceDefinition\n")
    assert [p.name for p in experimental_only(tmp_path)] == ["gateway.networking.k8s.io_backendtlspolicies.yaml",
                                                              "gateway.networking.k8s.io_tcproutes.yaml"]
