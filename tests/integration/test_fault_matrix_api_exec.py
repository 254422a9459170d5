"""Fault matrix (issue #7): the Kubernetes API, agent exec and the agent rollout failing under cilium_audit_mode and the
role audit_mode_helm, run by ansible-playbook against the simulated cluster.

Each test asserts the state the cluster is left in (which endpoints and agents run with audit mode, cilium-config,
the ledger, the DaemonSet's pods), what the module returned, and its message; for the exec faults, that a re-run once
the fault is gone finishes the job.

Covered elsewhere, not repeated here (the Helm role tests take about 30 s each):
- an agent that never becomes ready during a cluster-wide switch, and the rollback that leaves the cluster as it was:
  ``test_role_audit_mode_helm.py::test_rollout_timeout_rolls_the_release_back_and_restores_every_agent`` (and
  ``test_failed_disable_rolls_back_to_audit_mode_and_keeps_its_ledger_entry`` for the way back);
- an exec that fails on one node from the first read on:
  ``test_cilium_audit_mode.py::test_one_failing_node_is_reported_endpoint_by_endpoint``;
- the backoff, jitter, Retry-After and 409 logic call by call: ``tests/unit/plugins/module_utils/test_k8s_retries.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from simcluster.cluster import SimCluster
from simcluster.faults import ExecFault
from simcluster.playbook import run_play, run_tasks

pytestmark = pytest.mark.integration

NS = "kube-system"
LEDGER = "netpol-cilium-audit-ledger"
TESTS_DIR = Path(__file__).resolve().parents[1]
DB = {"namespace": "shop", "label_selector": "app=db"}
CLUSTER = {"scope": "cluster", "force": True, "reason": "CHG-7 fault matrix"}  # the seeded cilium-config is Helm's
GAVE_UP = "the server is currently unable to handle the request (HTTP 503, gave up after 5 attempts)"


def enable(**options: Any) -> dict[str, Any]:
    return {"netpol.cilium.cilium_audit_mode": {"state": "enabled", "max_duration": "1h", **options}}


def info(**options: Any) -> dict[str, Any]:
    return {"netpol.cilium.cilium_audit_mode_info": options}


def run(cluster: SimCluster, tasks: list[dict[str, Any]], workdir: Path, name: str,
        timeout: float = 300) -> list[dict[str, Any]]:
    rundir = workdir / name
    rundir.mkdir()
    return run_tasks(cluster, tasks, rundir, timeout=timeout).results


# -- what the cluster says (the simulated components themselves, not a module) ---------------------------------------

def ledger(cluster: SimCluster) -> dict[str, Any]:
    config = cluster.store.try_get(cluster.rtype("configmaps"), NS, LEDGER) or {}
    return {key: json.loads(value) for key, value in (config.get("data") or {}).items()}


def shop_endpoints(cluster: SimCluster) -> dict[str, dict[int, bool]]:
    """PolicyAuditMode of every shop endpoint, by node and endpoint id, as its agent has it."""
    found: dict[str, dict[int, bool]] = {}
    for (namespace, _pod), record in cluster.endpoints.items():
        if namespace == "shop":
            found.setdefault(record.node, {})[record.id] = cluster.agent(record.node).endpoint_audit_mode(record.id)
    return found


def db_record(cluster: SimCluster) -> Any:
    return next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))


def config_value(cluster: SimCluster) -> str | None:
    return (cluster.get("ConfigMap", "cilium-config", NS).get("data") or {}).get("policy-audit-mode")


def running_modes(cluster: SimCluster) -> dict[str, bool]:
    return {node: cluster.agent(node).daemon_audit_mode() for node in cluster.node_names()}


def agent_pods(cluster: SimCluster) -> dict[str, str]:
    return {p["spec"]["nodeName"]: p["metadata"]["name"] for p in cluster.agent_pods()}


# -- Kubernetes API: transient faults are retried and the job is done ------------------------------------------------

TRANSIENT = [
    # (id, fault, task): each fault answers `count` requests, the next one goes through
    ("429-retry-after-on-list-pods", {"code": 429, "verbs": {"list"}, "resources": {"pods"}, "count": 2},
     enable(**DB)),
    ("500-on-get-policy", {"code": 500, "verbs": {"get"}, "resources": {"ciliumnetworkpolicies"}, "count": 2},
     enable(policy="shop/db-ingress")),
    ("503-on-create-ledger", {"code": 503, "verbs": {"create"}, "resources": {"configmaps"}, "count": 3},
     enable(**DB)),
]


@pytest.mark.parametrize(("fault", "task"), [row[1:] for row in TRANSIENT], ids=[row[0] for row in TRANSIENT])
def test_transient_api_errors_are_retried_and_the_endpoint_is_switched(
        sim_cluster: SimCluster, tmp_path: Path, fault: dict[str, Any], task: dict[str, Any]) -> None:
    injected = sim_cluster.faults.add_api_fault(**fault)
    [result] = run(sim_cluster, [task], tmp_path, "enable")
    assert not result.get("failed"), result.get("msg")
    assert injected.hits == fault["count"]  # every faulted request was answered with the error, then retried
    record = db_record(sim_cluster)
    assert result["counts"] == {"selected": 1, "changed": 1, "would_change": 0, "unchanged": 0, "failed": 0}
    [row] = result["endpoints"]
    assert (row["id"], row["node"], row["after"], row["verified"]) == (record.id, record.node, "Enabled", True)
    assert sim_cluster.agent(record.node).endpoint_audit_mode(record.id) is True
    assert sum(mode for modes in shop_endpoints(sim_cluster).values() for mode in modes.values()) == 1
    [entry] = ledger(sim_cluster).values()
    assert [(e["id"], e["node"]) for e in entry["endpoints"]] == [(record.id, record.node)]


def test_transient_503_on_the_cluster_writes_is_retried_and_every_agent_restarted(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    """The patch of cilium-config and the restart annotation of the DaemonSet set fixed values: retried like reads."""
    pods = agent_pods(sim_cluster)
    config_fault = sim_cluster.faults.add_api_fault(503, verbs={"patch"}, resources={"configmaps"},
                                                    names={"cilium-config"}, count=2)
    restart_fault = sim_cluster.faults.add_api_fault(503, verbs={"patch"}, resources={"daemonsets"}, count=2)
    [result] = run(sim_cluster, [enable(**CLUSTER)], tmp_path, "enable")
    assert not result.get("failed"), result.get("msg")
    assert (config_fault.hits, restart_fault.hits) == (2, 2)
    assert result["config"] == {"name": "cilium-config", "before": None, "after": "true"}
    assert result["verified"] is True and sorted(result["rollout"]["restarted"]) == sim_cluster.node_names()
    assert config_value(sim_cluster) == "true"
    assert running_modes(sim_cluster) == dict.fromkeys(sim_cluster.node_names(), True)
    assert all(agent_pods(sim_cluster)[node] != pod for node, pod in pods.items())  # every agent restarted once
    [entry] = ledger(sim_cluster).values()
    assert entry["scope"] == "cluster" and entry["nodes"] == sim_cluster.node_names()


# -- Kubernetes API: a hung request, a conflict -----------------------------------------------------------------------

def test_a_hung_api_request_is_abandoned_at_the_timeout_and_retried(sim_cluster: SimCluster, tmp_path: Path) -> None:
    """The API server takes the patch of cilium-config and does not answer (for 10 minutes, longer than the test may
    run); with api_timeout 2 the module gives up on it after 2 s and sends it again. Without a request timeout the
    run would wait for that answer and this test fail on its 150 s limit."""
    held = sim_cluster.faults.add_api_fault(0, verbs={"patch"}, resources={"configmaps"}, names={"cilium-config"},
                                            count=1, delay=600)
    [result] = run(sim_cluster, [enable(**CLUSTER, api_timeout=2)], tmp_path, "enable", timeout=150)
    assert not result.get("failed"), result.get("msg")
    assert held.hits == 1
    assert result["verified"] is True and sorted(result["rollout"]["restarted"]) == sim_cluster.node_names()
    assert config_value(sim_cluster) == "true"
    assert running_modes(sim_cluster) == dict.fromkeys(sim_cluster.node_names(), True)
    assert [e["scope"] for e in ledger(sim_cluster).values()] == ["cluster"]


def test_a_409_on_the_cluster_patches_is_re_read_and_retried(sim_cluster: SimCluster, tmp_path: Path) -> None:
    config_fault = sim_cluster.faults.add_api_fault(409, verbs={"patch"}, resources={"configmaps"},
                                                    names={"cilium-config"}, count=1)
    restart_fault = sim_cluster.faults.add_api_fault(409, verbs={"patch"}, resources={"daemonsets"}, count=1)
    pods = agent_pods(sim_cluster)
    [result] = run(sim_cluster, [enable(**CLUSTER)], tmp_path, "enable")
    assert not result.get("failed"), result.get("msg")
    assert (config_fault.hits, restart_fault.hits) == (1, 1)
    assert result["verified"] is True and sorted(result["rollout"]["restarted"]) == sim_cluster.node_names()
    assert config_value(sim_cluster) == "true"
    assert running_modes(sim_cluster) == dict.fromkeys(sim_cluster.node_names(), True)
    # one rollout: each agent was replaced exactly once
    assert all(agent_pods(sim_cluster)[node] != pod for node, pod in pods.items())
    assert sim_cluster.agent_starts and all(len(sim_cluster.agent_starts[node]) == 2 for node in pods)


def test_a_409_on_the_node_config_patch_is_re_read_and_retried(sim_cluster: SimCluster, tmp_path: Path) -> None:
    node = sim_cluster.node_names()[2]
    selector = {"kubernetes.io/hostname": node}
    sim_cluster.apply({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumNodeConfig",
                       "metadata": {"name": "netpol-cilium-audit", "namespace": NS},
                       "spec": {"nodeSelector": {"matchLabels": selector}, "defaults": {"policy-audit-mode": "false"}}})
    conflict = sim_cluster.faults.add_api_fault(409, verbs={"patch"}, resources={"ciliumnodeconfigs"}, count=1)
    [result] = run(sim_cluster, [enable(scope="nodes", node_selector=selector)], tmp_path, "enable")
    assert not result.get("failed"), result.get("msg")
    assert conflict.hits == 1
    assert result["rollout"]["restarted"] == [node] and result["verified"] is True
    spec = sim_cluster.get("CiliumNodeConfig", "netpol-cilium-audit", NS, "cilium.io")["spec"]
    assert spec["defaults"] == {"policy-audit-mode": "true"}
    assert running_modes(sim_cluster) == {n: n == node for n in sim_cluster.node_names()}


# -- Kubernetes API: a persistent error fails clearly, naming the call and what was done -------------------------------

def test_a_persistent_503_on_a_read_fails_naming_the_call_and_changes_nothing(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    fault = sim_cluster.faults.add_api_fault(503, verbs={"list"}, resources={"ciliumendpoints"})
    [result] = run(sim_cluster, [enable(**DB)], tmp_path, "enable")
    assert result["failed"] is True
    assert result["msg"] == f"list CiliumEndpoints in namespace shop: {GAVE_UP}"
    assert result["status"] == 503
    assert fault.hits == 5  # the first attempt and 4 retries
    assert not any(mode for modes in shop_endpoints(sim_cluster).values() for mode in modes.values())
    assert ledger(sim_cluster) == {}


def test_a_persistent_503_between_config_and_restart_says_so_and_a_re_run_completes(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    """cilium-config is written, the DaemonSet cannot be patched: the message says exactly that, the ledger knows
    (cilium-config now sets audit mode), info reports the agents not restarted, and a re-run restarts them."""
    pods = agent_pods(sim_cluster)
    fault = sim_cluster.faults.add_api_fault(503, verbs={"patch"}, resources={"daemonsets"})
    failed, seen = run(sim_cluster, [enable(**CLUSTER), info()], tmp_path, "enable")
    assert failed["failed"] is True and fault.hits == 5
    assert failed["msg"] == (
        "cilium-config now has policy-audit-mode=true, but the rolling restart of the agents failed: patch DaemonSet "
        f"kube-system/cilium (rolling restart): {GAVE_UP}. A re-run restarts the agents that do not run with that "
        "value yet")
    assert failed["config"] == {"name": "cilium-config", "before": None, "after": "true"}
    assert failed["restart_nodes"] == sim_cluster.node_names()
    assert config_value(sim_cluster) == "true"
    assert agent_pods(sim_cluster) == pods  # not one agent was restarted
    assert running_modes(sim_cluster) == dict.fromkeys(sim_cluster.node_names(), False)
    [entry] = ledger(sim_cluster).values()
    assert entry["scope"] == "cluster" and entry["reason"] == CLUSTER["reason"]
    assert seen["consistent"] is False and len(seen["inconsistencies"]) == 3
    assert all("was not restarted since the change" in text for text in seen["inconsistencies"])

    sim_cluster.faults.clear()
    rerun, after = run(sim_cluster, [enable(**CLUSTER), info()], tmp_path, "rerun")
    assert not rerun.get("failed"), rerun.get("msg")
    assert rerun["changed"] is True and rerun["config"]["before"] == "true"  # nothing left to write but the restart
    assert sorted(rerun["rollout"]["restarted"]) == sim_cluster.node_names() and rerun["verified"] is True
    assert running_modes(sim_cluster) == dict.fromkeys(sim_cluster.node_names(), True)
    assert after["consistent"] is True and after["where"]["cluster"] is True
    assert [e["enabled_at"] for e in ledger(sim_cluster).values()] == [entry["enabled_at"]]


# -- exec: one node of three fails, hangs, prints garbage or exits non-zero while the endpoints are switched ----------

EXEC_FAULTS = [
    # (mode, what the module says for that node's endpoints, whether the agent ran the batch anyway)
    ("fail", "failed: error dialing backend: dial tcp", False),
    ("hang", "did not finish within 2s", False),
    ("garbage", "printed no result for endpoint", True),
    ("exit", "stopped before endpoint", True),
]


@pytest.mark.parametrize(("mode", "error", "ran"), EXEC_FAULTS, ids=[row[0] for row in EXEC_FAULTS])
def test_an_exec_fault_on_one_node_fails_that_node_only_and_a_re_run_finishes(
        sim_cluster: SimCluster, tmp_path: Path, mode: str, error: str, ran: bool) -> None:
    before = shop_endpoints(sim_cluster)
    assert sorted(before) == sim_cluster.node_names()  # shop has endpoints on every node
    bad = sim_cluster.node_names()[1]
    # the first exec on the node (reading its endpoints) works; the batch that switches them meets the fault
    fault = ExecFault(mode, seconds=60, after=1)
    sim_cluster.faults.exec_by_node[bad] = fault
    task = enable(namespace="shop", exec_timeout=2, reason="CHG-7 exec faults")
    [result] = run(sim_cluster, [task], tmp_path, "enable")
    assert result["failed"] is True and fault.hits >= 1
    bad_ids = sorted(before[bad])
    assert result["msg"].startswith(f"audit mode could not be set to Enabled on {len(bad_ids)} of 5 endpoints. "
                                    "State now: changed: ")
    rows = {(r["node"], r["id"]): r for r in result["endpoints"]}
    assert sorted(rows) == sorted((node, i) for node, ids in before.items() for i in ids)
    for (node, _id), row in rows.items():
        if node == bad:  # failed, and what the agent runs with now could not be read either
            assert (row["status"], row["after"], row["verified"]) == ("failed", "unknown", False)
            assert error in row["error"] and "\x1b" not in row["error"] and "\x00" not in row["error"]
        else:
            assert (row["status"], row["after"], row["verified"]) == ("changed", "Enabled", True)
    assert result["counts"] == {"selected": 5, "changed": 5 - len(bad_ids), "would_change": 0, "unchanged": 0,
                                "failed": len(bad_ids)}
    node_rows = {n["node"]: n for n in result["nodes"]}
    assert node_rows[bad]["changed"] == 0 and all(node_rows[n]["error"] is None for n in node_rows if n != bad)
    # the cluster: the other nodes are done; the faulty node as far as its agent got
    now = shop_endpoints(sim_cluster)
    assert all(all(modes.values()) for node, modes in now.items() if node != bad)
    assert now[bad] == dict.fromkeys(bad_ids, ran)
    # audit mode is on, so the failed run is in the ledger, its failed endpoints marked
    [entry] = ledger(sim_cluster).values()
    assert sorted((e["node"], e["id"], bool(e.get("failed"))) for e in entry["endpoints"]) == sorted(
        (node, i, node == bad) for node, ids in before.items() for i in ids)

    sim_cluster.faults.clear()
    rerun, seen = run(sim_cluster, [task, info(namespace="shop")], tmp_path, "rerun")
    assert not rerun.get("failed"), rerun.get("msg")
    statuses = {(r["node"], r["id"]): r["status"] for r in rerun["endpoints"]}
    assert statuses == {key: "unchanged" if key[0] != bad or ran else "changed" for key in rows}
    assert sorted(r["id"] for r in rerun.get("reapplied", [])) == ([] if ran else bad_ids)
    assert all(r["reason"].startswith("the last apply, at ") for r in rerun.get("reapplied", []))
    assert all(all(modes.values()) for modes in shop_endpoints(sim_cluster).values())
    [entry] = ledger(sim_cluster).values()
    assert not any(e.get("failed") for e in entry["endpoints"])
    assert {e["audit_mode"] for e in seen["endpoints"]} == {"Enabled"} and seen["guard"]["ok"] is True


# -- rollout: interrupted between the Helm upgrade and the agent restart -----------------------------------------------

def helm(cluster: SimCluster, *args: str, log: Path) -> None:
    env = dict(cluster.env(), FAKE_HELM_LOG=str(log))
    env["PATH"] = os.pathsep.join([str(TESTS_DIR / "bin"), os.path.dirname(sys.executable), env.get("PATH", "")])
    done = subprocess.run(["helm", *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_a_run_interrupted_after_the_helm_upgrade_is_completed_by_the_next_run(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    """The controller died after `helm upgrade` set policyAuditMode and before any agent restarted: the next run of
    the role sees the release and cilium-config already set and the agents not restarted, and only restarts them."""
    log = tmp_path / "helm.log"
    helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--version", "1.15.1",
         "--set", "policyAuditMode=true", log=log)
    pods = agent_pods(sim_cluster)
    assert config_value(sim_cluster) == "true"
    (tmp_path / "role").mkdir()
    role = {"name": "the role under test", "ansible.builtin.include_role": {"name": "netpol.cilium.audit_mode_helm"},
            "vars": {"audit_mode_helm_kubeconfig": sim_cluster.kubeconfig, "audit_mode_helm_state": "enabled",
                     "audit_mode_helm_max_duration": "24h", "audit_mode_helm_reason": "CHG-7 interrupted run"}}
    tasks = [{"name": "read before", "netpol.cilium.cilium_audit_mode_info": {}, "register": "seen_before"}, role,
             {"name": "read after", "netpol.cilium.cilium_audit_mode_info": {}, "register": "seen_after"}]
    outcome = run_play(sim_cluster, tasks, tmp_path / "role", extra_env={"FAKE_HELM_LOG": str(log)},
                       facts=("seen_before", "audit_mode_helm_result", "seen_after"))
    assert not outcome.failed, outcome.msg
    seen = outcome.facts["seen_before"]  # the interrupted state, as info reports it
    assert seen["consistent"] is False and len(seen["inconsistencies"]) == 3
    assert seen["config"]["policy_audit_mode"] == "Enabled"
    assert {a["runtime_audit_mode"] for a in seen["agents"]} == {"Disabled"}
    result = outcome.facts["audit_mode_helm_result"]
    assert result["upgraded"] is False and result["revision_before"] == result["revision_after"] == 2
    assert sorted(result["restarted_nodes"]) == sim_cluster.node_names() and result["verified"] is True
    upgrades = [argv for argv in map(json.loads, log.read_text().splitlines()) if "upgrade" in argv]
    assert len(upgrades) == 1  # only the interrupted run's own upgrade: the role did not upgrade again
    assert running_modes(sim_cluster) == dict.fromkeys(sim_cluster.node_names(), True)
    assert all(agent_pods(sim_cluster)[node] != pod for node, pod in pods.items())
    [entry] = ledger(sim_cluster).values()
    assert entry["scope"] == "cluster" and entry["reason"] == "CHG-7 interrupted run"
    after = outcome.facts["seen_after"]
    assert after["consistent"] is True and after["where"]["cluster"] is True
    assert after["config"]["policy_audit_mode"] == "Enabled"
