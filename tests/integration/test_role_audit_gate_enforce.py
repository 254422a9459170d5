"""The roles audit_gate and enforce, run by ansible-playbook as a user runs them (no ignore_errors) against the
simulated cluster and its Hubble Relay. Seed scenario: audit mode on db (policy shop/db-ingress), frontend -> db is a
deny the team expects, monitoring/metrics-agent -> db on 9100/TCP is the connection the policy forgot."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from simcluster.cluster import SimCluster
from simcluster.fixtures import shared_fixtures_dir
from simcluster.playbook import PlayOutcome, run_play, run_tasks

pytestmark = pytest.mark.integration

REAL = shared_fixtures_dir() / "hubble" / "real-1.15.1"
FORGOTTEN = "INGRESS monitoring/metrics-agent -> shop/db 9100/TCP"
FRONTEND_TO_DB = {"name": "frontend never talks to the database", "from": {"namespace": "shop", "workload": "frontend"},
                  "to": {"namespace": "shop", "workload": "db"}, "ports": ["5432/TCP"],
                  "reason": "only the backend may reach db"}
SCRAPE = {"from": {"namespace": "monitoring", "workload": "metrics-agent"},
          "to": {"namespace": "shop", "workload": "db"}, "ports": ["9100/TCP"], "reason": "accepted for now"}
DB_POLICY = {"policy": "shop/db-ingress"}
AUDIT_DB = {"name": "switch audit mode on for db",
            "netpol.cilium.cilium_audit_mode": {"state": "enabled", **DB_POLICY, "reason": "CHG-1 observe db-ingress",
                                                "max_duration": "8h"}}
GATE_FAILED = "Fail the play on unexpected denies or an incomplete window"
ENFORCE_FAILED = "Fail on unexpected policy drops or an incomplete watch window"


def role(name: str, **variables: Any) -> dict[str, Any]:
    return {"name": f"run the {name} role", "ansible.builtin.include_role": {"name": f"netpol.cilium.{name}"},
            "vars": variables}


def db_endpoint(cluster: SimCluster) -> tuple[str, int]:
    record = next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))
    return record.node, record.id


def db_in_audit_mode(cluster: SimCluster) -> bool:
    node, endpoint_id = db_endpoint(cluster)
    return cluster.agent(node).endpoint_audit_mode(endpoint_id)


def ledger(cluster: SimCluster) -> list[dict[str, Any]]:
    config = cluster.store.try_get(cluster.rtype("configmaps"), cluster.cilium_namespace, "netpol-cilium-audit-ledger")
    return [json.loads(value) for value in ((config or {}).get("data") or {}).values()]


def verdict_now(cluster: SimCluster, source: str) -> set[str]:
    """What the datapath does with one new connection from ``source`` to db now (policy verdict events only)."""
    return {kind for kind in cluster.hubble.emit(source, "shop/db") if kind.startswith("policy-verdict:")}


def message_lines(outcome: PlayOutcome) -> list[str]:
    return [line.strip() for line in outcome.msg.splitlines()]


# --- audit_gate -------------------------------------------------------------------------------------------------------


def test_gate_passes_when_every_deny_is_expected(sim_cluster: SimCluster, tmp_path: Path) -> None:
    """Relay through the port-forward (no address), the default report directory per cluster next to the playbook."""
    sim_cluster.start_hubble(rate_multiplier=60)
    run = run_play(sim_cluster, [AUDIT_DB, role("audit_gate", audit_gate_duration="4s",
                                                audit_gate_namespaces=["shop"],
                                                audit_gate_expected=[FRONTEND_TO_DB, SCRAPE])],
                   tmp_path, facts=("audit_gate_result",))
    assert not run.failed, run.msg or run.stdout
    result = run.facts["audit_gate_result"]
    assert (result["passed"], result["result"], result["complete"]) == (True, "pass", True)
    assert sorted(group["source"] for group in result["expected"]) == ["monitoring/metrics-agent", "shop/frontend"]
    assert result["unexpected"] == []
    assert "port-forward via pod kube-system/hubble-relay-" in result["source"]["address"]
    report_dir = tmp_path / "artifacts" / sim_cluster.name / "audit-gate"
    assert result["report_dir"] == str(report_dir)
    assert sorted(path.name for path in report_dir.iterdir()) == ["junit.xml", "report.json", "report.md",
                                                                  "suggested-policies.yaml"]
    assert set(result["reports"]) == {"json", "md", "junit", "policies"}
    saved = json.loads((report_dir / "report.json").read_text())
    assert saved["summary"]["result"] == "pass" and saved["summary"]["expected_groups"] == 2
    assert db_in_audit_mode(sim_cluster)  # the gate judges, it changes nothing


def test_gate_fails_on_the_unexpected_deny_and_names_it(sim_cluster: SimCluster, tmp_path: Path) -> None:
    """Expected denies from a file, the Relay at its address, reports in a directory of the play's choosing."""
    relay = sim_cluster.start_hubble(rate_multiplier=60)
    expected_file = tmp_path / "expected-denies.yml"
    expected_file.write_text(yaml.safe_dump({"expected": [FRONTEND_TO_DB]}))
    report_dir = tmp_path / "gate-reports"
    run = run_play(sim_cluster, [AUDIT_DB, role("audit_gate", audit_gate_duration="4s",
                                                audit_gate_expected_file=str(expected_file),
                                                audit_gate_report_dir=str(report_dir),
                                                audit_gate_relay_address=relay.address)],
                   tmp_path, facts=("audit_gate_result",))
    assert run.failed and run.rc != 0
    assert run.failed_task == GATE_FAILED, run.stdout
    lines = message_lines(run)
    assert lines[0].startswith(f"Audit gate failed for {sim_cluster.name} (window ")
    assert "1 unexpected deny group(s) - connections the policies will drop once they are enforced:" in lines
    [forgotten] = [line for line in lines if line.startswith(FORGOTTEN)]
    assert forgotten.startswith(f"{FORGOTTEN} x") and "(nodes: " in forgotten
    assert not any("shop/frontend" in line for line in lines)  # the expected deny is not listed
    assert f"Reports: {report_dir} (" in run.msg and "suggested-policies.yaml" in run.msg
    result = run.facts["audit_gate_result"]
    assert (result["passed"], result["result"], result["complete"]) == (False, "fail", True)
    [group] = result["unexpected"]
    assert (group["source"], group["destination"], group["port"]) == ("monitoring/metrics-agent", "shop/db", 9100)
    assert [g["rule"]["name"] for g in result["expected"]] == [FRONTEND_TO_DB["name"]]
    assert "<failure" in (report_dir / "junit.xml").read_text()
    [policy] = [doc for doc in yaml.safe_load_all((report_dir / "suggested-policies.yaml").read_text()) if doc]
    assert policy["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"]["app"] == "metrics-agent"
    assert db_in_audit_mode(sim_cluster)


