"""The file flow source: real Hubble output, exporter lines, legacy bare flows, gzip, globs, broken lines, prefilter."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from simcluster.fixtures import shared_fixtures_dir

from ansible_collections.netpol.cilium.plugins.module_utils import _flow_files as flow_files
from ansible_collections.netpol.cilium.plugins.module_utils._flow_files import (
    MAX_SAMPLES_PER_FILE,
    FileStats,
    FlowFileError,
    parse_rfc3339,
    read_flow_files,
    time_key,
)
from ansible_collections.netpol.cilium.plugins.module_utils._flows import FlowRecord, LostEvents, NodeStatus, Peer

HUBBLE = shared_fixtures_dir() / "hubble"
REAL = HUBBLE / "real-1.15.1"
GENERATOR = shared_fixtures_dir().parent / "bench" / "gen_hubble_flows.py"


def read(paths: list[str] | list[Path], **options) -> tuple[list, FileStats]:
    stats = FileStats()
    events = list(read_flow_files([str(path) for path in paths], stats=stats, **options))
    return events, stats


def real_lines(name: str) -> list[str]:
    return (REAL / name).read_text().splitlines()


def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text("".join(line + end for line in lines))
    return path


# -- the real fixtures -------------------------------------------------------------------------------------------------

def test_real_audit_flows_are_normalised() -> None:
    events, stats = read([REAL / "audit-ingress.jsonl"])
    assert len(events) == 4 and all(isinstance(event, FlowRecord) for event in events)
    assert [event.port for event in events] == [5432, 5432, 5432, 9187]
    first = events[0]
    assert (first.verdict, first.event_type, first.direction, first.is_reply) == ("AUDIT", 5, "INGRESS", False)
    assert (first.protocol, first.node, first.time) == ("TCP", "prod-a/real-1", "2026-11-27T01:52:34.405668513Z")
    assert (first.drop_reason, first.denied_by, first.match_type) == (None, (), 0)
    source, destination = first.source, first.destination
    assert (source.namespace, source.pod, source.workload, source.identity, source.endpoint_id, source.ip) == (
        "shop", "fe-real", "frontend", 53414, 1473, "10.200.1.197")
    assert (destination.namespace, destination.pod, destination.workload, destination.identity) == (
        "shop", "db-real", "db", 60273)
    assert destination.label_map()["app"] == "db" and destination.entity is None
    assert first.local is destination and first.remote is source
    assert stats.to_dict() == {
        "files": 1, "file_names": [str(REAL / "audit-ingress.jsonl")],
        "bytes": (REAL / "audit-ingress.jsonl").stat().st_size,
        "lines": 4, "blank_lines": 0, "parsed": 4, "flows": 4, "matched": 4, "filtered": 0, "malformed": 0,
        "malformed_samples": [], "lost_events": 0, "lost_event_records": 0, "node_status_events": 0,
        "other_events": 0, "first_flow_time": "2026-11-27T01:52:34.405668513Z",
        "last_flow_time": "2026-11-27T01:52:34.420525682Z", "errors": [], "empty_files": []}


def test_lines_with_other_verdicts_are_counted_but_never_parsed() -> None:
    events, stats = read([REAL / "all-events.jsonl"])
    assert [event.port for event in events] == [5432, 5432, 5432, 9187]
    assert (stats.lines, stats.flows, stats.matched) == (88, 88, 4)
    assert stats.parsed == 4  # the 84 FORWARDED/DROPPED lines were skipped on their verdict bytes alone
    assert stats.malformed == 0


def test_every_verdict_and_event_type_when_asked() -> None:
    events, stats = read([REAL / "all-events.jsonl"], verdicts=None, event_types=None)
    assert len(events) == stats.parsed == stats.matched == 88
    world = [event for event in events if event.source.entity == "world"]
    assert len(world) == 1 and world[0].source.identity == 2 and world[0].source.display() == \
        "world:fe80::94a8:f6ff:fe01:c32f"
    assert world[0].protocol == "ICMPv6" and world[0].port == 133  # ICMP: the type stands in for the port
    assert {event.direction for event in events} == {"INGRESS", "EGRESS", "TRAFFIC_DIRECTION_UNKNOWN"}
    replies = [event for event in events if event.is_reply]
    assert replies and all(event.direction == "EGRESS" for event in replies)
    no_l4 = [event for event in events if event.protocol is None]
    assert len(no_l4) == 2 and all(event.port is None for event in no_l4)


def test_real_denied_verdicts_carry_the_drop_reason() -> None:
    events, stats = read([REAL / "dropped-policy-denied.jsonl"], verdicts=["dropped"])
    assert len(events) == 4 and stats.filtered == 29  # 29 drop events (type 1) are not policy verdicts
    assert {event.drop_reason for event in events} == {"POLICY_DENIED"}
    assert {(event.verdict, event.event_type, event.is_reply) for event in events} == {("DROPPED", 5, None)}


def test_real_exporter_lines_with_a_field_mask() -> None:
    events, stats = read([HUBBLE / "exporter-events-dropped.jsonl"], verdicts=["DROPPED"], event_types=None)
    assert stats.matched == 2 and stats.malformed == 0
    icmp, tcp = events
    assert (icmp.protocol, icmp.port, icmp.drop_reason, icmp.source, icmp.destination) == (
        "ICMPv6", 133, "INVALID_SOURCE_IP", Peer(ip="fe80::64d8:8aff:fe72:fc14"), Peer(ip="ff02::2"))
    assert (tcp.protocol, tcp.port, tcp.drop_reason, tcp.direction, tcp.event_type) == (
        "TCP", 80, "POLICY_DENIED", "TRAFFIC_DIRECTION_UNKNOWN", 0)
    assert tcp.source.workload == "xwing" and tcp.destination.workload == "deathstar"  # from the pod name
    assert tcp.is_reply is None and tcp.node == "kind-kind/kind-worker"


def test_legacy_bare_flow_lines_read_like_envelopes(tmp_path: Path) -> None:
    bare = [json.dumps(json.loads(line)["flow"], separators=(",", ":")) for line in real_lines("audit-ingress.jsonl")]
    legacy, stats = read([write(tmp_path / "legacy.json", bare)])
    envelope, _stats = read([REAL / "audit-ingress.jsonl"])
    assert legacy == envelope and stats.flows == 4


# -- lost events, node status, other events ----------------------------------------------------------------------------

def test_lost_events_and_node_status_lines(tmp_path: Path) -> None:
    lines = [
        '{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"12","cpu":{"value":1}},'
        '"node_name":"prod-a/real-1","time":"2026-11-27T01:52:30Z"}',
        '{"node_status":{"state_change":"NODE_UNAVAILABLE","node_names":["prod-a/real-2"],"message":"connection '
        'refused"},"time":"2026-11-27T01:52:31Z"}',
        '{"agent_event":{"type":"AGENT_STARTED"},"node_name":"prod-a/real-1","time":"2026-11-27T01:52:32Z"}',
        *real_lines("audit-ingress.jsonl")[:1],
    ]
    events, stats = read([write(tmp_path / "events.jsonl", lines)])
    lost, status, flow = events
    assert lost == LostEvents(source="HUBBLE_RING_BUFFER", count=12, node="prod-a/real-1", time="2026-11-27T01:52:30Z")
    assert status == NodeStatus(state="NODE_UNAVAILABLE", nodes=("prod-a/real-2",), message="connection refused",
                                time="2026-11-27T01:52:31Z")
    assert isinstance(flow, FlowRecord)
    assert (stats.lost_events, stats.lost_event_records, stats.node_status_events, stats.other_events) == (12, 1, 1, 1)
    assert (stats.lines, stats.flows, stats.malformed) == (4, 1, 0)


# -- gzip and globs ----------------------------------------------------------------------------------------------------

def test_gzip_files_and_globs(tmp_path: Path) -> None:
    data = (REAL / "audit-ingress.jsonl").read_bytes()
    (tmp_path / "events.log").write_bytes(data)
    with gzip.open(tmp_path / "events-1.log.gz", "wb") as stream:
        stream.write(data)
    (tmp_path / "plain-named.gz").write_bytes(data)  # the content decides, not the name
    events, stats = read([tmp_path / "events*.log*", tmp_path / "*.gz"])
    assert stats.files == 3 and stats.matched == 12 and not stats.errors
    assert stats.file_names == [str(tmp_path / "events-1.log.gz"), str(tmp_path / "events.log"),
                                str(tmp_path / "plain-named.gz")]  # sorted per pattern, each file once


def test_a_pattern_that_matches_nothing_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "one.jsonl").write_text("")
    with pytest.raises(FlowFileError, match=r"flow file pattern '.*/nothing-\*\.jsonl' matched no files"):
        read_flow_files([str(tmp_path / "one.jsonl"), str(tmp_path / "nothing-*.jsonl")], stats=FileStats())
    with pytest.raises(FlowFileError, match="does not exist"):
        read_flow_files([str(tmp_path / "missing.jsonl")], stats=FileStats())
    with pytest.raises(FlowFileError, match="is a directory"):
        read_flow_files([str(tmp_path)], stats=FileStats())


def test_corrupt_gzip_is_reported_and_the_next_file_is_read(tmp_path: Path) -> None:
    data = "\n".join(real_lines("all-events.jsonl")).encode() + b"\n"
    packed = gzip.compress(data)
    (tmp_path / "a-truncated.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "b-garbage.gz").write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    (tmp_path / "c-good.jsonl").write_bytes(data)
    events, stats = read([tmp_path / "*"])
    assert stats.files == 3 and len(stats.errors) == 2
    assert stats.errors[0].startswith(f"{tmp_path / 'a-truncated.gz'}: truncated gzip data after line ")
    assert stats.errors[1] == f"{tmp_path / 'b-garbage.gz'}: corrupt gzip data after line 0 (no line of it could be " \
                              "read): unknown compression method: not a valid gzip header"
    assert [event.port for event in events][-4:] == [5432, 5432, 5432, 9187]  # the good file was read in full
    assert stats.empty_files == []  # damaged is not empty


def test_unreadable_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "flows.jsonl", real_lines("audit-ingress.jsonl"))
    real_open = open

    def deny(name, *args, **kwargs):
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    events, stats = read([path])
    assert events == [] and stats.errors == [f"{path}: cannot read: Permission denied"] and stats.files == 0


# -- malformed lines ---------------------------------------------------------------------------------------------------

def test_malformed_lines_are_skipped_counted_and_sampled(tmp_path: Path) -> None:
    good = real_lines("audit-ingress.jsonl")[0]
    forwarded = real_lines("all-events.jsonl")[0]
    assert '"verdict":"FORWARDED"' in forwarded
    lines = [
        good,                                    # 1 kept
        good[:400],                              # 2 a candidate cut short: invalid JSON
        forwarded[:30],                          # 3 cut before its verdict: parsed, invalid JSON
        "",                                      # 4 blank: not malformed
        '[{"flow": {}}]',                        # 5 a JSON array
        '"AUDIT"',                               # 6 JSON, but not an object
        '{"flow": 5, "verdict": "AUDIT"}',       # 7 wrong shape
        '{"flow": {"verdict": "AUDIT", "event_type": {"type": 5}, "l4": "tcp"}}',  # 8 wrong l4 shape
        '{"hello": "AUDIT"}',                    # 9 not a Hubble event
        "garbage AUDIT",                         # 10
        good,                                    # 11 kept
        good[:-1],                               # 12 last line, truncated, no newline
    ]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines))
    events, stats = read([path])
    assert len(events) == 2 and stats.lines == 12 and stats.blank_lines == 1
    assert stats.malformed == 9
    assert stats.malformed_samples[:MAX_SAMPLES_PER_FILE] == stats.malformed_samples  # at most 5 per file
    assert [(line, reason.split(" (")[0]) for name, line, reason in stats.malformed_samples] == [
        (2, "invalid JSON"), (3, "invalid JSON"), (5, "a JSON array: expected one JSON object per line"),
        (6, "not a JSON object but str"), (7, "'flow' is not an object")]
    assert {name for name, _line, _reason in stats.malformed_samples} == {str(path)}
    _events, twice = read([path, path])
    assert twice.files == 1 and twice.malformed == 9  # the same file named twice is read once


def test_a_truncated_last_line_is_malformed_whatever_its_verdict(tmp_path: Path) -> None:
    forwarded = real_lines("all-events.jsonl")[0]
    path = tmp_path / "growing.jsonl"
    path.write_text(forwarded + "\n" + forwarded[:500])  # the exporter was writing when the file was copied
    events, stats = read([path])
    assert events == [] and stats.flows == 1 and stats.malformed == 1
    assert stats.malformed_samples == [(str(path), 2, "not a complete JSON object (truncated line?)")]
    path.write_text(forwarded + "\n" + forwarded)  # a complete last line without its newline is fine
    _events, stats = read([path])
    assert stats.flows == 2 and stats.malformed == 0


def test_samples_are_per_file(tmp_path: Path) -> None:
    bad = ["{oops AUDIT"] * 7
    events, stats = read([write(tmp_path / "a.jsonl", bad), write(tmp_path / "b.jsonl", bad)])
    assert events == [] and stats.malformed == 14
    assert [(Path(name).name, line) for name, line, _reason in stats.malformed_samples] == [
        ("a.jsonl", n) for n in range(1, 6)] + [("b.jsonl", n) for n in range(1, 6)]


def test_crlf_and_trailing_spaces_are_fine(tmp_path: Path) -> None:
    lines = real_lines("all-events.jsonl")
    events, stats = read([write(tmp_path / "crlf.jsonl", lines, end=" \r\n")])
    assert len(events) == 4 and stats.malformed == 0 and stats.flows == 88


def test_an_overlong_line_is_never_held_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ansible_collections.netpol.cilium.plugins.module_utils._flow_files.MAX_LINE_BYTES", 4000)
    good = real_lines("audit-ingress.jsonl")
    huge = '{"flow":{"verdict":"AUDIT","Summary":"' + "x" * 5000 + '"}}'
    events, stats = read([write(tmp_path / "long.jsonl", [good[0], huge, good[1]])])
    assert len(events) == 2 and stats.lines == 3  # the long line counts once, whatever its size
    assert stats.malformed_samples == [(str(tmp_path / "long.jsonl"), 2, "line longer than 4000 bytes")]


# -- the byte-level prefilter never loses a match ----------------------------------------------------------------------

def test_pretty_and_reordered_json_still_matches(tmp_path: Path) -> None:
    flow = json.loads(real_lines("audit-ingress.jsonl")[0])
    spaced = json.dumps(flow)  # '"verdict": "AUDIT"' with spaces
    late = dict(flow, flow={"Summary": "x" * 2000, **{k: v for k, v in flow["flow"].items() if k != "verdict"},
                            "verdict": "AUDIT"})  # the verdict key far from the start of the line
    late_other = dict(late, flow=dict(late["flow"], verdict="FORWARDED"))
    odd = [spaced, json.dumps(late, separators=(",", ":")), json.dumps(late_other, separators=(",", ":"))]
    events, stats = read([write(tmp_path / "odd.jsonl", odd)])
    assert len(events) == 2 and stats.flows == 3
    assert stats.parsed == 2  # the late FORWARDED line was still skipped unparsed


def test_field_conversions(tmp_path: Path) -> None:
    base = json.loads(real_lines("audit-ingress.jsonl")[0])

    def variant(**changes) -> str:
        flow = dict(base["flow"], **changes)
        return json.dumps(dict(base, flow=flow), separators=(",", ":"))

    lines = [
        variant(l4={"UDP": {"source_port": 40000, "destination_port": 53}}, is_reply=True),
        variant(l4={"SCTP": {"destination_port": 2905}}),
        variant(l4={"ICMPv4": {}}, traffic_direction="EGRESS"),  # type 0 (echo reply) is omitted by protojson
        variant(l4={"VRRP": {"type": 1}}),
        variant(ingress_denied_by=[{"name": "db-ingress", "namespace": "shop", "revision": "7"}],
                egress_denied_by=[{"name": "clusterwide-deny", "kind": "CiliumClusterwideNetworkPolicy"},
                                  {"name": "db-ingress", "namespace": "shop"}],
                policy_match_type=3, drop_reason_desc="POLICY_DENY"),
        variant(destination={"identity": 2, "labels": ["reserved:world"]}, destination_names=["api.stripe.com"],
                IP={"source": "10.0.0.1", "destination": "52.1.2.3"}),
        variant(verdict="AUDIT", source={"identity": 7, "labels": ["reserved:kube-apiserver", "reserved:host"]}),
    ]
    events, stats = read([write(tmp_path / "variants.jsonl", lines)])
    assert stats.malformed == 0
    udp, sctp, icmp, vrrp, denied, world, api = events
    assert (udp.protocol, udp.port, udp.is_reply) == ("UDP", 53, True)
    assert (sctp.protocol, sctp.port) == ("SCTP", 2905)
    assert (icmp.protocol, icmp.port, icmp.direction) == ("ICMPv4", 0, "EGRESS")
    assert (vrrp.protocol, vrrp.port) == ("VRRP", None)
    assert denied.denied_by == ("shop/db-ingress", "clusterwide-deny")
    assert (denied.match_type, denied.drop_reason) == (3, "POLICY_DENY")
    assert world.destination.fqdns == ("api.stripe.com",) and world.destination.display() == "world:api.stripe.com"
    assert world.destination.ip == "52.1.2.3" and world.destination.entity == "world"
    assert api.source.entity == "kube-apiserver" and api.source.workload is None


# -- filters -----------------------------------------------------------------------------------------------------------

def test_time_window_is_half_open_on_nanosecond_times() -> None:
    since = datetime(2026, 11, 27, 1, 52, 34, 412365, tzinfo=timezone.utc)  # second flow: .412365712
    until = datetime(2026, 11, 27, 1, 52, 34, 420525, tzinfo=timezone.utc)  # last flow: .420525682 (after)
    events, stats = read([REAL / "audit-ingress.jsonl"], since=since, until=until)
    assert [event.time for event in events] == ["2026-11-27T01:52:34.412365712Z", "2026-11-27T01:52:34.416352708Z"]
    assert stats.filtered == 2
    offset = timezone(timedelta(hours=2))
    events, _stats = read([REAL / "audit-ingress.jsonl"], since=since.astimezone(offset))
    assert len(events) == 3
    with pytest.raises(ValueError, match="timezone-aware"):
        read([REAL / "audit-ingress.jsonl"], since=datetime(2026, 11, 27))


def test_namespace_filter_and_workload_names() -> None:
    events, stats = read([REAL / "audit-ingress.jsonl"], namespaces=["payments"])
    assert events == [] and stats.filtered == 4
    events, _stats = read([REAL / "audit-ingress.jsonl"], namespaces=["shop"],
                          workloads={"shop/db-real": "postgres", "fe-real": "web"})
    assert {(event.source.workload, event.destination.workload) for event in events} == {("web", "postgres")}


def test_unknown_or_no_verdict_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown verdict 'AUDITED'"):
        read([REAL / "audit-ingress.jsonl"], verdicts=["AUDITED"])
    with pytest.raises(ValueError, match="verdicts: give at least one verdict"):
        read([REAL / "audit-ingress.jsonl"], verdicts=[])
    with pytest.raises(ValueError, match="event_types: give at least one event type"):
        read([REAL / "audit-ingress.jsonl"], event_types=[])


# -- times -------------------------------------------------------------------------------------------------------------

def test_time_keys_sort_like_the_instants() -> None:
    times = ["2026-11-27T01:52:34.4Z", "2026-11-27T01:52:34.39Z", "2026-11-27T01:52:34Z",
             "2026-11-27T03:52:34.5+02:00", "2026-11-27T01:52:34.000000001Z"]
    assert sorted(times, key=time_key) == ["2026-11-27T01:52:34Z", "2026-11-27T01:52:34.000000001Z",
                                           "2026-11-27T01:52:34.39Z", "2026-11-27T01:52:34.4Z",
                                           "2026-11-27T03:52:34.5+02:00"]
    assert time_key("not a time") == "" and time_key(None) == ""
    assert parse_rfc3339("2026-11-27T01:52:34.405668513Z") == datetime(2026, 11, 27, 1, 52, 34, 405668,
                                                                       tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        parse_rfc3339("2026-11-27 01:52")


# -- the shared flow generator -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flat", [False, True], ids=["envelope", "bare"])
def test_generator_output_counts_match_an_independent_parse(tmp_path: Path, flat: bool) -> None:
    path = tmp_path / "generated.jsonl"
    command = [sys.executable, str(GENERATOR), "3000", "--seed", "7", "--audit-pct", "20"]
    command += ["--flat"] if flat else []
    with path.open("wb") as out:
        subprocess.run(command, stdout=out, check=True, timeout=120)
    expected_audit = expected_policy_audit = 0
    for line in path.read_text().splitlines():
        flow = json.loads(line)
        flow = flow if flat else flow["flow"]
        if flow["verdict"] == "AUDIT":
            expected_audit += 1
            expected_policy_audit += flow["event_type"]["type"] == 5
    events, stats = read([path])
    assert (stats.lines, stats.flows, stats.malformed) == (3000, 3000, 0)
    assert len(events) == stats.matched == expected_policy_audit
    assert stats.parsed == expected_audit  # only the AUDIT lines were parsed
    assert 300 < len(events) < 900  # about 20 %
    assert all(event.verdict == "AUDIT" and event.is_reply is False for event in events)
    world = [event for event in events if event.destination.entity == "world"]
    assert world and all(event.direction == "EGRESS" and event.destination.fqdns for event in world)
    assert {event.source.workload for event in events} >= {"deathstar", "api", "keycloak", "kube-dns"}


# -- block reading: lines cut by block ends ----------------------------------------------------------------------------

MODULE = "ansible_collections.netpol.cilium.plugins.module_utils._flow_files"


def mixed_lines() -> list[str]:
    """Every kind of line the reader treats apart, between ordinary flows with other verdicts."""
    others = real_lines("all-events.jsonl")
    good = real_lines("audit-ingress.jsonl")
    flow = json.loads(good[0])
    late_other = dict(flow, flow={"Summary": "x" * 900, **{k: v for k, v in flow["flow"].items() if k != "verdict"},
                                  "verdict": "FORWARDED"})
    odd = [good[0], "", "   ", good[1][:300], '{"hello": 1}', "garbage", others[0].replace('"verdict":', '"verdict": '),
           json.dumps(late_other, separators=(",", ":")), "[1, 2]", good[2], '{"lost_events":{"num_events_lost":"3"}}',
           '{"node_status":{"state_change":"NODE_CONNECTED","node_names":["n1"]}}', good[3]]
    lines: list[str] = []
    for number, line in enumerate(odd):
        lines += others[number * 5:number * 5 + 5] + [line]
    return lines + others[:3]


@pytest.mark.parametrize("block", [64, 1000, 1537, 4096, 1 << 20])
@pytest.mark.parametrize("last", ["\n", "", "cut"], ids=["newline", "no-newline", "cut"])
def test_block_size_never_changes_what_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int,
                                               last: str) -> None:
    lines = mixed_lines()
    text = "\n".join(lines) + (last if last != "cut" else "\n" + lines[0][:300])
    path = tmp_path / "mixed.jsonl"
    path.write_text(text)
    expected_events, expected = read([path])
    monkeypatch.setattr(f"{MODULE}.READ_BLOCK", block)
    events, stats = read([path])
    assert events == expected_events and stats.to_dict() == expected.to_dict()
    # (the numbers were checked against the line-at-a-time reader this one replaced)
    assert (stats.lines, stats.flows, stats.matched) == (81 + (last == "cut"), 73, 6)
    samples = [(line, reason.split(" (")[0]) for _name, line, reason in stats.malformed_samples]
    assert samples == [(24, "invalid JSON"), (30, "unknown line shape"), (36, "invalid JSON"),
                       (54, "a JSON array: expected one JSON object per line")] + \
        ([(82, "not a complete JSON object")] if last == "cut" else [])
    assert (stats.blank_lines, stats.parsed, stats.lost_events, stats.node_status_events) == (2, 13, 3, 1)


@pytest.mark.parametrize("block", [100, 1000, 4096])
def test_overlong_lines_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(f"{MODULE}.MAX_LINE_BYTES", 3000)
    monkeypatch.setattr(f"{MODULE}.READ_BLOCK", block)
    good = real_lines("audit-ingress.jsonl")
    other = real_lines("all-events.jsonl")[0]
    assert len(good[0]) < 3000 and len(other) < 3000
    huge = '{"flow":{"verdict":"FORWARDED","Summary":"' + "x" * 7000 + '"}}'
    exact = "x" * 3000  # 3000 bytes before the newline: over the limit
    fits = '{"flow":{"verdict":"FORWARDED","Summary":"' + "y" * (2999 - 45) + '"}}'
    assert len(fits) == 2999
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join([good[0], huge, other, exact, fits, good[1], "z" * 5000]))
    events, stats = read([path])
    assert len(events) == 2 and stats.lines == 7 and stats.flows == 4
    assert stats.malformed_samples == [(str(path), number, "line longer than 3000 bytes") for number in (2, 4, 7)]


def test_malformed_line_numbers_deep_in_a_block(tmp_path: Path) -> None:
    other = real_lines("all-events.jsonl")[0]
    lines = [other] * 5000
    for number in (17, 2500, 2501, 4999):
        lines[number - 1] = "{broken"
    path = write(tmp_path / "deep.jsonl", lines)
    _events, stats = read([path])
    assert [line for _name, line, _reason in stats.malformed_samples] == [17, 2500, 2501, 4999]
    assert (stats.lines, stats.flows, stats.malformed, stats.parsed) == (5000, 4996, 4, 4)
    with gzip.open(tmp_path / "deep.jsonl.gz", "wb") as stream:
        stream.write(path.read_bytes())
    _events, packed = read([tmp_path / "deep.jsonl.gz"])
    assert packed.malformed_samples == [(str(tmp_path / "deep.jsonl.gz"), line, reason)
                                        for _name, line, reason in stats.malformed_samples]


def test_a_short_line_never_borrows_the_verdict_of_the_next(tmp_path: Path) -> None:
    """Lines are skipped when a verdict key sits where the line before had it: that place must be in the line."""
    other = real_lines("all-events.jsonl")[0]
    envelope = json.loads(other)
    assert envelope["flow"]["verdict"] != "AUDIT" and "uuid" in envelope["flow"]
    no_uuid = json.dumps(dict(envelope, flow={k: v for k, v in envelope["flow"].items() if k != "uuid"}),
                         separators=(",", ":"))
    gap = other.index('"verdict":"') - no_uuid.index('"verdict":"')
    short = '{"x":"' + "y" * (gap - 9) + '"}'  # with its newline, as long as the gap: the key lies just past it
    assert len(short) + 1 == gap
    _events, stats = read([write(tmp_path / "short.jsonl", [other] * 3 + [short, no_uuid, other])])
    assert (stats.lines, stats.flows, stats.malformed) == (6, 5, 1)
    assert stats.malformed_samples[0][1:] == (4, "unknown line shape (expected a flow, lost_events or node_status)")


def test_times_without_trailing_zeros_move_the_verdict_key_and_change_nothing(tmp_path: Path) -> None:
    """Hubble drops the trailing zeros of a time's nanoseconds, so the verdict key moves by a byte or two from line
    to line: every line is still read as a whole parse reads it."""
    lines = []
    for number, line in enumerate(real_lines("all-events.jsonl") * 3 + real_lines("audit-ingress.jsonl") * 3):
        envelope = json.loads(line)
        fraction = ("123456789"[:9 - number % 4] + "0" * (number % 4)).rstrip("0")  # 9, 8, 7 or 6 digits
        envelope["flow"]["time"] = envelope["time"] = f"2026-11-27T01:52:{number % 60:02d}.{fraction}Z"
        lines.append(json.dumps(envelope, separators=(",", ":")))
    lines = [line for pair in zip(lines, reversed(lines), strict=True) for line in pair]  # audited among others
    assert len({line.index('"verdict":"') for line in lines}) >= 4
    path = write(tmp_path / "trimmed.jsonl", lines)
    events, stats = read([path])
    everything, whole = read([path], verdicts=None, event_types=None)
    assert events == [event for event in everything if event.verdict == "AUDIT" and event.event_type == 5]
    assert len(events) >= 2 * 3 * len(real_lines("audit-ingress.jsonl"))  # (all-events.jsonl has audited flows too)
    assert (stats.lines, stats.flows, stats.malformed) == (whole.lines, whole.flows, 0)
    assert stats.parsed == len(events)  # the other verdicts were skipped unparsed, wherever their key was


# -- the cache of repeated runs of members -----------------------------------------------------------------------------

def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def variants_of(line: str) -> list[str]:
    """Lines of the same flow that the cached path must read exactly as a whole parse does, or leave to it."""
    envelope = json.loads(line)
    flow = envelope["flow"]
    # a key of the run's part moved before the run
    head_first = {"traffic_direction": flow["traffic_direction"],
                  **{key: value for key, value in flow.items() if key != "traffic_direction"}}
    l4_last = {key: value for key, value in flow.items() if key != "l4"} | {"l4": {"UDP": {"destination_port": 53}}}
    moved = compact(dict(envelope, flow=head_first))
    return [
        line,
        line.replace('"verdict":', '"node_name":"first","verdict":', 1),  # a key in both parts: the last one wins
        moved,
        moved.replace('"traffic_direction":"INGRESS"', '"traffic_direction":"EGRESS"', 1),
        compact(dict(envelope, flow=l4_last)),  # a key read from the head, found in the run
        line.replace('"source":{', '"source":{,', 1),  # the run is no JSON: malformed
        line.replace(',"source":{', ',"extra":{"source":{"a":1}},"source":{', 1),
        compact(dict(envelope, flow=flow, after={"a": 1})),  # an object after the flow
        line.replace('"IP":{"source":"', '"IP":{"source":"1', 1),  # another address, the same run
        *head_variants(line),
    ]


def head_variants(line: str) -> list[str]:
    """The same flow with heads and tails around the run that ``_FLOW_HEAD``/``_FLOW_TAIL`` read, or must leave to
    the parser: every optional member left out or added, escapes, odd numbers, other protocols, other envelopes."""
    envelope = json.loads(line)
    flow = envelope["flow"]

    def without(*keys: str, **extra: object) -> str:
        return compact(dict(envelope, flow={k: v for k, v in flow.items() if k not in keys} | extra))

    ip = flow["IP"]["source"]
    return [
        without("uuid"),
        without("ethernet", "uuid"),
        without("IP"),
        without("l4"),
        compact(dict(envelope, flow={"time": flow["time"], "uuid": flow["uuid"], "verdict": "AUDIT",
                                     "drop_reason": 133, **{k: v for k, v in flow.items()
                                                            if k not in ("time", "uuid", "verdict")}})),
        line.replace('"ipVersion":"IPv4"', '"ipVersion":"IPv4","encrypted":true', 1),
        line.replace(f'"source":"{ip}"', '"source":"' + ip[:-1] + '\\u00' + format(ord(ip[-1]), "x") + '"', 1),
        line.replace('"l4":{"TCP":{"source_port":', '"l4":{"UDP":{"source_port":', 1),
        line.replace('"source_port":', '"xsource_port":', 1),  # an unknown member in l4
        line.replace('"flags":{"SYN":true}', '"flags":{}', 1),
        line.replace('"flags":{"SYN":true}', '"flags":{"SYN":true,"ACK":true}', 1),
        re.sub(r'"destination_port":\d+', '"destination_port":0', line, count=1),
        re.sub(r'"destination_port":(\d+)', r'"destination_port":0\1', line, count=1),  # not JSON: malformed
        without("l4", l4={"ICMPv4": {"type": 8}}),
        line.replace(f'"time":"{flow["time"]}"', '"time":""', 1),  # the envelope's time stands in
        line.replace('},"node_name":"', '},"node_labels":["a"],"node_name":"', 1),
        compact({"flow": flow}),
        compact({"flow": {k: v for k, v in flow.items() if k != "node_name"}, "node_name": "envelope-node"}),
        compact({"flow": {k: v for k, v in flow.items() if k != "node_name"}, "node_name": "n\u00f6de \u2603"}),
        line.replace('"Summary":', '"uuid":"late","drop_reason":1,"Summary":', 1),  # read by no one: may repeat
        line.replace('"verdict":"AUDIT"', '"verdict":"AUDIT" ', 1),
        without(destination_names=["api.example.com", "www.example.com"]),  # DNS names: each on its own side
        without(source_names=["client.example.org"]),
        without(source_names="client.example.org"),  # not a list: malformed
        re.sub(r'"destination_port":\d+', '"destination_port":' + "9" * 5000, line, count=1),  # too long a number
    ]


def test_cached_runs_read_exactly_as_a_whole_parse(tmp_path: Path) -> None:
    audit = real_lines("audit-ingress.jsonl")
    lines = [variant for line in audit for variant in variants_of(line)] * 2  # the second time from the cache
    path = write(tmp_path / "variants.jsonl", lines)
    events, stats = read([path])
    everything, whole = read([path], verdicts=None, event_types=None)  # every line parsed whole, no cache
    assert events == [event for event in everything if event.verdict == "AUDIT" and event.event_type == 5]
    assert len(events) == len(lines) - 8 * len(audit)
    assert stats.malformed == whole.malformed == 8 * len(audit)
    assert (stats.flows, stats.lines) == (whole.flows, whole.lines)
    assert stats.malformed_samples == whole.malformed_samples
    assert "invalid JSON (Expecting property name" in stats.malformed_samples[0][2]
    first = events[:8]
    assert [event.direction for event in first[2:4]] == ["INGRESS", "EGRESS"]
    assert first[1].node == "prod-a/real-1" and (first[4].protocol, first[4].port) == ("UDP", 53)
    assert first[7].source.ip == "1" + first[0].source.ip and first[7].source[:7] == first[0].source[:7]


def test_lines_as_hubble_writes_them_need_the_json_parser_once_per_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line with the head and tail Hubble writes, whose run was seen before, is read from the regular expressions
    and the cache alone; any other line still gets the parser."""
    calls: list[str] = []
    scanner = flow_files._SCAN_JSON

    def counting(text: str, at: int) -> tuple[object, int]:
        calls.append(text)
        return scanner(text, at)

    monkeypatch.setattr(f"{MODULE}._SCAN_JSON", counting)
    audit = real_lines("audit-ingress.jsonl")
    runs = {line[line.index('"source":{'):line.rindex('},"')] for line in audit}
    events, stats = read([write(tmp_path / "plain.jsonl", audit * 50)])
    assert len(events) == stats.parsed == 200
    assert sorted(calls) == sorted(f"{{{run}}}" for run in runs)  # each run once, nothing else
    calls.clear()
    icmp = [re.sub(r'"l4":\{"TCP":\{[^{}]*\{[^{}]*\}\}\}', '"l4":{"ICMPv4":{"type":8}}', line) for line in audit]
    assert all('"l4":{"ICMPv4":{"type":8}},"source":{' in line for line in icmp)
    events, stats = read([write(tmp_path / "icmp.jsonl", icmp * 5)])
    assert len(events) == 20 and len(calls) == len(runs) + 20  # the runs, then each head and tail by the parser
    assert {(event.protocol, event.port) for event in events} == {("ICMPv4", 8)}


