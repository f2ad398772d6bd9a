"""e2e fixtures shared across modules: one Kubernetes cluster per pytest worker (see kube_support.SharedCluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.kube_support import SharedCluster


@pytest.fixture(scope="session")
def shared_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedCluster]:
    """The worker's shared cluster, started lazily by the first module that asks (kube_support.module_cluster,
    the `kube` fixture of the Kubernetes e2e modules) and stopped at the end of the session."""
    shared = SharedCluster(tmp_path_factory)
    try:
        yield shared
    finally:
        shared.close()
