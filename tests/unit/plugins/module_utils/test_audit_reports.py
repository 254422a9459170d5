"""Report renderers against golden files, suggested policies, JUnit validity and atomic writing.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/plugins/module_utils/test_audit_reports.py``
and review the diff: the golden files are the specification of the reports.
"""

from __future__ import annotations

import json
import os
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from simcluster.fixtures import shared_fixtures_dir

from ansible_collections.netpol.cilium.plugins.module_utils import _audit_reports as reports
from ansible_collections.netpol.cilium.plugins.module_utils._flow_files import FileStats, read_flow_files
from ansible_collections.netpol.cilium.plugins.module_utils._flows import FlowRecord, LostEvents, Peer
from ansible_collections.netpol.cilium.plugins.module_utils._judge import (
    Judgement,
    judge_flows,
    parse_expected,
    parse_window,
)

GOLDEN = Path(__file__).parent / "golden"
REAL = shared_fixtures_dir() / "hubble" / "real-1.15.1"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

NS = "k8s:io.kubernetes.pod.namespace="
NOISE = ("k8s:io.cilium.k8s.policy.cluster=prod-a", "k8s:io.cilium.k8s.policy.serviceaccount=default")
FRONTEND = Peer(namespace="shop", pod="frontend-7d9f8c6b5-x2x4q", workload="frontend", identity=53414, ip="10.0.1.5",
                labels=("k8s:app=frontend", *NOISE, NS + "shop"))
DB0 = Peer(namespace="shop", pod="db-0", workload="db", identity=60273, ip="10.0.1.9",
           labels=("k8s:app=db", "k8s:tier=data", "k8s:version=15", *NOISE, NS + "shop"))
DB1 = DB0._replace(pod="db-1", identity=60274, ip="10.0.2.9",
                   labels=("k8s:app=db", "k8s:tier=data", "k8s:version=16", *NOISE, NS + "shop"))
AGENT = Peer(namespace="monitoring", pod="metrics-agent-9xk2p", workload="metrics-agent", identity=42001,
             ip="10.0.3.7", labels=("k8s:app.kubernetes.io/name=metrics-agent", *NOISE, NS + "monitoring"))
DNS = Peer(namespace="kube-system", pod="coredns-5d78c9869d-abcde", workload="kube-dns", identity=43001,
           ip="10.0.0.10", labels=("k8s:k8s-app=kube-dns", *NOISE, NS + "kube-system"))
STRIPE = Peer(labels=("reserved:world",), identity=2, entity="world", ip="52.1.2.3", fqdns=("api.stripe.com",))
WORLD_IP = Peer(labels=("reserved:world-ipv4",), identity=9, entity="world-ipv4", ip="52.9.9.9")
SCANNER = Peer(labels=("reserved:world",), identity=2, entity="world", ip="203.0.113.7")
HOST = Peer(labels=("reserved:host",), identity=1, entity="host", ip="192.168.1.10")
APISERVER = Peer(labels=("reserved:kube-apiserver",), identity=7, entity="kube-apiserver", ip="192.168.1.2")
ANONYMOUS = Peer(identity=16777217, ip="10.8.0.3")
META = {"cluster": "prod-a", "generated_at": "2026-11-27T12:00:05Z", "source": "file (2 files)"}


def flow(source: Peer, destination: Peer, port: int | None, direction: str = "INGRESS", protocol: str | None = "TCP",
         time: str = "2026-11-27T11:10:00Z", node: str = "prod-a/sim-worker-1", **changes: Any) -> FlowRecord:
    values: dict[str, Any] = {"time": time, "node": node, "verdict": "AUDIT", "event_type": 5, "direction": direction,
                              "is_reply": False, "source": source, "destination": destination,
                              "protocol": protocol, "port": port}
    values.update(changes)
    return FlowRecord(**values)


