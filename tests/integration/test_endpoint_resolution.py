"""Endpoint resolution through module_utils against the simulated cluster: CiliumEndpoints, their absence, ids."""

from __future__ import annotations

import pytest
from simcluster.cluster import SimCluster

from ansible_collections.netpol.cilium.plugins.module_utils._audit_mode import AuditModeService, ModuleFailure
from ansible_collections.netpol.cilium.plugins.module_utils._endpoints import build_selection
from ansible_collections.netpol.cilium.plugins.module_utils._k8s import Kube

pytestmark = pytest.mark.integration


def service(cluster: SimCluster) -> AuditModeService:
    return AuditModeService(Kube(cluster.api_client(), sleep=lambda seconds: None), poll=0.05)


def db(cluster: SimCluster):
    return next(r for r in cluster.endpoints.values() if r.namespace == "shop" and r.pod.startswith("db-"))


def test_without_ciliumendpoints_the_agents_endpoint_list_is_matched(no_cep_cluster: SimCluster) -> None:
    svc = service(no_cep_cluster)
    outcome = svc.set_endpoints(build_selection({"policy": "shop/db-ingress"}), True)
    [row] = outcome.rows
    record = db(no_cep_cluster)
    assert (row.id, row.node, row.status, row.verified) == (record.id, record.node, "changed", True)
    assert svc.resolver.resolve(build_selection({"pods": [f"shop/{record.pod}"]})).used_ciliumendpoints is False


def test_endpoint_ids_are_found_through_ciliumendpoints(shared_cluster: SimCluster) -> None:
    record = db(shared_cluster)
    resolution = service(shared_cluster).resolve(build_selection({"endpoint_ids": [record.id]}))
    [target] = resolution.targets
    assert (target.node, target.pod, target.state.policy_enabled) == (record.node, record.pod, "ingress")


def test_host_endpoint_ids_are_found_by_asking_the_agents(shared_cluster: SimCluster) -> None:
    host_id = shared_cluster._host_endpoint_id("shared-worker-2")
    resolution = service(shared_cluster).resolve(build_selection({"endpoint_ids": [host_id],
                                                                  "nodes": ["shared-worker-2"]}))
    [target] = resolution.targets
    assert target.state.is_host and target.node == "shared-worker-2"


def test_unknown_endpoint_id_fails_clearly(shared_cluster: SimCluster) -> None:
    with pytest.raises(ModuleFailure) as error:
        service(shared_cluster).resolve(build_selection({"endpoint_ids": [4001]}))
    assert str(error.value) == "endpoint_ids: no agent knows endpoint id 4001"


def test_unknown_id_on_a_named_node_is_a_per_endpoint_failure(sim_cluster: SimCluster) -> None:
    with pytest.raises(ModuleFailure) as error:
        service(sim_cluster).set_endpoints(build_selection({"endpoint_ids": [4001], "nodes": ["sim-worker-1"]}), True)
    assert "endpoint id 4001: the cilium agent on node sim-worker-1 has no such endpoint" in str(error.value)
    assert error.value.result["endpoints"][0]["status"] == "failed"


def test_unknown_node_and_missing_policy_are_named(shared_cluster: SimCluster) -> None:
    svc = service(shared_cluster)
    with pytest.raises(ModuleFailure, match="nodes: no cilium agent runs on node nope"):
        svc.resolve(build_selection({"endpoint_ids": [1], "nodes": ["nope"]}))
    with pytest.raises(ModuleFailure, match="policy: CiliumNetworkPolicy shop/ghost not found"):
        svc.resolve(build_selection({"policy": "shop/ghost"}))


def test_wrong_cilium_namespace_says_where_it_looked(shared_cluster: SimCluster) -> None:
    svc = AuditModeService(Kube(shared_cluster.api_client()), cilium_namespace="cilium")
    with pytest.raises(ModuleFailure, match="no cilium agent pods .k8s-app=cilium. found in namespace cilium"):
        svc.resolve(build_selection({"namespace": "shop"}))
