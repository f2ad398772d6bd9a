"""Grafana dashboards for sailmesh (mesh, service, workload, control plane), on Istio's metric names.

Import the JSON files into Grafana with a Prometheus data source that scrapes the mesh with Istio's scrape
configuration (the control plane's :15014/metrics and every proxy's :15020/stats/prometheus).
"""

from __future__ import annotations

import pathlib

FOLDER = pathlib.Path(__file__).parent


def dashboards() -> list[pathlib.Path]:
    """The dashboard files shipped with the package."""
    return sorted(FOLDER.glob("sailmesh-*-dashboard.json"))