def mixed_events() -> list[Any]:
    events: list[Any] = []
    for index in range(12):
        events.append(flow(AGENT, DB0 if index % 2 else DB1, 9100, node="prod-a/sim-worker-3",
                           time=f"2026-11-27T11:{10 + index:02d}:00.{index}Z",
                           denied_by=("shop/db-ingress",) if index == 3 else ()))
    events += [
        flow(FRONTEND, DB0, 5432), flow(FRONTEND, DB1, 5432, time="2026-11-27T11:20:00Z"),
        flow(FRONTEND, DB0, 8, protocol="ICMPv4"),
        flow(FRONTEND, STRIPE, 443, "EGRESS"), flow(FRONTEND, STRIPE._replace(ip="52.1.2.4"), 443, "EGRESS"),
        flow(FRONTEND, WORLD_IP, 443, "EGRESS"),
        flow(FRONTEND, DNS, 53, "EGRESS", "UDP"),
        flow(FRONTEND, APISERVER, 443, "EGRESS"),
        flow(SCANNER, FRONTEND, 8443),
        flow(HOST, DB0, 5432, node="prod-a/sim-worker-2"),
        flow(ANONYMOUS, DB0, 5432),
        flow(FRONTEND, HOST, 22),
        flow(DB0, FRONTEND, 41234, "EGRESS", is_reply=True),  # a reply: never a finding, never a rule
        flow(FRONTEND, DB0, 5432, verdict="FORWARDED", event_type=4),
        LostEvents("HUBBLE_RING_BUFFER", 5, "prod-a/sim-worker-2", "2026-11-27T11:30:00Z"),
    ]
    return events


MIXED_RULES = [
    {"name": "frontend-db", "reason": "the frontend must go through the API, never to the database",
     "from": {"workload": "frontend"}, "to": {"namespace": "shop", "labels": {"app": "db"}}, "ports": ["5432/TCP"]},
    {"name": "icmp", "reason": "no ping inside shop", "to": {"namespace": "shop"}, "ports": ["ICMPv4"]},
    {"name": "never-seen", "reason": "ssh from the bastion stays closed", "from": {"cidr": "192.168.7.0/24"},
     "ports": [22]},
]


def mixed() -> tuple[Judgement, dict[str, Any]]:
    judgement = judge_flows(mixed_events(), parse_expected(MIXED_RULES))
    window = parse_window(since="2026-11-27T11:00:00Z", until="2026-11-27T12:00:00Z")
    return judgement, judgement.summary(window=window, flows_seen=1000)


def real() -> tuple[Judgement, dict[str, Any]]:
    stats = FileStats()
    rules = parse_expected([{"name": "postgres-exporter", "reason": "the exporter is scraped from monitoring only",
                             "from": {"namespace": "shop"}, "to": {"workload": "db"}, "ports": [9187]}])
    judgement = judge_flows(read_flow_files([str(REAL / "audit-ingress.jsonl")], stats=stats), rules)
    window = parse_window(since="2026-11-27T01:50:00Z", duration="5m")
    return judgement, judgement.summary(window=window, flows_seen=stats.flows, malformed_lines=stats.malformed)


SCENARIOS = {"real": real, "mixed": mixed}


# -- golden files ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_reports_match_the_golden_files(scenario: str, tmp_path: Path) -> None:
    judgement, summary = SCENARIOS[scenario]()
    meta = dict(META, source="file (audit-ingress.jsonl)") if scenario == "real" else META
    paths = reports.write_reports(str(tmp_path), judgement, meta, summary=summary)
    assert sorted(Path(path).name for path in paths.values()) == sorted(reports.REPORT_FILES.values())
    for name in reports.REPORT_FILES.values():
        golden = GOLDEN / scenario / f"{name}.golden"  # not .yaml/.json: linters must not take them for content
        produced = (tmp_path / name).read_text()
        if UPDATE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(produced)
        assert golden.exists(), f"{golden} is missing: run with UPDATE_GOLDEN=1 and review it"
        assert produced == golden.read_text(), f"{name} differs from {golden} (UPDATE_GOLDEN=1 to regenerate)"


