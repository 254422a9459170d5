"""playbooks/policy_rollout.yml against the simulated cluster: a gate that stops the rollout leaves a readable summary
and audit mode on (recorded, with its expiry); tags stop before enforcing. The passing path is the molecule scenario
extensions/molecule/policy_rollout (and `make demo`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from simcluster.cluster import SimCluster
from simcluster.fixtures import REPO_ROOT
from simcluster.playbook import ansible_env

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "playbooks" / "examples"


def rollout(cluster: SimCluster, workdir: Path, *args: str, **extra_vars) -> subprocess.CompletedProcess[str]:
    inventory = workdir / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    sim-cluster:\n      ansible_connection: local\n"
                         f"      ansible_python_interpreter: {sys.executable}\n"
                         f"      k8s_kubeconfig: {cluster.kubeconfig}\n")
    variables = {"policy_rollout_observe_duration": "5s", "policy_rollout_watch_duration": "4s",
                 "policy_rollout_max_duration": "3h", "policy_rollout_reason": "CHG-42 db-ingress",
                 "policy_rollout_artifacts_dir": str(workdir / "artifacts"), **extra_vars}
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
               str(REPO_ROOT / "playbooks" / "policy_rollout.yml"), "-e", f"@{EXAMPLES / 'rollout-db.yml'}",
               "-e", json.dumps(variables), *args]
    return subprocess.run(command, env=ansible_env(cluster), capture_output=True, text=True, timeout=600,
                          check=False, cwd=str(workdir))


def db_record(cluster: SimCluster):
    return next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))


def test_an_unexpected_deny_stops_the_rollout_at_the_gate_with_audit_mode_recorded(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    sim_cluster.start_hubble(rate_multiplier=60)
    result = rollout(sim_cluster, tmp_path, "-e", f"@{EXAMPLES / 'expected-denies.yml'}")
    assert result.returncode != 0
    assert "the rollout stopped at 'gate (" in result.stdout
    assert "INGRESS monitoring/metrics-agent -> shop/db 9100/TCP" in result.stdout
    summary = json.loads((tmp_path / "artifacts" / "rollout-summary.json").read_text())
    assert summary["passed"] is False and summary["steps_done"] == ["apply", "audit"]
    assert summary["stopped_at"].startswith("gate (")
    [unexpected] = summary["gate"]["unexpected"]
    assert "metrics-agent -> shop/db 9100/TCP" in unexpected["description"]
    db = db_record(sim_cluster)
    assert summary["audit_mode_now"]["active"] is True
    assert [(e["id"], e["pod"]) for e in summary["audit_mode_now"]["where"]["endpoints"]] == [(db.id, db.pod)]
    [entry] = summary["audit_mode_now"]["ledger"]
    assert entry["reason"] == "CHG-42 db-ingress" and entry["max_duration"] == "3h" and entry["expires_at"]
    text = (tmp_path / "artifacts" / "rollout-summary.md").read_text()
    assert "**STOPPED** at \"gate (" in text and "**ON - these policies give no isolation here:**" in text
    assert f"`shop/{db.pod}` (endpoint {db.id} on {db.node})" in text
    assert (tmp_path / "artifacts" / "gate" / "report.md").is_file()
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is True  # left on, for the next observation


def test_tags_stop_before_enforcing(sim_cluster: SimCluster, tmp_path: Path) -> None:
    sim_cluster.start_hubble(rate_multiplier=60)
    result = rollout(sim_cluster, tmp_path, "--tags", "apply,audit,gate", "-e",
                     f"@{EXAMPLES / 'expected-denies-with-metrics.yml'}")
    assert result.returncode == 0, result.stdout
    summary = json.loads((tmp_path / "artifacts" / "rollout-summary.json").read_text())
    assert summary["passed"] is True and summary["steps_done"] == ["apply", "audit", "gate"]
    assert summary["enforce"] is None
    db = db_record(sim_cluster)
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is True  # enforcement is the next, separate run


def test_a_missing_max_duration_is_refused_before_anything_changes(sim_cluster: SimCluster, tmp_path: Path) -> None:
    result = rollout(sim_cluster, tmp_path, policy_rollout_max_duration="")
    assert result.returncode != 0
    assert "policy_rollout_max_duration is required" in result.stdout
    db = db_record(sim_cluster)
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is False
