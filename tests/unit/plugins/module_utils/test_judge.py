"""Judging: windows, the expected-deny rule format and its errors, matching, grouping and completeness."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from simcluster.fixtures import shared_fixtures_dir

from ansible_collections.netpol.cilium.plugins.module_utils._flow_files import FileStats, read_flow_files
from ansible_collections.netpol.cilium.plugins.module_utils._flows import FlowRecord, LostEvents, NodeStatus, Peer
from ansible_collections.netpol.cilium.plugins.module_utils._judge import (
    PortSpec,
    Window,
    format_duration,
    judge_flows,
    parse_duration,
    parse_expected,
    parse_window,
    port_text,
)

REAL = shared_fixtures_dir() / "hubble" / "real-1.15.1"
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)

FRONTEND = Peer(namespace="shop", pod="frontend-7d9f8c6b5-abcde", workload="frontend", identity=53414,
                labels=("k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"), ip="10.0.1.5")
DB = Peer(namespace="shop", pod="db-0", workload="db", identity=60273,
          labels=("k8s:app=db", "k8s:tier=data", "k8s:io.kubernetes.pod.namespace=shop"), ip="10.0.1.9")
AGENT = Peer(namespace="monitoring", pod="metrics-agent-x1y2z", workload="metrics-agent", identity=42001,
             labels=("k8s:app.kubernetes.io/name=metrics-agent",), ip="10.0.2.7")
WORLD = Peer(labels=("reserved:world",), identity=2, entity="world", ip="52.1.2.3", fqdns=("api.stripe.com",))
WORLD6 = Peer(labels=("reserved:world-ipv6",), identity=10, entity="world-ipv6", ip="2001:db8::7")
HOST = Peer(labels=("reserved:host",), identity=1, entity="host", ip="192.168.1.10")


def flow(source: Peer = FRONTEND, destination: Peer = DB, port: int | None = 5432, protocol: str | None = "TCP",
         direction: str = "INGRESS", **changes: Any) -> FlowRecord:
    values: dict[str, Any] = {"time": "2026-11-27T11:00:00Z", "node": "prod-a/worker-1", "verdict": "AUDIT",
                              "event_type": 5, "direction": direction, "is_reply": False, "source": source,
                              "destination": destination, "protocol": protocol, "port": port}
    values.update(changes)
    return FlowRecord(**values)


def matches(rule: dict[str, Any], record: FlowRecord) -> bool:
    [compiled] = parse_expected([rule])
    return compiled.matches(record)


# -- windows -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("2h", 7200), ("1h30m", 5400), ("90s", 90),
                                               ("1d", 86400), ("1d2h3m4s", 93784), (" 5M ", 300), (120, 120)])
def test_durations(text: Any, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "15", "m", "1x", "1h-30m", "1.5h", "-5m", True, [], None, -1])
def test_bad_durations_name_the_option_and_the_format(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^duration: expected a relative time such as 15m, 2h, 1h30m, 90s or 1d"):
        parse_duration(bad)


def test_windows() -> None:
    assert parse_window(now=NOW) == Window(None, None)
    assert parse_window(since="15m", now=NOW) == Window(NOW - timedelta(minutes=15), None)
    assert parse_window(since="2h", until="1h", now=NOW) == Window(NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    assert parse_window(duration="1h30m", now=NOW) == Window(NOW - timedelta(minutes=90), NOW)
    start = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc)
    assert parse_window(since="2026-11-27T01:00:00Z", duration="1h") == Window(start, start + timedelta(hours=1))
    assert parse_window(until="2026-11-27T03:00:00+02:00", duration="1d") == Window(
        start - timedelta(days=1), start)
    assert parse_window(since=start, until="2026-11-27T01:00:00.5Z").duration == timedelta(milliseconds=500)
    assert parse_window(since="2026-11-27T01:00:00Z", duration="1h30m").to_dict() == {
        "since": "2026-11-27T01:00:00Z", "until": "2026-11-27T02:30:00Z", "duration": "1h30m",
        "duration_seconds": 5400}
    assert format_duration(timedelta(seconds=90)) == "1m30s" and format_duration(timedelta(0)) == "0s"


@pytest.mark.parametrize(("options", "message"), [
    ({"since": "yesterday"}, "since: 'yesterday' is neither an RFC 3339 time (such as 2026-09-01T12:00:00Z) nor a "
                             "relative time such as 15m, 2h, 1h30m, 90s or 1d"),
    ({"until": "2026-13-01T00:00:00Z"}, "until: '2026-13-01T00:00:00Z' is neither an RFC 3339 time"),
    ({"since": "2026-11-27T01:00:00"}, "since: '2026-11-27T01:00:00' is neither an RFC 3339 time"),
    ({"since": datetime(2026, 11, 27)}, "since: 2026-11-27T00:00:00 has no timezone"),
    ({"duration": "soon"}, "duration: expected a relative time such as 15m"),
    ({"duration": "0s"}, "duration: must be longer than 0s"),
    ({"since": "1h", "until": "2h"}, "since (2026-11-27T11:00:00Z) must be before until (2026-11-27T10:00:00Z)"),
    ({"since": "1h", "until": "5m", "duration": "10m"}, "since, until, duration: give at most two of them"),
])
def test_bad_windows_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_window(now=NOW, **options)
    assert str(error.value).startswith(message)


# -- the rule format ---------------------------------------------------------------------------------------------------

def test_a_full_rule() -> None:
    [rule] = parse_expected([{
        "name": "metrics scrape", "reason": "agent is moving to a ServiceMonitor", "direction": "Ingress",
        "from": {"namespace": "monitoring", "workload": "metrics-*", "labels": {"k8s:app.kubernetes.io/name":
                                                                                "metrics-agent"}},
        "to": {"namespace": "shop", "pod": "db-?", "identity": 60273, "cidr": "10.0.1.0/24"},
        "ports": [9100, "9187/tcp", "8000-8080", "8000-8080/UDP", "53/UDP", "SCTP", "8/ICMPv4", "ICMPv6"],
    }])
    assert (rule.index, rule.label, rule.direction) == (0, "metrics scrape", "INGRESS")
    assert rule.source is not None and rule.source.labels == (("app.kubernetes.io/name", "metrics-agent"),)
    assert [spec.text() for spec in rule.ports] == [
        "9100", "9187/TCP", "8000-8080", "8000-8080/UDP", "53/UDP", "1-65535/SCTP", "8/ICMPv4", "0-255/ICMPv6"]
    assert rule.to_dict() == {"index": 0, "name": "metrics scrape", "reason": "agent is moving to a ServiceMonitor"}
    assert rule.matches(flow(AGENT, DB, 9100))
    assert not rule.matches(flow(AGENT, DB, 9100, direction="EGRESS"))
    assert parse_expected(None) == [] and parse_expected([]) == []
    [bare] = parse_expected([{"ports": 5432}])  # a single port needs no list; reason and name are optional
    assert bare.ports == (PortSpec(5432, 5432),) and bare.label == "expected[0]" and bare.reason is None


@pytest.mark.parametrize(("rules", "message"), [
    ("nope", "expected: expected a list of rules, got str"),
    ([{"from": {"namespace": "a"}}, "x"], "expected[1]: expected a mapping with keys direction, from, name, ports, "
                                          "reason, to, got str 'x'"),
    ([{}, {}, {"from": {"namespce": "shop"}}], "expected[0]: give at least one of from, to, ports or direction"),
    ([{"to": {"namespace": "a"}}, {"to": {"namespace": "a"}}, {"from": {"namespce": "shop"}}],
     "expected[2].from: unknown key 'namespce' (expected one of cidr, entity, fqdn, identity, labels, namespace, pod, "
     "workload)"),
    ([{"to": {"namespace": "a"}, "port": 5432}], "expected[0]: unknown key 'port' (expected one of direction, from, "
                                                 "name, ports, reason, to)"),
    ([{"from": "shop"}], "expected[0].from: expected a mapping with keys cidr, entity"),
    ([{"from": {}, "to": {"namespace": "shop"}}], "expected[0].from: empty (give at least one of"),
    ([{"from": {"namespace": ""}}], "expected[0].from.namespace: expected a non-empty string"),
    ([{"from": {"workload": 5}}], "expected[0].from.workload: expected a string, got int 5"),
    ([{"to": {"labels": "app=db"}}], "expected[0].to.labels: expected a non-empty mapping of label keys to values"),
    ([{"to": {"labels": {"app": ["db"]}}}], "expected[0].to.labels.app: expected a string label value, got list"),
    ([{"to": {"identity": "x"}}], "expected[0].to.identity: expected a numeric security identity"),
    ([{"to": {"identity": True}}], "expected[0].to.identity: expected a numeric security identity"),
    ([{"to": {"entity": "internet"}}], "expected[0].to.entity: expected one of all, cluster, health, host, ingress, "
                                       "init, kube-apiserver, remote-node, unmanaged, world, world-ipv4, world-ipv6, "
                                       "got 'internet'"),
    ([{"to": {"fqdn": "http://x.com"}}], "expected[0].to.fqdn: expected a DNS name or glob"),
    ([{"to": {"cidr": "10.0.0.0/33"}}], "expected[0].to.cidr: expected an IPv4 or IPv6 network such as 10.0.0.0/8 or "
                                        "2001:db8::/32, got '10.0.0.0/33'"),
    ([{"to": {"cidr": 10}}], "expected[0].to.cidr: expected an IPv4 or IPv6 network"),
    ([{"direction": "both"}], "expected[0].direction: expected ingress or egress, got 'both'"),
    ([{"ports": [70000]}], "expected[0].ports[0]: 70000 is out of range in 70000 (expected a port 1-65535)"),
    ([{"ports": ["0/TCP"]}], "expected[0].ports[0]: 0 is out of range in '0/TCP' (expected a port 1-65535)"),
    ([{"ports": [443, "8080-8000"]}], "expected[0].ports[1]: range '8080-8000' ends before it starts"),
    ([{"ports": ["53/QUIC"]}], "expected[0].ports[0]: unknown protocol 'QUIC' in '53/QUIC' (expected TCP, UDP, SCTP, "
                               "ANY, ICMPv4 or ICMPv6)"),
    ([{"ports": ["300/ICMPv4"]}], "expected[0].ports[0]: 300 is out of range in '300/ICMPv4' (expected an ICMP type"),
    ([{"ports": ["https"]}], "expected[0].ports[0]: unknown protocol 'https'"),
    ([{"ports": ["80:443"]}], "expected[0].ports[0]: expected a port 1-65535 or a string like"),
    ([{"ports": [True]}], "expected[0].ports[0]: expected a port 1-65535 or a string like"),
    ([{"ports": []}], "expected[0]: give at least one of from, to, ports or direction"),
    ([{"ports": {"a": 1}}], "expected[0].ports: expected a non-empty list of ports"),
    ([{"direction": "egress", "reason": 5}], "expected[0].reason: expected a string, got int 5"),
    ([{"direction": "egress", "name": ["x"]}], "expected[0].name: expected a string, got list"),
])
def test_rule_errors_name_the_rule_the_field_and_what_was_expected(rules: Any, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_expected(rules)
    assert str(error.value).startswith(message), str(error.value)


# -- matching ----------------------------------------------------------------------------------------------------------

def test_from_and_to_match_source_and_destination_whatever_the_direction() -> None:
    egress = flow(FRONTEND, DB, direction="EGRESS")
    assert matches({"from": {"workload": "frontend"}, "to": {"workload": "db"}}, egress)
    assert matches({"from": {"workload": "frontend"}, "to": {"workload": "db"}}, flow())
    assert not matches({"from": {"workload": "db"}}, flow())
    assert matches({"direction": "EGRESS"}, egress) and not matches({"direction": "egress"}, flow())


@pytest.mark.parametrize(("peer", "hit", "miss"), [
    ({"namespace": "shop"}, DB, AGENT),
    ({"namespace": "sh*"}, DB, AGENT),
    ({"workload": "db"}, DB, FRONTEND),
    ({"pod": "db-*"}, DB, FRONTEND),
    ({"labels": {"app": "db"}}, DB, FRONTEND),
    ({"labels": {"k8s:app": "db", "tier": "data"}}, DB, FRONTEND),
    ({"labels": {"app": "db", "tier": "web"}}, None, DB),
    ({"identity": 60273}, DB, FRONTEND),
    ({"entity": "world"}, WORLD, DB),
    ({"entity": "world"}, WORLD6, HOST),
    ({"entity": "world-ipv6"}, WORLD6, WORLD),
    ({"entity": "host"}, HOST, WORLD),
    ({"entity": "cluster"}, HOST, WORLD),
    ({"entity": "cluster"}, DB, WORLD6),
    ({"entity": "all"}, WORLD, None),
    ({"fqdn": "*.stripe.com"}, WORLD, WORLD6),
    ({"fqdn": "API.Stripe.com."}, WORLD, DB),
    ({"fqdn": "*.example.com"}, None, WORLD),
    ({"cidr": "52.0.0.0/8"}, WORLD, WORLD6),
    ({"cidr": "2001:db8::/32"}, WORLD6, WORLD),
    ({"cidr": "10.0.1.9"}, DB, FRONTEND),
    ({"cidr": "10.0.1.0/24"}, DB, Peer(namespace="shop")),
])
def test_peer_fields(peer: dict[str, Any], hit: Peer | None, miss: Peer | None) -> None:
    if hit is not None:
        assert matches({"to": peer}, flow(FRONTEND, hit))
    if miss is not None:
        assert not matches({"to": peer}, flow(FRONTEND, miss))


@pytest.mark.parametrize(("spec", "hits", "misses"), [
    (5432, [("TCP", 5432), ("UDP", 5432), ("SCTP", 5432)], [("TCP", 5433), ("ICMPv4", 8), (None, None)]),
    ("53/UDP", [("UDP", 53)], [("TCP", 53)]),
    ("8000-8080", [("TCP", 8000), ("UDP", 8080)], [("TCP", 7999), ("TCP", 8081)]),
    ("8000-8080/udp", [("UDP", 8040)], [("TCP", 8040)]),
    ("53/ANY", [("TCP", 53), ("UDP", 53)], [("ICMPv4", 53)]),
    ("8/ICMPv4", [("ICMPv4", 8)], [("ICMPv6", 8), ("TCP", 8)]),
    ("ICMPv6", [("ICMPv6", 128), ("ICMPv6", 0)], [("ICMPv4", 8)]),
    ("TCP", [("TCP", 1), ("TCP", 65535)], [("UDP", 53)]),
])
def test_ports(spec: Any, hits: list[tuple[str, int]], misses: list[tuple[str | None, int | None]]) -> None:
    for protocol, port in hits:
        assert matches({"ports": [spec]}, flow(port=port, protocol=protocol)), (protocol, port)
    for protocol, port in misses:
        assert not matches({"ports": [spec]}, flow(port=port, protocol=protocol)), (protocol, port)


def test_port_text() -> None:
    assert [port_text(*args) for args in (("TCP", 9100), ("ICMPv4", 8), ("UDP", None), (None, None))] == [
        "9100/TCP", "ICMPv4 type 8", "UDP", "any"]


# -- judging -----------------------------------------------------------------------------------------------------------

def judge_real(rules: list[dict[str, Any]] | None = None):
    stats = FileStats()
    judgement = judge_flows(read_flow_files([str(REAL / "audit-ingress.jsonl")], stats=stats),
                            parse_expected(rules or []))
    return judgement, stats


def test_real_audit_flows_group_by_port() -> None:
    judgement, stats = judge_real()
    assert judgement.failure_lines() == [
        "INGRESS shop/frontend -> shop/db 5432/TCP x3 (nodes: prod-a/real-1)",
        "INGRESS shop/frontend -> shop/db 9187/TCP x1 (nodes: prod-a/real-1)"]
    postgres = judgement.groups[0]
    assert (postgres.first_seen, postgres.last_seen) == ("2026-11-27T01:52:34.405668513Z",
                                                         "2026-11-27T01:52:34.416352708Z")
    assert (postgres.source_pods, postgres.destination_pods) == (["fe-real"], ["db-real"])
    assert postgres.denied_by == set() and postgres.rule is None
    summary = judgement.summary(flows_seen=stats.flows)
    assert (summary["result"], summary["passed"], summary["complete"]) == ("fail", False, True)
    assert (summary["audited"], summary["unexpected_groups"], summary["unexpected_flows"]) == (4, 2, 4)


def test_expected_rules_and_unused_ones() -> None:
    judgement, _stats = judge_real([
        {"name": "exporter", "reason": "the exporter port stays closed", "to": {"workload": "db"}, "ports": [9187]},
        {"name": "stale", "reason": "nothing matches", "from": {"namespace": "payments"}},
        {"name": "shadowed", "to": {"labels": {"app": "db"}}, "ports": ["9000-9999/TCP"]},
    ])
    assert [group.describe() for group in judgement.unexpected] == [
        "INGRESS shop/frontend -> shop/db 5432/TCP x3 (nodes: prod-a/real-1)"]
    [expected] = judgement.expected
    assert expected.rule is not None and expected.rule.label == "exporter"  # the first matching rule wins
    assert [rule.label for rule in judgement.unused_rules] == ["stale", "shadowed"]
    summary = judgement.summary()
    assert (summary["expected_groups"], summary["expected_flows"], summary["unused_rules"]) == (
        1, 1, ["stale", "shadowed"])


def test_all_expected_is_a_pass() -> None:
    judgement, stats = judge_real([{"from": {"workload": "frontend"}, "to": {"workload": "db"}, "reason": "ok"}])
    summary = judgement.summary(flows_seen=stats.flows)
    assert (summary["result"], summary["passed"]) == ("pass", True)


def test_replies_and_other_events_are_counted_not_judged() -> None:
    events = [
        flow(is_reply=True),
        flow(verdict="FORWARDED", event_type=4, is_reply=None),
        flow(verdict="DROPPED", event_type=1),
        flow(is_reply=None),  # unknown reply state still counts as a finding
        flow(),
    ]
    judgement = judge_flows(events, [])
    assert (judgement.flows_seen, judgement.audited, judgement.replies_skipped, judgement.other_skipped) == (5, 2, 1, 2)
    assert [group.count for group in judgement.groups] == [2]
    dropped = judge_flows(events, [], verdicts=["dropped"])
    assert dropped.audited == 0  # DROPPED, but a drop event (type 1), not a policy verdict


def test_grouping_keys_and_samples() -> None:
    pods = [FRONTEND._replace(pod=f"frontend-7d9f8c6b5-{suffix}") for suffix in "abcde"]
    events = [flow(pod, DB, node=f"prod-a/worker-{index % 2}", time=f"2026-11-27T11:00:0{index}.{index}Z",
                   denied_by=("shop/db-ingress",) if index == 2 else ())
              for index, pod in enumerate(pods)]
    events += [flow(FRONTEND, DB, port=5433), flow(FRONTEND, DB, direction="EGRESS"),
               flow(FRONTEND, DB, protocol="UDP"), flow(FRONTEND._replace(ip="10.9.9.9"), DB)]
    judgement = judge_flows(events, [])
    assert [(group.direction, group.protocol, group.port, group.count) for group in judgement.groups] == [
        ("EGRESS", "TCP", 5432, 1), ("INGRESS", "TCP", 5432, 6), ("INGRESS", "TCP", 5433, 1),
        ("INGRESS", "UDP", 5432, 1)]
    group = judgement.groups[1]
    # the three smallest names, sorted: the same whatever the order of the flows
    assert group.source_pods == ["frontend-7d9f8c6b5-a", "frontend-7d9f8c6b5-abcde", "frontend-7d9f8c6b5-b"]
    assert group.nodes == {"prod-a/worker-0", "prod-a/worker-1"} and group.denied_by == {"shop/db-ingress"}
    assert (group.first_seen, group.last_seen) == ("2026-11-27T11:00:00.0Z", "2026-11-27T11:00:04.4Z")
    # 11:00:00.0Z and 11:00:00Z are the same instant: the first one seen is kept
    assert judgement.first_seen == "2026-11-27T11:00:00.0Z" and judgement.last_seen == "2026-11-27T11:00:04.4Z"


def test_first_and_last_seen_compare_instants_not_strings() -> None:
    events = [flow(time=moment) for moment in ("2026-11-27T11:00:00.4Z", "2026-11-27T11:00:00.39Z",
                                               "2026-11-27T11:00:00Z")]
    [group] = judge_flows(events, []).groups
    assert (group.first_seen, group.last_seen) == ("2026-11-27T11:00:00Z", "2026-11-27T11:00:00.4Z")


def test_world_peers_group_by_name_and_address() -> None:
    events = [flow(FRONTEND, WORLD, 443, direction="EGRESS"), flow(FRONTEND, WORLD._replace(ip="52.9.9.9"), 443,
                                                                   direction="EGRESS"),
              flow(FRONTEND, WORLD._replace(fqdns=()), 443, direction="EGRESS")]
    judgement = judge_flows(events, [])
    assert [group.describe() for group in judgement.groups] == [
        "EGRESS shop/frontend -> world:52.1.2.3 443/TCP x1 (nodes: prod-a/worker-1)",
        "EGRESS shop/frontend -> world:api.stripe.com 443/TCP x2 (nodes: prod-a/worker-1)"]


def test_a_pods_address_is_left_out_of_its_group_but_not_its_names() -> None:
    """Flows of one pod pair share a group whatever the pods' addresses; the DNS names Hubble gave a pod (a
    headless service) are still sampled from every flow; a peer with a namespace but no pod or workload is named by
    its address, so each address is a group of its own."""
    named = DB._replace(fqdns=("db-0.db.shop.svc.cluster.local",))
    events = [flow(FRONTEND, DB), flow(FRONTEND._replace(ip="10.0.1.6"), DB._replace(ip="10.0.1.10")),
              flow(FRONTEND, named)]
    [group] = judge_flows(events, []).groups
    assert group.count == 3 and group.destination_names == ["db-0.db.shop.svc.cluster.local"]
    bare = Peer(namespace="shop", identity=70001, ip="10.0.7.1")
    events = [flow(bare, DB), flow(bare._replace(ip="10.0.7.2"), DB), flow(bare, DB)]
    assert [(group.source, group.count) for group in judge_flows(events, []).groups] == [
        ("10.0.7.1", 2), ("10.0.7.2", 1)]


def test_dual_stack_world_peers_are_named_by_address() -> None:
    events = [flow(FRONTEND, WORLD6, 443, direction="EGRESS"), flow(FRONTEND, WORLD6._replace(ip="2001:db8::8"), 443,
                                                                    direction="EGRESS")]
    assert [group.destination for group in judge_flows(events, []).groups] == ["world:2001:db8::7", "world:2001:db8::8"]


def test_cidr_rules_see_every_address() -> None:
    rules = parse_expected([{"from": {"cidr": "10.0.1.0/24"}, "reason": "old subnet"}])
    events = [flow(FRONTEND), flow(FRONTEND._replace(ip="10.0.9.5"))]
    judgement = judge_flows(events, rules)
    assert [(group.expected, group.count) for group in judgement.groups] == [(False, 1), (True, 1)]


def test_workloads_mapping_renames_peers() -> None:
    judgement = judge_flows([flow(), flow(FRONTEND._replace(pod="legacy-web-1"))], [],
                            workloads={"shop/legacy-web-1": "web"})
    assert [group.source for group in judgement.groups] == ["shop/frontend", "shop/web"]


def test_memory_is_bounded_by_groups_not_flows() -> None:
    def many():
        for index in range(200000):
            yield flow(FRONTEND._replace(pod=f"frontend-{index % 50}", ip=f"10.0.{index % 200}.{index % 250}"), DB,
                       port=5432 + index % 3, time=f"2026-11-27T11:{index // 6000:02d}:00Z")
    judgement = judge_flows(many(), [])
    assert len(judgement.groups) == 3 and sum(group.count for group in judgement.groups) == 200000
    assert all(len(group.source_pods) == 3 for group in judgement.groups)


def test_too_many_groups_make_the_window_incomplete() -> None:
    events = [flow(port=port) for port in range(1000, 1010)]
    judgement = judge_flows(events, [], max_groups=4)
    assert len(judgement.groups) == 4 and judgement.overflow_flows == 6
    summary = judgement.summary()
    assert summary["complete"] is False and "6 audited flows were not grouped: more than 4 groups" in \
        summary["incomplete_reasons"]


# -- completeness ------------------------------------------------------------------------------------------------------

def test_an_empty_window_is_never_green() -> None:
    summary = judge_flows([], []).summary(window=parse_window(since="1h", now=NOW))
    assert (summary["result"], summary["passed"], summary["complete"]) == ("incomplete", False, False)
    assert summary["incomplete_reasons"] == [
        "0 flows seen (min_flows 1): the window is empty or flows were not collected"]
    assert summary["window"] == {"since": "2026-11-27T11:00:00Z", "until": None, "duration": None,
                                 "duration_seconds": None}


def test_flows_seen_by_the_source_count_for_min_flows() -> None:
    judgement = judge_flows([], [])
    assert judgement.summary(flows_seen=88)["complete"] is True
    assert judgement.summary(flows_seen=88, min_flows=100)["incomplete_reasons"] == [
        "88 flows seen (min_flows 100): the window is empty or flows were not collected"]


def test_lost_events_make_the_window_incomplete() -> None:
    events = [flow(), LostEvents("HUBBLE_RING_BUFFER", 12, "prod-a/worker-1", None),
              LostEvents("PERF_EVENT_RING_BUFFER", 3, "prod-a/worker-2", None)]
    judgement = judge_flows(events, parse_expected([{"to": {"workload": "db"}}]))
    assert (judgement.lost_events, judgement.lost_event_records) == (15, 2)
    summary = judgement.summary()
    assert (summary["result"], summary["complete"]) == ("incomplete", False)
    assert summary["incomplete_reasons"] == [
        "Hubble lost 15 events (max_lost_events 0): audited flows may be missing"]
    assert judgement.summary(max_lost_events=15)["complete"] is True


def test_unavailable_nodes_make_the_window_incomplete() -> None:
    events = [flow(), NodeStatus("NODE_CONNECTED", ("prod-a/worker-1",), "", None),
              NodeStatus("NODE_UNAVAILABLE", ("prod-a/worker-2", "prod-a/worker-3"), "connection refused", None),
              NodeStatus("NODE_ERROR", (), "relay timeout", None)]
    judgement = judge_flows(events, [])
    assert judgement.nodes_unavailable == {"prod-a/worker-2", "prod-a/worker-3", "(unnamed node)"}
    assert judgement.node_messages == ["NODE_UNAVAILABLE: connection refused", "NODE_ERROR: relay timeout"]
    summary = judgement.summary()
    assert (summary["result"], summary["nodes_unavailable"]) == (
        "fail", ["(unnamed node)", "prod-a/worker-2", "prod-a/worker-3"])
    assert summary["incomplete_reasons"] == [
        "nodes unavailable during the window: (unnamed node), prod-a/worker-2, prod-a/worker-3"]


def test_malformed_lines_and_source_errors_make_the_window_incomplete() -> None:
    judgement = judge_flows([flow()], parse_expected([{"to": {"workload": "db"}}]))
    assert judgement.summary(malformed_lines=2, max_malformed=2)["complete"] is True
    summary = judgement.summary(malformed_lines=3, max_malformed=2, source_errors=["a.gz: corrupt", "b.gz: corrupt"])
    assert summary["incomplete_reasons"] == ["3 malformed lines (max_malformed 2)",
                                             "2 flow source errors: a.gz: corrupt ..."]
    assert summary["source_errors"] == ["a.gz: corrupt", "b.gz: corrupt"]
