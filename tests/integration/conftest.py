"""Fixtures that start simulated clusters (real HTTPS Kubernetes API on loopback, emulated Cilium agents)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from simcluster.cluster import SimCluster
from simcluster.scenario import seed


@contextmanager
def seeded_cluster(name: str, tmp_path_factory: pytest.TempPathFactory, **options: Any) -> Iterator[SimCluster]:
    """A running seed-scenario cluster, stopped on exit."""
    cluster = SimCluster(name, state_dir=str(tmp_path_factory.mktemp(name)), agent_boot_seconds=0.1, **options)
    cluster.start()
    try:
        seed(cluster)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sim_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """A fresh seed-scenario cluster per test: three nodes, shop/{frontend,backend,db}, monitoring/metrics-agent."""
    with seeded_cluster("sim", tmp_path_factory) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """One seed-scenario cluster for a module's read-only tests."""
    with seeded_cluster("shared", tmp_path_factory) as cluster:
        yield cluster


@pytest.fixture
def no_cep_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """Cilium with the CiliumEndpoint CRD disabled (disable-endpoint-crd): only the agents know endpoint ids."""
    with seeded_cluster("nocep", tmp_path_factory, ciliumendpoint_crd=False) as cluster:
        yield cluster
