"""hubble_audit_report run by ansible-playbook: real captured flows (file source) and the simulated Relay."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
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