def test_output_does_not_depend_on_flow_order() -> None:
    events = mixed_events()
    first = judge_flows(events, parse_expected(MIXED_RULES))
    random.Random(5).shuffle(events)
    second = judge_flows(events, parse_expected(MIXED_RULES))
    summary = first.summary(flows_seen=1000)
    assert second.summary(flows_seen=1000) == summary
    for render in (reports.render_json, reports.render_markdown, reports.render_junit,
                   reports.render_suggested_policies):
        assert render(first, META, summary) == render(second, META, summary)


# -- JSON --------------------------------------------------------------------------------------------------------------

def test_json_report() -> None:
    judgement, summary = mixed()
    document = json.loads(reports.render_json(judgement, META, summary))
    assert document["report_version"] == 1 and document["meta"] == META
    assert document["summary"]["result"] == "fail" and document["summary"]["complete"] is False
    assert document["summary"]["incomplete_reasons"] == [
        "Hubble lost 5 events (max_lost_events 0): audited flows may be missing"]
    assert {group["expected"] for group in document["unexpected"]} == {False}
    assert [group["rule"]["name"] for group in document["expected"]] == ["icmp", "frontend-db"]
    assert [(rule["name"], rule["matched"]) for rule in document["rules"]] == [
        ("frontend-db", True), ("icmp", True), ("never-seen", False)]
    agent = next(group for group in document["unexpected"] if group["source"] == "monitoring/metrics-agent")
    assert agent["description"] == \
        "INGRESS monitoring/metrics-agent -> shop/db 9100/TCP x12 (nodes: prod-a/sim-worker-3)"
    assert agent["denied_by"] == ["shop/db-ingress"] and agent["destination_pods"] == ["db-0", "db-1"]


# -- Markdown ----------------------------------------------------------------------------------------------------------

def test_markdown_verdicts() -> None:
    judgement, summary = real()
    assert "**FAIL: 1 unexpected would-be deny (3 audited flows) would break when policy is enforced**" in \
        reports.render_markdown(judgement, {}, summary)
    green = judge_flows(read_flow_files([str(REAL / "audit-ingress.jsonl")], stats=FileStats()),
                        parse_expected([{"to": {"workload": "db"}, "reason": "all expected"}]))
    text = reports.render_markdown(green, {}, green.summary(flows_seen=4))
    assert "**PASS: every audited flow in the window was an expected would-be deny**" in text
    empty = judge_flows([], [])
    text = reports.render_markdown(empty, {}, empty.summary())
    assert "**INCOMPLETE: no unexpected would-be denies seen, but the window cannot be trusted" in text
    assert "- 0 flows seen (min_flows 1): the window is empty or flows were not collected" in text
    assert "```mermaid" not in text  # nothing to draw


def test_markdown_escapes_cells_and_mermaid_labels() -> None:
    assert reports._md("a|b\nc<d>") == "a\\|b c&lt;d&gt;"  # pylint: disable=protected-access
    assert reports._mermaid_text('x"y#z|w<v>') == "x#quot;y#35;z#124;w#lt;v#gt;"  # pylint: disable=protected-access
    odd = Peer(namespace="shop", pod='we"ird|pod', ip="10.0.0.1", labels=("k8s:app=x",))
    judgement = judge_flows([flow(odd, DB0, 5432)], [])
    text = reports.render_markdown(judgement, {}, judgement.summary())
    assert '["shop/we#quot;ird#124;pod"]' in text and "| shop/we\"ird\\|pod |" in text


def test_mermaid_graph_styles_unexpected_and_expected_edges() -> None:
    judgement, summary = mixed()
    text = reports.render_markdown(judgement, META, summary)
    graph = text.split("```mermaid\n", 1)[1].split("```", 1)[0].splitlines()
    edges = [line for line in graph if "-->" in line or "-.->" in line]
    styles = [line for line in graph if line.strip().startswith("linkStyle")]
    assert len(edges) == len(styles) and len(edges) == 10
    assert sum("-.->" in line for line in edges) == 1  # frontend -> db: 5432 and ICMP merged on one expected edge
    assert all(line.split("|")[1].startswith('"') for line in edges)