def test_gate_fails_on_lost_events_even_when_every_deny_is_expected(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    """A past window (since) read over TLS: Hubble lost events in it, so the green result cannot be trusted."""
    relay = sim_cluster.start_hubble(rate_multiplier=60, tls=True)
    relay.inject_lost_events(7)
    run = run_play(sim_cluster, [AUDIT_DB, role("audit_gate", audit_gate_since="5m",
                                                audit_gate_expected=[FRONTEND_TO_DB, SCRAPE],
                                                audit_gate_relay_address=relay.address,
                                                audit_gate_relay_ca_cert=relay.ca_cert_path,
                                                audit_gate_relay_server_name="instance.hubble-relay.cilium.io")],
                   tmp_path, facts=("audit_gate_result",))
    assert run.failed_task == GATE_FAILED, run.stdout
    lines = message_lines(run)
    assert "The window is incomplete, so its result cannot be trusted:" in lines
    assert any(line.startswith("Hubble lost 7 events (max_lost_events 0)") for line in lines)
    assert not any("unexpected deny" in line for line in lines)
    result = run.facts["audit_gate_result"]
    assert (result["passed"], result["result"], result["complete"]) == (False, "incomplete", False)
    assert result["summary"]["lost_events"] == 7 and result["unexpected"] == []
    assert (tmp_path / "artifacts" / sim_cluster.name / "audit-gate" / "report.json").is_file()


def test_gate_fails_on_a_window_with_too_few_flows(shared_cluster: SimCluster, tmp_path: Path) -> None:
    """Real captured AUDIT flows (file source): every deny expected, but fewer flows than min_flows asks for."""
    run = run_play(shared_cluster, [role("audit_gate", audit_gate_source="file",
                                         audit_gate_paths=[str(REAL / "audit-ingress.jsonl")],
                                         audit_gate_expected=[FRONTEND_TO_DB, {"from": {"workload": "frontend"},
                                                                               "ports": ["9187"]}],
                                         audit_gate_min_flows=100)],
                   tmp_path, facts=("audit_gate_result",))
    assert run.failed_task == GATE_FAILED, run.stdout
    assert any(line.startswith("4 flows seen (min_flows 100)") for line in message_lines(run))
    result = run.facts["audit_gate_result"]
    assert result["result"] == "incomplete" and result["summary"]["expected_groups"] == 2


# --- how policy drops are judged --------------------------------------------------------------------------------------


def test_only_policy_verdicts_count_as_policy_drops(shared_cluster: SimCluster, tmp_path: Path) -> None:
    """What the enforce watch relies on, on a real capture: a policy drop is reported twice (a DROPPED policy verdict,
    type 5, and a drop event, type 1, POLICY_DENIED) and counts once; drops for other reasons
    (UNSUPPORTED_L3_PROTOCOL) are no policy drops."""
    [result] = run_tasks(shared_cluster, [{"netpol.cilium.hubble_audit_report": {
        "source": "file", "paths": [str(REAL / "dropped-policy-denied.jsonl")], "verdicts": ["DROPPED"],
        "fail_on_unexpected": False}}], tmp_path).results
    assert result["summary"]["flows_seen"] == 33
    [group] = result["unexpected"]
    assert (group["direction"], group["source"], group["destination"], group["port"], group["count"]) == (
        "INGRESS", "shop/frontend", "shop/db", 5432, 4)
    assert result["summary"]["audited"] == 4


# --- enforce ----------------------------------------------------------------------------------------------------------


def enforce(relay_address: str, **variables: Any) -> dict[str, Any]:
    options = {"enforce_selection": DB_POLICY, "enforce_watch_duration": "3s", "enforce_expected": [FRONTEND_TO_DB],
               "enforce_relay_address": relay_address}
    options.update(variables)
    return role("enforce", **options)


def admit_the_scrape(cluster: SimCluster) -> None:
    """The policy fix the audit gate asked for: db-ingress also admits the metrics-agent on 9100/TCP."""
    fixed = cluster.get("CiliumNetworkPolicy", "db-ingress", "shop", "cilium.io")
    fixed["spec"]["ingress"].append({
        "fromEndpoints": [{"matchLabels": {"app": "metrics-agent", "k8s:io.kubernetes.pod.namespace": "monitoring"}}],
        "toPorts": [{"ports": [{"port": "9100", "protocol": "TCP"}]}]})
    cluster.apply(fixed)


def test_enforce_switches_db_back_and_proves_it(sim_cluster: SimCluster, tmp_path: Path) -> None:
    """The policy was fixed to admit the scrape: after the switch only the expected frontend drops appear."""
    relay = sim_cluster.start_hubble(rate_multiplier=60)
    admit_the_scrape(sim_cluster)
    run = run_play(sim_cluster, [AUDIT_DB, enforce(relay.address)], tmp_path, facts=("enforce_result",))
    assert not run.failed, run.msg or run.stdout
    assert not db_in_audit_mode(sim_cluster)
    assert [entry for entry in ledger(sim_cluster) if entry.get("scope") == "endpoints"] == []
    result = run.facts["enforce_result"]
    assert (result["passed"], result["enforced"], result["reverted"]) == (True, True, False)
    assert result["not_enforced"] == [] and result["unexpected_drops"] == []
    [switched] = result["switch"]["endpoints"]
    assert (switched["before"], switched["after"], switched["verified"]) == ("Enabled", "Disabled", True)
    [expected] = result["watch"]["expected"]
    assert expected["source"] == "shop/frontend" and expected["count"] > 0  # real DROPPED verdicts were judged
    report_dir = tmp_path / "artifacts" / sim_cluster.name / "enforce-watch"
    assert result["report_dir"] == str(report_dir) and (report_dir / "report.json").is_file()
    assert verdict_now(sim_cluster, "shop/frontend") == {"policy-verdict:DROPPED"}
    assert verdict_now(sim_cluster, "monitoring/metrics-agent") == {"policy-verdict:FORWARDED"}


def test_enforce_reenables_audit_mode_on_an_unexpected_policy_drop(sim_cluster: SimCluster, tmp_path: Path) -> None:
    relay = sim_cluster.start_hubble(rate_multiplier=60)
    run = run_play(sim_cluster, [AUDIT_DB, enforce(relay.address, enforce_revert_max_duration="2h",
                                                   enforce_revert_reason="CHG-1 rollback: scrape dropped")],
                   tmp_path, facts=("enforce_result",))
    assert run.failed_task == ENFORCE_FAILED, run.stdout
    lines = message_lines(run)
    assert lines[0].startswith(f"Enforcement on {sim_cluster.name} (endpoints policy=shop/db-ingress) caused 1 "
                               "unexpected policy drop group(s) in the watch window ")
    [forgotten] = [line for line in lines if line.startswith(FORGOTTEN)]
    assert forgotten.startswith(f"{FORGOTTEN} x")
    assert not any(line.startswith("INGRESS shop/frontend") for line in lines)
    [reverted] = [line for line in lines if line.startswith("Audit mode was re-enabled the same way")]
    assert "(endpoints: shop/db-" in reverted and "for at most 2h" in reverted
    report_dir = tmp_path / "artifacts" / sim_cluster.name / "enforce-watch"
    assert f"Reports: {report_dir} (" in run.msg
    # the agent really runs db in audit mode again, recorded with the revert's reason and expiry
    assert db_in_audit_mode(sim_cluster)
    [entry] = [entry for entry in ledger(sim_cluster) if entry.get("scope") == "endpoints"]
    assert (entry["reason"], entry["max_duration"]) == ("CHG-1 rollback: scrape dropped", "2h")
    assert entry["selection"] == DB_POLICY
    assert verdict_now(sim_cluster, "monitoring/metrics-agent") == {"policy-verdict:AUDIT"}
    result = run.facts["enforce_result"]
    assert (result["passed"], result["enforced"], result["reverted"]) == (False, True, True)
    [drop] = result["unexpected_drops"]
    assert (drop["source"], drop["destination"], drop["port"]) == ("monitoring/metrics-agent", "shop/db", 9100)
    node, endpoint_id = db_endpoint(sim_cluster)
    [row] = result["revert"]["endpoints"]
    assert (row["node"], row["id"], row["after"], row["verified"]) == (node, endpoint_id, "Enabled", True)
    assert json.loads((report_dir / "report.json").read_text())["summary"]["unexpected_groups"] == 1


def test_enforce_without_revert_only_fails(sim_cluster: SimCluster, tmp_path: Path) -> None:
    relay = sim_cluster.start_hubble(rate_multiplier=60)
    run = run_play(sim_cluster, [AUDIT_DB, enforce(relay.address, enforce_revert_on_unexpected_drops=False)],
                   tmp_path, facts=("enforce_result",))
    assert run.failed_task == ENFORCE_FAILED, run.stdout
    lines = message_lines(run)
    assert any(line.startswith(FORGOTTEN) for line in lines)
    assert "Audit mode was NOT re-enabled (enforce_revert_on_unexpected_drops is false): the connections above are " \
           "being dropped now." in lines
    assert not db_in_audit_mode(sim_cluster)
    assert [entry for entry in ledger(sim_cluster) if entry.get("scope") == "endpoints"] == []
    assert verdict_now(sim_cluster, "monitoring/metrics-agent") == {"policy-verdict:DROPPED"}
    result = run.facts["enforce_result"]
    assert (result["passed"], result["enforced"], result["reverted"], result["revert"]) == (False, True, False, None)


def test_enforce_fails_when_the_window_cannot_be_watched(sim_cluster: SimCluster, tmp_path: Path) -> None:
    """No Relay answers: db runs enforced (proven), the play fails naming the Relay, and nothing is reverted."""
    run = run_play(sim_cluster, [AUDIT_DB, enforce("127.0.0.1:9", enforce_relay_timeout=3)], tmp_path,
                   facts=("enforce_result",))
    assert run.failed_task == "Fail because the window after the switch could not be watched", run.stdout
    lines = message_lines(run)
    assert lines[0] == (f"{sim_cluster.name} runs enforced (endpoints policy=shop/db-ingress), but the window after "
                        "the switch could not be watched:")
    assert "127.0.0.1:9" in lines[1]
    assert not db_in_audit_mode(sim_cluster)
    result = run.facts["enforce_result"]
    assert (result["passed"], result["enforced"], result["reverted"]) == (False, True, False)
    assert "127.0.0.1:9" in result["watch_error"]


@pytest.mark.parametrize(("variables", "task", "words"), [
    ({"enforce_method": "nodes", "enforce_selection": DB_POLICY}, "Check that the selection fits the enforce method",
     ["does not fit enforce_method nodes", "nodes needs node_selector"]),
    ({"enforce_selection": {"namespce": "shop"}}, "Validating arguments against arg spec 'main'",
     ["namespce"]),
    ({"enforce_selection": DB_POLICY, "enforce_watch_duration": "2 minutes"}, "Check the length of the watch window",
     ["enforce_watch_duration: expected a duration such as 2m", "got 2 minutes"]),
], ids=["selection-does-not-fit-method", "unknown-selection-key", "unreadable-watch-duration"])
def test_enforce_refuses_bad_options_before_switching(
        sim_cluster: SimCluster, tmp_path: Path, variables: dict[str, Any], task: str, words: list[str]) -> None:
    run = run_play(sim_cluster, [AUDIT_DB, role("enforce", **variables)], tmp_path, facts=("enforce_result",))
    assert run.failed and (run.failed_task or "").startswith(task), run.stdout
    assert all(word in run.msg for word in words), run.msg
    assert db_in_audit_mode(sim_cluster)  # nothing was switched
    assert run.facts["enforce_result"] is None


def test_enforce_fails_on_an_incomplete_watch_window_and_stays_enforced(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    """Hubble loses events while the window after the switch is followed: drops may have been missed, so the play
    fails - but no unexpected drop was seen, so enforcement stays."""
    relay = sim_cluster.start_hubble(rate_multiplier=60)
    admit_the_scrape(sim_cluster)

    def lose_events_once_followed() -> None:
        relay.wait_for_followers(1, timeout=120)
        relay.inject_lost_events(3)

    losing = threading.Thread(target=lose_events_once_followed, daemon=True)
    losing.start()
    run = run_play(sim_cluster, [AUDIT_DB, enforce(relay.address)], tmp_path, facts=("enforce_result",))
    losing.join(5)
    assert run.failed_task == ENFORCE_FAILED, run.stdout
    lines = message_lines(run)
    incomplete = "is incomplete, so policy drops may have been missed:"
    assert any(line.startswith("The watch window ") and line.endswith(incomplete) for line in lines)
    assert any(line.startswith("Hubble lost 3 events (max_lost_events 0)") for line in lines)
    assert "Enforcement stays on: no unexpected policy drop was seen." in lines
    assert not db_in_audit_mode(sim_cluster)
    result = run.facts["enforce_result"]
    assert (result["passed"], result["enforced"], result["reverted"]) == (False, True, False)
    assert result["watch"]["complete"] is False and result["unexpected_drops"] == []


def test_enforce_nodes_method_switches_the_node_agents_back(sim_cluster: SimCluster, tmp_path: Path) -> None:
    """Audit mode on the db node (CiliumNodeConfig + agent restart), switched back the same way."""
    relay = sim_cluster.start_hubble(rate_multiplier=60)
    node, _endpoint_id = db_endpoint(sim_cluster)
    selector = {"kubernetes.io/hostname": node}
    run = run_play(sim_cluster, [
        {"name": "switch audit mode on for the db node", "netpol.cilium.cilium_audit_mode": {
            "state": "enabled", "scope": "nodes", "node_selector": selector, "max_duration": "8h"}},
        enforce(relay.address, enforce_method="nodes", enforce_selection={"node_selector": selector},
                enforce_expected=[FRONTEND_TO_DB, SCRAPE]),
    ], tmp_path, facts=("enforce_result",))
    assert not run.failed, run.msg or run.stdout
    assert sim_cluster.agent(node).daemon_audit_mode() is False
    assert not db_in_audit_mode(sim_cluster)
    config = sim_cluster.get("CiliumNodeConfig", "netpol-cilium-audit", sim_cluster.cilium_namespace, "cilium.io")
    assert config["spec"]["defaults"]["policy-audit-mode"] == "false"
    assert [entry for entry in ledger(sim_cluster) if entry.get("scope") == "nodes"] == []
    result = run.facts["enforce_result"]
    assert result["switch"]["restart_nodes"] == [node]
    assert (result["passed"], result["enforced"], result["not_enforced"]) == (True, True, [])
    sources = sorted(group["source"] for group in result["watch"]["expected"])
    assert sources == ["monitoring/metrics-agent", "shop/frontend"]


def test_enforce_in_check_mode_only_predicts_the_switch(sim_cluster: SimCluster, tmp_path: Path) -> None:
    run_tasks(sim_cluster, [AUDIT_DB], tmp_path)
    (tmp_path / "check").mkdir()
    run = run_play(sim_cluster, [role("enforce", enforce_selection=DB_POLICY, enforce_relay_address="127.0.0.1:9")],
                   tmp_path / "check", facts=("enforce_result",), check=True)
    assert not run.failed, run.msg or run.stdout
    assert db_in_audit_mode(sim_cluster)
    result = run.facts["enforce_result"]
    assert (result["check_mode"], result["passed"], result["enforced"], result["watch"]) == (True, True, False, None)
    [row] = result["switch"]["endpoints"]
    assert (row["before"], row["status"]) == ("Enabled", "would_change")


def test_enforce_helm_method_switches_through_the_release_and_back(sim_cluster: SimCluster, tmp_path: Path) -> None:
    """Cluster-wide audit mode through the Helm role (fake helm); enforce switches it off through the same role, the
    forgotten scrape is dropped, and the revert switches it on again through the release."""
    relay = sim_cluster.start_hubble(rate_multiplier=60)
    audit_via_helm = {"name": "switch audit mode on through Helm",
                      "ansible.builtin.include_role": {"name": "netpol.cilium.audit_mode_helm"},
                      "vars": {"audit_mode_helm_state": "enabled", "audit_mode_helm_max_duration": "8h",
                               "audit_mode_helm_reason": "CHG-2 observe everything"}}
    run = run_play(sim_cluster, [audit_via_helm, enforce(relay.address, enforce_method="helm", enforce_selection={},
                                                         enforce_revert_max_duration="2h")],
                   tmp_path, facts=("enforce_result",),
                   play_vars={"audit_mode_helm_kubeconfig": sim_cluster.kubeconfig})  # the helm role's own variable
    assert run.failed_task == ENFORCE_FAILED, run.stdout
    lines = message_lines(run)
    assert lines[0].startswith(f"Enforcement on {sim_cluster.name} (helm) caused 1 unexpected policy drop group(s)")
    assert any(line.startswith(FORGOTTEN) for line in lines)
    assert any(line.startswith(f"Audit mode was re-enabled the same way (Helm release {sim_cluster.cilium_namespace}"
                               "/cilium) for at most 2h") for line in lines)
    assert all(sim_cluster.agent(node).daemon_audit_mode() for node in sim_cluster.node_names())
    [entry] = [entry for entry in ledger(sim_cluster) if entry.get("scope") == "cluster"]
    assert (entry["reason"], entry["max_duration"]) == (
        "netpol.cilium.enforce: unexpected policy drops after switching to enforcement", "2h")
    result = run.facts["enforce_result"]
    assert (result["enforced"], result["reverted"]) == (True, True)
    assert (result["switch"]["method"], result["switch"]["state"], result["switch"]["verified"]) == (
        "helm", "disabled", True)
    assert (result["revert"]["state"], result["revert"]["verified"]) == ("enabled", True)
