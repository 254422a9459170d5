"""Bad input is refused before anything changes, with a message that names the option and what was expected.

One table across the three modules, the roles and the playbooks: wrong types, unknown keys in expected rules, ports
out of range, bad durations, selectors matching nothing, endpoint ids that are not integers, ids and names with shell
metacharacters, conflicting options, missing kubeconfig or context, unknown namespaces. Every case runs against the
same simulated cluster, which must be exactly as it was afterwards: no endpoint or agent in audit mode, no ledger
entry, no CiliumNodeConfig, cilium-config and the agents untouched, no command run in an agent with any of the
injected strings, and no file created by an injected shell command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from simcluster.cluster import SimCluster
from simcluster.fixtures import REPO_ROOT
from simcluster.playbook import ansible_env, run_tasks
from simcluster.store import ApiError

from .conftest import seeded_cluster

pytestmark = pytest.mark.integration

CANARY = os.path.join(tempfile.gettempdir(), "netpol-cilium-injected")  # an injected shell command would create it
INJECTIONS = (f"1; touch {CANARY}", f"$(touch {CANARY})", f"`touch {CANARY}`", f"shop/db && touch {CANARY}")

AUDIT = "netpol.cilium.cilium_audit_mode"
INFO = "netpol.cilium.cilium_audit_mode_info"
REPORT = "netpol.cilium.hubble_audit_report"


def enable(**options: Any) -> dict[str, Any]:
    return {AUDIT: {"state": "enabled", "max_duration": "1h", **options}}


def report(**options: Any) -> dict[str, Any]:
    return {REPORT: {"source": "file", "paths": ["{{ playbook_dir }}/flows.json"], **options}}


def rule(**fields: Any) -> dict[str, Any]:
    return {"from": {"namespace": "monitoring"}, "to": {"namespace": "shop"}, **fields}


# (case id, task, substrings the failure message must contain: the option and what was expected)
MODULE_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("audit-state-missing", {AUDIT: {"scope": "endpoints", "namespace": "shop"}},
     ("missing required arguments: state",)),
    ("audit-state-choice", {AUDIT: {"state": "on", "namespace": "shop"}},
     ("state", "enabled, disabled")),
    ("audit-scope-choice", {AUDIT: {"state": "disabled", "scope": "pods", "namespace": "shop"}},
     ("scope", "endpoints, nodes, cluster")),
    ("audit-unknown-option", {AUDIT: {"state": "disabled", "namespace": "shop", "namspace": "shop"}},
     ("Unsupported parameters", "namspace")),
    ("audit-no-selector", enable(),
     ("scope endpoints needs at least one of endpoint_ids, pods, namespace",)),
    ("audit-id-not-integer", enable(endpoint_ids=["abc"]),
     ("endpoint_ids: expected endpoint ids as whole numbers from 1 to 65535", "'abc'")),
    ("audit-id-injection", enable(endpoint_ids=[INJECTIONS[0]]),
     ("endpoint_ids: expected endpoint ids as whole numbers",)),
    ("audit-id-substitution", enable(endpoint_ids=[INJECTIONS[1]]),
     ("endpoint_ids: expected endpoint ids as whole numbers",)),
    ("audit-id-out-of-range", enable(endpoint_ids=[70000]),
     ("endpoint_ids: endpoint id 70000 is out of range (1 to 65535)",)),
    ("audit-id-zero", enable(endpoint_ids=[0]),
     ("endpoint_ids: endpoint id 0 is out of range",)),
    ("audit-id-boolean", enable(endpoint_ids=[True]),
     ("endpoint_ids: expected endpoint ids as whole numbers",)),
    ("audit-pod-without-namespace", enable(pods=["db-0"]),
     ("pods: expected 'namespace/name'", "'db-0'")),
    ("audit-pod-injection", enable(pods=[f"shop/{INJECTIONS[1]}"]),
     ("pods: expected 'namespace/name'", "touch")),
    ("audit-namespace-invalid", enable(namespace="Shop_Prod"),
     ("namespace: 'Shop_Prod' is not a valid namespace name",)),
    ("audit-namespace-injection", enable(namespace=INJECTIONS[0]),
     ("namespace:", "is not a valid namespace name")),
    ("audit-selector-without-namespace", enable(pods=["shop/db-0"], label_selector="app=db"),
     ("label_selector: needs namespace",)),
    ("audit-policy-without-namespace", enable(policy="db-ingress"),
     ("policy: expected 'namespace/name'",)),
    ("audit-policy-injection", enable(policy=INJECTIONS[3]),
     ("policy: expected 'namespace/name'", "touch")),
    ("audit-max-duration-missing", {AUDIT: {"state": "enabled", "namespace": "shop"}},
     ("max_duration: required with state enabled",)),
    ("audit-max-duration-words", enable(namespace="shop", max_duration="one day"),
     ("max_duration: expected a duration such as 24h", "'one day'")),
    ("audit-max-duration-zero", enable(namespace="shop", max_duration="0h"),
     ("max_duration: expected a duration longer than zero",)),
    ("audit-max-duration-order", enable(namespace="shop", max_duration="30m2h"),
     ("max_duration: expected a duration such as 24h", "in that order")),
    ("audit-nodes-without-selector", enable(scope="nodes"),
     ("node_selector: required with scope nodes",)),
    ("audit-node-selector-not-string", enable(scope="nodes", node_selector={"canary": True}),
     ("node_selector: label values must be strings", "canary")),
    ("audit-selector-with-cluster-scope", enable(scope="cluster", namespace="shop", reason="x"),
     ("namespace: only used with scope endpoints (scope is cluster)",)),
    ("audit-write-config-with-endpoints", enable(namespace="shop", write_config=False),
     ("write_config: only used with scope cluster",)),
    ("audit-rollout-timeout", enable(scope="cluster", reason="x", rollout_timeout=0),
     ("rollout_timeout: expected seconds of at least 1, got 0",)),
    ("audit-exec-timeout", enable(namespace="shop", exec_timeout=0),
     ("exec_timeout: expected a number of seconds of at least 1, got 0",)),
    ("audit-parallel-nodes", enable(namespace="shop", max_parallel_nodes=500),
     ("max_parallel_nodes: expected 1 to 100, got 500",)),
    ("audit-parallel-nodes-type", enable(namespace="shop", max_parallel_nodes="many"),
     ("max_parallel_nodes", "int")),
    ("audit-cluster-without-reason", enable(scope="cluster"),
     ("reason: required to switch audit mode on cluster-wide",)),
    ("audit-unknown-namespace", enable(namespace="no-such-namespace"),
     ("no-such-namespace",)),
    ("audit-selector-matches-nothing", enable(namespace="shop", label_selector="app=no-such-app"),
     ("app=no-such-app", "allow_empty")),
    ("audit-unknown-policy", enable(policy="shop/no-such-policy"),
     ("no-such-policy",)),
    ("audit-cilium-namespace-empty", enable(namespace="shop", cilium_namespace="default"),
     ("default",)),
    ("audit-missing-kubeconfig", enable(namespace="shop", kubeconfig="/nonexistent/kubeconfig"),
     ("kubeconfig: the file given does not exist",)),
    ("audit-missing-context", enable(namespace="shop", context="no-such-context"),
     ("no-such-context",)),
    ("info-id-not-integer", {INFO: {"endpoint_ids": ["12abc"]}},
     ("endpoint_ids: expected endpoint ids as whole numbers",)),
    ("info-selector-without-namespace", {INFO: {"label_selector": "app=db"}},
     ("label_selector: needs namespace",)),
    ("info-unknown-option", {INFO: {"all_endpoint": True}},
     ("Unsupported parameters", "all_endpoint")),
    ("report-source-choice", {REPORT: {"source": "kafka"}},
     ("source", "relay, file")),
    ("report-file-without-paths", {REPORT: {"source": "file"}},
     ("paths",)),
    ("report-duration-words", {REPORT: {"duration": "15 minutes"}},
     ("duration", "'15 minutes'")),
    ("report-window-three", {REPORT: {"duration": "5m", "since": "10m", "until": "5m"}},
     ("since, until, duration: give at most two of them",)),
    ("report-window-reversed", {REPORT: {"since": "10m", "until": "15m"}},
     ("since (", "must be before until")),
    ("report-since-words", {REPORT: {"since": "yesterday"}},
     ("since: 'yesterday' is neither an RFC 3339 time",)),
    ("report-rule-unknown-key", report(expected=[{"form": {"namespace": "shop"}}]),
     ("expected[0]", "form")),
    ("report-rule-port-range", report(expected=[rule(ports=["70000/TCP"])]),
     ("expected[0]", "70000")),
    ("report-rule-port-protocol", report(expected=[rule(ports=["5432/XTP"])]),
     ("expected[0]", "XTP")),
    ("report-rule-port-reversed", report(expected=[rule(ports=["9000-8000/TCP"])]),
     ("expected[0]", "9000-8000")),
    ("report-rule-direction", report(expected=[rule(direction="sideways")]),
     ("expected[0]", "direction", "sideways")),
    ("report-rule-cidr", report(expected=[{"to": {"cidr": "10.0.0.0/33"}}]),
     ("expected[0]", "10.0.0.0/33")),
    ("report-rule-peer-key", report(expected=[{"to": {"namespce": "shop"}}]),
     ("expected[0]", "namespce")),
    ("report-rule-not-mapping", report(expected=["frontend -> db"]),
     ("option 'expected'", "dict")),
    ("report-expected-file-missing", report(expected_file="/nonexistent/expected.yml"),
     ("/nonexistent/expected.yml",)),
    ("report-negative-lost-events", report(max_lost_events=-1),
     ("max_lost_events: expected a count of 0 or more, got -1",)),
    ("report-negative-min-flows", report(min_flows=-3),
     ("min_flows: expected a count of 0 or more, got -3",)),
    ("report-format-choice", report(report_formats=["pdf"]),
     ("report_formats", "pdf")),
    ("report-relay-address", {REPORT: {"duration": "5s", "relay_address": "relay:port:x"}},
     ("relay_address: expected host:port", "'relay:port:x'")),
    ("report-relay-port-range", {REPORT: {"duration": "5s", "relay_address": f"relay:99999; touch {CANARY}"}},
     ("relay_address: expected host:port",)),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    with seeded_cluster("badinput", tmp_path_factory) as sim:
        yield sim


def state_of(cluster: SimCluster) -> dict[str, Any]:
    """Everything a refused input must leave as it was."""
    try:
        ledger = cluster.get("ConfigMap", "netpol-cilium-audit-ledger", cluster.cilium_namespace).get("data") or {}
    except ApiError:
        ledger = {}
    config = cluster.get("ConfigMap", "cilium-config", cluster.cilium_namespace).get("data") or {}
    node_configs = [item["metadata"]["name"]
                    for item in cluster.store.list(cluster.rtype("ciliumnodeconfigs", "cilium.io"))]
    endpoints_on = sorted(f"{node}/{record.id}" for (ns, name), record in cluster.endpoints.items()
                          for node in [record.node] if cluster.agent(node).endpoint_audit_mode(record.id))
    return {
        "ledger": sorted(ledger),
        "policy-audit-mode": config.get("policy-audit-mode"),
        "node_configs": node_configs,
        "agents_in_audit_mode": sorted(n for n in cluster.node_names() if cluster.agent(n).daemon_audit_mode()),
        "agent_starts": {n: len(cluster.agent_starts[n]) for n in cluster.node_names()},
        "endpoints_in_audit_mode": endpoints_on,
    }


def assert_nothing_injected(cluster: SimCluster) -> None:
    assert not Path(CANARY).exists(), "an injected shell command ran"
    for _namespace, _pod, _container, argv in cluster.exec_log:
        assert not any(marker in arg for arg in argv for marker in ("touch", CANARY)), argv


def test_the_table_has_forty_cases_or_more() -> None:
    assert len(MODULE_CASES) + len(ROLE_CASES) + len(PLAYBOOK_CASES) >= 40
    ids = [case[0] for case in MODULE_CASES + ROLE_CASES + PLAYBOOK_CASES]
    assert len(ids) == len(set(ids))


def test_modules_refuse_bad_input_naming_the_option(cluster: SimCluster, tmp_path: Path) -> None:
    Path(CANARY).unlink(missing_ok=True)
    (tmp_path / "flows.json").write_text("")
    before = state_of(cluster)
    tasks = [dict(task, name=case_id) for case_id, task, _expected in MODULE_CASES]
    run = run_tasks(cluster, tasks, tmp_path, timeout=900)
    assert len(run.results) == len(MODULE_CASES), run.stdout[-3000:]
    problems = []
    for (case_id, _task, expected), result in zip(MODULE_CASES, run.results, strict=True):
        message = str(result.get("msg", ""))
        if not result.get("failed"):
            problems.append(f"{case_id}: not refused: {json.dumps(result)[:300]}")
        elif result.get("changed"):
            problems.append(f"{case_id}: refused but reports a change")
        else:
            missing = [text for text in expected if text not in message]
            if missing:
                problems.append(f"{case_id}: message {message!r} lacks {missing}")
    assert not problems, "\n".join(problems)
    assert state_of(cluster) == before
    assert_nothing_injected(cluster)


# --- roles -----------------------------------------------------------------------------------------------------

ROLE_CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("role-endpoints-state", "audit_mode_endpoints",
     {"audit_mode_endpoints_state": "on", "audit_mode_endpoints_namespace": "shop"},
     ("audit_mode_endpoints_state", "enabled")),
    ("role-endpoints-max-duration", "audit_mode_endpoints",
     {"audit_mode_endpoints_state": "enabled", "audit_mode_endpoints_namespace": "shop"},
     ("max_duration",)),
    ("role-endpoints-ids", "audit_mode_endpoints",
     {"audit_mode_endpoints_state": "enabled", "audit_mode_endpoints_max_duration": "1h",
      "audit_mode_endpoints_endpoint_ids": [INJECTIONS[0]]},
     ("audit_mode_endpoints_endpoint_ids", "cannot be converted to an int")),
    ("role-helm-without-reason", "audit_mode_helm",
     {"audit_mode_helm_state": "enabled", "audit_mode_helm_max_duration": "2h"},
     ("audit_mode_helm_reason is required",)),
    ("role-helm-protected", "audit_mode_helm",
     {"audit_mode_helm_state": "enabled", "audit_mode_helm_max_duration": "2h", "audit_mode_helm_reason": "CHG-9",
      "audit_protected_cluster": True},
     ("is a protected cluster", "audit_allow_protected=true")),
    ("role-helm-max-duration", "audit_mode_helm",
     {"audit_mode_helm_state": "enabled", "audit_mode_helm_max_duration": "tomorrow",
      "audit_mode_helm_reason": "CHG-9"},
     ("audit_mode_helm_max_duration is required", "tomorrow")),
    ("role-gate-duration", "audit_gate", {"audit_gate_duration": "a while"},
     ("duration", "a while")),
    ("role-enforce-method", "enforce", {"enforce_method": "magic"},
     ("enforce_method", "magic")),
    ("role-rollout-no-max-duration", "policy_rollout",
     {"policy_rollout_selection": {"policy": "shop/db-ingress"}},
     ("policy_rollout_max_duration is required",)),
    ("role-rollout-helm-without-reason", "policy_rollout",
     {"policy_rollout_method": "helm", "policy_rollout_max_duration": "1h"},
     ("policy_rollout_reason is required with method helm",)),
    ("role-rollout-nodes-without-selector", "policy_rollout",
     {"policy_rollout_method": "nodes", "policy_rollout_max_duration": "1h", "policy_rollout_selection": {"x": 1}},
     ("node_selector",)),
    ("role-rollout-policies-type", "policy_rollout",
     {"policy_rollout_policies": "db-ingress.yaml", "policy_rollout_max_duration": "1h"},
     ("policy_rollout_policies", "unable to convert to dict")),
]


def role_play(cluster: SimCluster, workdir: Path) -> Path:
    """One play: every case in a block of its own whose rescue records the failed task and message."""
    tasks = [{"name": "start the record", "ansible.builtin.set_fact": {"sim_cases": {}}}]
    for case_id, role, variables, _expected in ROLE_CASES:
        tasks.append({
            "name": case_id,
            "block": [
                {"name": f"{case_id}: run the role", "ansible.builtin.include_role": {"name": f"netpol.cilium.{role}"},
                 "vars": variables},
                {"name": f"{case_id}: passed", "ansible.builtin.set_fact": {
                    "sim_cases": "{{ sim_cases | combine({'" + case_id + "': {'failed': false}}) }}"}},
            ],
            "rescue": [{"name": f"{case_id}: refused", "ansible.builtin.set_fact": {
                "sim_cases": "{{ sim_cases | combine({'" + case_id + "': {'failed': true, 'task': "
                             "ansible_failed_task.name | default(''), 'msg': ansible_failed_result.msg "
                             "| default('')}}) }}"}}],
        })
    tasks.append({"name": "write the record", "ansible.builtin.copy": {
        "content": "{{ sim_cases | to_json }}", "dest": str(workdir / "cases.json"), "mode": "0600"}})
    play = [{"name": "bad input to the roles", "hosts": cluster.name, "gather_facts": False,
             "module_defaults": {"group/netpol.cilium.cilium": {"kubeconfig": cluster.kubeconfig}}, "tasks": tasks}]
    (workdir / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (workdir / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": {cluster.name: host}}}))
    return workdir / "play.yml"


def test_roles_refuse_bad_input_naming_the_variable(cluster: SimCluster, tmp_path: Path) -> None:
    before = state_of(cluster)
    playbook = role_play(cluster, tmp_path)
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
               str(playbook)]
    completed = subprocess.run(command, env=ansible_env(cluster, {"FAKE_HELM_LOG": str(tmp_path / "helm.log")}),
                               capture_output=True, text=True, timeout=900, check=False, cwd=str(tmp_path))
    assert (tmp_path / "cases.json").exists(), completed.stdout[-3000:]
    outcomes = json.loads((tmp_path / "cases.json").read_text())
    problems = []
    for case_id, _role, _variables, expected in ROLE_CASES:
        outcome = outcomes.get(case_id) or {}
        if not outcome.get("failed"):
            problems.append(f"{case_id}: not refused ({outcome})")
            continue
        missing = [text for text in expected if text not in outcome["msg"]]
        if missing:
            problems.append(f"{case_id}: message {outcome['msg']!r} (task {outcome['task']!r}) lacks {missing}")
    assert not problems, "\n".join(problems)
    assert state_of(cluster) == before
    # nothing reached helm beyond reading the release
    helm_log = (tmp_path / "helm.log").read_text() if (tmp_path / "helm.log").exists() else ""
    assert "upgrade" not in helm_log and "rollback" not in helm_log
    assert_nothing_injected(cluster)


# --- playbooks -------------------------------------------------------------------------------------------------

PLAYBOOK_CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    ("playbook-enable-no-max-duration", "audit_enable.yml", {}, {"audit_policy": "shop/db-ingress"},
     ("audit_max_duration is required",)),
    ("playbook-enable-cluster-no-reason", "audit_enable.yml", {},
     {"audit_scope": "cluster", "audit_max_duration": "1h"},
     ("audit_reason is required with audit_scope=cluster",)),
    ("playbook-enable-cluster-protected", "audit_enable.yml", {"audit_protected_cluster": True},
     {"audit_scope": "cluster", "audit_max_duration": "1h", "audit_reason": "CHG-3"},
     ("is a protected cluster", "audit_allow_protected=true")),
    ("playbook-fleet-waves", "fleet_rollout.yml", {}, {"fleet_waves": "1,half"},
     ("fleet_waves", "'half' is not a wave size")),
]


@pytest.mark.parametrize(("case_id", "playbook", "host_vars", "extra_vars", "expected"), PLAYBOOK_CASES,
                         ids=[case[0] for case in PLAYBOOK_CASES])
def test_playbooks_refuse_bad_input_before_anything_changes(
        cluster: SimCluster, tmp_path: Path, case_id: str, playbook: str, host_vars: dict[str, Any],
        extra_vars: dict[str, Any], expected: tuple[str, ...]) -> None:
    before = state_of(cluster)
    inventory = {"all": {"hosts": {cluster.name: {"ansible_connection": "local",
                                                  "ansible_python_interpreter": sys.executable,
                                                  "k8s_kubeconfig": cluster.kubeconfig, **host_vars}}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
               str(REPO_ROOT / "playbooks" / playbook), "-e", json.dumps(extra_vars)]
    completed = subprocess.run(command, env=ansible_env(cluster), capture_output=True, text=True, timeout=600,
                               check=False, cwd=str(tmp_path))
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output[-3000:]
    missing = [text for text in expected if text not in output]
    assert not missing, f"{case_id}: output lacks {missing}:\n{output[-3000:]}"
    assert state_of(cluster) == before