# -- JUnit -------------------------------------------------------------------------------------------------------------

def test_junit_is_valid_and_fails_the_right_cases() -> None:
    judgement, summary = mixed()
    root = ET.fromstring(reports.render_junit(judgement, META, summary))
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    failed = [case for case in cases if case.find("failure") is not None]
    assert int(suite.get("tests")) == len(cases) == len(judgement.groups) + 1
    assert int(suite.get("failures")) == int(root.get("failures")) == len(failed) == len(judgement.unexpected) + 1
    window = cases[0]
    assert window.get("name") == "window is complete" and window.find("failure").get("type") == "IncompleteWindow"
    assert suite.get("timestamp") == "2026-11-27T12:00:05"
    names = [case.get("name") for case in cases]
    assert len(names) == len(set(names))
    messages = {case.find("failure").get("message") for case in failed[1:]}
    assert "INGRESS monitoring/metrics-agent -> shop/db 9100/TCP x12 (nodes: prod-a/sim-worker-3)" in messages
    passing = [case for case in cases if case.find("failure") is None]
    assert all("expected by" in case.find("system-out").text for case in passing)


def test_junit_for_a_clean_window_has_no_failures() -> None:
    judgement = judge_flows([], [])
    root = ET.fromstring(reports.render_junit(judgement, {}, judgement.summary(flows_seen=10)))
    assert root.get("tests") == "1" and root.get("failures") == "0"


# -- suggested policies ------------------------------------------------------------------------------------------------

def policies() -> tuple[str, list[dict[str, Any]]]:
    judgement, summary = mixed()
    text = reports.render_suggested_policies(judgement, META, summary)
    return text, [doc for doc in yaml.safe_load_all(text) if doc]


def test_policies_only_allow_unexpected_flows() -> None:
    text, documents = policies()
    assert [(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in documents] == [
        ("shop", "allow-audited-db-ingress"), ("shop", "allow-audited-frontend-egress"),
        ("shop", "allow-audited-frontend-ingress")]
    assert "&id" not in text and "*id" not in text  # no YAML anchors
    for doc in documents:
        assert doc["apiVersion"] == "cilium.io/v2" and doc["kind"] == "CiliumNetworkPolicy"
        section = "ingress" if doc["metadata"]["name"].endswith("-ingress") else "egress"
        other = "egress" if section == "ingress" else "ingress"
        assert doc["spec"]["enableDefaultDeny"] == {section: False} and other not in doc["spec"]
        for key in doc["spec"]["endpointSelector"]["matchLabels"]:
            assert not key.startswith(("io.cilium.k8s.", "k8s:io.cilium")) and "io.kubernetes.pod.namespace" not in key
    db = documents[0]["spec"]
    assert db["endpointSelector"] == {"matchLabels": {"app": "db", "tier": "data"}}  # version differs between pods
    assert db["ingress"] == [
        {"fromEndpoints": [{"matchLabels": {"app.kubernetes.io/name": "metrics-agent",
                                            "k8s:io.kubernetes.pod.namespace": "monitoring"}}],
         "toPorts": [{"ports": [{"port": "9100", "protocol": "TCP"}]}]},
        {"fromEntities": ["host"], "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]},
    ]  # frontend -> db 5432 and ICMP are expected: not allowed; the replies never appear
    assert "41234" not in text


def test_egress_policy_with_fqdns_carries_the_dns_rule() -> None:
    _text, documents = policies()
    egress = documents[1]["spec"]["egress"]
    assert egress == [
        {"toEntities": ["kube-apiserver"], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},
        {"toCIDRSet": [{"cidr": "52.9.9.9/32"}], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},  # ipv4
        {"toFQDNs": [{"matchName": "api.stripe.com"}], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},
        {"toEndpoints": [{"matchLabels": {"k8s-app": "kube-dns", "k8s:io.kubernetes.pod.namespace": "kube-system"}}],
         "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
                      "rules": {"dns": [{"matchPattern": "*"}]}}]},
    ]  # the audited 53/UDP to kube-dns is part of the DNS rule, not a second rule


