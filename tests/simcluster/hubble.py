"""A simulated Hubble Relay: the Observer gRPC service (GetFlows, ServerStatus) on 127.0.0.1, fed by the cluster.

Flows come from ``cluster.traffic`` (each entry: ``from``/``to`` "namespace/workload", port, protocol, per_minute) and
the LIVE state of the cluster: the CiliumNetworkPolicies in the store decide, rule by rule, whether a connection is
allowed at the destination (ingress) and at the source (egress), and the agents' per-endpoint PolicyAuditMode turns
a would-be drop into AUDIT. What the Relay sends has the shapes of a real Cilium 1.15 capture (the fixtures in
shared/fixtures/hubble/real-1.15.1): node names "cluster/node", sorted labels, the cluster's identities and IPs, the
endpoint ID only on the side local to the reporting node, drops as a DROPPED policy verdict (type 5) plus a drop
event (type 1, sub type 133), AUDIT verdicts without drop reason or match type, trace events (type 4) and replies.

Per node, a ring buffer (4095 flows by default) keeps the newest flows; ``number`` is per node, ``since`` without
``until`` ends now, ``follow`` streams new flows and reports ``lost_events`` when a reader falls a buffer behind.
Knobs for tests: ``emit()`` (deterministic traffic), ``set_node_unavailable()``, ``inject_lost_events()``,
``disconnect_after()``, ``max_flows_per_second`` (a perf ring budget per node), ``rate_multiplier``, ``noise``, TLS
and mTLS with certificates from ``simcluster.tls``.

Two transports serve the same streams: ``grpcio`` (``grpc.server`` with a thread pool, the default) and ``h2``, a
plain HTTP/2 server (the ``h2`` package) that packs many pre-serialized messages into each DATA frame. A grpcio
server sends one message per completion-queue round trip, about 15,000 a second here, which is below what the
client can read; the benchmark uses ``h2``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from .fixtures import REPO_ROOT
from .selectors import match_label_selector_object
from .tls import CertificateAuthority, KeyPair

try:
    from ansible_collections.netpol.cilium.plugins.module_utils._hubble_pb import (
        flow_pb2,
        observer_pb2,
        observer_pb2_grpc,
        relay_pb2,
    )
except ImportError:  # run outside pytest / make: the laid-out collections tree
    sys.path.insert(0, str(REPO_ROOT / ".cache" / "collections"))
    from ansible_collections.netpol.cilium.plugins.module_utils._hubble_pb import (
        flow_pb2,
        observer_pb2,
        observer_pb2_grpc,
        relay_pb2,
    )

if TYPE_CHECKING:
    from .cluster import EndpointRecord, SimCluster

NS = 1_000_000_000
VERSION = "1.15.1"
RELAY_PORT = 4245
SERVER_NAME = "*.hubble-relay.cilium.io"  # the Helm chart's relay server certificate name

# event types and trace observation points (the trace event's sub type is the point, TO_ENDPOINT being 0)
DROP, TRACE, POLICY_VERDICT = 1, 4, 5
FROM_ENDPOINT, TO_OVERLAY, FROM_OVERLAY = flow_pb2.FROM_ENDPOINT, flow_pb2.TO_OVERLAY, flow_pb2.FROM_OVERLAY
POLICY_DENIED, POLICY_DENY = flow_pb2.POLICY_DENIED, flow_pb2.POLICY_DENY
MATCH_NONE, MATCH_L3, MATCH_L3_L4, MATCH_L4, MATCH_ALL = 0, 1, 2, 3, 4
FLUSH = None  # yielded by a stream when it is about to wait: the transport should send what it holds


class Abort(Exception):
    """End a stream with a gRPC status (the disconnect knob)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


# --- policy -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """The policy outcome at one endpoint in one direction."""

    allowed: bool
    audit: bool = False
    match_type: int = MATCH_NONE
    drop_reason: int = 0
    policies: tuple[tuple[str, str, str], ...] = ()  # (namespace, name, uid) that allowed or denied

    @property
    def verdict(self) -> int:
        if self.allowed:
            return flow_pb2.FORWARDED
        return flow_pb2.AUDIT if self.audit else flow_pb2.DROPPED

    @property
    def passes(self) -> bool:
        return self.allowed or self.audit


def _bare(key: str) -> str:
    for prefix in ("k8s:", "any:"):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


NAMESPACE_LABEL = "io.kubernetes.pod.namespace"


def _selector_matches(selector: dict[str, Any] | None, policy_ns: str, peer: EndpointRecord) -> bool:
    """A Cilium endpoint selector inside a namespaced policy: it matches only in the policy's namespace unless it
    names a namespace label itself."""
    selector = selector or {}
    match_labels = {_bare(k): v for k, v in (selector.get("matchLabels") or {}).items()}
    expressions = [{**e, "key": _bare(e["key"])} for e in selector.get("matchExpressions") or []]
    names_namespace = NAMESPACE_LABEL in match_labels or any(e["key"] == NAMESPACE_LABEL for e in expressions)
    if not names_namespace and peer.namespace != policy_ns:
        return False
    labels = dict(peer.pod_labels)
    labels[NAMESPACE_LABEL] = peer.namespace
    return match_label_selector_object({"matchLabels": match_labels, "matchExpressions": expressions}, labels)


def _ports_match(to_ports: list[dict[str, Any]], port: int, protocol: str) -> bool:
    for entry in to_ports:
        for spec in entry.get("ports") or [{}]:
            proto = str(spec.get("protocol") or "ANY").upper()
            if proto not in ("ANY", protocol):
                continue
            first = str(spec.get("port") or "0")
            if not first.isdigit():
                continue  # named ports are not simulated
            low = int(first)
            high = int(spec.get("endPort") or low)
            if low == 0 or low <= port <= high:
                return True
    return False


def _rule_match(rule: dict[str, Any], ingress: bool, policy_ns: str, peer: EndpointRecord, port: int,
                protocol: str) -> int:
    """The match type (>0) when the rule covers the peer and port, else 0."""
    endpoints_key, entities_key = ("fromEndpoints", "fromEntities") if ingress else ("toEndpoints", "toEntities")
    has_peers = endpoints_key in rule or entities_key in rule
    has_ports = bool(rule.get("toPorts"))
    if not has_peers and not has_ports:
        return 0  # an empty rule allows nothing
    if has_peers:
        by_endpoint = any(_selector_matches(sel, policy_ns, peer) for sel in rule.get(endpoints_key) or [])
        by_entity = any(entity in ("all", "cluster") for entity in rule.get(entities_key) or [])
        if not (by_endpoint or by_entity):
            return 0
    if has_ports and not _ports_match(rule["toPorts"], port, protocol):
        return 0
    if has_peers and has_ports:
        return MATCH_L3_L4
    if has_peers:
        return MATCH_ALL if "all" in (rule.get(entities_key) or []) else MATCH_L3
    return MATCH_L4


