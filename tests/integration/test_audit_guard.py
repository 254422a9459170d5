"""playbooks/audit_guard.yml against the simulated cluster: expired and unledgered audit mode is named, and reverted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from simcluster.cluster import SimCluster
from simcluster.fixtures import REPO_ROOT
from simcluster.playbook import ansible_env, run_tasks

pytestmark = pytest.mark.integration


def guard(cluster: SimCluster, workdir: Path, **extra_vars) -> subprocess.CompletedProcess[str]:
    inventory = workdir / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    sim-cluster:\n      ansible_connection: local\n"
                         f"      ansible_python_interpreter: {sys.executable}\n"
                         f"      k8s_kubeconfig: {cluster.kubeconfig}\n")
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
               str(REPO_ROOT / "playbooks" / "audit_guard.yml"), "-e", json.dumps(extra_vars)]
    return subprocess.run(command, env=ansible_env(cluster), capture_output=True, text=True, timeout=300,
                          check=False, cwd=str(workdir))


def shop_records(cluster: SimCluster):
    db = next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))
    other = next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and not name.startswith("db-"))
    return db, other


def ledger_keys(cluster: SimCluster) -> list[str]:
    config = cluster.store.get(cluster.rtype("configmaps"), "kube-system", "netpol-cilium-audit-ledger")
    return sorted((config or {}).get("data") or {})


def test_guard_passes_when_audit_mode_is_within_its_expiry(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = run_tasks(sim_cluster, [{"netpol.cilium.cilium_audit_mode": {
        "state": "enabled", "namespace": "shop", "label_selector": "app=db", "max_duration": "1h"}}], tmp_path)
    assert run.rc == 0, run.stdout
    result = guard(sim_cluster, tmp_path)
    assert result.returncode == 0, result.stdout
    assert "no audit mode past its expiry, none without a ledger entry" in result.stdout


def test_guard_names_expired_and_unledgered_audit_mode_and_reverts_it(sim_cluster: SimCluster,
                                                                      tmp_path: Path) -> None:
    run = run_tasks(sim_cluster, [{"netpol.cilium.cilium_audit_mode": {
        "state": "enabled", "namespace": "shop", "label_selector": "app=db", "max_duration": "1s",
        "reason": "CHG-9 short window"}}], tmp_path)
    assert run.rc == 0, run.stdout
    db, other = shop_records(sim_cluster)
    sim_cluster.agent(other.node).exec(["cilium-dbg", "endpoint", "config", str(other.id), "PolicyAuditMode=Enabled"])
    time.sleep(1.5)  # past the 1s expiry
    [key] = ledger_keys(sim_cluster)

    report = guard(sim_cluster, tmp_path)
    assert report.returncode != 0
    assert f"endpoint {db.node}/{db.id} shop/{db.pod}: audit mode on since " in report.stdout
    assert "(reason: CHG-9 short window; enabled by " in report.stdout
    assert f"endpoint {other.node}/{other.id} shop/{other.pod}: audit mode on with no ledger entry" in report.stdout
    assert "Re-run with -e audit_guard_revert=true to switch it off." in report.stdout
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is True  # reporting changes nothing
    assert ledger_keys(sim_cluster) == [key]

    reverted = guard(sim_cluster, tmp_path, audit_guard_revert=True)
    assert reverted.returncode != 0  # the schedule still notifies
    assert "Reverted: everything is back to enforcement" in reverted.stdout
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is False
    assert sim_cluster.agent(other.node).endpoint_audit_mode(other.id) is False
    assert ledger_keys(sim_cluster) == []

    quiet = guard(sim_cluster, tmp_path, audit_guard_revert=True, audit_guard_fail_after_revert=False)
    assert quiet.returncode == 0, quiet.stdout