def test_ingress_from_world_is_a_cidr_and_unselectable_peers_are_listed() -> None:
    text, documents = policies()
    assert documents[2]["spec"]["ingress"] == [
        {"fromCIDR": ["203.0.113.7/32"], "toPorts": [{"ports": [{"port": "8443", "protocol": "TCP"}]}]}]
    skipped = text.split("# Unexpected audited flows with no suggested policy (write these by hand):\n", 1)[1]
    assert skipped.splitlines() == [
        "#   INGRESS shop/frontend -> reserved:host 22/TCP x1 (nodes: prod-a/sim-worker-1): the deciding endpoint is "
        "host (host firewall policies are CiliumClusterwideNetworkPolicies with a nodeSelector; not suggested)",
        "#   INGRESS 10.8.0.3 -> shop/db 5432/TCP x1 (nodes: prod-a/sim-worker-1): the peer (identity 16777217) has no "
        "namespace, labels or entity to select it by",
    ]


def test_the_yaml_writer_round_trips_tricky_values() -> None:
    value = {
        "plain": "kube-dns", "yes": "no", "null": None, "bools": [True, False],
        "numbers": [5432, "5432", "1e3", "0x1F"],
        "colon": "a: b", "hash": "a #b", "quote": 'say "hi"', "star": "*", "unicode": "caf\u00e9", "empty": "",
        "k8s:io.kubernetes.pod.namespace": "kube-system", "nested": [[1, 2], {"a": []}, {}, [], {"b": {"c": {}}}],
        "multi": "line one\nline two", "leading": " space", "dash": "-x", "date": "2026-11-27",
    }
    assert yaml.safe_load(reports.to_yaml(value)) == value
    assert reports.to_yaml({"a": [{"b": 1, "c": [2]}]}) == "a:\n- b: 1\n  c:\n  - 2\n"


def test_no_policy_when_nothing_is_unexpected() -> None:
    judgement = judge_flows([flow(FRONTEND, DB0, 5432)], parse_expected([{"to": {"workload": "db"}}]))
    text = reports.render_suggested_policies(judgement, {}, judgement.summary())
    assert "# No policy to suggest" in text and [doc for doc in yaml.safe_load_all(text) if doc] == []


# -- writing -----------------------------------------------------------------------------------------------------------

def test_write_reports_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    judgement, summary = real()
    paths = reports.write_reports(str(tmp_path / "out"), judgement, META, formats=("json", "md"), summary=summary)
    assert paths == {"json": str(tmp_path / "out" / "report.json"), "md": str(tmp_path / "out" / "report.md")}
    before = (tmp_path / "out" / "report.json").read_text()

    def crash(_source: str, _target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(reports.ReportError, match=r"cannot write '.*report.json': No space left on device"):
        reports.write_reports(str(tmp_path / "out"), judge_flows([], []), META, formats=("json",))
    assert (tmp_path / "out" / "report.json").read_text() == before  # the old report is untouched
    assert sorted(os.listdir(tmp_path / "out")) == ["report.json", "report.md"]  # no temporary file left behind


def test_write_reports_fsyncs_before_renaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    reports.write_reports(str(tmp_path), judge_flows([], []), {}, formats=("junit",))
    assert calls[:2] == ["fsync", "replace"]
    assert oct((tmp_path / "junit.xml").stat().st_mode & 0o777) == oct(0o644)


def test_unusable_report_directory_is_named(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(reports.ReportError, match=f"report directory '{afile}' is not a directory"):
        reports.write_reports(str(afile), judge_flows([], []), {})
    with pytest.raises(reports.ReportError, match=f"report directory '{afile / 'sub'}' cannot be created"):
        reports.write_reports(str(afile / "sub"), judge_flows([], []), {})
    with pytest.raises(ValueError, match="unknown report format 'html'"):
        reports.write_reports(str(tmp_path), judge_flows([], []), {}, formats=("json", "html"))
