"""flow.Flow messages -> FlowRecord, checked against real Hubble output (Cilium 1.15.1, `hubble observe -o jsonpb`).

Each fixture line is parsed with ``json_format.Parse`` into the generated ``GetFlowsResponse`` WITHOUT
``ignore_unknown_fields``: that the real JSON parses, and prints back the same, proves that the field names of
proto/*.proto are Hubble's. The records are then compared with what the jsonpb path (``_flows.peer_from_dict`` on the
same JSON) gives.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("google.protobuf")

from google.protobuf import json_format
from simcluster.fixtures import shared_fixtures_dir

from ansible_collections.netpol.cilium.plugins.module_utils import _hubble_relay as hr
from ansible_collections.netpol.cilium.plugins.module_utils._flows import FlowRecord, peer_from_dict
from ansible_collections.netpol.cilium.plugins.module_utils._hubble_pb import (
    flow_pb2,
    flow_view_pb2,
    observer_pb2,
    relay_pb2,
)

HUBBLE = shared_fixtures_dir() / "hubble"
REAL = HUBBLE / "real-1.15.1"


def lines(name: str) -> list[str]:
    return [line for line in (REAL / name).read_text().splitlines() if line.strip()]


def parse(line: str) -> Any:
    return json_format.Parse(line, observer_pb2.GetFlowsResponse())


def expected_record(line: str) -> FlowRecord:
    """What the jsonpb path makes of the same line."""
    data = json.loads(line)
    flow = data["flow"]
    ip = flow.get("IP") or {}
    l4 = flow.get("l4") or {}
    protocol = next(iter(l4), None)
    port = None
    if protocol in ("TCP", "UDP", "SCTP"):
        port = l4[protocol].get("destination_port", 0)
    elif protocol in ("ICMPv4", "ICMPv6"):
        port = l4[protocol].get("type", 0)
    return FlowRecord(
        time=flow["time"], node=data["node_name"], verdict=flow["verdict"],
        event_type=(flow.get("event_type") or {}).get("type", 0),
        direction=flow.get("traffic_direction", "TRAFFIC_DIRECTION_UNKNOWN"), is_reply=flow.get("is_reply"),
        source=peer_from_dict(flow.get("source") or {}, ip.get("source"), flow.get("source_names")),
        destination=peer_from_dict(flow.get("destination") or {}, ip.get("destination"),
                                   flow.get("destination_names")),
        protocol=protocol, port=port, drop_reason=flow.get("drop_reason_desc"),
        match_type=flow.get("policy_match_type", 0))


@pytest.mark.parametrize("name", ["all-events.jsonl", "audit-ingress.jsonl", "dropped-policy-denied.jsonl"])
def test_real_lines_parse_with_our_field_names_and_print_back_the_same(name: str) -> None:
    for line in lines(name):
        message = parse(line)  # raises on any field name our protos do not have
        assert json_format.MessageToDict(message, preserving_proto_field_name=True) == json.loads(line)


@pytest.mark.parametrize("name", ["all-events.jsonl", "audit-ingress.jsonl", "dropped-policy-denied.jsonl"])
def test_every_real_flow_converts_like_the_jsonpb_path(name: str) -> None:
    converter = hr.FlowConverter()
    for line in lines(name):
        message = parse(line)
        expected = expected_record(line)
        assert converter.convert(message.flow, message.node_name) == expected
        assert hr.flow_from_proto(message.flow, message.node_name) == expected
        assert hr.event_from_response(message) == expected


def test_real_audit_flows() -> None:
    records = [hr.flow_from_proto(parse(line).flow) for line in lines("audit-ingress.jsonl")]
    assert len(records) == 4
    for record in records:
        assert (record.verdict, record.event_type, record.direction, record.is_reply) == ("AUDIT", 5, "INGRESS", False)
        assert (record.drop_reason, record.match_type, record.denied_by) == (None, 0, ())
        assert (record.protocol, record.node) == ("TCP", "prod-a/real-1")
        assert record.local.pod == "db-real" and record.local.endpoint_id == 1742 and record.local.workload == "db"
        assert record.remote.pod == "fe-real" and record.remote.identity == 53414
        assert record.remote.workload == "frontend" and record.remote.ip == "10.200.1.197"
        assert record.local.label_map()["app"] == "db"
    assert sorted(r.port for r in records) == [5432, 5432, 5432, 9187]
    assert records[0].time == "2026-11-27T01:52:34.405668513Z"


def test_real_drops_and_denied_verdicts() -> None:
    records = [hr.flow_from_proto(parse(line).flow) for line in lines("dropped-policy-denied.jsonl")]
    policy = [r for r in records if r.drop_reason == "POLICY_DENIED"]
    assert {(r.event_type, r.verdict, r.is_reply) for r in policy} == {(1, "DROPPED", None), (5, "DROPPED", None)}
    assert all(r.destination.pod == "db-real" and r.port in (5432, 9187) for r in policy)
    other = [r for r in records if r.drop_reason != "POLICY_DENIED"]
    assert {(r.drop_reason, r.protocol) for r in other} == {("UNSUPPORTED_L3_PROTOCOL", "ICMPv6")}
    assert {r.source.entity for r in other} <= {"init", "world", None} and all(r.port for r in other)


def test_reserved_entities_replies_and_unknown_identities() -> None:
    records = [hr.flow_from_proto(parse(line).flow) for line in lines("all-events.jsonl")]
    world = next(r for r in records if r.source.identity == 2)
    assert world.source.entity == "world" and world.source.namespace is None and world.source.workload is None
    unknown = records[0].destination
    assert (unknown.identity, unknown.entity, unknown.labels) == (None, "unknown", ("reserved:unknown",))
    replies = [r for r in records if r.is_reply]
    assert replies and all(r.direction == "EGRESS" and r.source.pod == "db-real" for r in replies)
    assert {r.is_reply for r in records} == {None, False, True}


def test_exporter_lines_of_older_hubble_without_event_type() -> None:
    for line in (HUBBLE / "exporter-events-dropped.jsonl").read_text().splitlines():
        message = parse(line)
        assert hr.flow_from_proto(message.flow, message.node_name) == expected_record(line)


def test_fields_the_fixtures_lack_policies_names_workloads_and_other_protocols() -> None:
    flow = flow_pb2.Flow(verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.POLICY_DENY,
                         traffic_direction=flow_pb2.EGRESS, node_name="c/n1")
    flow.time.seconds, flow.time.nanos = 1700000000, 120000000
    flow.event_type.type = 5
    flow.IP.source, flow.IP.destination = "10.0.0.1", "93.184.216.34"
    flow.l4.UDP.destination_port = 53
    flow.source.namespace, flow.source.pod_name, flow.source.identity, flow.source.ID = "shop", "api-0", 1234, 77
    flow.source.labels.extend(["k8s:app.kubernetes.io/name=api"])
    flow.source.workloads.add(name="api", kind="StatefulSet")
    flow.destination.identity = 2
    flow.destination.labels.append("reserved:world")
    flow.destination_names.extend(["example.com"])
    flow.egress_denied_by.add(name="no-dns", namespace="shop")
    flow.egress_denied_by.add(name="clusterwide-deny")
    record = hr.flow_from_proto(flow)
    assert record.time == "2023-11-14T22:13:20.120Z" and record.node == "c/n1"
    assert (record.protocol, record.port, record.drop_reason) == ("UDP", 53, "POLICY_DENY")
    assert record.denied_by == ("shop/no-dns", "clusterwide-deny")
    assert record.local.workload == "api" and record.local.endpoint_id == 77
    assert record.remote.fqdns == ("example.com",) and record.remote.display() == "world:example.com"
    mapped = hr.flow_from_proto(flow, workloads={"shop/api-0": "payments"})
    assert mapped.source.workload == "payments"

    flow.l4.ICMPv4.type = 8  # the oneof switches protocol
    flow.drop_reason_desc = 250  # a reason newer than our enum: still decoded, as its number
    record = hr.flow_from_proto(flow)
    assert (record.protocol, record.port, record.drop_reason) == ("ICMPv4", 8, "250")
    flow.ClearField("l4")
    assert hr.flow_from_proto(flow)[8:10] == (None, None)


def test_the_view_path_reads_names_and_policies_from_the_full_message() -> None:
    response = observer_pb2.GetFlowsResponse(node_name="c/n1")
    flow = response.flow
    flow.verdict, flow.drop_reason_desc = flow_pb2.DROPPED, flow_pb2.POLICY_DENY
    flow.traffic_direction = flow_pb2.EGRESS
    flow.event_type.type = 5
    flow.source.pod_name, flow.source.namespace, flow.source.identity = "api-0", "shop", 1234
    flow.destination.identity = 16777217
    flow.destination.labels.append("cidr:93.184.216.0/24")
    flow.destination_names.extend(["example.com", "www.example.com"])
    flow.egress_denied_by.add(name="no-egress", namespace="shop")
    flow.egress_denied_by.add(name="cluster-deny")
    raw = response.SerializeToString()
    view = flow_view_pb2.GetFlowsResponseView.FromString(raw)
    converter = hr.FlowConverter()
    record = converter(view.flow, view.node_name, raw)  # what the client does with each message
    assert record == hr.flow_from_proto(flow, "c/n1")
    assert record.denied_by == ("shop/no-egress", "cluster-deny")
    assert record.remote.fqdns == ("example.com", "www.example.com")
    # the view alone keeps only the last of each repeated value
    alone = converter(view.flow, view.node_name)
    assert (alone.denied_by, alone.remote.fqdns) == (("cluster-deny",), ("www.example.com",))
    # a view message converts as such
    assert hr.flow_from_proto(view.flow, "c/n1") == alone


def test_time_formats_match_protojson() -> None:
    converter = hr.FlowConverter()
    for nanos, text in [(0, "2023-11-14T22:13:20Z"), (5000000, "2023-11-14T22:13:20.005Z"),
                        (5000, "2023-11-14T22:13:20.000005Z"), (5, "2023-11-14T22:13:20.000000005Z")]:
        assert converter.time(1700000000, nanos) == text == hr.rfc3339(1700000000, nanos)
        stamp = flow_pb2.Flow().time
        stamp.seconds, stamp.nanos = 1700000000, nanos
        assert stamp.ToJsonString() == text


def test_lost_events_and_node_status() -> None:
    response = observer_pb2.GetFlowsResponse(node_name="c/n1")
    response.lost_events.source = flow_pb2.HUBBLE_RING_BUFFER
    response.lost_events.num_events_lost = 12
    response.time.seconds = 1700000000
    expected = hr.LostEvents("HUBBLE_RING_BUFFER", 12, "c/n1", "2023-11-14T22:13:20Z")
    assert hr.event_from_response(response) == expected
    status = observer_pb2.GetFlowsResponse()
    status.node_status.state_change = relay_pb2.NODE_UNAVAILABLE
    status.node_status.node_names.extend(["c/n2"])
    status.node_status.message = "dial tcp: connection refused"
    event = hr.event_from_response(status)
    assert event == hr.NodeStatus("NODE_UNAVAILABLE", ("c/n2",), "dial tcp: connection refused", None)


def test_filters_for_audit_denied_and_namespaces() -> None:
    [audit] = hr.build_filters()
    expected = {"verdict": ["AUDIT"], "event_type": [{"type": 5}]}
    assert json_format.MessageToDict(audit, preserving_proto_field_name=True) == expected
    by_source, by_destination = hr.build_filters(("DROPPED",), (1, 5), ["shop", "monitoring/"],
                                                 ("POLICY_DENIED", "POLICY_DENY"))
    common = {"verdict": ["DROPPED"], "event_type": [{"type": 1}, {"type": 5}],
              "drop_reason_desc": ["POLICY_DENIED", "POLICY_DENY"]}
    assert json_format.MessageToDict(by_source, preserving_proto_field_name=True) == {
        **common, "source_pod": ["shop/", "monitoring/"]}
    assert json_format.MessageToDict(by_destination, preserving_proto_field_name=True) == {
        **common, "destination_pod": ["shop/", "monitoring/"]}
    assert hr.build_filters(("AUDIT",), ("policy-verdict",)) == hr.build_filters()
    with pytest.raises(hr.RelayError, match="AUDITED"):
        hr.build_filters(("AUDITED",))
    raw = [json.loads(line) for line in (HUBBLE / "print-raw-filters.jsonl").read_text().splitlines()]
    parsed = hr.filters_from_dicts(raw)
    assert [json_format.MessageToDict(f, preserving_proto_field_name=True) for f in parsed] == raw


def test_tls_error_texts_are_told_apart() -> None:
    assert hr.classify_tls_error("Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
                                 "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
                                 "certificate") == "tls-ca"
    assert hr.classify_tls_error("Custom verification check failed with error: UNAUTHENTICATED: Hostname "
                                 "Verification Check failed.") == "tls-name"
    assert hr.classify_tls_error("Peer name relay.example.org is not in peer certificate") == "tls-name"
    assert hr.classify_tls_error("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required") == \
        "tls-client-cert"
    assert hr.classify_tls_error("failed to connect to all addresses; connection refused") is None


def test_the_committed_generated_code_is_up_to_date() -> None:
    pytest.importorskip("grpc_tools")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[4] / "scripts" / "gen_protos.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
