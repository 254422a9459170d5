"""docs/expected-denies.md cannot rot: every YAML example is a valid rule list for the module's own parser, the examples
marked *matches* match the flow they describe, and the mistakes table is refused with the message it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.netpol.cilium.plugins.module_utils._flows import FlowRecord, Peer
from ansible_collections.netpol.cilium.plugins.module_utils._judge import judge_flows, parse_expected

PAGE = Path(__file__).resolve().parents[3] / "docs" / "expected-denies.md"


def sections() -> dict[str, list[list]]:
    """Heading -> the rule lists of its ```yaml blocks (under `expected` or `audit_expected`)."""
    found: dict[str, list[list]] = {}
    heading = ""
    for part in re.split(r"^(#+ .*)$", PAGE.read_text(), flags=re.M):
        if part.startswith("#"):
            heading = part.lstrip("#").strip()
            continue
        for block in re.findall(r"^```yaml\n(.*?)^```", part, re.S | re.M):
            data = yaml.safe_load(block)
            assert isinstance(data, dict) and len(data) == 1, f"{heading}: one key, expected or audit_expected"
            [(key, rules)] = data.items()
            assert key in ("expected", "audit_expected"), f"{heading}: unknown top-level key {key}"
            found.setdefault(heading, []).append(rules)
    return found


def flow(source: Peer, destination: Peer, direction: str, protocol: str, port: int) -> FlowRecord:
    return FlowRecord("2026-11-27T10:00:00Z", "prod/worker-1", "AUDIT", 5, direction, False, source, destination,
                      protocol, port)


def pod(namespace: str, workload: str, **extra) -> Peer:
    labels = (f"k8s:app={workload}", f"k8s:io.kubernetes.pod.namespace={namespace}")
    return Peer(namespace=namespace, pod=f"{workload}-7d9c8f6b5-x2x8q", workload=workload, labels=labels,
                identity=16777300, **extra)


FRONTEND, DB = pod("shop", "frontend"), pod("shop", "db")
# The flows the examples marked *matches* describe: heading -> (flow, name of the rule that must take it).
MATCHES = {
    "Ingress from another namespace (*matches*)": [
        (flow(pod("monitoring", "metrics-agent"), DB, "INGRESS", "TCP", 9100), "no metrics scrape of the database")],
    "Egress to an FQDN (*matches*)": [
        (flow(FRONTEND, Peer(labels=("reserved:world",), identity=2, entity="world", ip="198.51.100.7",
                             fqdns=("eu.tracking.example.com.",)), "EGRESS", "TCP", 443),
         "no third-party tracking from the frontend")],
    "World by CIDR (*matches*)": [
        (flow(DB, Peer(labels=("reserved:world-ipv4",), identity=9, entity="world-ipv4", ip="203.0.113.40"),
              "EGRESS", "TCP", 22), "no direct connections to the old datacenter"),
        (flow(DB, Peer(labels=("reserved:world-ipv6",), identity=10, entity="world-ipv6", ip="2001:db8::1"),
              "EGRESS", "TCP", 443), "expected[1]")],
    "Reserved entities (*matches*)": [
        (flow(FRONTEND, Peer(labels=("reserved:kube-apiserver", "reserved:remote-node"), identity=7,
                             entity="kube-apiserver", ip="10.0.0.1"), "EGRESS", "TCP", 6443),
         "shop pods do not call the API server"),
        (flow(FRONTEND, Peer(labels=("reserved:host",), identity=1, entity="host", ip="10.0.0.5"), "EGRESS", "TCP",
              30080), "no node ports from pods")],
    "ICMP (*matches*)": [
        (flow(pod("monitoring", "prober"), DB, "INGRESS", "ICMPv4", 8), "no pings into the database namespace")],
}
# Flows the same examples must NOT cover (the doc's claims about what a rule leaves out).
MISSES = {
    "Ingress from another namespace (*matches*)": [
        flow(pod("monitoring", "metrics-agent"), DB, "INGRESS", "TCP", 5432)],
    "Egress to an FQDN (*matches*)": [
        flow(FRONTEND, Peer(entity="world", labels=("reserved:world",), fqdns=("tracking.example.com",)), "EGRESS",
             "TCP", 443)],
    "World by CIDR (*matches*)": [
        flow(DB, Peer(labels=("reserved:world",), entity="world", ip="198.51.100.1"), "EGRESS", "TCP", 22)],
    "ICMP (*matches*)": [flow(pod("monitoring", "prober"), DB, "INGRESS", "ICMPv4", 0)],
}


def test_the_page_has_examples_for_every_peer_key_port_form_and_entity_it_documents() -> None:
    text = PAGE.read_text()
    found = sections()
    assert len([rules for lists in found.values() for rules in lists]) >= 11
    for key in ("namespace:", "workload:", "pod:", "labels:", "identity:", "entity:", "fqdn:", "cidr:", "direction:",
                "reason:", "name:", "ICMPv4", "8000-8080", "kube-apiserver", "remote-node"):
        assert key in text, key


@pytest.mark.parametrize("heading", sorted(sections()))
def test_every_yaml_example_is_accepted_by_the_rule_parser(heading: str) -> None:
    for rules in sections()[heading]:
        assert parse_expected(rules), heading


@pytest.mark.parametrize("heading", sorted(MATCHES))
def test_examples_marked_matches_take_the_flow_they_describe(heading: str) -> None:
    [rules] = sections()[heading]
    compiled = parse_expected(rules)
    for sample, rule_name in MATCHES[heading]:
        [group] = judge_flows([sample], compiled).groups
        assert group.expected and group.rule.label == rule_name, (heading, sample)
    for sample in MISSES.get(heading, []):
        [group] = judge_flows([sample], compiled).groups
        assert not group.expected, (heading, sample)


def test_every_marked_example_has_sample_flows() -> None:
    marked = {heading for heading in sections() if "*matches*" in heading}
    assert marked == set(MATCHES)


def test_the_mistakes_table_is_refused_with_the_message_it_shows() -> None:
    text = PAGE.read_text()
    table = text[text.index("## Mistakes the parser refuses"):]
    rows = re.findall(r"^\| `(\{.*\})` \| `(.*)` \|$", table, re.M)
    assert len(rows) >= 6
    for rule, message in rows:
        with pytest.raises(ValueError) as refused:
            parse_expected([yaml.safe_load(rule)])
        assert message.rstrip(". ") in str(refused.value) or all(
            part in str(refused.value) for part in message.split("...")), (rule, str(refused.value))
