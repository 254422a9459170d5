"""hubble_audit_report run by ansible-playbook: real captured flows (file source) and the simulated Relay."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml
from simcluster.cluster import SimCluster
from simcluster.fixtures import shared_fixtures_dir
from simcluster.playbook import run_tasks

pytestmark = pytest.mark.integration

REAL = shared_fixtures_dir() / "hubble" / "real-1.15.1"
FRONTEND_TO_DB = {"from": {"namespace": "shop", "workload": "frontend"}, "to": {"namespace": "shop", "workload": "db"},
                  "ports": ["5432/TCP"], "reason": "only the backend may talk to db"}


def report(**options):
    return {"netpol.cilium.hubble_audit_report": options}


def test_real_audit_flows_pass_and_fail_the_gate(shared_cluster: SimCluster, tmp_path: Path) -> None:
    gz = tmp_path / "flows.jsonl.gz"
    gz.write_bytes(gzip.compress((REAL / "audit-ingress.jsonl").read_bytes()))
    run = run_tasks(shared_cluster, [
        report(source="file", paths=[str(REAL / "audit-ingress.jsonl")], expected=[FRONTEND_TO_DB],
               report_dir=str(tmp_path / "reports")),
        report(source="file", paths=[str(tmp_path / "*.gz")],
               expected=[FRONTEND_TO_DB, {"from": {"workload": "frontend"}, "ports": ["9187"], "reason": "exporter"}]),
    ], tmp_path)
    failing, passing = run.results
    assert failing["failed"] is True
    assert failing["msg"].startswith("1 unexpected deny group(s) in the audit window:")
    assert "INGRESS shop/frontend -> shop/db 9187/TCP x1" in failing["msg"]
    assert failing["summary"]["expected_groups"] == 1 and failing["summary"]["audited"] == 4
    assert failing["expected"][0]["rule"]["reason"] == "only the backend may talk to db"
    assert set(failing["reports"]) == {"json", "md", "junit", "policies"}
    saved = json.loads(Path(failing["reports"]["json"]).read_text())
    assert saved["summary"]["unexpected_groups"] == 1
    assert "```mermaid" in Path(failing["reports"]["md"]).read_text()
    assert not passing.get("failed") and passing["summary"]["result"] == "pass"


def test_bad_rules_are_refused_naming_the_rule_and_key(shared_cluster: SimCluster, tmp_path: Path) -> None:
    run = run_tasks(shared_cluster, [
        report(source="file", paths=[str(REAL / "audit-ingress.jsonl")], expected=[{"from": {"namespce": "shop"}}]),
        report(source="file", paths=[str(REAL / "audit-ingress.jsonl")], expected=[{"ports": [70000]}]),
        report(source="file", paths=[str(tmp_path / "nothing-*.jsonl")]),
        report(source="file", paths=[str(REAL / "audit-ingress.jsonl")], since="yesterday"),
    ], tmp_path)
    unknown_key, bad_port, no_files, bad_since = run.results
    assert "expected[0].from: unknown key 'namespce'" in unknown_key["msg"]
    assert "expected[0].ports" in bad_port["msg"] and "70000" in bad_port["msg"]
    assert "nothing-*.jsonl" in no_files["msg"]
    assert bad_since["msg"].startswith("since: 'yesterday' is neither an RFC 3339 time")


def test_relay_window_through_port_forward_fails_on_the_forgotten_flow(sim_cluster: SimCluster,
                                                                       tmp_path: Path) -> None:
    """The seed scenario end to end: audit mode on db, a live window from the Relay reached through the Kubernetes
    API (no address given), frontend->db expected, the metrics-agent scrape on 9100 unexpected."""
    sim_cluster.start_hubble(rate_multiplier=60)
    run = run_tasks(sim_cluster, [
        {"netpol.cilium.cilium_audit_mode": {"state": "enabled", "policy": "shop/db-ingress",
                                             "max_duration": "1h"}},
        report(duration="4s", namespaces=["shop"], expected=[FRONTEND_TO_DB], report_dir=str(tmp_path / "gate")),
        report(duration="4s", namespaces=["shop"], expected=[
            FRONTEND_TO_DB, {"from": {"namespace": "monitoring", "workload": "metrics-agent"},
                             "to": {"namespace": "shop", "workload": "db"}, "ports": ["9100/TCP"],
                             "reason": "scrape allowed later by a policy change"}]),
    ], tmp_path)
    enabled, gate, fixed = run.results
    assert enabled["changed"] is True
    assert gate["failed"] is True, gate
    assert "INGRESS monitoring/metrics-agent -> shop/db 9100/TCP" in gate["msg"]
    assert gate["summary"]["complete"] is True and gate["summary"]["lost_events"] == 0
    assert [g["source"] for g in gate["expected"]] == ["shop/frontend"]
    assert "port-forward via pod kube-system/hubble-relay-" in gate["source"]["address"]
    [policy] = [doc for doc in yaml.safe_load_all(Path(gate["reports"]["policies"]).read_text()) if doc]
    assert policy["spec"]["endpointSelector"] == {"matchLabels": {"app": "db"}}
    [rule] = policy["spec"]["ingress"]
    assert rule["fromEndpoints"][0]["matchLabels"]["app"] == "metrics-agent"
    assert rule["toPorts"] == [{"ports": [{"port": "9100", "protocol": "TCP"}]}]
    assert not fixed.get("failed"), fixed.get("msg")
    assert fixed["summary"]["result"] == "pass" and fixed["summary"]["expected_groups"] == 2


def test_relay_unreachable_is_named(shared_cluster: SimCluster, tmp_path: Path) -> None:
    [result] = run_tasks(shared_cluster, [report(relay_address="127.0.0.1:9", since="5m")], tmp_path).results
    assert result["failed"] is True
    assert "127.0.0.1:9" in result["msg"]
