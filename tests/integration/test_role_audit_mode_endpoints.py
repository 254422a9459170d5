"""The role audit_mode_endpoints: enable with proof, reconcile after an agent restart, refuse a missing max_duration."""

from __future__ import annotations

from pathlib import Path

import pytest
from simcluster.cluster import SimCluster
from simcluster.playbook import run_tasks

pytestmark = pytest.mark.integration


def role(**variables):
    return {"ansible.builtin.include_role": {"name": "netpol.cilium.audit_mode_endpoints"},
            "vars": {"audit_mode_endpoints_policy": "shop/db-ingress", **variables}}


def fact():
    return {"ansible.builtin.set_fact": {"seen": "{{ audit_mode_endpoints_result }}"}}


def test_enable_reconcile_and_disable(sim_cluster: SimCluster, tmp_path: Path) -> None:
    db = next(r for (ns, name), r in sim_cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))
    run = run_tasks(sim_cluster, [role(audit_mode_endpoints_state="enabled", audit_mode_endpoints_max_duration="4h",
                                       audit_mode_endpoints_reason="CHG-11"), fact()], tmp_path)
    assert run.rc == 0, run.stdout
    first = run.results[1]["ansible_facts"]["seen"]
    assert first["changed"] is True and first["counts"]["changed"] == 1 and first["wrong"] == []
    assert "verified by reading the agents back" in run.stdout
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is True

    sim_cluster.store.delete(sim_cluster.rtype("pods"), "kube-system",
                             sim_cluster.agent_pod_on(db.node)["metadata"]["name"])
    sim_cluster.wait_for_agents()
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is False  # the restart reset it
    (tmp_path / "again").mkdir()
    again = run_tasks(sim_cluster, [role(audit_mode_endpoints_state="enabled", audit_mode_endpoints_max_duration="4h"),
                                    fact()], tmp_path / "again")
    assert again.rc == 0, again.stdout
    [reapplied] = again.results[1]["ansible_facts"]["seen"]["reapplied"]
    assert reapplied["id"] == db.id and reapplied["reason"].startswith("agent pod restarted at ")
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is True

    (tmp_path / "off").mkdir()
    off = run_tasks(sim_cluster, [role(audit_mode_endpoints_state="disabled"), fact()], tmp_path / "off")
    assert off.rc == 0, off.stdout
    assert off.results[1]["ansible_facts"]["seen"]["counts"]["changed"] == 1
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is False


def test_enabling_without_max_duration_is_refused_before_anything_changes(sim_cluster: SimCluster,
                                                                          tmp_path: Path) -> None:
    db = next(r for (ns, name), r in sim_cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))
    run = run_tasks(sim_cluster, [role(audit_mode_endpoints_state="enabled")], tmp_path)
    assert "audit_mode_endpoints: enabling needs audit_mode_endpoints_max_duration" in run.stdout
    assert "Switch audit mode to enabled" not in run.stdout
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is False