# -- damaged gzip, empty files (the file rows of the fault matrix, issue #7) -------------------------------------------

def _numbered_flows(count: int) -> bytes:
    """``count`` real audited flow lines, each with its own uuid, so that every line is told apart."""
    template = json.loads(real_lines("audit-ingress.jsonl")[0])
    lines = []
    for number in range(count):
        template["flow"]["uuid"] = f"flow-{number:06d}"
        lines.append(json.dumps(template, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(("damage", "what", "read_some"), [
    ("cut", "truncated gzip data", True),
    ("crc", "corrupt gzip data", True),
    ("header", "corrupt gzip data", False),
])
def test_damaged_gzip_keeps_the_lines_before_the_damage(tmp_path: Path, damage: str, what: str,
                                                        read_some: bool) -> None:
    data = _numbered_flows(3000)  # about 4 MiB unpacked: more than one read step
    packed = gzip.compress(data)
    if damage == "cut":
        packed = packed[: len(packed) * 2 // 3]
    elif damage == "crc":
        packed = packed[:-8] + bytes(8)  # the member's CRC32 and length, zeroed
    else:
        packed = packed[:2] + b"\x09" + packed[3:]  # compression method 9 does not exist
    path = tmp_path / "flows.jsonl.gz"
    path.write_bytes(packed)
    events, stats = read([path])
    [error] = stats.errors
    assert error.startswith(f"{path}: {what} after line {stats.lines} ")
    assert stats.malformed == 0 and stats.empty_files == [] and stats.files == 1
    if read_some:
        assert 0 < len(events) == stats.lines < 3000  # every whole line before the damage, in order, once
        assert f"(lines 1-{stats.lines} were read, the rest was not)" in error
        read_lines = data.splitlines()[: len(events)]
        uuids = [json.loads(line)["flow"]["uuid"] for line in read_lines]
        assert uuids == [f"flow-{number:06d}" for number in range(len(events))]
    else:
        assert events == [] and "(no line of it could be read): unknown compression method" in error


def test_concatenated_and_zero_padded_gzip_members_read_whole(tmp_path: Path) -> None:
    data = _numbered_flows(10)
    path = tmp_path / "rotated.gz"
    path.write_bytes(gzip.compress(data[:3000]) + gzip.compress(data[3000:]) + bytes(512))
    events, stats = read([path])
    assert len(events) == 10 and stats.errors == [] and stats.malformed == 0


def test_empty_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "a-empty.jsonl").write_bytes(b"")
    (tmp_path / "b-blank.jsonl").write_bytes(b"\n  \n\n")
    (tmp_path / "c-empty.jsonl.gz").write_bytes(gzip.compress(b""))
    write(tmp_path / "d-flows.jsonl", real_lines("audit-ingress.jsonl"))
    events, stats = read([tmp_path / "*"])
    assert stats.empty_files == [str(tmp_path / name) for name in ("a-empty.jsonl", "b-blank.jsonl",
                                                                   "c-empty.jsonl.gz")]
    assert (stats.files, len(events), stats.malformed, stats.errors) == (4, 4, 0, [])
