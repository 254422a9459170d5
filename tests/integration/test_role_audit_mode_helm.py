"""The role netpol.cilium.audit_mode_helm, run by ansible-playbook against the simulated cluster and the fake helm.

The ``sim_cluster`` fixture seeds Cilium 1.15.1 in kube-system with the Helm release ``cilium`` at revision 1 (user
values ``cluster.name=sim`` and ``hubble.relay.enabled=true``, no ``policyAuditMode``) and three agents without audit
mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from simcluster import fake_helm
from simcluster.cluster import SimCluster
from simcluster.playbook import PlayOutcome, run_play

pytestmark = pytest.mark.integration

ROLE = "netpol.cilium.audit_mode_helm"
NS = "kube-system"
TESTS_DIR = Path(__file__).resolve().parents[1]
SEEDED_VALUES = {"cluster": {"name": "sim"}, "hubble": {"relay": {"enabled": True}}}
ENABLE = {"audit_mode_helm_state": "enabled", "audit_mode_helm_max_duration": "24h",
          "audit_mode_helm_reason": "CHG-42 observe the new policies"}
DISABLE = {"audit_mode_helm_state": "disabled"}
RESTART_STEP = "Restart the agents that run with another mode, health-gated, and verify them"
UPGRADE_STEP = "Set policyAuditMode on the release at the deployed chart version, keeping every other value"


# -- helpers ---------------------------------------------------------------------------------------------------------

def role(cluster: SimCluster, workdir: Path, name: str, role_vars: dict[str, Any], **extra_env: str) -> PlayOutcome:
    """Run the role once, as a play would include it, in its own directory; helm invocations are appended to
    ``workdir/helm.log``."""
    rundir = workdir / name
    rundir.mkdir()
    task = {"name": "the role under test", "ansible.builtin.include_role": {"name": ROLE},
            "vars": {"audit_mode_helm_kubeconfig": cluster.kubeconfig, **role_vars}}
    return run_play(cluster, [task], rundir, facts=("audit_mode_helm_result",),
                    extra_env={"FAKE_HELM_LOG": str(workdir / "helm.log"), **extra_env})


def changed_tasks(run: PlayOutcome) -> list[str]:
    """The tasks that reported ``changed`` (from the default callback's output), but for the test's own writer."""
    names, current = [], ""
    for line in run.stdout.splitlines():
        if line.startswith("TASK ["):
            current = line[len("TASK ["):line.rindex("]")].split(" : ", 1)[-1]
        elif line.startswith("changed: [") and current != "write the outcome":
            names.append(current)
    return names


def helm_commands(workdir: Path) -> list[list[str]]:
    log = workdir / "helm.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def helm_cli(cluster: SimCluster, *args: str) -> str:
    env = dict(cluster.env())
    env["PATH"] = os.pathsep.join([str(TESTS_DIR / "bin"), os.path.dirname(sys.executable), env.get("PATH", "")])
    done = subprocess.run(["helm", *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def history(cluster: SimCluster) -> list[tuple[int, str, str, str]]:
    """(revision, status, chart version, description) of every revision of the release."""
    client = cluster.api_client()
    try:
        return [(r["version"], r["info"]["status"], r["chart"]["metadata"]["version"], r["info"]["description"])
                for r in fake_helm.read_history(client, NS, "cilium")]
    finally:
        client.close()


def user_values(cluster: SimCluster) -> dict[str, Any]:
    return yaml.safe_load(helm_cli(cluster, "get", "values", "cilium", "-n", NS, "-o", "yaml")) or {}


def config_data(cluster: SimCluster) -> dict[str, str]:
    return dict(cluster.get("ConfigMap", "cilium-config", NS)["data"])


def agent_image(cluster: SimCluster) -> str:
    ds = cluster.get("DaemonSet", "cilium", NS, "apps")
    return next(c["image"] for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "cilium-agent")


def agent_pods(cluster: SimCluster) -> dict[str, str]:
    return {p["spec"]["nodeName"]: p["metadata"]["name"] for p in cluster.agent_pods()}


def running_modes(cluster: SimCluster) -> dict[str, bool]:
    """What every agent daemon runs with (the simulated agent's own state, not what an Ansible module says)."""
    return {node: cluster.agent(node).daemon_audit_mode() for node in cluster.node_names()}


def all_agents(cluster: SimCluster, enabled: bool) -> dict[str, bool]:
    return dict.fromkeys(cluster.node_names(), enabled)


def ledger(cluster: SimCluster) -> dict[str, Any]:
    """The entries of the ledger ConfigMap (none when it does not exist)."""
    config = cluster.store.try_get(cluster.rtype("configmaps"), NS, "netpol-cilium-audit-ledger") or {}
    return {key: yaml.safe_load(value) for key, value in (config.get("data") or {}).items()}


def upgrades(workdir: Path) -> list[list[str]]:
    return [argv for argv in helm_commands(workdir) if "upgrade" in argv]


@pytest.fixture
def custom_value(sim_cluster: SimCluster) -> Iterator[SimCluster]:
    """The seeded release plus a user value of the team's own (``debug.enabled=true``, revision 2)."""
    helm_cli(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--version", "1.15.1",
             "--set", "debug.enabled=true")
    yield sim_cluster


def fix_agents_on_rollback(cluster: SimCluster) -> None:
    """Agents that do not get ready with the new configuration, and do again once the release is rolled back: the
    fault is cleared the moment the rollback revision is written (an API listener, so no timing is involved)."""

    def listener(event: str, rtype: Any, _old: Any, new: dict[str, Any] | None) -> None:
        labels = ((new or {}).get("metadata") or {}).get("labels") or {}
        if event == "ADDED" and rtype.plural == "secrets" and labels.get("owner") == "helm" and \
                labels.get("status") == "pending-rollback":
            cluster.faults.agents_never_ready.clear()

    cluster.store.listeners.append(listener)


# -- the way there and back --------------------------------------------------------------------------------------------

def test_enable_pins_the_chart_keeps_every_value_and_verifies_every_agent(
        custom_value: SimCluster, tmp_path: Path) -> None:
    cluster = custom_value
    run = role(cluster, tmp_path, "enable", ENABLE, FAKE_HELM_CHART_VERSIONS="1.15.1,1.15.6,1.16.5")
    assert not run.failed, run.msg or run.stdout
    assert changed_tasks(run) == [UPGRADE_STEP, RESTART_STEP]
    result = run.facts["audit_mode_helm_result"]
    outcome = (result["changed"], result["upgraded"], result["verified"], result["rolled_back"])
    assert outcome == (True, True, True, False)
    assert (result["chart_version"], result["revision_before"], result["revision_after"]) == ("1.15.1", 2, 3)
    assert result["agents"] == dict.fromkeys(cluster.node_names(), "Enabled")
    assert sorted(result["restarted_nodes"]) == cluster.node_names()
    # the deployed chart version, although the repository offers newer ones
    assert history(cluster)[-1][:3] == (3, "deployed", "1.15.1")
    assert agent_image(cluster) == "quay.io/cilium/cilium:v1.15.1"
    # every user value kept: the seeded ones, the team's own one, and the new one
    assert user_values(cluster) == {**SEEDED_VALUES, "debug": {"enabled": True}, "policyAuditMode": True}
    data = config_data(cluster)
    assert (data["policy-audit-mode"], data["cluster-name"], data["debug"]) == ("true", "sim", "true")
    assert cluster.get("Deployment", "hubble-relay", NS, "apps")["metadata"]["name"] == "hubble-relay"
    # ... because the upgrade reuses the values and does not reset them (kubernetes.core's default would)
    [upgrade] = upgrades(tmp_path)
    assert "--version=1.15.1" in upgrade and "--reuse-values=True" in upgrade
    assert "--reset-values" not in upgrade and "--reset-then-reuse-values" not in upgrade
    assert running_modes(cluster) == all_agents(cluster, True)
    [entry] = ledger(cluster).values()
    recorded = (entry["scope"], entry["max_duration"], entry["reason"])
    assert recorded == ("cluster", "24h", "CHG-42 observe the new policies")


def test_enable_and_disable_are_idempotent_and_verified_on_every_agent(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    enabled = role(sim_cluster, tmp_path, "enable", ENABLE)
    assert not enabled.failed, enabled.msg
    assert running_modes(sim_cluster) == all_agents(sim_cluster, True)
    pods, revisions, commands = agent_pods(sim_cluster), history(sim_cluster), len(helm_commands(tmp_path))

    # already enabled: no upgrade, no restart, no task reports a change
    again = role(sim_cluster, tmp_path, "enable-again", ENABLE)
    assert not again.failed, again.msg
    assert changed_tasks(again) == []
    result = again.facts["audit_mode_helm_result"]
    assert (result["changed"], result["upgraded"], result["restarted_nodes"], result["verified"]) == (False, False,
                                                                                                      [], True)
    assert result["revision_before"] == result["revision_after"] == 2
    assert agent_pods(sim_cluster) == pods
    assert history(sim_cluster) == revisions
    assert not any("upgrade" in argv or "rollback" in argv for argv in helm_commands(tmp_path)[commands:])

    # back to enforcement, with the operator restart asked for
    operator_before = sim_cluster.get("Deployment", "cilium-operator", NS, "apps")["spec"]["template"]
    disabled = role(sim_cluster, tmp_path, "disable", {**DISABLE, "audit_mode_helm_restart_operator": True})
    assert not disabled.failed, disabled.msg
    assert changed_tasks(disabled) == [UPGRADE_STEP, RESTART_STEP, "Restart the cilium-operator"]
    result = disabled.facts["audit_mode_helm_result"]
    assert (result["upgraded"], result["verified"], result["operator_restarted"]) == (True, True, True)
    assert result["agents"] == dict.fromkeys(sim_cluster.node_names(), "Disabled")
    assert running_modes(sim_cluster) == all_agents(sim_cluster, False)
    assert user_values(sim_cluster) == {**SEEDED_VALUES, "policyAuditMode": False}
    assert config_data(sim_cluster)["policy-audit-mode"] == "false"
    assert [h[:3] for h in history(sim_cluster)] == [(1, "superseded", "1.15.1"), (2, "superseded", "1.15.1"),
                                                     (3, "deployed", "1.15.1")]
    assert ledger(sim_cluster) == {}
    operator_after = sim_cluster.get("Deployment", "cilium-operator", NS, "apps")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in operator_after["metadata"].get("annotations", {})
    assert operator_after != operator_before

    # disabled again: nothing to do, and the operator is only restarted when something changed
    pods = agent_pods(sim_cluster)
    again = role(sim_cluster, tmp_path, "disable-again", {**DISABLE, "audit_mode_helm_restart_operator": True})
    assert not again.failed and changed_tasks(again) == [], again.msg
    assert agent_pods(sim_cluster) == pods and len(history(sim_cluster)) == 3


def test_disabled_on_a_release_without_the_value_is_left_alone(sim_cluster: SimCluster, tmp_path: Path) -> None:
    pods = agent_pods(sim_cluster)
    run = role(sim_cluster, tmp_path, "disable", DISABLE)
    assert not run.failed, run.msg
    assert changed_tasks(run) == []
    assert run.facts["audit_mode_helm_result"]["verified"] is True
    assert upgrades(tmp_path) == [] and agent_pods(sim_cluster) == pods
    assert "policy-audit-mode" not in config_data(sim_cluster)


def test_check_mode_predicts_the_upgrade_and_the_restart_and_changes_nothing(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    pods = agent_pods(sim_cluster)
    rundir = tmp_path / "check"
    rundir.mkdir()
    task = {"name": "the role under test", "ansible.builtin.include_role": {"name": ROLE}, "vars": ENABLE}
    run = run_play(sim_cluster, [task], rundir, facts=("audit_mode_helm_result",), check=True,
                   extra_env={"FAKE_HELM_LOG": str(tmp_path / "helm.log")})
    assert not run.failed, run.msg
    result = run.facts["audit_mode_helm_result"]
    assert (result["changed"], result["upgraded"], result["revision_after"]) == (True, True, 1)
    assert sorted(result["restarted_nodes"]) == sim_cluster.node_names()
    assert upgrades(tmp_path) == []  # kubernetes.core.helm predicts without running helm upgrade
    assert history(sim_cluster) == [(1, "deployed", "1.15.1", "Install complete")]
    assert agent_pods(sim_cluster) == pods and "policy-audit-mode" not in config_data(sim_cluster)


def test_max_duration_is_required_to_enable(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = role(sim_cluster, tmp_path, "enable", {"audit_mode_helm_state": "enabled"})
    assert run.failed and run.failed_task == "Require a max_duration when audit mode is switched on"
    assert "audit_mode_helm_max_duration is required" in run.msg
    assert helm_commands(tmp_path) == [] and len(history(sim_cluster)) == 1


def test_an_unknown_state_is_refused_by_the_argument_spec(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = role(sim_cluster, tmp_path, "bad", {"audit_mode_helm_state": "on"})
    assert run.failed and "audit_mode_helm_state" in run.msg
    assert helm_commands(tmp_path) == []


# -- failures after the upgrade: rollback ------------------------------------------------------------------------------

def test_rollout_timeout_rolls_the_release_back_and_restores_every_agent(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    # The first agent the rollout replaces never gets ready with the new configuration: the rollout stalls there.
    sim_cluster.faults.agents_never_ready.add(sim_cluster.node_names()[0])
    fix_agents_on_rollback(sim_cluster)
    run = role(sim_cluster, tmp_path, "enable", {**ENABLE, "audit_mode_helm_rollout_timeout": 4})
    assert run.failed and run.failed_task == "Fail with what happened and the state the cluster is in"
    result = run.facts["audit_mode_helm_result"]
    assert result["failed_step"] == RESTART_STEP
    assert "rolling restart" in result["error"]
    assert (result["rolled_back"], result["rollback_failed"], result["verified"]) == (True, False, True)
    assert (result["revision_before"], result["revision_after"]) == (1, 3)
    assert result["agents"] == dict.fromkeys(sim_cluster.node_names(), "Disabled")
    assert f"failed at step '{RESTART_STEP}'" in run.msg
    assert "Rolled back: the release was rolled back to revision 1" in run.msg
    assert "Now: release revision 3 (deployed), policyAuditMode not set" in run.msg
    assert "verified: every agent runs with PolicyAuditMode=Disabled" in run.msg
    # the cluster: the release as before the upgrade, every agent ready and without audit mode
    assert [h[:2] for h in history(sim_cluster)] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert history(sim_cluster)[-1][3] == "Rollback to 1"
    assert user_values(sim_cluster) == SEEDED_VALUES
    assert "policy-audit-mode" not in config_data(sim_cluster)
    assert running_modes(sim_cluster) == all_agents(sim_cluster, False)
    assert sim_cluster.agents_ready()
    [rollback] = [argv for argv in helm_commands(tmp_path) if "rollback" in argv]
    assert rollback[:5] == ["rollback", "cilium", "1", "--namespace", NS] and "--wait" not in rollback


def test_failed_disable_rolls_back_to_audit_mode_and_keeps_its_ledger_entry(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    enabled = role(sim_cluster, tmp_path, "enable", ENABLE)
    assert not enabled.failed, enabled.msg
    [entry] = ledger(sim_cluster).values()
    sim_cluster.faults.agents_never_ready.add(sim_cluster.node_names()[0])
    fix_agents_on_rollback(sim_cluster)
    run = role(sim_cluster, tmp_path, "disable", {**DISABLE, "audit_mode_helm_rollout_timeout": 4})
    assert run.failed
    result = run.facts["audit_mode_helm_result"]
    assert result["failed_step"] == RESTART_STEP
    assert (result["rolled_back"], result["rollback_failed"], result["verified"]) == (True, False, True)
    assert result["expected_mode"] == "Enabled" and (result["revision_before"], result["revision_after"]) == (2, 4)
    assert "Rolled back: the release was rolled back to revision 2" in run.msg
    assert "Now: release revision 4 (deployed), policyAuditMode true" in run.msg
    assert history(sim_cluster)[-1][1:] == ("deployed", "1.15.1", "Rollback to 2")
    assert user_values(sim_cluster) == {**SEEDED_VALUES, "policyAuditMode": True}
    assert running_modes(sim_cluster) == all_agents(sim_cluster, True)
    # audit mode is on again, so its ledger entry (first enable, expiry, reason) is still there
    [kept] = ledger(sim_cluster).values()
    assert {k: kept[k] for k in ("enabled_at", "max_duration", "expires_at", "reason")} == {
        k: entry[k] for k in ("enabled_at", "max_duration", "expires_at", "reason")}


def test_agent_that_does_not_take_the_value_fails_verification_and_rolls_back(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    # A CiliumNodeConfig keeps worker 2 out of audit mode: its agent restarts but does not run with the cluster value.
    holdout = sim_cluster.node_names()[1]
    sim_cluster.apply({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumNodeConfig",
                       "metadata": {"name": "keep-enforcing", "namespace": NS},
                       "spec": {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": holdout}},
                                "defaults": {"policy-audit-mode": "false"}}})
    run = role(sim_cluster, tmp_path, "enable", ENABLE)
    assert run.failed
    result = run.facts["audit_mode_helm_result"]
    assert result["failed_step"] == RESTART_STEP
    assert holdout in result["error"] and "do not run with PolicyAuditMode=Enabled" in result["error"]
    assert (result["rolled_back"], result["verified"]) == (True, True)
    assert holdout in run.msg and "Rolled back: the release was rolled back to revision 1" in run.msg
    assert [h[:2] for h in history(sim_cluster)] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert running_modes(sim_cluster) == all_agents(sim_cluster, False)
    assert ledger(sim_cluster) == {}


def test_failed_helm_upgrade_rolls_back(sim_cluster: SimCluster, tmp_path: Path) -> None:
    """The upgrade changes cilium-config and then fails (like a --wait timeout): no agent was restarted yet."""
    pods = agent_pods(sim_cluster)
    run = role(sim_cluster, tmp_path, "enable", ENABLE, FAKE_HELM_FAIL_UPGRADE="after")
    assert run.failed
    result = run.facts["audit_mode_helm_result"]
    assert result["failed_step"] == UPGRADE_STEP and "UPGRADE FAILED" in result["error"]
    assert (result["rolled_back"], result["verified"], result["revision_after"]) == (True, True, 3)
    assert "UPGRADE FAILED" in run.msg and "Rolled back: the release was rolled back to revision 1" in run.msg
    assert [h[:2] for h in history(sim_cluster)] == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert "policy-audit-mode" not in config_data(sim_cluster)
    assert user_values(sim_cluster) == SEEDED_VALUES
    assert running_modes(sim_cluster) == all_agents(sim_cluster, False)
    assert agent_pods(sim_cluster) == pods  # no agent ever ran with the new value: none was restarted


def test_a_failed_rollback_is_reported_as_such(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run = role(sim_cluster, tmp_path, "enable", ENABLE, FAKE_HELM_FAIL_UPGRADE="1", FAKE_HELM_FAIL_ROLLBACK="1")
    assert run.failed
    result = run.facts["audit_mode_helm_result"]
    assert (result["rolled_back"], result["rollback_failed"]) == (False, True)
    assert "FAKE_HELM_FAIL_ROLLBACK" in result["rollback_error"]
    assert "ROLLBACK FAILED" in run.msg and "UPGRADE FAILED" in run.msg
    # the revision deployed before the upgrade is still the deployed one; the upgrade and the rollback failed
    assert [h[:2] for h in history(sim_cluster)] == [(1, "deployed"), (2, "superseded"), (3, "failed")]
    assert "policy-audit-mode" not in config_data(sim_cluster)
    assert running_modes(sim_cluster) == all_agents(sim_cluster, False)
    # a release left failed is not touched again until someone looked at it
    again = role(sim_cluster, tmp_path, "again", ENABLE)
    assert again.failed and again.failed_task == "Require a deployed release with a chart version"
    assert "is at revision 3 with status failed" in again.msg
    assert len(history(sim_cluster)) == 3
