"""Fixtures that start simulated clusters (real HTTPS Kubernetes API on loopback, emulated Cilium agents)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simcluster.cluster import SimCluster
from simcluster.scenario import seed


@pytest.fixture
def sim_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """A fresh seed-scenario cluster per test: three nodes, shop/{frontend,backend,db}, monitoring/metrics-agent."""
    cluster = SimCluster("sim", state_dir=str(tmp_path_factory.mktemp("sim")), agent_boot_seconds=0.1)
    cluster.start()
    try:
        seed(cluster)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """One seed-scenario cluster for a module's read-only tests."""
    cluster = SimCluster("shared", state_dir=str(tmp_path_factory.mktemp("shared")), agent_boot_seconds=0.1)
    cluster.start()
    try:
        seed(cluster)
        yield cluster
    finally:
        cluster.stop()
