"""The Hubble Relay client (plugins/module_utils/_hubble_relay.py) against the simulated Relay (simcluster.hubble),
over real gRPC on loopback: server-side filters, windows (since/until, number, follow), the ring buffer and its lost
events, node availability, TLS and mTLS, the port-forward through the Kubernetes API, a stream that breaks mid-window,
and verdicts that follow the live audit-mode state of the endpoints.

The relays here generate nothing by themselves (``generate=False``): each test emits exactly the connections it
counts, so that the assertions hold whatever the machine's speed.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ansible_collections.netpol.cilium.plugins.module_utils._audit_mode import AuditModeService
from ansible_collections.netpol.cilium.plugins.module_utils._endpoints import Selection
from ansible_collections.netpol.cilium.plugins.module_utils._flows import FlowRecord, LostEvents, NodeStatus
from ansible_collections.netpol.cilium.plugins.module_utils._hubble_relay import (
    RelayClient,
    RelayError,
    StreamGap,
    build_filters,
)
from ansible_collections.netpol.cilium.plugins.module_utils._k8s import Kube
from simcluster.cluster import SimCluster
from simcluster.hubble import HubbleRelay
from simcluster.tls import CertificateAuthority

from .conftest import seeded_cluster

pytestmark = pytest.mark.integration

UTC = datetime.timezone.utc


def _db(cluster: SimCluster) -> Any:
    return next(r for r in cluster.endpoints.values() if r.namespace == "shop" and r.pod_labels.get("app") == "db")


def _set_db_audit(cluster: SimCluster, enabled: bool) -> None:
    db = _db(cluster)
    result = cluster.agent(db.node).exec(["cilium-dbg", "endpoint", "config", str(db.id),
                                          f"PolicyAuditMode={'Enabled' if enabled else 'Disabled'}"])
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def audit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """The seed scenario with the db endpoint in audit mode (read-only for the tests: each starts its own relay)."""
    with seeded_cluster("hubble", tmp_path_factory) as cluster:
        _set_db_audit(cluster, True)
        yield cluster


@pytest.fixture
def relay(audit_cluster: SimCluster) -> Iterator[HubbleRelay]:
    relay = audit_cluster.start_hubble(generate=False)
    yield relay
    relay.stop()
    audit_cluster.hubble = None


def _client(address: str, **options: Any) -> RelayClient:
    options.setdefault("timeout", 5.0)
    options.setdefault("backoff", 0.01)
    return RelayClient(address, **options)


def _flows(events: list[Any]) -> list[FlowRecord]:
    return [e for e in events if isinstance(e, FlowRecord)]


def _follow_until(client: RelayClient, flows_wanted: int, action: Any, **window: Any) -> list[Any]:
    """Follow (up to 20 s), run ``action`` once the relay serves the follower, stop after ``flows_wanted`` flows."""
    relay: HubbleRelay = window.pop("relay")
    events: list[Any] = []
    acted = threading.Event()

    def act() -> None:
        relay.wait_for_followers(1)
        action()
        acted.set()

    worker = threading.Thread(target=act, daemon=True)
    worker.start()
    for event in client.events(follow=True, duration=20, **window):
        events.append(event)
        if len(_flows(events)) >= flows_wanted:
            break
    worker.join(10)
    assert acted.is_set()
    return events


# --- filters and windows ------------------------------------------------------------------------------------------


def test_only_audit_verdicts_cross_the_wire(relay: HubbleRelay) -> None:
    audited = relay.emit("shop/frontend", "shop/db", count=3)
    allowed = relay.emit("shop/backend", "shop/db", count=2)
    traced = relay.emit("shop/frontend", "shop/backend", count=2)
    forgotten = relay.emit("monitoring/metrics-agent", "shop/db", count=1)
    assert audited["policy-verdict:AUDIT"] == 3 and allowed["policy-verdict:FORWARDED"] == 2
    assert "policy-verdict:FORWARDED" not in traced and forgotten["policy-verdict:AUDIT"] == 1
    written = relay.buffered()

    with _client(relay.address) as client:
        events = list(client.events())
    flows = _flows(events)
    assert len(flows) == 4 < written
    assert {(f.verdict, f.event_type, f.direction, f.is_reply, f.match_type) for f in flows} == {
        ("AUDIT", 5, "INGRESS", False, 0)}
    assert {f.drop_reason for f in flows} == {None}
    assert sorted(f.source.workload for f in flows) == ["frontend", "frontend", "frontend", "metrics-agent"]
    assert {(f.destination.workload, f.port, f.protocol) for f in flows} == {("db", 5432, "TCP"), ("db", 9100, "TCP")}
    assert all(f.local.endpoint_id == _db(relay.cluster).id for f in flows)
    # on the wire: the node status message and the 4 audited flows, nothing else
    stream = relay.streams[-1]
    assert stream.sent == {"flow": 4, "lost_events": 0, "node_status": 1}
    assert client.stats.messages == 5 and client.stats.flows == 4
    whitelist = list(stream.request.whitelist)
    assert len(whitelist) == 1 and list(whitelist[0].verdict) == [4]
    assert [(e.type, e.match_sub_type) for e in whitelist[0].event_type] == [(5, False)]


def test_namespaces_become_source_or_destination_pod_filters(relay: HubbleRelay) -> None:
    relay.emit("shop/frontend", "shop/db", count=2)
    relay.emit("monitoring/metrics-agent", "shop/db", count=1)
    with _client(relay.address) as client:
        flows = _flows(list(client.events(namespaces=["monitoring"])))
    assert [f.source.namespace for f in flows] == ["monitoring"]
    whitelist = list(relay.streams[-1].request.whitelist)
    pods = [(list(f.source_pod), list(f.destination_pod)) for f in whitelist]
    assert pods == [(["monitoring/"], []), ([], ["monitoring/"])]
    assert all(list(f.verdict) == [4] for f in whitelist)
    assert len(build_filters(("DROPPED",), (1, 5), ["a", "b/"], ("POLICY_DENIED", "POLICY_DENY"))) == 2


def test_since_until_and_number_read_the_ring_buffers(relay: HubbleRelay) -> None:
    relay.emit("shop/frontend", "shop/db", count=3)
    time.sleep(0.01)
    boundary = datetime.datetime.now(UTC)
    time.sleep(0.01)
    relay.emit("monitoring/metrics-agent", "shop/db", count=2)
    with _client(relay.address) as client:
        before = _flows(list(client.events(since=boundary - datetime.timedelta(minutes=5), until=boundary)))
        after = _flows(list(client.events(since=boundary)))
        last_two = _flows(list(client.events(number=2)))
        first_one = _flows(list(client.events(number=1, first=True)))
    assert [f.source.workload for f in before] == ["frontend"] * 3
    assert [f.source.workload for f in after] == ["metrics-agent"] * 2
    assert [f.source.workload for f in last_two] == ["metrics-agent"] * 2  # all on the db's node: per node
    assert [f.source.workload for f in first_one] == ["frontend"]
    assert before[0].time < before[-1].time < after[0].time  # RFC 3339, ordered
    request = relay.streams[1].request
    assert request.HasField("since") and request.HasField("until") and request.number == 0


def test_follow_streams_new_flows_and_ends_after_its_duration(relay: HubbleRelay) -> None:
    relay.emit("shop/frontend", "shop/db", count=2)  # before the window: not followed
    with _client(relay.address) as client:
        events = _follow_until(client, 5, lambda: relay.emit("shop/frontend", "shop/db", count=5), relay=relay)
        assert isinstance(events[0], NodeStatus) and events[0].state == "NODE_CONNECTED"
        assert len(events[0].nodes) == 3
        assert len(_flows(events)) == 5
        quiet = list(client.events(follow=True, duration=0.3))  # nothing happens: returning proves it ends on its own
        assert _flows(quiet) == []
    assert relay.streams[0].request.follow and relay.streams[0].request.number == 0


# --- buffer loss and node availability ----------------------------------------------------------------------------


def test_a_follower_lapped_by_the_ring_buffer_gets_lost_events(audit_cluster: SimCluster) -> None:
    relay = audit_cluster.start_hubble(generate=False, capacity=50)
    try:
        db_node = relay.node_name(_db(audit_cluster).node)
        expected: dict[str, int] = {}

        def flood() -> None:
            before = relay._rings[db_node].written
            relay.emit("shop/frontend", "shop/db", count=60)  # one batch, more than the buffer of the db's node
            expected["lost"] = relay._rings[db_node].written - before - relay.capacity

        with _client(relay.address) as client:
            events: list[Any] = []
            worker = threading.Thread(target=lambda: (relay.wait_for_followers(1), flood()), daemon=True)
            worker.start()
            for event in client.events(follow=True, duration=20):
                events.append(event)
                if any(isinstance(e, LostEvents) for e in events):
                    break
            worker.join(10)
        lost = [e for e in events if isinstance(e, LostEvents)]
        assert expected["lost"] > 0
        assert [(e.source, e.count, e.node) for e in lost] == [("HUBBLE_RING_BUFFER", expected["lost"], db_node)]
        assert client.stats.lost_events == expected["lost"]
        status = RelayClient(relay.address).server_status()
        assert status.max_flows == 150 and status.num_flows <= 150 < status.seen_flows
    finally:
        relay.stop()


def test_perf_budget_and_injected_losses_are_reported(audit_cluster: SimCluster) -> None:
    relay = audit_cluster.start_hubble(generate=False, max_flows_per_second=4)
    try:
        relay.emit("shop/frontend", "shop/db", count=10)
        relay.inject_lost_events(7, node=_db(audit_cluster).node)
        with _client(relay.address) as client:
            events = list(client.events())
        lost = [e for e in events if isinstance(e, LostEvents)]
        assert {e.source for e in lost} == {"PERF_EVENT_RING_BUFFER"}
        assert sum(e.count for e in lost) == relay.perf_lost + 7
        assert len(_flows(events)) < 10
    finally:
        relay.stop()


def test_an_unavailable_node_is_reported_and_its_flows_are_missing(relay: HubbleRelay) -> None:
    db_node = _db(relay.cluster).node
    relay.emit("shop/frontend", "shop/db", count=2)
    relay.set_node_unavailable(db_node)
    with _client(relay.address) as client:
        events = list(client.events())
        status = client.server_status()
        statuses = [e for e in events if isinstance(e, NodeStatus)]
        assert [s.state for s in statuses] == ["NODE_CONNECTED", "NODE_UNAVAILABLE"]
        assert statuses[1].nodes == (relay.node_name(db_node),) and "connection refused" in statuses[1].message
        assert _flows(events) == []
        assert (status.connected_nodes, status.unavailable_nodes) == (2, 1)
        assert status.unavailable_node_names == (relay.node_name(db_node),)

        relay.set_node_unavailable(db_node, False)
        assert len(_flows(list(client.events()))) == 2

        # during a follow: the node goes away, then comes back
        def flap() -> None:
            relay.set_node_unavailable(db_node)
            relay.emit("shop/frontend", "shop/db", count=1)  # never reaches us
            relay.set_node_unavailable(db_node, False)
            relay.emit("shop/frontend", "shop/db", count=1)

        events = _follow_until(client, 1, flap, relay=relay)
    states = [e.state for e in events if isinstance(e, NodeStatus)]
    assert "NODE_UNAVAILABLE" in states and states[-1] == "NODE_CONNECTED"
    assert len(_flows(events)) == 1


# --- TLS ----------------------------------------------------------------------------------------------------------


def test_tls_with_the_right_ca_and_the_distinct_certificate_errors(audit_cluster: SimCluster) -> None:
    relay = audit_cluster.start_hubble(generate=False, tls=True)
    try:
        relay.emit("shop/frontend", "shop/db", count=1)
        other = audit_cluster.state_dir / "other-ca.crt"
        other.write_bytes(CertificateAuthority("someone-else").cert_pem)
        with _client(relay.address, ca_cert=relay.ca_cert_path) as client:
            assert len(_flows(list(client.events()))) == 1
        with _client(relay.address, ca_cert=relay.ca_cert_path,
                     server_name="instance.hubble-relay.cilium.io") as client:
            assert len(_flows(list(client.events()))) == 1

        with pytest.raises(RelayError) as wrong_ca:
            _client(relay.address, ca_cert=str(other)).connect()
        with pytest.raises(RelayError) as wrong_name:
            _client(relay.address, ca_cert=relay.ca_cert_path, server_name="relay.example.org").connect()
        with pytest.raises(RelayError) as plaintext:
            _client(relay.address).connect()
        assert wrong_ca.value.kind == "tls-ca" and str(other) in str(wrong_ca.value)
        assert "not signed by the CA" in str(wrong_ca.value)
        assert wrong_name.value.kind == "tls-name" and "'relay.example.org'" in str(wrong_name.value)
        assert "its TLS certificate is for *.hubble-relay.cilium.io, localhost, 127.0.0.1, not 'relay.example.org'" \
            in str(wrong_name.value)
        assert plaintext.value.kind == "unreachable" and "set tls" in str(plaintext.value)
        for error in (wrong_ca.value, wrong_name.value, plaintext.value):
            assert relay.address in str(error) and "(direct" in str(error)

        # verification off is explicit, and still TLS
        with _client(relay.address, tls=True, validate_certs=False) as client:
            assert len(_flows(list(client.events()))) == 1
    finally:
        relay.stop()


def test_mutual_tls(audit_cluster: SimCluster) -> None:
    relay = audit_cluster.start_hubble(generate=False, mtls=True)
    try:
        relay.emit("shop/frontend", "shop/db", count=2)
        cert, key = relay.client_certificate()
        with _client(relay.address, ca_cert=relay.ca_cert_path, client_cert=cert, client_key=key) as client:
            assert len(_flows(list(client.events()))) == 2
        with pytest.raises(RelayError) as no_client_cert:
            _client(relay.address, ca_cert=relay.ca_cert_path).connect()
        assert no_client_cert.value.kind == "tls-client-cert"
        assert "client certificate" in str(no_client_cert.value)
        with pytest.raises(RelayError, match="go together"):
            _client(relay.address, ca_cert=relay.ca_cert_path, client_cert=cert)
    finally:
        relay.stop()


# --- port-forward -------------------------------------------------------------------------------------------------


def test_no_address_port_forwards_to_the_relay_pod(relay: HubbleRelay) -> None:
    cluster = relay.cluster
    relay.emit("shop/frontend", "shop/db", count=3)
    api = cluster.api_client()
    try:
        with _client(None, kube=Kube(api)) as client:
            flows = _flows(list(client.events()))
            assert client.pod is not None and client.pod.startswith("hubble-relay-") and client.target_port == 4245
            assert f"port-forward via pod kube-system/{client.pod} port 4245" in client.describe
            assert client.server_status().connected_nodes == 3
            relay.disconnect_after(1)  # the stream breaks: a new port-forward, to the pod looked up again
            resumed = _flows(list(client.events()))
            assert client.stats.reconnects == 1 and client.stats.duplicates == 1
        assert len(flows) == 3 and resumed == flows
    finally:
        api.close()

    readonly = cluster.api_client(cluster.readonly_token)
    try:
        with pytest.raises(RelayError) as forbidden:
            _client(None, kube=Kube(readonly)).connect()
    finally:
        readonly.close()
    assert forbidden.value.kind == "port-forward"
    assert 'cannot create resource "pods/portforward"' in str(forbidden.value)
    assert "port-forward via pod kube-system/hubble-relay-" in str(forbidden.value)


def test_port_forward_without_a_relay_service_says_so(sim_cluster: SimCluster) -> None:
    api = sim_cluster.api_client()
    try:
        with pytest.raises(RelayError) as missing:
            _client(None, kube=Kube(api), namespace="default").connect()
    finally:
        api.close()
    assert missing.value.kind == "port-forward" and "hubble.relay.enabled" in str(missing.value)


# --- a stream that breaks -----------------------------------------------------------------------------------------


def test_a_broken_stream_is_resumed_without_double_counting(relay: HubbleRelay) -> None:
    relay.emit("shop/frontend", "shop/db", count=40)
    relay.disconnect_after(15)
    with _client(relay.address) as client:
        events = list(client.events())
    flows = _flows(events)
    gaps = [e for e in events if isinstance(e, StreamGap)]
    assert len(flows) == 40 and len({(f.time, f.source.pod, f.node) for f in flows}) == 40
    assert client.stats.reconnects == 1 and client.stats.duplicates == 15
    assert len(gaps) == 1 and gaps[0].start == flows[14].time and gaps[0].end is not None
    assert "UNAVAILABLE" in gaps[0].reason
    assert relay.streams[0].aborted and relay.streams[1].request.HasField("since")


def test_a_broken_follow_is_resumed_and_the_gap_reported(relay: HubbleRelay) -> None:
    relay.disconnect_after(3)

    with _client(relay.address) as client:
        events = _follow_until(client, 8, lambda: relay.emit("shop/frontend", "shop/db", count=8), relay=relay)
    flows = _flows(events)
    assert len(flows) == 8 and len({f.time for f in flows}) == 8
    assert [type(e).__name__ for e in events].count("StreamGap") == 1
    assert client.stats.reconnects == 1


def test_reconnects_are_bounded(relay: HubbleRelay) -> None:
    relay.emit("shop/frontend", "shop/db", count=5)
    relay.disconnect_after(0, times=10)  # every stream breaks before its first flow: no progress
    events: list[Any] = []
    with _client(relay.address, max_reconnects=2) as client, pytest.raises(RelayError) as gave_up:
        for event in client.events():
            events.append(event)
    assert "2 reconnects" in str(gave_up.value)
    assert isinstance(events[-1], StreamGap) and events[-1].end is None
    assert "gave up after 2 reconnects" in events[-1].reason


def test_an_unreachable_relay_is_named(relay: HubbleRelay) -> None:
    address = relay.address
    relay.stop()
    with pytest.raises(RelayError) as refused:
        _client(address, timeout=2).connect()
    assert refused.value.kind in ("refused", "unreachable") and f"{address} (direct)" in str(refused.value)


# --- verdicts from the live state ---------------------------------------------------------------------------------


def test_verdicts_follow_the_live_audit_mode_of_the_endpoint(sim_cluster: SimCluster) -> None:
    relay = sim_cluster.start_hubble(generate=False)
    denied = {"verdicts": ("DROPPED",), "event_types": (1, 5), "drop_reasons": ("POLICY_DENIED", "POLICY_DENY")}
    api = sim_cluster.api_client()
    try:
        db = _db(sim_cluster)
        relay.emit("shop/frontend", "shop/db", count=2)
        with _client(relay.address) as client:
            dropped = _flows(list(client.events(**denied)))
            assert _flows(list(client.events())) == []  # no AUDIT while the endpoint enforces
        assert sorted((f.event_type, f.verdict, f.drop_reason) for f in dropped) == [
            (1, "DROPPED", "POLICY_DENIED")] * 2 + [(5, "DROPPED", "POLICY_DENIED")] * 2
        assert {f.destination.endpoint_id for f in dropped} == {db.id}

        service = AuditModeService(Kube(api), poll=0.05)
        service.set_endpoints(Selection(namespace="shop", label_selector="app=db"), True)
        assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id)
        since = datetime.datetime.now(UTC)
        relay.emit("shop/frontend", "shop/db", count=2)
        relay.emit("shop/backend", "shop/db", count=1)
        with _client(relay.address) as client:
            audited = _flows(list(client.events(since=since)))
            still_dropped = _flows(list(client.events(since=since, **denied)))
            allowed = _flows(list(client.events(since=since, verdicts=("FORWARDED",), event_types=(5,))))
        assert [(f.verdict, f.source.workload, f.drop_reason, f.match_type) for f in audited] == [
            ("AUDIT", "frontend", None, 0)] * 2
        assert still_dropped == []
        assert [(f.verdict, f.source.workload, f.match_type) for f in allowed] == [("FORWARDED", "backend", 2)]

        _set_db_audit(sim_cluster, False)
        since = datetime.datetime.now(UTC)
        relay.emit("shop/frontend", "shop/db", count=1)
        with _client(relay.address) as client:
            assert [f.verdict for f in _flows(list(client.events(since=since, **denied)))] == ["DROPPED"] * 2

        # an explicit deny rule: POLICY_DENY, and the policy named by an agent that correlates denies (1.16+)
        sim_cluster.apply({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                           "metadata": {"name": "no-monitoring", "namespace": "shop"},
                           "spec": {"endpointSelector": {"matchLabels": {"app": "db"}},
                                    "ingressDeny": [{"fromEndpoints": [{"matchLabels": {
                                        "k8s:io.kubernetes.pod.namespace": "monitoring"}}]}]}})
        sim_cluster.agent(db.node).version = "1.16.3"
        since = datetime.datetime.now(UTC)
        relay.emit("monitoring/metrics-agent", "shop/db", count=1)
        with _client(relay.address) as client:
            verdicts = [f for f in _flows(list(client.events(since=since, **denied))) if f.event_type == 5]
        assert [(f.drop_reason, f.denied_by, f.source.workload) for f in verdicts] == [
            ("POLICY_DENY", ("shop/no-monitoring",), "metrics-agent")]

        # egress: the frontend may only talk to the backend on 8080; its own node decides, and drops the rest
        sim_cluster.apply({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                           "metadata": {"name": "frontend-egress", "namespace": "shop"},
                           "spec": {"endpointSelector": {"matchLabels": {"app": "frontend"}},
                                    "egress": [{"toEndpoints": [{"matchLabels": {"app": "backend"}}],
                                                "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}})
        since = datetime.datetime.now(UTC)
        relay.emit("shop/frontend", "shop/db", count=1)
        relay.emit("shop/frontend", "shop/backend", count=1)
        with _client(relay.address) as client:
            verdicts = _flows(list(client.events(since=since, verdicts=("DROPPED", "FORWARDED"), event_types=(5,))))
        frontend_nodes = {relay.node_name(r.node) for r in sim_cluster.endpoints.values()
                          if r.pod_labels.get("app") == "frontend"}
        assert sorted((f.direction, f.verdict, f.destination.workload, f.match_type) for f in verdicts) == [
            ("EGRESS", "DROPPED", "db", 0), ("EGRESS", "FORWARDED", "backend", 2)]
        assert {f.node for f in verdicts} <= frontend_nodes and all(f.local.workload == "frontend" for f in verdicts)
    finally:
        api.close()
        relay.stop()


def test_the_h2_transport_serves_the_same_streams(audit_cluster: SimCluster) -> None:
    relay = audit_cluster.start_hubble(generate=False, transport="h2", tls=True)
    try:
        relay.emit("shop/frontend", "shop/db", count=4)
        with _client(relay.address, ca_cert=relay.ca_cert_path) as client:
            assert len(_flows(list(client.events()))) == 4
            assert client.server_status().connected_nodes == 3
            events = _follow_until(client, 3, lambda: relay.emit("shop/frontend", "shop/db", count=3), relay=relay)
        assert len(_flows(events)) == 3
    finally:
        relay.stop()


def test_background_generation_follows_the_traffic_matrix(audit_cluster: SimCluster) -> None:
    relay = audit_cluster.start_hubble(rate_multiplier=600.0)  # 30/min frontend -> db: 300 a second
    try:
        with _client(relay.address) as client:
            flows = []
            for event in client.events(follow=True, duration=20):
                if isinstance(event, FlowRecord):
                    flows.append(event)
                    if len(flows) >= 20:
                        break
        assert {f.verdict for f in flows} == {"AUDIT"}
        assert {f.source.workload for f in flows} <= {"frontend", "metrics-agent"}
    finally:
        relay.stop()