def _policy_specs(cnp: dict[str, Any]) -> list[dict[str, Any]]:
    return ([cnp["spec"]] if cnp.get("spec") else []) + list(cnp.get("specs") or [])


def _endpoint_selected(spec: dict[str, Any], record: EndpointRecord) -> bool:
    selector = spec.get("endpointSelector")
    if selector is None:
        return False
    return match_label_selector_object(
        {"matchLabels": {_bare(k): v for k, v in (selector.get("matchLabels") or {}).items()},
         "matchExpressions": [{**e, "key": _bare(e["key"])} for e in selector.get("matchExpressions") or []]},
        record.pod_labels)


# --- flows and their filter view --------------------------------------------------------------------------------------


class Meta:
    """What the filters look at, shared by every flow built from one template (compared by identity)."""

    __slots__ = ("destination_identity", "destination_ip", "destination_labels", "destination_pod",
                 "destination_port", "direction", "drop_reason", "event_type", "node", "protocol", "reply",
                 "source_identity", "source_ip", "source_labels", "source_pod", "sub_type", "verdict")

    def __init__(self, **values: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, values.get(name))


@dataclass
class Endpoint:
    """One pod endpoint as flows show it."""

    record: EndpointRecord
    node: str  # "cluster/node"
    labels: list[str]
    mac: str
    host_mac: str
    interface: tuple[int, str]
    workload: tuple[str, str] | None  # (name, kind)

    def message(self, target: Any, local: bool) -> None:
        if local:
            target.ID = self.record.id
        target.identity = self.record.identity
        target.namespace = self.record.namespace
        target.labels.extend(self.labels)
        target.pod_name = self.record.pod
        if self.workload:
            target.workloads.add(name=self.workload[0], kind=self.workload[1])


@dataclass
class Template:
    """One flow of a connection, pre-built: per connection only time, uuid and the ephemeral port change."""

    node: str
    response: Any  # observer_pb2.GetFlowsResponse
    meta: Meta
    reply: bool
    offset_ns: int


@dataclass
class Connection:
    source: Endpoint
    destination: Endpoint
    port: int
    protocol: str
    egress: Decision | None  # None: the source does not enforce egress
    ingress: Decision | None


class Ring:
    """A node's ring buffer of (time_ns, Meta | None, serialized GetFlowsResponse); Meta None marks a lost event."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.slots: list[Any] = [None] * capacity
        self.written = 0

    def append(self, entry: tuple[int, Meta | None, bytes]) -> None:
        self.slots[self.written % self.capacity] = entry
        self.written += 1

    def oldest(self) -> int:
        return max(0, self.written - self.capacity)

    def read(self, start: int, end: int) -> list[tuple[int, Meta | None, bytes]]:
        start = max(start, self.oldest())
        cap, slots = self.capacity, self.slots
        return [slots[index % cap] for index in range(start, end)]

    def __len__(self) -> int:
        return self.written - self.oldest()


class Matcher:
    """A request's whitelist/blacklist, evaluated on Meta and cached per template."""

    def __init__(self, whitelist: list[Any], blacklist: list[Any]) -> None:
        self.whitelist = list(whitelist)
        self.blacklist = list(blacklist)
        self._cache: dict[Meta, bool] = {}  # Meta hashes by identity; the key keeps it alive

    def __call__(self, meta: Meta) -> bool:
        result = self._cache.get(meta)
        if result is None:
            allowed = not self.whitelist or any(_filter_matches(f, meta) for f in self.whitelist)
            result = self._cache[meta] = allowed and not any(_filter_matches(f, meta) for f in self.blacklist)
        return result


def _pod_matches(patterns: Any, pod: str) -> bool:
    for pattern in patterns:
        namespace, sep, prefix = pattern.partition("/")
        if not sep:
            if pod.partition("/")[2].startswith(namespace):
                return True
        elif pod.startswith(f"{namespace}/") and pod.partition("/")[2].startswith(prefix):
            return True
    return False


def _labels_match(selectors: Any, labels: frozenset[str]) -> bool:
    bare = {label.partition(":")[2] if ":" in label.partition("=")[0] else label for label in labels}
    for selector in selectors:
        requirements = [part.strip() for part in selector.split(",") if part.strip()]
        if all((req in labels) or (req in bare) for req in requirements):
            return True
    return False


def _ip_matches(patterns: Any, ip: str | None) -> bool:
    if not ip:
        return False
    address = ipaddress.ip_address(ip)
    for pattern in patterns:
        try:
            if address in ipaddress.ip_network(pattern, strict=False):
                return True
        except ValueError:
            continue
    return False


def _filter_matches(flt: Any, meta: Meta) -> bool:
    """One FlowFilter: every field that is set must match (AND); unsupported fields (ports of replies, uuid) do not
    match."""
    if flt.verdict and meta.verdict not in flt.verdict:
        return False
    if flt.event_type and not any(e.type == meta.event_type and (not e.match_sub_type or e.sub_type == meta.sub_type)
                                  for e in flt.event_type):
        return False
    if flt.traffic_direction and meta.direction not in flt.traffic_direction:
        return False
    if flt.drop_reason_desc and meta.drop_reason not in flt.drop_reason_desc:
        return False
    if flt.source_pod and not _pod_matches(flt.source_pod, meta.source_pod):
        return False
    if flt.destination_pod and not _pod_matches(flt.destination_pod, meta.destination_pod):
        return False
    if flt.source_label and not _labels_match(flt.source_label, meta.source_labels):
        return False
    if flt.destination_label and not _labels_match(flt.destination_label, meta.destination_labels):
        return False
    if flt.source_identity and meta.source_identity not in flt.source_identity:
        return False
    if flt.destination_identity and meta.destination_identity not in flt.destination_identity:
        return False
    if flt.source_ip and not _ip_matches(flt.source_ip, meta.source_ip):
        return False
    if flt.destination_ip and not _ip_matches(flt.destination_ip, meta.destination_ip):
        return False
    if flt.node_name and not any(fnmatch.fnmatchcase(meta.node, p if ("*" in p or not p.endswith("/")) else p + "*")
                                 for p in flt.node_name):
        return False
    if flt.protocol and meta.protocol.lower() not in [p.lower() for p in flt.protocol]:
        return False
    if flt.destination_port and (meta.reply or str(meta.destination_port) not in flt.destination_port):
        return False
    if flt.reply and bool(meta.reply) not in flt.reply:
        return False
    return not (flt.uuid or flt.source_port)


