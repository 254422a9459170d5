"""cilium_audit_mode and cilium_audit_mode_info, run by ansible-playbook against the simulated cluster."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from simcluster.cluster import SimCluster
from simcluster.faults import ExecFault
from simcluster.playbook import run_tasks

pytestmark = pytest.mark.integration

DB = {"namespace": "shop", "label_selector": "app=db"}


def enable(**options):
    return {"netpol.cilium.cilium_audit_mode": {"state": "enabled", "max_duration": "1h", **options}}


def disable(**options):
    return {"netpol.cilium.cilium_audit_mode": {"state": "disabled", **options}}


def info(**options):
    return {"netpol.cilium.cilium_audit_mode_info": options}


def db_record(cluster: SimCluster):
    return next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))


def test_enables_db_endpoint_is_idempotent_and_proven_by_info(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = run_tasks(sim_cluster, [enable(**DB, reason="observe db-ingress"), enable(**DB), info(**DB)], tmp_path)
    first, second, seen = run.results
    assert run.rc == 0, run.stdout
    record = db_record(sim_cluster)
    assert first["changed"] is True
    assert first["counts"] == {"selected": 1, "changed": 1, "would_change": 0, "unchanged": 0, "failed": 0}
    [row] = first["endpoints"]
    assert (row["id"], row["node"], row["pod"]) == (record.id, record.node, record.pod)
    assert (row["before"], row["after"], row["verified"]) == ("Disabled", "Enabled", True)
    assert row["policy_enabled"] == "audit-ingress"
    assert second["changed"] is False and second["counts"]["unchanged"] == 1
    assert sim_cluster.agent(record.node).endpoint_audit_mode(record.id) is True
    assert seen["audit_active"] is True and seen["consistent"] is True
    assert seen["where"]["endpoints"] == [{"id": record.id, "node": record.node, "namespace": "shop",
                                           "pod": record.pod}]
    assert seen["endpoints"][0]["audit_mode"] == "Enabled"
    assert seen["ledger"][0]["reason"] == "observe db-ingress" and seen["since"]


def test_check_mode_predicts_and_writes_nothing_with_a_diff(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = run_tasks(sim_cluster, [enable(policy="shop/db-ingress")], tmp_path, check=True, diff=True)
    [result] = run.results
    record = db_record(sim_cluster)
    assert result["changed"] is True
    assert result["endpoints"][0]["status"] == "would_change"
    key = f"{record.node}/{record.id} shop/{record.pod}"
    assert result["diff"] == {"before": {key: "Disabled"}, "after": {key: "Enabled"}}
    assert sim_cluster.agent(record.node).endpoint_audit_mode(record.id) is False


def test_reconcile_reapplies_after_an_agent_restart(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run_tasks(sim_cluster, [enable(**DB)], tmp_path)
    record = db_record(sim_cluster)
    sim_cluster.store.delete(sim_cluster.rtype("pods"), "kube-system",
                             sim_cluster.agent_pod_on(record.node)["metadata"]["name"])
    sim_cluster.wait_for_agents()
    assert sim_cluster.agent(record.node).endpoint_audit_mode(record.id) is False  # Cilium reset it
    (tmp_path / "again").mkdir()
    [result] = run_tasks(sim_cluster, [enable(**DB)], tmp_path / "again").results
    assert result["changed"] is True and result["counts"]["changed"] == 1
    [reapplied] = result["reapplied"]
    assert reapplied["id"] == record.id and reapplied["reason"].startswith("agent pod restarted at ")
    assert sim_cluster.agent(record.node).endpoint_audit_mode(record.id) is True


def test_one_failing_node_is_reported_endpoint_by_endpoint(sim_cluster: SimCluster, tmp_path: Path) -> None:
    record = db_record(sim_cluster)
    sim_cluster.faults.exec_by_node[record.node] = ExecFault("fail")
    [result] = run_tasks(sim_cluster, [enable(namespace="shop")], tmp_path).results
    assert result["failed"] is True
    assert "could not be set to Enabled on" in result["msg"]
    by_node = {}
    for row in result["endpoints"]:
        by_node.setdefault(row["node"], set()).add(row["status"])
    assert by_node[record.node] == {"failed"}
    assert all(statuses == {"changed"} for node, statuses in by_node.items() if node != record.node)
    del sim_cluster.faults.exec_by_node[record.node]
    (tmp_path / "rerun").mkdir()
    [rerun] = run_tasks(sim_cluster, [enable(namespace="shop")], tmp_path / "rerun").results
    assert not rerun.get("failed")
    assert {r["status"] for r in rerun["endpoints"] if r["node"] == record.node} == {"changed"}
    assert {r["status"] for r in rerun["endpoints"] if r["node"] != record.node} == {"unchanged"}


def test_old_agent_uses_the_cilium_binary(sim_cluster: SimCluster, tmp_path: Path) -> None:
    apps_patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "cilium-agent", "image": "quay.io/cilium/cilium:v1.14.19"}]}}}}
    from kubernetes import client

    client.AppsV1Api(sim_cluster.api_client()).patch_namespaced_daemon_set("cilium", "kube-system", apps_patch)
    sim_cluster.wait_for_agents(30)
    [result] = run_tasks(sim_cluster, [enable(pods=[f"shop/{db_record(sim_cluster).pod}"])], tmp_path).results
    assert result["counts"]["changed"] == 1, result
    record = db_record(sim_cluster)
    assert sim_cluster.agent(record.node).binary == "cilium"
    assert sim_cluster.agent(record.node).endpoint_audit_mode(record.id) is True


def test_cluster_scope_refuses_a_helm_owned_configmap(sim_cluster: SimCluster, tmp_path: Path) -> None:
    tasks = [enable(scope="cluster", reason="CHG-7 test"), enable(scope="cluster", force=True, reason="CHG-7 test")]
    [refused, forced] = run_tasks(sim_cluster, tasks, tmp_path).results
    assert refused["failed"] is True and "owned by the Helm release cilium" in refused["msg"]
    assert forced["changed"] is True and forced["verified"] is True
    assert sorted(forced["rollout"]["restarted"]) == sim_cluster.node_names()
    assert all(sim_cluster.agent(n).daemon_audit_mode() for n in sim_cluster.node_names())


def test_nodes_scope_restarts_only_the_selected_agents(sim_cluster: SimCluster, tmp_path: Path) -> None:
    starts = {n: len(sim_cluster.agent_starts[n]) for n in sim_cluster.node_names()}
    selector = {"kubernetes.io/hostname": "sim-worker-2"}
    run = run_tasks(sim_cluster, [enable(scope="nodes", node_selector=selector),
                                  enable(scope="nodes", node_selector=selector),
                                  info()], tmp_path, diff=True)
    first, second, seen = run.results
    assert first["changed"] is True and first["restart_nodes"] == ["sim-worker-2"]
    assert first["node_config"]["after"]["defaults"] == {"policy-audit-mode": "true"}
    assert second["changed"] is False
    after = {n: len(sim_cluster.agent_starts[n]) for n in sim_cluster.node_names()}
    assert after == {**starts, "sim-worker-2": starts["sim-worker-2"] + 1}
    assert seen["where"] == {"cluster": False, "nodes": ["sim-worker-2"], "endpoints": []}
    assert seen["consistent"] is True


def test_info_reports_config_changed_but_agents_not_restarted(sim_cluster: SimCluster, tmp_path: Path) -> None:
    tasks = [enable(scope="cluster", force=True, restart=False, reason="CHG-7 test"), info()]
    [result] = run_tasks(sim_cluster, tasks, tmp_path).results[1:]
    assert result["consistent"] is False
    assert len(result["inconsistencies"]) == 3
    assert "was not restarted since the change" in result["inconsistencies"][0]
    assert result["audit_active"] is True and result["where"]["cluster"] is False


def test_selector_matching_nothing_fails_unless_allowed(sim_cluster: SimCluster, tmp_path: Path) -> None:
    missing, allowed, no_pod = run_tasks(sim_cluster, [
        enable(namespace="shop", label_selector="app=nothing"),
        enable(namespace="shop", label_selector="app=nothing", allow_empty=True),
        enable(pods=["shop/ghost"]),
    ], tmp_path).results
    assert missing["failed"] and "matched no endpoint (namespace=shop label_selector=app=nothing)" in missing["msg"]
    assert not allowed.get("failed") and allowed["changed"] is False
    assert no_pod["failed"] and no_pod["msg"] == "pods: pod shop/ghost not found"


def test_warns_when_no_policy_enforces_the_endpoint(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = run_tasks(sim_cluster, [enable(namespace="shop", label_selector="app=frontend")], tmp_path)
    assert "no policy enforces this endpoint (policy-enabled: none)" in run.stdout + run.stderr


def test_exec_forbidden_names_the_verb_and_resource(sim_cluster: SimCluster, tmp_path: Path) -> None:
    readonly = tmp_path / "readonly.kubeconfig"
    sim_cluster.write_kubeconfig(str(readonly), context="sim-readonly")
    [result] = run_tasks(sim_cluster, [enable(**DB)], tmp_path,
                         module_defaults={"group/netpol.cilium.cilium": {"kubeconfig": str(readonly)}}).results
    assert result["failed"] is True
    assert "verb 'create' on resource 'pods/exec' in namespace kube-system" in result["msg"]


def test_disable_returns_to_enforcement_and_clears_the_ledger(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = run_tasks(sim_cluster, [enable(**DB), disable(**DB), info(**DB)], tmp_path)
    off, seen = run.results[1:]
    assert off["changed"] is True and off["endpoints"][0]["after"] == "Disabled"
    assert off["endpoints"][0]["policy_enabled"] == "ingress"
    assert seen["audit_active"] is False and seen["ledger"] == []


# -- the ledger's expiry and the guard ---------------------------------------------------------------------------------

def test_the_ledger_records_expiry_and_a_new_max_duration_moves_it(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = run_tasks(sim_cluster, [enable(**DB, max_duration="2h", reason="CHG-7", enabled_by="alice via AWX"),
                                  enable(**DB, max_duration="2h"), info(**DB),
                                  enable(**DB, max_duration="1d"), info(**DB)], tmp_path)
    first, again, seen, longer, after = run.results
    assert run.rc == 0, run.stdout
    assert first["changed"] is True and again["changed"] is False
    [entry] = seen["ledger"]
    assert (entry["scope"], entry["max_duration"], entry["reason"], entry["enabled_by"]) == (
        "endpoints", "2h", "CHG-7", "alice via AWX")
    start = datetime.fromisoformat(entry["enabled_at"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00")) - start == timedelta(hours=2)
    assert seen["guard"]["ok"] is True and seen["guard"]["messages"] == []
    assert longer["changed"] is True and longer["counts"]["changed"] == 0  # only the ledger changed
    [moved] = after["ledger"]
    assert moved["enabled_at"] == entry["enabled_at"] and moved["reason"] == "CHG-7"
    assert datetime.fromisoformat(moved["expires_at"].replace("Z", "+00:00")) - start == timedelta(days=1)


def test_guard_names_expired_and_unledgered_audit_mode(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run_tasks(sim_cluster, [enable(**DB, max_duration="1s", reason="short test")], tmp_path)
    record = db_record(sim_cluster)
    web = next(r for (ns, name), r in sim_cluster.endpoints.items() if ns == "shop" and not name.startswith("db-"))
    # someone switches audit mode on by hand, with cilium-dbg in the agent: no ledger entry
    assert sim_cluster.agent(web.node).exec(
        ["cilium-dbg", "endpoint", "config", str(web.id), "PolicyAuditMode=Enabled"]).exit_code == 0
    time.sleep(1.5)  # past the 1s expiry
    (tmp_path / "guard").mkdir()
    [seen] = run_tasks(sim_cluster, [info(all_endpoints=True)], tmp_path / "guard").results
    guard = seen["guard"]
    assert guard["ok"] is False
    assert [(f["kind"], f["id"], f["pod"], f["reason"]) for f in guard["expired"]] == [
        ("endpoint", record.id, record.pod, "short test")]
    assert [(f["kind"], f["id"], f["pod"]) for f in guard["unledgered"]] == [("endpoint", web.id, web.pod)]
    assert guard["messages"][0].startswith(
        f"endpoint {record.node}/{record.id} shop/{record.pod}: audit mode on since ")
    assert guard["messages"][1] == (f"endpoint {web.node}/{web.id} shop/{web.pod}: audit mode on with no ledger entry "
                                    "(not switched on by netpol.cilium, or its entry was removed)")


def test_audit_mode_found_on_without_an_entry_is_adopted_by_the_next_enable(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    record = db_record(sim_cluster)
    sim_cluster.agent(record.node).exec(["cilium-dbg", "endpoint", "config", str(record.id), "PolicyAuditMode=Enabled"])
    run = run_tasks(sim_cluster, [enable(**DB, max_duration="4h"), info(**DB)], tmp_path)
    adopt, seen = run.results
    assert adopt["changed"] is True and adopt["counts"]["unchanged"] == 1  # the ledger changed, not the endpoint
    [entry] = seen["ledger"]
    assert entry["adopted"] is True and seen["guard"]["ok"] is True
