"""Istio's own analyzer test cases (EXPECTED.tsv, scope istio+core): sailmesh must match at least 90%."""

from __future__ import annotations

import pytest

from tests.unit.analysis_conformance import conformance_dir, run_all, summary

TARGET = 0.90


@pytest.fixture(scope="module")
def cases():
    base = conformance_dir()
    if base is None:
        pytest.skip("Istio conformance data not found (../shared/conformance or $SAILMESH_CONFORMANCE)")
    return run_all(base)


def test_istio_analyzer_cases_match(cases):
    """Per case, the set of (code, resource) from the case's analyzer equals Istio's expected set."""
    report = summary(cases)
    print(report)
    matched = sum(c.ok for c in cases)
    assert len(cases) >= 80, "EXPECTED.tsv should hold Istio's ~90 istio+core cases"
    assert matched / len(cases) >= TARGET, report


def test_core_cross_resource_cases_all_match(cases):
    """The mistakes users hit most must match exactly: subsets, gateways, hosts, selectors, mesh host conflicts."""
    must = {
        "virtualServiceDestinationRules",
        "virtualServiceDestinationHosts",
        "virtualServiceGateways",
        "virtualServiceConflictingMeshGatewayHosts",
        "virtualServiceConflictingMeshGatewayHostsWithExportTo",
        "sidecarSelector",
        "gatewaySecret",
        "authorizationpolicies",
        "istioInjection",
        "portNameNotFollowConvention",
        "serviceMultipleDeployments",
    }
    failing = [c.name for c in cases if c.name in must and not c.ok]
    assert not failing, summary([c for c in cases if c.name in must])
