"""Finding agents and running the agent CLI through the product's own module_utils, against the simulated cluster."""

from __future__ import annotations

import json

import pytest
from simcluster.cluster import SimCluster
from simcluster.faults import ExecFault

from ansible_collections.netpol.cilium.plugins.module_utils._agents import AgentRunner, find_agents, run_per_node
from ansible_collections.netpol.cilium.plugins.module_utils._cilium_dbg import (
    batch_argv, endpoint_list_argv, parse_batch_output, parse_endpoints,
)
from ansible_collections.netpol.cilium.plugins.module_utils._k8s import Kube, KubeError

pytestmark = pytest.mark.integration


def kube(cluster: SimCluster, token: str | None = None) -> Kube:
    return Kube(cluster.api_client(token), sleep=lambda seconds: None)


def test_finds_one_ready_agent_per_node(shared_cluster: SimCluster) -> None:
    agents = find_agents(kube(shared_cluster))
    assert sorted(agents) == shared_cluster.node_names()
    assert all(a.ready and a.phase == "Running" and a.version == "1.15.1" for a in agents.values())


def test_batch_changes_all_endpoints_of_a_node_in_one_exec(sim_cluster: SimCluster) -> None:
    k = kube(sim_cluster)
    agents = find_agents(k)
    runner = AgentRunner(k)
    node = next(r.node for r in sim_cluster.endpoints.values() if r.namespace == "shop")
    ids = sorted(r.id for r in sim_cluster.endpoints.values() if r.node == node)
    outcome = runner.run(agents[node], batch_argv("cilium-dbg", ids, enabled=True))
    assert outcome.ok, outcome.describe()
    items = parse_batch_output(outcome.stdout)
    assert sorted(int(i) for i in items) == ids
    assert all(item.rc == 0 and item.output == f"Endpoint {item.endpoint_id} configuration updated successfully"
               for item in items.values())
    assert runner.exec_count == 1
    listed = parse_endpoints(runner.run(agents[node], endpoint_list_argv("cilium-dbg")).stdout)
    assert {e.id: e.audit_mode for e in listed if not e.is_host} == dict.fromkeys(ids, True)


def test_old_agents_only_have_the_cilium_binary(sim_cluster: SimCluster) -> None:
    sim_cluster.agent_version = "1.14.19"
    sim_cluster.store.delete(sim_cluster.rtype("pods"), "kube-system",
                             sim_cluster.agent_pod_on("sim-worker-1")["metadata"]["name"])
    sim_cluster.wait_for_agents()
    k = kube(sim_cluster)
    agent = find_agents(k)["sim-worker-1"]
    assert agent.version == "1.15.1"  # the image says 1.15.1, the agent runs 1.14: the runner must notice
    runner = AgentRunner(k)
    outcome = runner.run(agent, endpoint_list_argv(runner.binary(agent)))
    assert outcome.ok and outcome.argv[0] == "cilium"
    assert runner.binary(agent) == "cilium"
    assert parse_endpoints(outcome.stdout)


def test_exec_forbidden_names_the_missing_permission(shared_cluster: SimCluster) -> None:
    k = kube(shared_cluster, shared_cluster.readonly_token)
    agent = find_agents(k)["shared-worker-1"]
    outcome = AgentRunner(k).run(agent, ["cilium-dbg", "status", "--brief"])
    assert outcome.forbidden
    assert "verb 'create' on resource 'pods/exec' in namespace kube-system" in outcome.error
    assert "cannot create resource" in outcome.error


def test_a_hanging_exec_is_cut_at_the_timeout_and_other_nodes_finish(sim_cluster: SimCluster) -> None:
    k = kube(sim_cluster)
    agents = find_agents(k)
    sim_cluster.faults.exec_by_node["sim-worker-2"] = ExecFault("hang", seconds=30)
    runner = AgentRunner(k, timeout=1.5)
    results = run_per_node(sorted(agents), lambda node: runner.run(agents[node], ["cilium-dbg", "status", "--brief"]))
    assert results["sim-worker-1"].ok and results["sim-worker-3"].ok
    hung = results["sim-worker-2"]
    assert not hung.ok and "did not finish within 1.5s" in hung.error


def test_reads_are_retried_on_503_and_fail_clearly_after_the_budget(sim_cluster: SimCluster) -> None:
    k = kube(sim_cluster)
    sim_cluster.faults.add_api_fault(503, verbs={"list"}, resources={"pods"}, count=2)
    assert len(find_agents(k)) == 3
    assert k.retried == 2
    sim_cluster.faults.add_api_fault(500, verbs={"list"}, resources={"pods"})
    with pytest.raises(KubeError) as error:
        find_agents(k)
    assert str(error.value).startswith("list cilium agent pods (k8s-app=cilium) in namespace kube-system: ")
    assert error.value.status == 500


def test_unknown_endpoint_in_a_batch_is_reported_per_id(shared_cluster: SimCluster) -> None:
    k = kube(shared_cluster)
    agent = find_agents(k)["shared-worker-3"]
    outcome = AgentRunner(k).run(agent, batch_argv("cilium-dbg", [4000], enabled=False))
    item = parse_batch_output(outcome.stdout)["4000"]
    assert item.rc == 1
    assert item.output == "Error: Cannot get configuration of endpoint 4000: [GET /endpoint/{id}/config][404] " \
                          "getEndpointIdConfigNotFound"
    json.dumps(outcome.argv)  # argv stays plain strings