# --- the relay --------------------------------------------------------------------------------------------------------


@dataclass
class StreamRecord:
    """One GetFlows call as the relay served it (for tests)."""

    request: Any
    follow: bool
    sent: dict[str, int] = field(default_factory=lambda: {"flow": 0, "lost_events": 0, "node_status": 0})
    aborted: str | None = None
    done: bool = False


class HubbleRelay:
    """The simulated Relay of one SimCluster. ``start()`` returns "127.0.0.1:PORT"; ``stop()`` ends it."""

    def __init__(self, cluster: SimCluster, *, tls: bool = False, mtls: bool = False, capacity: int = 4095,
                 rate_multiplier: float = 1.0, generate: bool = True, noise: bool = True, tick: float = 0.05,
                 max_flows_per_second: int | None = None, transport: str = "grpcio", seed: int = 0,
                 server_names: tuple[str, ...] = (SERVER_NAME, "localhost"), workers: int = 16) -> None:
        if transport not in ("grpcio", "h2"):
            raise ValueError(f"transport must be grpcio or h2, not {transport!r}")
        self.cluster = cluster
        self.tls = tls or mtls
        self.mtls = mtls
        self.capacity = capacity
        self.rate_multiplier = rate_multiplier
        self.generate = generate
        self.noise = noise
        self.tick_seconds = tick
        self.max_flows_per_second = max_flows_per_second
        self.transport = transport
        self.workers = workers
        self.address: str | None = None
        self.streams: list[StreamRecord] = []
        self.generated = 0  # flows written into the rings
        self.perf_lost = 0  # flows dropped by the max_flows_per_second budget
        self._rng = random.Random(seed)
        bits = self._rng.getrandbits
        self._uuid_prefix = f"{bits(32):08x}-{bits(16):04x}-4{bits(12):03x}-"  # uuid v4 form, counter in the rest
        self._uuid_counter = 0
        self._lock = threading.Condition()  # the rings, node availability, followers
        self._generating = threading.RLock()  # templates, round robin, uuids: the generator thread and emit()
        self._rings: dict[str, Ring] = {}
        self._unavailable: dict[str, str] = {}  # node -> message
        # every availability change: (node, unavailable, message, ring position then), replayed in order by followers
        self._node_log: list[tuple[str, bool, str, int]] = []
        self._disconnects: list[int] = []
        self._followers = 0
        self._stopped = threading.Event()
        self._paused = False
        self._carry: dict[int, float] = {}
        self._round_robin: dict[tuple[int, str], int] = {}
        self._templates: dict[tuple[Any, ...], list[Template]] = {}
        self._endpoints: dict[tuple[str, str, int], Endpoint] = {}
        self._budget: dict[str, tuple[int, int]] = {}  # node -> (second, flows written in it)
        self._started_ns = time.time_ns()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self.ca: CertificateAuthority | None = None
        self.ca_cert_path: str | None = None
        self._server_pair: KeyPair | None = None
        if self.tls:
            self.ca = CertificateAuthority(f"{cluster.name}-hubble-ca")
            self._server_pair = self.ca.issue(server_names[0], tuple(server_names), ("127.0.0.1",))
            path = cluster.state_dir / "hubble-ca.crt"
            path.write_bytes(self.ca.cert_pem)
            self.ca_cert_path = str(path)

    # --- lifecycle ----------------------------------------------------------------------------------------------------
    def start(self) -> str:
        for node in self.cluster.node_names():
            self._rings.setdefault(self.node_name(node), Ring(self.capacity))
        if self.transport == "h2":
            self._server = H2Server(self, self._ssl_context())
            port = self._server.port
        else:
            self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="relay"),
                                       options=[("grpc.so_reuseport", 0)])
            self._server.add_generic_rpc_handlers((_generic_handler(_Servicer(self)),))
            if self.tls:
                assert self._server_pair is not None and self.ca is not None
                credentials = grpc.ssl_server_credentials(
                    [(self._server_pair.key_pem, self._server_pair.cert_pem)],
                    root_certificates=self.ca.cert_pem if self.mtls else None, require_client_auth=self.mtls)
                port = self._server.add_secure_port("127.0.0.1:0", credentials)
            else:
                port = self._server.add_insecure_port("127.0.0.1:0")
            self._server.start()
        self.address = f"127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._run, name=f"{self.cluster.name}-hubble", daemon=True)
        self._thread.start()
        return self.address

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            self._lock.notify_all()
        if self._server is not None:
            if isinstance(self._server, H2Server):
                self._server.close()
            else:
                self._server.stop(0.5).wait(5)
        if self._thread is not None:
            self._thread.join(5)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        assert self._server_pair is not None and self.ca is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        directory = self.cluster.state_dir
        (directory / "hubble-relay.crt").write_bytes(self._server_pair.cert_pem)
        key = directory / "hubble-relay.key"
        key.write_bytes(self._server_pair.key_pem)
        key.chmod(0o600)
        context.load_cert_chain(str(directory / "hubble-relay.crt"), str(key))
        context.set_alpn_protocols(["h2"])
        if self.mtls:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self.ca.cert_pem.decode())
        return context

    def client_certificate(self, name: str = "hubble-client", directory: str | None = None) -> tuple[str, str]:
        """Issue a client certificate from the relay's CA; returns (cert path, key path)."""
        if self.ca is None:
            raise RuntimeError("the relay has no TLS")
        pair = self.ca.issue(name, (f"{name}.hubble-relay.cilium.io",), client=True)
        base = os.path.join(directory or str(self.cluster.state_dir), name)
        with open(base + ".crt", "wb") as handle:
            handle.write(pair.cert_pem)
        with open(base + ".key", "wb") as handle:
            handle.write(pair.key_pem)
        os.chmod(base + ".key", 0o600)
        return base + ".crt", base + ".key"

    # --- knobs --------------------------------------------------------------------------------------------------------
    def node_name(self, node: str) -> str:
        return f"{self.cluster.name}/{node}"

    def pause(self) -> None:
        """Stop the background generation (emit() still works)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def set_node_unavailable(self, node: str, unavailable: bool = True,
                             message: str = "connection error: desc = \"transport: Error while dialing: dial tcp "
                             "4244: connect: connection refused\"") -> None:
        """The Relay loses (or regains) a node: NODE_UNAVAILABLE, and its flows missing from every stream."""
        full = node if "/" in node else self.node_name(node)
        with self._lock:
            if unavailable:
                self._unavailable[full] = message
            else:
                self._unavailable.pop(full, None)
            ring = self._rings.get(full)
            self._node_log.append((full, unavailable, message, ring.written if ring else 0))
            self._lock.notify_all()

    def inject_lost_events(self, count: int, node: str | None = None,
                           source: str = "PERF_EVENT_RING_BUFFER") -> None:
        """A LostEvent of ``count`` events in a node's ring buffer (the first node by default)."""
        with self._lock:
            full = (node if "/" in node else self.node_name(node)) if node else sorted(self._rings)[0]
            self._append_lost(full, count, flow_pb2.LostEventSource.Value(source), time.time_ns())
            self._lock.notify_all()

    def disconnect_after(self, flows: int, times: int = 1) -> None:
        """The next ``times`` GetFlows streams break (UNAVAILABLE) after sending ``flows`` flows each."""
        with self._lock:
            self._disconnects.extend([flows] * times)

    def wait_for_followers(self, count: int = 1, timeout: float = 10.0) -> None:
        """Until ``count`` follow streams are reading new flows (so that flows emitted next reach them)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._followers < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._followers} follow streams, waited for {count}")
                self._lock.wait(remaining)

    def wait_for_no_followers(self, timeout: float = 10.0) -> None:
        """Until every follow stream has ended (a client that stopped reading is noticed within a poll)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._followers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._followers} follow streams still open")
                self._lock.wait(min(remaining, 0.2))

    def buffered(self, node: str | None = None) -> int:
        with self._lock:
            if node:
                return len(self._rings[node if "/" in node else self.node_name(node)])
            return sum(len(ring) for ring in self._rings.values())

    # --- generation ---------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        last = time.monotonic()
        while not self._stopped.wait(self.tick_seconds):
            now = time.monotonic()
            elapsed, last = now - last, now
            if self.generate and not self._paused:
                try:
                    self.tick(elapsed)
                except Exception as exc:  # noqa: BLE001 - a generator keeps running, like an agent
                    self.cluster._logs.setdefault(("", "hubble-relay"), []).append(repr(exc))

    def tick(self, seconds: float) -> int:
        """Generate ``seconds`` worth of ``cluster.traffic`` (times spread over the last ``seconds``); returns the
        number of flows written."""
        now = time.time_ns()
        span = int(seconds * NS)
        written = 0
        for index, entry in enumerate(list(self.cluster.traffic)):
            expected = self._carry.get(index, 0.0) + float(entry.get("per_minute", 0)) / 60 * seconds * \
                self.rate_multiplier
            count = int(expected)
            self._carry[index] = expected - count
            if count:
                written += self._emit_entry(index, entry, count, now - span, span)
        return written

    def emit(self, source: str, destination: str, port: int | None = None, protocol: str | None = None,
             count: int = 1) -> dict[str, int]:
        """``count`` connections now from workload ``source`` ("ns/name") to ``destination`` (port and protocol from
        the matching traffic entry unless given). Returns the flows written, by verdict name and kind."""
        entry: dict[str, Any] = next((dict(e) for e in self.cluster.traffic if e["from"] == source
                                      and e["to"] == destination and (port is None or e["port"] == port)), {})
        entry.update({"from": source, "to": destination})
        if port is not None:
            entry["port"] = port
        if protocol is not None:
            entry["protocol"] = protocol
        entry.setdefault("protocol", "TCP")
        if "port" not in entry:
            raise ValueError(f"no traffic entry {source} -> {destination}: give the port")
        counts: dict[str, int] = {}
        # connections 20 µs apart from now on: later than anything emitted before, and still in the past by the time
        # a reader asks
        self._emit_entry(("emit", source, destination, entry["port"]), entry, count, time.time_ns(), 20000 * count,
                         counts)
        return counts

    def _pods(self, workload: str) -> list[EndpointRecord]:
        namespace, _sep, name = workload.partition("/")
        records = [r for r in list(self.cluster.endpoints.values()) if r.namespace == namespace and name in (
            r.pod_labels.get("app"), r.pod_labels.get("app.kubernetes.io/name"), r.pod_labels.get("k8s-app"))]
        return sorted(records, key=lambda r: r.pod)

    def _next_pod(self, key: Any, side: str, pods: list[EndpointRecord]) -> EndpointRecord:
        position = self._round_robin.get((key, side), 0)
        self._round_robin[(key, side)] = position + 1
        return pods[position % len(pods)]

    def _emit_entry(self, key: Any, entry: dict[str, Any], count: int, start_ns: int, span_ns: int,
                    counts: dict[str, int] | None = None) -> int:
        with self._generating:
            return self._emit_locked(key, entry, count, start_ns, span_ns, counts)

    def _emit_locked(self, key: Any, entry: dict[str, Any], count: int, start_ns: int, span_ns: int,
                     counts: dict[str, int] | None) -> int:
        sources, destinations = self._pods(entry["from"]), self._pods(entry["to"])
        if not sources or not destinations:
            return 0
        port, protocol = int(entry["port"]), str(entry.get("protocol", "TCP")).upper()
        decisions: dict[tuple[str, str], list[Template]] = {}
        batch: dict[str, list[tuple[int, Meta | None, bytes]]] = {}
        written = 0
        step = max(1, span_ns // count)
        for number in range(count):
            src = self._next_pod(key, "from", sources)
            dst = self._next_pod(key, "to", destinations)
            pair = (src.pod, dst.pod)
            templates = decisions.get(pair)
            if templates is None:
                templates = decisions[pair] = self._templates_for(src, dst, port, protocol)
            base = start_ns + number * step
            ephemeral = self._rng.randint(32768, 60999)
            for template in templates:
                stamp = base + template.offset_ns
                response = template.response
                flow = response.flow
                seconds, nanos = divmod(stamp, NS)
                flow.time.seconds = response.time.seconds = seconds
                flow.time.nanos = response.time.nanos = nanos
                self._uuid_counter += 1
                flow.uuid = f"{self._uuid_prefix}{0x8000 | (self._uuid_counter >> 48) & 0x3fff:04x}-" \
                    f"{self._uuid_counter & 0xffffffffffff:012x}"
                l4 = flow.l4.TCP if protocol == "TCP" else flow.l4.UDP if protocol == "UDP" else None
                if l4 is not None:
                    if template.reply:
                        l4.destination_port = ephemeral
                    else:
                        l4.source_port = ephemeral
                batch.setdefault(template.node, []).append((stamp, template.meta, response.SerializeToString()))
                if counts is not None:
                    name = flow_pb2.Verdict.Name(template.meta.verdict)
                    kind = {DROP: "drop", TRACE: "trace", POLICY_VERDICT: "policy-verdict"}[template.meta.event_type]
                    counts[f"{kind}:{name}"] = counts.get(f"{kind}:{name}", 0) + 1
        with self._lock:
            for node, entries in batch.items():
                ring = self._rings.get(node)
                if ring is None:
                    ring = self._rings[node] = Ring(self.capacity)
                kept, lost = self._within_budget(node, entries)
                for item in kept:
                    ring.append(item)
                if lost:
                    self._append_lost(node, lost, flow_pb2.PERF_EVENT_RING_BUFFER, entries[-1][0])
                written += len(kept)
            self.generated += written
            self._lock.notify_all()
        return written

    def _within_budget(self, node: str, entries: list[tuple[int, Meta | None, bytes]]) -> tuple[list[Any], int]:
        """The perf ring budget: flows past max_flows_per_second in one second are lost (kept, lost count)."""
        if not self.max_flows_per_second:
            return entries, 0
        second = entries[0][0] // NS
        current, used = self._budget.get(node, (second, 0))
        if current != second:
            used = 0
        room = max(0, self.max_flows_per_second - used)
        kept = entries[:room]
        self._budget[node] = (second, used + len(kept))
        lost = len(entries) - len(kept)
        self.perf_lost += lost
        return kept, lost

    def _append_lost(self, node: str, count: int, source: int, stamp: int) -> None:
        response = observer_pb2.GetFlowsResponse(node_name=node)
        response.lost_events.source = source
        response.lost_events.num_events_lost = count
        response.lost_events.cpu.value = 0
        response.time.seconds, response.time.nanos = divmod(stamp, NS)
        self._rings[node].append((stamp, None, response.SerializeToString()))

    # --- connections: policy and templates ----------------------------------------------------------------------------
    def _endpoint(self, record: EndpointRecord) -> Endpoint | None:
        key = (record.namespace, record.pod, record.id)
        cached = self._endpoints.get(key)
        if cached is not None:
            return cached
        agent = self.cluster.agents.get(record.node)
        if agent is None or record.id not in agent.endpoints():
            return None
        runtime = agent.runtime(record.id)
        pod = self.cluster.store.try_get(self.cluster.rtype("pods"), record.namespace, record.pod) or {}
        owner = next((o for o in pod.get("metadata", {}).get("ownerReferences") or [] if o.get("controller")), None)
        workload = None
        if owner is not None:
            name, kind = owner["name"], owner["kind"]
            if kind == "ReplicaSet" and "-" in name:
                name, kind = name.rsplit("-", 1)[0], "Deployment"
            workload = (name, kind)
        endpoint = Endpoint(record, self.node_name(record.node), sorted(record.labels), runtime.mac, runtime.host_mac,
                            (runtime.interface_index or 0, runtime.interface_name), workload)
        self._endpoints[key] = endpoint
        return endpoint

    def _decide(self, local: EndpointRecord, peer: EndpointRecord, port: int, protocol: str,
                ingress: bool) -> Decision | None:
        """The policy verdict at ``local`` for traffic from (ingress) or to (egress) ``peer``; None when no policy
        enforces that direction on ``local``."""
        enforce_ingress, enforce_egress = self.cluster.policy_for(local.namespace, local.pod_labels)
        if not (enforce_ingress if ingress else enforce_egress):
            return None
        direction = "ingress" if ingress else "egress"
        allowed: list[tuple[str, str, str]] = []
        denied: list[tuple[str, str, str]] = []
        match = MATCH_NONE
        try:
            cnp_type = self.cluster.store.type_for_kind("CiliumNetworkPolicy")
            policies = self.cluster.store.list(cnp_type, local.namespace)
        except KeyError:
            policies = []
        for cnp in policies:
            meta = cnp["metadata"]
            ref = (meta["namespace"], meta["name"], meta.get("uid", ""))
            for spec in _policy_specs(cnp):
                if not _endpoint_selected(spec, local):
                    continue
                for rule in spec.get(direction) or []:
                    found = _rule_match(rule, ingress, meta["namespace"], peer, port, protocol)
                    if found:
                        match = match or found
                        if ref not in allowed:
                            allowed.append(ref)
                for rule in spec.get(f"{direction}Deny") or []:
                    if _rule_match(rule, ingress, meta["namespace"], peer, port, protocol) and ref not in denied:
                        denied.append(ref)
        if not denied and allowed:
            return Decision(True, match_type=match, policies=tuple(allowed))
        agent = self.cluster.agents.get(local.node)
        try:
            audit = bool(agent and agent.endpoint_audit_mode(local.id))
        except KeyError:
            audit = False
        reason = POLICY_DENY if denied else POLICY_DENIED
        return Decision(False, audit=audit, drop_reason=reason, policies=tuple(denied))

    def _templates_for(self, src_record: EndpointRecord, dst_record: EndpointRecord, port: int,
                       protocol: str) -> list[Template]:
        src, dst = self._endpoint(src_record), self._endpoint(dst_record)
        if src is None or dst is None:
            return []
        connection = Connection(src, dst, port, protocol, self._decide(src_record, dst_record, port, protocol, False),
                                self._decide(dst_record, src_record, port, protocol, True))
        key = (src_record.pod, src_record.id, dst_record.pod, dst_record.id, port, protocol, connection.egress,
               connection.ingress, self.noise, self._version(src.node), self._version(dst.node))
        templates = self._templates.get(key)
        if templates is None:
            if len(self._templates) > 4096:
                self._templates.clear()
            templates = self._templates[key] = self._build(connection)
        return templates

    def _version(self, node: str) -> tuple[int, int]:
        agent = self.cluster.agents.get(node.partition("/")[2])
        parts = (agent.version if agent else VERSION).split(".")
        try:
            return int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            return 1, 15

    def _build(self, c: Connection) -> list[Template]:
        """The flows of one connection, in the order the datapath reports them."""
        templates: list[Template] = []
        tcp = c.protocol == "TCP"
        same_node = c.source.node == c.destination.node

        def add(node: str, verdict: int, event_type: int, sub_type: int = 0, *, reply: bool = False,
                direction: int = 0, point: int | None = None, is_reply: bool | None = None,
                decision: Decision | None = None, drop: int = 0, interface: tuple[int, str] | None = None,
                macs: tuple[str, str] = ("", "")) -> None:
            a, b = (c.destination, c.source) if reply else (c.source, c.destination)
            response = observer_pb2.GetFlowsResponse(node_name=node)
            flow = response.flow
            flow.verdict = verdict
            if drop:
                flow.drop_reason = drop
                flow.drop_reason_desc = drop
            flow.ethernet.source, flow.ethernet.destination = macs
            flow.IP.source, flow.IP.destination = a.record.ipv4, b.record.ipv4
            flow.IP.ipVersion = flow_pb2.IPv4
            if tcp:
                flow.l4.TCP.source_port = c.port if reply else 0
                flow.l4.TCP.destination_port = 0 if reply else c.port
                flow.l4.TCP.flags.SYN = True
                if reply:
                    flow.l4.TCP.flags.ACK = True
            elif c.protocol == "UDP":
                flow.l4.UDP.source_port = c.port if reply else 0
                flow.l4.UDP.destination_port = 0 if reply else c.port
            elif c.protocol == "SCTP":
                flow.l4.SCTP.destination_port = c.port
            a.message(flow.source, a.node == node)
            b.message(flow.destination, b.node == node)
            flow.Type = flow_pb2.L3_L4
            flow.node_name = node
            if reply:
                flow.reply = True
            flow.event_type.type = event_type
            if sub_type:
                flow.event_type.sub_type = sub_type
            if direction:
                flow.traffic_direction = direction
            if decision is not None and decision.allowed:
                flow.policy_match_type = decision.match_type
            if point is not None:
                flow.trace_observation_point = point
            if is_reply is not None:
                flow.is_reply.value = is_reply
            if interface is not None:
                flow.interface.index, flow.interface.name = interface
            if decision is not None:
                policies = ((flow.ingress_allowed_by if direction == flow_pb2.INGRESS else flow.egress_allowed_by)
                            if decision.allowed else
                            (flow.ingress_denied_by if direction == flow_pb2.INGRESS else flow.egress_denied_by))
                version = self._version(node)
                correlated = version >= (1, 15) if decision.allowed else (
                    version >= (1, 16) and not decision.audit and decision.drop_reason == POLICY_DENY)
                if correlated:
                    for namespace, name, uid in decision.policies:
                        policies.add(name=name, namespace=namespace, revision=2, labels=[
                            "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
                            f"k8s:io.cilium.k8s.policy.name={name}", f"k8s:io.cilium.k8s.policy.namespace={namespace}",
                            f"k8s:io.cilium.k8s.policy.uid={uid}"],
                            kind="CiliumNetworkPolicy" if version >= (1, 17) else "")
            flow.Summary = ("TCP Flags: SYN, ACK" if reply else "TCP Flags: SYN") if tcp else c.protocol
            meta = Meta(verdict=verdict, event_type=event_type, sub_type=sub_type, direction=direction,
                        drop_reason=drop, reply=reply, node=node,
                        source_pod=f"{a.record.namespace}/{a.record.pod}",
                        destination_pod=f"{b.record.namespace}/{b.record.pod}",
                        source_labels=frozenset(a.labels), destination_labels=frozenset(b.labels),
                        source_identity=a.record.identity, destination_identity=b.record.identity,
                        source_ip=a.record.ipv4, destination_ip=b.record.ipv4, protocol=c.protocol,
                        destination_port=c.port)
            templates.append(Template(node, response, meta, reply, len(templates) * 1700))

        def verdict_at(node: str, decision: Decision, direction: int, local: Endpoint) -> bool:
            """The policy verdict (and the drop); False when the packet goes no further."""
            macs = (local.host_mac, local.mac) if direction == flow_pb2.INGRESS else (local.mac, local.host_mac)
            if decision.passes:
                add(node, decision.verdict, POLICY_VERDICT, direction=direction, is_reply=False, decision=decision,
                    macs=macs)
                return True
            add(node, flow_pb2.DROPPED, POLICY_VERDICT, direction=direction, decision=decision,
                drop=decision.drop_reason, macs=macs)
            add(node, flow_pb2.DROPPED, DROP, decision.drop_reason, direction=direction, drop=decision.drop_reason,
                macs=macs)
            return False

        src, dst = c.source, c.destination
        if self.noise:
            add(src.node, flow_pb2.FORWARDED, TRACE, FROM_ENDPOINT, point=FROM_ENDPOINT, macs=(src.mac, src.host_mac))
        if c.egress is not None and not verdict_at(src.node, c.egress, flow_pb2.EGRESS, src):
            return templates
        if self.noise and not same_node:
            add(src.node, flow_pb2.FORWARDED, TRACE, TO_OVERLAY, point=TO_OVERLAY, macs=(src.host_mac, src.host_mac))
            add(dst.node, flow_pb2.FORWARDED, TRACE, FROM_OVERLAY, point=FROM_OVERLAY,
                macs=(dst.host_mac, dst.host_mac))
        if c.ingress is not None and not verdict_at(dst.node, c.ingress, flow_pb2.INGRESS, dst):
            return templates
        if self.noise:
            add(dst.node, flow_pb2.FORWARDED, TRACE, direction=flow_pb2.INGRESS, point=flow_pb2.TO_ENDPOINT,
                is_reply=False, interface=dst.interface, macs=(dst.host_mac, dst.mac))
            add(dst.node, flow_pb2.FORWARDED, TRACE, FROM_ENDPOINT, reply=True, point=FROM_ENDPOINT,
                macs=(dst.mac, dst.host_mac))
            add(src.node, flow_pb2.FORWARDED, TRACE, reply=True, direction=flow_pb2.EGRESS, point=flow_pb2.TO_ENDPOINT,
                is_reply=True, interface=src.interface, macs=(src.host_mac, src.mac))
        return templates

    # --- the Observer service -----------------------------------------------------------------------------------------
    def server_status(self) -> Any:
        with self._lock:
            available = [n for n in sorted(self._rings) if n not in self._unavailable]
            unavailable = sorted(self._unavailable)
            response = observer_pb2.ServerStatusResponse(
                num_flows=sum(len(self._rings[n]) for n in available),
                max_flows=self.capacity * len(available),
                seen_flows=sum(self._rings[n].written for n in available),
                uptime_ns=time.time_ns() - self._started_ns, version=f"{VERSION}+simulated",
                unavailable_nodes=unavailable)
        response.num_connected_nodes.value = len(available)
        response.num_unavailable_nodes.value = len(unavailable)
        elapsed = max(1e-9, (time.time_ns() - self._started_ns) / NS)
        response.flows_rate = response.seen_flows / elapsed
        return response

    def _status(self, state: int, nodes: list[str], message: str = "") -> bytes:
        response = observer_pb2.GetFlowsResponse()
        response.node_status.state_change = state
        response.node_status.node_names.extend(nodes)
        response.node_status.message = message
        response.time.seconds, response.time.nanos = divmod(time.time_ns(), NS)
        return response.SerializeToString()

    def get_flows(self, request: Any, is_active: Callable[[], bool]) -> Iterator[bytes | None]:
        """The serialized GetFlowsResponses of one call (FLUSH when about to wait); raises Abort to break it."""
        record = StreamRecord(request, request.follow)
        with self._lock:
            self.streams.append(record)
            limit = self._disconnects.pop(0) if self._disconnects else None
        matcher = Matcher(list(request.whitelist), list(request.blacklist))
        since = request.since.seconds * NS + request.since.nanos if request.HasField("since") else None
        until = request.until.seconds * NS + request.until.nanos if request.HasField("until") else None
        if since is not None and until is None and not request.follow:
            until = time.time_ns()
        number, sent = int(request.number), record.sent

        def emit(blob: bytes, kind: str) -> bytes:
            sent[kind] += 1
            if limit is not None and sent["flow"] > limit:
                record.aborted = "disconnect knob"
                raise Abort(grpc.StatusCode.UNAVAILABLE, "simulated relay disconnect: connection reset by peer")
            return blob

        try:
            with self._lock:
                nodes = sorted(self._rings)
                unavailable = dict(self._unavailable)
                node_events = len(self._node_log)
                cursors = {node: self._rings[node].written for node in nodes}
                skip_history = request.follow and since is None and not number
                history = {node: self._rings[node].read(self._rings[node].oldest(), self._rings[node].written)
                           for node in nodes if node not in unavailable and not skip_history}
            connected = [n for n in nodes if n not in unavailable]
            if connected:
                yield emit(self._status(relay_pb2.NODE_CONNECTED, connected), "node_status")
            if unavailable:
                yield emit(self._status(relay_pb2.NODE_UNAVAILABLE, sorted(unavailable),
                                        unavailable[min(unavailable)]), "node_status")
            selected: list[tuple[int, Meta | None, bytes]] = []
            for entries in history.values():
                in_window = [e for e in entries if (since is None or e[0] >= since) and (until is None or e[0] <= until)
                             and (e[1] is None or matcher(e[1]))]
                if number:  # the first or last `number` flows of each node (lost events in that stretch kept)
                    flows = [index for index, e in enumerate(in_window) if e[1] is not None]
                    chosen = flows[:number] if request.first else flows[-number:]
                    if chosen:
                        in_window = [e for i, e in enumerate(in_window) if chosen[0] <= i <= chosen[-1]]
                    else:
                        in_window = [e for e in in_window if e[1] is None]
                selected.extend(in_window)
            selected.sort(key=lambda e: e[0])
            for _stamp, meta, blob in selected:
                yield emit(blob, "lost_events" if meta is None else "flow")
            yield FLUSH
            if not request.follow:
                return
            with self._lock:
                self._followers += 1
                self._lock.notify_all()
            try:
                yield from self._follow(record, matcher, cursors, unavailable, node_events, until, is_active, emit)
            finally:
                with self._lock:
                    self._followers -= 1
        finally:
            record.done = True

    def _follow(self, record: StreamRecord, matcher: Matcher, cursors: dict[str, int], unavailable: dict[str, str],
                node_events: int, until: int | None, is_active: Callable[[], bool],
                emit: Callable[[bytes, str], bytes]) -> Iterator[bytes | None]:
        while is_active() and not self._stopped.is_set():
            if until is not None and time.time_ns() > until:
                return
            output: list[tuple[str, bytes]] = []  # (kind, blob) in the order to send
            batch: list[tuple[int, Meta | None, bytes]] = []
            with self._lock:
                if all(self._rings[n].written == c for n, c in cursors.items()) and node_events == len(self._node_log):
                    self._lock.wait(0.2)
                for node, down, message, position in self._node_log[node_events:]:
                    # what the node had before it went away still comes; after it comes back, only new flows
                    if down and node not in unavailable:
                        batch.extend(self._rings[node].read(cursors.get(node, 0), position))
                        _drain(batch, output, until, matcher)
                        output.append(("node_status", self._status(relay_pb2.NODE_UNAVAILABLE, [node], message)))
                        unavailable[node] = message
                    elif not down and node in unavailable:
                        output.append(("node_status", self._status(relay_pb2.NODE_CONNECTED, [node])))
                        del unavailable[node]
                    cursors[node] = position
                node_events = len(self._node_log)
                for node in list(self._rings):
                    ring = self._rings[node]
                    cursor = cursors.get(node, 0)
                    if node in unavailable:
                        cursors[node] = ring.written  # the relay cannot read it: those flows never reach us
                        continue
                    behind = ring.written - cursor - ring.capacity
                    if behind > 0:
                        lost = observer_pb2.GetFlowsResponse(node_name=node)
                        lost.lost_events.source = flow_pb2.HUBBLE_RING_BUFFER
                        lost.lost_events.num_events_lost = behind
                        lost.time.seconds, lost.time.nanos = divmod(time.time_ns(), NS)
                        batch.append((0, None, lost.SerializeToString()))
                        cursor += behind
                    end = min(ring.written, cursor + 8192)
                    batch.extend(ring.read(cursor, end))
                    cursors[node] = end
            _drain(batch, output, until, matcher)
            for kind, blob in output:
                yield emit(blob, kind)
            yield FLUSH


def _drain(batch: list[tuple[int, Meta | None, bytes]], output: list[tuple[str, bytes]], until: int | None,
           matcher: Matcher) -> None:
    """Move a batch of ring entries, in time order and filtered, to the output (lost events pass every filter)."""
    batch.sort(key=lambda e: e[0])
    for stamp, meta, blob in batch:
        if until is not None and stamp > until:
            continue
        if meta is None:
            output.append(("lost_events", blob))
        elif matcher(meta):
            output.append(("flow", blob))
    batch.clear()


# --- transport: grpcio ------------------------------------------------------------------------------------------------


class _Servicer(observer_pb2_grpc.ObserverServicer):
    """The generated servicer, its methods served from the relay (GetFlows answers pre-serialized messages)."""

    def __init__(self, relay: HubbleRelay) -> None:
        self.relay = relay

    def GetFlows(self, request: Any, context: Any) -> Iterator[bytes]:
        try:
            for blob in self.relay.get_flows(request, context.is_active):
                if blob is not None:
                    yield blob
        except Abort as abort:
            context.abort(abort.code, abort.details)

    def ServerStatus(self, request: Any, context: Any) -> Any:
        return self.relay.server_status()


def _generic_handler(servicer: _Servicer) -> Any:
    """As the generated add_ObserverServicer_to_server, but GetFlows responses go out as the bytes they are."""
    handlers = {
        "GetFlows": grpc.unary_stream_rpc_method_handler(
            servicer.GetFlows, request_deserializer=observer_pb2.GetFlowsRequest.FromString,
            response_serializer=None),
        "ServerStatus": grpc.unary_unary_rpc_method_handler(
            servicer.ServerStatus, request_deserializer=observer_pb2.ServerStatusRequest.FromString,
            response_serializer=observer_pb2.ServerStatusResponse.SerializeToString),
    }
    return grpc.method_handlers_generic_handler("observer.Observer", handlers)


# --- transport: plain HTTP/2 ------------------------------------------------------------------------------------------


class H2Server:
    """gRPC over HTTP/2 with the h2 package: one thread per connection reads, one per call writes, and a call's
    messages are packed into DATA frames as large as the peer's flow-control window allows."""

    def __init__(self, relay: HubbleRelay, context: ssl.SSLContext | None) -> None:
        self.relay = relay
        self.context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, name="relay-h2", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _peer = self._listener.accept()
            except OSError:
                return
            self._connections.append(sock)
            threading.Thread(target=self._serve, args=(sock,), name="relay-h2-conn", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _serve(self, raw: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions

        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock: Any = self.context.wrap_socket(raw, server_side=True) if self.context else raw
        except (OSError, ssl.SSLError):
            raw.close()
            return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        state = _H2State(sock, conn)
        with state.lock:
            conn.initiate_connection()
            state.flush()
        bodies: dict[int, bytes] = {}
        paths: dict[int, str] = {}
        try:
            while not self._closed.is_set():
                data = sock.recv(65536)
                if not data:
                    break
                with state.lock:
                    try:
                        events = conn.receive_data(data)
                    except h2.exceptions.ProtocolError:
                        break
                    for event in events:
                        if isinstance(event, h2.events.RequestReceived):
                            paths[event.stream_id] = dict(event.headers).get(":path", "")
                            bodies[event.stream_id] = b""
                        elif isinstance(event, h2.events.DataReceived):
                            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        elif isinstance(event, h2.events.StreamEnded):
                            stream_id = event.stream_id
                            threading.Thread(target=self._call, args=(state, stream_id, paths.pop(stream_id, ""),
                                                                      bodies.pop(stream_id, b"")),
                                             name="relay-h2-call", daemon=True).start()
                        elif isinstance(event, h2.events.StreamReset):
                            state.cancelled.add(event.stream_id)
                        elif isinstance(event, h2.events.ConnectionTerminated):
                            state.closed = True
                    state.flush()
                    state.lock.notify_all()
                if state.closed:
                    break
        except (OSError, ssl.SSLError):
            pass
        finally:
            with state.lock:
                state.closed = True
                state.lock.notify_all()
            try:
                sock.close()
            except OSError:
                pass

    def _call(self, state: _H2State, stream_id: int, path: str, body: bytes) -> None:
        message = body[5:5 + struct.unpack(">I", body[1:5])[0]] if len(body) >= 5 else b""
        try:
            with state.lock:
                state.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                state.flush()
            if path == "/observer.Observer/GetFlows":
                request = observer_pb2.GetFlowsRequest.FromString(message)

                def active() -> bool:
                    return not state.closed and stream_id not in state.cancelled

                pending: list[bytes] = []
                size = 0
                try:
                    for blob in self.relay.get_flows(request, active):
                        if blob is None:
                            if pending:
                                state.send(stream_id, b"".join(pending))
                                pending, size = [], 0
                            continue
                        pending.append(b"\x00" + struct.pack(">I", len(blob)) + blob)
                        size += len(blob) + 5
                        if size >= 262144:
                            state.send(stream_id, b"".join(pending))
                            pending, size = [], 0
                    if pending:
                        state.send(stream_id, b"".join(pending))
                    state.trailers(stream_id, 0, "")
                except Abort as abort:
                    if pending:
                        state.send(stream_id, b"".join(pending))
                    state.trailers(stream_id, abort.code.value[0], abort.details)
            elif path == "/observer.Observer/ServerStatus":
                reply = self.relay.server_status().SerializeToString()
                state.send(stream_id, b"\x00" + struct.pack(">I", len(reply)) + reply)
                state.trailers(stream_id, 0, "")
            else:
                state.trailers(stream_id, grpc.StatusCode.UNIMPLEMENTED.value[0], f"unknown method {path}")
        except _StreamGone:
            return


class _StreamGone(Exception):
    pass


class _H2State:
    """One HTTP/2 connection: the h2 state machine, its socket and the lock and condition that guard both."""

    def __init__(self, sock: Any, conn: Any) -> None:
        self.sock = sock
        self.conn = conn
        self.lock = threading.Condition()
        self.cancelled: set[int] = set()
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def send(self, stream_id: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            with self.lock:
                while True:
                    if self.closed or stream_id in self.cancelled:
                        raise _StreamGone
                    window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                    if window > 0:
                        break
                    self.lock.wait(0.5)
                chunk = view[:window]
                self.conn.send_data(stream_id, chunk.tobytes())
                view = view[window:]
                self.flush()

    def trailers(self, stream_id: int, status: int, message: str) -> None:
        headers = [("grpc-status", str(status))]
        if message:
            headers.append(("grpc-message", message.replace("%", "%25")))
        with self.lock:
            if self.closed or stream_id in self.cancelled:
                return
            self.conn.send_headers(stream_id, headers, end_stream=True)
            self.flush()
