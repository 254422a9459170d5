# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Reading flows from Hubble Relay over gRPC: the flow records of an audit window, straight from the cluster.

Note that this module util is PRIVATE to the collection. It can change at any time.

* ``flow_from_proto`` (and ``FlowConverter``) turn a flow into the collection's ``FlowRecord`` without going through
  ``MessageToDict``. The client decodes each GetFlowsResponse as a ``FlowView`` (proto/netpol/flow_view.proto: the
  same bytes, with the endpoints, the IP pair and the event type left as raw bytes), reads its attributes directly
  and finds the endpoints' Peers again by those bytes, so that tens of thousands of flows per second are normalised
  (scripts/bench_relay.py measures it).
* ``RelayClient`` talks to the Relay: at an address ("host:port"), or, with no address, through a Kubernetes API
  port-forward to a Running pod of the ``hubble-relay`` Service, bridged to a local loopback socket that gRPC
  connects to. TLS is off unless asked for; certificate checks stay on unless ``validate_certs=False`` says
  otherwise (the caller must warn about that). The filters run on the Relay (``verdict:[AUDIT]`` policy verdicts by
  default, the namespaces as ``source_pod``/``destination_pod`` prefixes), so only what is audited crosses the wire.
* A stream that breaks mid-window (``UNAVAILABLE`` and the like) is reopened, with bounded retries and backoff, from
  the time of the last flow seen; flows already delivered are skipped by their uuid, and a ``StreamGap`` tells the
  caller which stretch of time may be incomplete.
"""

from __future__ import annotations

import datetime
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, NamedTuple, Union

from ._flows import (
    DIRECTIONS,
    VERDICTS,
    FlowRecord,
    LostEvents,
    NodeStatus,
    Peer,
    entity_from_labels,
    label_map,
    workload_name,
)

try:
    import grpc

    from ._hubble_pb import flow_pb2, flow_view_pb2, observer_pb2, relay_pb2

    HAS_GRPC = True
    GRPC_IMPORT_ERROR = None
except Exception as exc:  # noqa: BLE001 - ImportError, or protobuf's VersionError for a runtime older than the code
    HAS_GRPC = False
    GRPC_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

try:
    from grpc.experimental import ChannelOptions as _ChannelOptions

    # Unary-stream calls read on the calling thread: about twice the messages per second of the default.
    SINGLE_THREADED_OPTION = getattr(_ChannelOptions, "SingleThreadedUnaryStream", None)
except ImportError:
    SINGLE_THREADED_OPTION = None

try:
    from kubernetes.client import CoreV1Api
    from kubernetes.stream import portforward as k8s_portforward

    HAS_KUBERNETES_STREAM = True
except ImportError:
    HAS_KUBERNETES_STREAM = False

GET_FLOWS = "/observer.Observer/GetFlows"
SERVER_STATUS = "/observer.Observer/ServerStatus"
RELAY_SERVICE = "hubble-relay"
RELAY_NAMESPACE = "kube-system"
RELAY_TARGET_PORT = 4245

# Server-side filters for an audit window: AUDIT policy verdicts (event type 5). A watch after enforcing asks for
# DROPPED policy verdicts the same way (verdicts [DROPPED]).
AUDIT_VERDICTS = ("AUDIT",)
AUDIT_EVENT_TYPES = (5,)
EVENT_TYPE_NAMES = {"drop": 1, "debug": 2, "capture": 3, "trace": 4, "policy-verdict": 5, "trace-sock": 7, "l7": 129}

# A broken stream is reopened on these codes; anything else is the Relay's answer and ends the read.
RETRYABLE_CODES = ("UNAVAILABLE", "INTERNAL", "UNKNOWN", "ABORTED", "RESOURCE_EXHAUSTED")
# Flows within this many seconds before the last one seen are asked for again on a resume (the Relay merges nodes
# in time order only roughly) and skipped when already delivered.
RESUME_OVERLAP_SECONDS = 2.0
# Below Go gRPC servers' default minimum ping interval (5 minutes), so that keepalive never trips "too many pings".
KEEPALIVE_MS = 330000
_NS = 1000000000
_UTC = datetime.timezone.utc


class StreamGap(NamedTuple):
    """A stretch of the window that may miss flows: the stream broke at ``start`` (the time of the last flow
    delivered, else the time the window was opened) and was back at ``end`` (None when it never came back).
    ``resumed``: the read went on from ``start`` out of the Relay's ring buffers, flows already delivered skipped;
    whether the buffers still held all of that stretch cannot be told (the Relay reports no loss for it)."""

    start: str | None
    end: str | None
    reason: str
    resumed: bool = False


class RelayStatus(NamedTuple):
    """The Relay's ServerStatus: ring buffer fill (summed over the nodes) and node availability."""

    num_flows: int
    max_flows: int
    seen_flows: int
    uptime_ns: int
    connected_nodes: int | None
    unavailable_nodes: int | None
    unavailable_node_names: tuple[str, ...]
    version: str
    flows_rate: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self._asdict(), unavailable_node_names=list(self.unavailable_node_names))


RelayEvent = Union[FlowRecord, LostEvents, NodeStatus, StreamGap]


class RelayError(Exception):
    """The Relay could not be reached or read; ``kind`` says what went wrong (unreachable, tls-ca, tls-name,
    tls-client-cert, tls, port-forward, refused, stream, options, missing-library)."""

    def __init__(self, message: str, kind: str = "unreachable", *, address: str | None = None,
                 via: str | None = None, code: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.address = address
        self.via = via
        self.code = code
        self.details = details


class StreamStats:
    """What one client has received so far (messages by kind, reconnects, duplicates skipped after a resume)."""

    __slots__ = ("duplicates", "flows", "gaps", "lost_events", "lost_messages", "messages", "node_status",
                 "reconnects")

    def __init__(self) -> None:
        self.messages = 0
        self.flows = 0
        self.lost_messages = 0
        self.lost_events = 0
        self.node_status = 0
        self.duplicates = 0
        self.reconnects = 0
        self.gaps = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def require_grpc() -> None:
    if not HAS_GRPC:
        raise RelayError("reading flows from Hubble Relay needs the Python packages grpcio and protobuf on the host "
                         f"that runs the module (see the collection's requirements.txt): {GRPC_IMPORT_ERROR}",
                         "missing-library")


# --- conversion: flow.Flow -> FlowRecord ---------------------------------------------------------------------------


def _enum_names(enum: Any) -> dict[int, str]:
    return {number: name for name, number in enum.items()}


if HAS_GRPC:
    _DROP_NAMES = _enum_names(flow_pb2.DropReason)
    _LOST_SOURCES = _enum_names(flow_pb2.LostEventSource)
    _NODE_STATES = _enum_names(relay_pb2.NodeState)
else:  # pragma: no cover - without protobuf nothing here is called
    _DROP_NAMES = _LOST_SOURCES = _NODE_STATES = {}
_VERDICT_COUNT = len(VERDICTS)
_new_record = tuple.__new__  # FlowRecord(*fields) without the keyword handling of NamedTuple.__new__
_DIRECTION_COUNT = len(DIRECTIONS)


def rfc3339(seconds: int, nanos: int) -> str:
    """A protobuf Timestamp as protojson writes it: UTC, 0, 3, 6 or 9 fractional digits."""
    prefix = datetime.datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return prefix + _fraction(nanos) + "Z"


def _fraction(nanos: int) -> str:
    if not nanos:
        return ""
    if not nanos % 1000000:
        return f".{nanos // 1000000:03d}"
    if not nanos % 1000:
        return f".{nanos // 1000:06d}"
    return f".{nanos:09d}"


def timestamp_ns(value: datetime.datetime) -> int:
    """Nanoseconds since the epoch; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    delta = value - datetime.datetime(1970, 1, 1, tzinfo=_UTC)
    return (delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000


class FlowConverter:
    """Turns flows into FlowRecords, caching what repeats from flow to flow.

    It reads ``FlowView`` messages (proto/netpol/flow_view.proto: the same bytes as ``flow.Flow``, with the endpoints,
    the IP pair and the event type left as raw bytes): each distinct endpoint is parsed once, and its Peer found again
    by those bytes (and the IP). A full ``flow.Flow`` is accepted too (``convert``), at the price of one more
    serialization. ``workloads`` maps "namespace/pod" (or "pod") to a workload name, overriding the one derived from
    labels.
    """

    def __init__(self, workloads: dict[str, str] | None = None, cache_size: int = 65536) -> None:
        self.workloads = workloads
        self.cache_size = cache_size
        self._peers: dict[tuple[bytes, str], Peer] = {}
        self._ips: dict[bytes, tuple[str, str]] = {}
        self._event_types: dict[bytes, int] = {}
        self._seconds = -1
        self._prefix = ""

    def peer(self, endpoint: bytes, ip: str) -> Peer:
        """The Peer of a serialized ``flow.Endpoint`` seen at ``ip`` (without DNS names)."""
        key = (endpoint, ip)
        peer = self._peers.get(key)
        if peer is None:
            if len(self._peers) >= self.cache_size:
                self._peers.clear()
            peer = self._peers[key] = self._new_peer(flow_pb2.Endpoint.FromString(endpoint), ip)
        return peer

    def _new_peer(self, endpoint: Any, ip: str) -> Peer:
        labels = tuple(endpoint.labels)
        namespace = endpoint.namespace or None
        pod = endpoint.pod_name or None
        hubble_workloads = endpoint.workloads
        hubble_workload = hubble_workloads[0].name if len(hubble_workloads) else None
        workload = None
        if pod or namespace:
            workload = workload_name(pod, label_map(labels), self.workloads, namespace, hubble_workload or None)
        identity = endpoint.identity
        # identity is a uint32 that protobuf cannot tell unset from 0: 0 (never a real identity) means unknown.
        return Peer(namespace, pod, workload, labels, identity if identity else None, endpoint.ID or None,
                    entity_from_labels(labels), ip or None, ())

    def _ip_pair(self, ip: bytes) -> tuple[str, str]:
        pair = self._ips.get(ip)
        if pair is None:
            if len(self._ips) >= self.cache_size:
                self._ips.clear()
            message = flow_pb2.IP.FromString(ip)
            pair = self._ips[ip] = (message.source, message.destination)
        return pair

    def _event_type(self, event_type: bytes) -> int:
        value = self._event_types.get(event_type)
        if value is None:
            value = self._event_types[event_type] = flow_pb2.CiliumEventType.FromString(event_type).type
        return value

    def time(self, seconds: int, nanos: int) -> str:
        """RFC 3339 as protojson writes it (0, 3, 6 or 9 fractional digits), the date part cached per second."""
        if seconds != self._seconds:
            self._prefix = datetime.datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._seconds = seconds
        if nanos % 1000:
            return f"{self._prefix}.{nanos:09d}Z"
        return self._prefix + _fraction(nanos) + "Z"

    def convert(self, flow: Any, node_name: str | None = None) -> FlowRecord:
        """A ``flow.Flow`` (or a ``FlowView``) as a FlowRecord."""
        if isinstance(flow, flow_view_pb2.FlowView):
            return self(flow, node_name)
        return self(flow_view_pb2.FlowView.FromString(flow.SerializeToString()), node_name, flow)

    def _rare_fields(self, flow: Any, full: Any) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(denied_by, source names, destination names) from the full message, for the flows that have any."""
        if full is None:  # only the view: it kept the last value of each
            full = flow_pb2.Flow.FromString(flow.SerializeToString())
        elif isinstance(full, bytes):  # a serialized GetFlowsResponse
            full = observer_pb2.GetFlowsResponse.FromString(full).flow
        denied = tuple(f"{p.namespace}/{p.name}" if p.namespace else p.name
                       for p in (*full.ingress_denied_by, *full.egress_denied_by))
        return denied, tuple(full.source_names), tuple(full.destination_names)

    def __call__(self, flow: Any, node_name: str | None = None, full: Any = None) -> FlowRecord:
        """A ``FlowView`` as a FlowRecord (``node_name``: the response's, else the flow's own). ``full``: the same
        flow as a ``flow.Flow`` or its serialized GetFlowsResponse, read only when the flow has DNS names or
        denied-by policies."""
        l4 = flow.l4
        if l4.HasField("TCP"):
            protocol, port = "TCP", l4.TCP.destination_port
        else:
            protocol = l4.WhichOneof("protocol")
            if protocol == "UDP":
                port = l4.UDP.destination_port
            elif protocol == "ICMPv4":
                port = l4.ICMPv4.type
            elif protocol == "ICMPv6":
                port = l4.ICMPv6.type
            elif protocol == "SCTP":
                port = l4.SCTP.destination_port
            else:  # none, or a protocol this collection does not declare
                port = None
        raw = flow.event_type
        event_type = self._event_types.get(raw)
        if event_type is None:
            event_type = self._event_type(raw)
        verdict = flow.verdict
        direction = flow.traffic_direction
        drop = flow.drop_reason_desc or flow.drop_reason
        stamp = flow.time
        raw = flow.IP
        pair = self._ips.get(raw)
        if pair is None:
            pair = self._ip_pair(raw)
        peers = self._peers
        key = (flow.source, pair[0])
        src = peers.get(key)
        if src is None:
            src = self.peer(*key)
        key = (flow.destination, pair[1])
        dst = peers.get(key)
        if dst is None:
            dst = self.peer(*key)
        denied_by: tuple[str, ...] = ()
        if (flow.HasField("source_names") or flow.HasField("destination_names")
                or flow.HasField("ingress_denied_by") or flow.HasField("egress_denied_by")):
            denied_by, source_names, destination_names = self._rare_fields(flow, full)
            if source_names:
                src = src._replace(fqdns=source_names)
            if destination_names:
                dst = dst._replace(fqdns=destination_names)
        seconds, nanos = stamp.seconds, stamp.nanos
        if seconds == self._seconds and nanos % 1000:
            when = f"{self._prefix}.{nanos:09d}Z"
        else:
            when = self.time(seconds, nanos)
        return _new_record(FlowRecord, (
            when,
            node_name or flow.node_name,
            VERDICTS[verdict] if 0 <= verdict < _VERDICT_COUNT else str(verdict),
            event_type,
            DIRECTIONS[direction] if 0 <= direction < _DIRECTION_COUNT else str(direction),
            flow.is_reply.value if flow.HasField("is_reply") else None,
            src,
            dst,
            protocol,
            port,
            (_DROP_NAMES.get(drop) or str(drop)) if drop else None,
            denied_by,
            flow.policy_match_type,
        ))


_DEFAULT_CONVERTER = FlowConverter()


def flow_from_proto(flow_msg: Any, node_name: str | None = None,
                    workloads: dict[str, str] | None = None) -> FlowRecord:
    """One ``flow.Flow`` (or ``FlowView``) message as a FlowRecord (``node_name``: the response's node, else the
    flow's own)."""
    converter = _DEFAULT_CONVERTER if workloads is None else FlowConverter(workloads)
    return converter.convert(flow_msg, node_name)


def _stamp_text(stamp: Any) -> str | None:
    return rfc3339(stamp.seconds, stamp.nanos) if stamp is not None and (stamp.seconds or stamp.nanos) else None


def lost_events_from_proto(lost: Any, node_name: str | None = None, stamp: Any = None) -> LostEvents:
    """A ``flow.LostEvent`` (or its bytes) as LostEvents."""
    if isinstance(lost, bytes):
        lost = flow_pb2.LostEvent.FromString(lost)
    source = lost.source
    return LostEvents(_LOST_SOURCES.get(source, str(source)), int(lost.num_events_lost), node_name or None,
                      _stamp_text(stamp))


def node_status_from_proto(status: Any, stamp: Any = None) -> NodeStatus:
    """A ``relay.NodeStatusEvent`` (or its bytes) as NodeStatus."""
    if isinstance(status, bytes):
        status = relay_pb2.NodeStatusEvent.FromString(status)
    state = status.state_change
    return NodeStatus(_NODE_STATES.get(state, str(state)), tuple(status.node_names), status.message,
                      _stamp_text(stamp))


def event_from_response(response: Any, converter: FlowConverter | None = None) -> RelayEvent | None:
    """A GetFlowsResponse (or its view) as a FlowRecord, LostEvents or NodeStatus (None for other kinds)."""
    kind = response.WhichOneof("response_types")
    if kind == "flow":
        return (converter or _DEFAULT_CONVERTER).convert(response.flow, response.node_name)
    if kind == "lost_events":
        return lost_events_from_proto(response.lost_events, response.node_name, response.time)
    if kind == "node_status":
        return node_status_from_proto(response.node_status, response.time)
    return None


# --- filters -------------------------------------------------------------------------------------------------------


def _event_type(value: int | str) -> int:
    if isinstance(value, str) and not value.isdigit():
        if value not in EVENT_TYPE_NAMES:
            raise RelayError(f"unknown Hubble event type {value!r}: use a number or one of "
                             f"{', '.join(sorted(EVENT_TYPE_NAMES))}", "options")
        return EVENT_TYPE_NAMES[value]
    return int(value)


def _enum_value(enum: Any, name: str, what: str) -> int:
    try:
        return enum.Value(str(name).upper())
    except ValueError:
        raise RelayError(f"unknown Hubble {what} {name!r}: expected one of {', '.join(enum.keys())}",
                         "options") from None


def build_filters(verdicts: Iterable[str] = AUDIT_VERDICTS, event_types: Iterable[int | str] = AUDIT_EVENT_TYPES,
                  namespaces: Iterable[str] = (), drop_reasons: Iterable[str] = ()) -> list[Any]:
    """The whitelist of a GetFlows request: one filter (verdicts AND event types AND drop reasons), or, with
    namespaces, two of them: source_pod "ns/" prefixes OR destination_pod ones (each AND-ed with the rest)."""
    require_grpc()
    base = flow_pb2.FlowFilter()
    base.verdict.extend(_enum_value(flow_pb2.Verdict, v, "verdict") for v in verdicts)
    for value in event_types:
        base.event_type.add(type=_event_type(value))
    base.drop_reason_desc.extend(_enum_value(flow_pb2.DropReason, r, "drop reason") for r in drop_reasons)
    prefixes = [ns if ns.endswith("/") else f"{ns}/" for ns in namespaces]
    if not prefixes:
        return [base]
    by_source = flow_pb2.FlowFilter()
    by_source.CopyFrom(base)
    by_source.source_pod.extend(prefixes)
    by_destination = flow_pb2.FlowFilter()
    by_destination.CopyFrom(base)
    by_destination.destination_pod.extend(prefixes)
    return [by_source, by_destination]


def filters_from_dicts(filters: Iterable[dict[str, Any]]) -> list[Any]:
    """FlowFilters from their JSON form (as ``hubble observe --print-raw-filters`` prints them)."""
    require_grpc()
    from google.protobuf import json_format

    result = []
    for item in filters:
        try:
            result.append(json_format.ParseDict(item, flow_pb2.FlowFilter()))
        except json_format.ParseError as exc:
            raise RelayError(f"invalid Hubble flow filter {item!r}: {exc}", "options") from exc
    return result


# --- local bridges: port-forward and TLS without verification --------------------------------------------------------


class _Upstream(NamedTuple):
    sock: Any
    close: Callable[[], None]
    error: Callable[[], str | None]


class LocalBridge:
    """A loopback listener whose every connection is relayed, byte for byte, to a new upstream connection.

    gRPC needs an address to dial; a Kubernetes port-forward gives a Python socket (and a TLS session without
    certificate checks is a Python socket too). The bridge joins the two.
    """

    def __init__(self, connect: Callable[[], _Upstream], name: str) -> None:
        self._connect = connect
        self.name = name
        self.last_error: str | None = None
        self.connections = 0
        self._closed = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        thread = threading.Thread(target=self._accept, name=f"{name} bridge", daemon=True)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _peer = self._listener.accept()
            except OSError:
                return
            if self._closed.is_set():
                conn.close()
                return
            thread = threading.Thread(target=self._serve, args=(conn,), name=f"{self.name} connection", daemon=True)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        self.connections += 1
        try:
            upstream = self._connect()
        except Exception as exc:  # noqa: BLE001 - any failure to open the upstream is reported through last_error
            self.last_error = str(exc)
            conn.close()
            return
        failure = None
        try:
            failure = _pump(conn, upstream.sock, self._closed)
        finally:
            error = upstream.error()
            if error or failure:
                self.last_error = error or failure
            conn.close()
            upstream.close()

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass


def _pump(left: Any, right: Any, closed: threading.Event) -> str | None:
    """Copy bytes both ways until either side closes (one thread, select; TLS sockets drained of buffered data).
    Returns the error that ended the copy, if any (a TLS alert from the upstream, say)."""
    peers = {left.fileno(): (left, right), right.fileno(): (right, left)}
    while not closed.is_set():
        try:
            readable, _w, _x = select.select(list(peers), [], [], 0.5)
        except (OSError, ValueError) as exc:
            return str(exc)
        for fileno in readable:
            source, target = peers[fileno]
            try:
                data = source.recv(262144)
                while isinstance(source, ssl.SSLSocket) and source.pending():
                    data += source.recv(source.pending())
                if not data:
                    return None
                target.sendall(data)
            except ssl.SSLError as exc:
                return f"TLS: {exc}"
            except OSError as exc:
                return str(exc) if source is right else None
    return None


# --- the client ----------------------------------------------------------------------------------------------------


def _short_api_error(text: str) -> str:
    """The Status message inside a websocket handshake failure of the kubernetes client (headers and all)."""
    body = text.rsplit("-+-+-", 1)[-1].strip() if "-+-+-" in text else ""
    if body.startswith("{"):
        try:
            status = json.loads(body)
        except ValueError:
            return text
        if isinstance(status, dict) and status.get("message"):
            prefix = text.split("Handshake status", 1)[0] if "Handshake status" in text else ""
            return f"{prefix}{status['message']} (HTTP {status.get('code', '?')})"
    return text


def _code_name(error: Any) -> str:
    code = error.code() if hasattr(error, "code") else None
    return getattr(code, "name", str(code))


def _details(error: Any) -> str:
    details = error.details() if hasattr(error, "details") else None
    return details or str(error)


_TLS_MARKERS = (
    ("tls-name", ("hostname verification", "no match found for server name", "peer name", "hostname mismatch",
                  "doesn't match", "not in peer certificate")),
    ("tls-ca", ("certificate_verify_failed", "certificate verify failed", "unable to get local issuer",
                "self signed certificate", "self-signed certificate")),
    ("tls-client-cert", ("certificate_required", "certificate required", "peer did not return a certificate")),
    ("tls", ("ssl", "tls", "handshake", "wrong_version_number")),
)


def classify_tls_error(details: str) -> str | None:
    """tls-name, tls-ca, tls-client-cert or tls, from the text gRPC (BoringSSL) or Python's ssl gives; None when the
    text shows no TLS problem."""
    text = details.lower()
    for kind, markers in _TLS_MARKERS:
        if any(marker in text for marker in markers):
            return kind
    return None


class RelayClient:
    """One Hubble Relay connection (direct or port-forwarded), opened by ``connect()`` (or ``with``).

    ``address``: "host:port"; None to port-forward through ``kube`` (a ``_k8s.Kube``) to a Running pod of the
    Service ``service`` in ``namespace``. TLS: ``tls`` (implied by any of the certificate options), ``ca_cert``,
    ``client_cert`` + ``client_key`` (mTLS), ``server_name`` (the name to check the certificate against, instead of
    the address's host), ``validate_certs`` (False skips the certificate checks: say so to the user).
    ``timeout``: seconds to wait for the Relay's first answer and for ServerStatus.
    """

    def __init__(self, address: str | None = None, *, kube: Any = None, namespace: str = RELAY_NAMESPACE,
                 service: str = RELAY_SERVICE, tls: bool | None = None, ca_cert: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None, server_name: str | None = None,
                 validate_certs: bool = True, timeout: float = 12.0, max_reconnects: int = 5, backoff: float = 0.5,
                 max_backoff: float = 8.0, workloads: dict[str, str] | None = None,
                 sleep: Callable[[float], None] = time.sleep, option_prefix: str = "") -> None:
        require_grpc()
        # messages name the options the way the caller's user knows them (the module's are relay_ca_cert, ...)
        self.option_prefix = option_prefix
        if address is None and kube is None:
            raise RelayError("give the Hubble Relay address (host:port), or Kubernetes access to port-forward to the "
                             f"{service} Service", "options")
        if bool(client_cert) != bool(client_key):
            raise RelayError(f"{option_prefix}client_cert and {option_prefix}client_key go together (mutual TLS)",
                             "options")
        self.address = address
        self.kube = kube
        self.namespace = namespace
        self.service = service
        self.tls = bool(tls) or bool(ca_cert or client_cert or client_key or server_name)
        if tls is False and self.tls:
            raise RelayError(f"{option_prefix}tls is false but TLS certificate options are set", "options")
        self.ca_cert = ca_cert
        self.client_cert = client_cert
        self.client_key = client_key
        self.server_name = server_name
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.max_reconnects = max_reconnects
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.converter = FlowConverter(workloads)
        self.stats = StreamStats()
        self.via = "direct" if address else "port-forward"
        self.pod: str | None = None
        self.target_port: int | None = None
        self._sleep = sleep
        self._bridges: list[LocalBridge] = []
        self._channel: Any = None
        self._target: str | None = None
        self._closing = False
        self._status: RelayStatus | None = None

    # --- connection ------------------------------------------------------------------------------------------------
    @property
    def describe(self) -> str:
        """The address and how it is reached, for messages."""
        if self.address:
            return f"{self.address} (direct{', TLS' if self.tls else ''})"
        pod = f"pod {self.namespace}/{self.pod}" if self.pod else f"a pod of service {self.namespace}/{self.service}"
        port = f" port {self.target_port}" if self.target_port else ""
        host = getattr(getattr(getattr(self.kube, "api_client", None), "configuration", None), "host", None)
        api = f" through the Kubernetes API at {host}" if isinstance(host, str) and host else \
            " through the Kubernetes API"
        return f"{self.namespace}/{self.service} (port-forward via {pod}{port}{api}{', TLS' if self.tls else ''})"

    def connect(self) -> RelayStatus | None:
        """Open the channel (and the port-forward) and check that the Relay answers: its ServerStatus, or None when
        it does not implement the call."""
        self._closing = False
        if self.address is None and not self._bridges:
            self._open_port_forward()
        self._open_channel()
        try:
            self._status = self.server_status()
        except RelayError as error:
            if error.code == "UNIMPLEMENTED":
                return None
            raise
        return self._status

    def _read_file(self, path: str | None, what: str) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise RelayError(f"cannot read the {what} {path}: {exc.strerror}", "options") from exc

    def _open_port_forward(self) -> None:
        if not HAS_KUBERNETES_STREAM:
            raise RelayError("port-forwarding to Hubble Relay needs the kubernetes Python package", "missing-library")
        pod, port = self._resolve_relay_pod()
        self.pod, self.target_port = pod, port
        kube, namespace = self.kube, self.namespace

        def connect() -> _Upstream:
            api_client = kube.fresh_api_client()
            try:
                forward = k8s_portforward(CoreV1Api(api_client).connect_get_namespaced_pod_portforward, pod, namespace,
                                          ports=str(port))
            except Exception as exc:
                api_client.close()
                raise RelayError(f"port-forward to pod {namespace}/{pod} port {port} failed: "
                                 f"{getattr(exc, 'reason', None) or exc}", "port-forward") from exc
            remote = forward.socket(port)
            remote.setblocking(True)

            def close() -> None:
                # Half-close first and wait for the client library's proxy thread to let go of its end: closing
                # with data unread would reset it, and that thread reports the reset as an uncaught exception.
                try:
                    remote.shutdown(socket.SHUT_WR)
                    remote.settimeout(2.0)
                    while remote.recv(65536):
                        pass
                except OSError:
                    pass
                forward.close()
                api_client.close()

            return _Upstream(remote, close, lambda: forward.error(port))

        self._bridges.append(LocalBridge(connect, f"port-forward {namespace}/{pod}:{port}"))

    def _resolve_relay_pod(self) -> tuple[str, int]:
        """The Service's selector and target port, and a Running (preferably Ready) pod it selects."""
        from ._k8s import KubeError

        kube, namespace, name = self.kube, self.namespace, self.service
        try:
            service = kube.call(f"read service {namespace}/{name}", kube.core.read_namespaced_service, name,
                                namespace)
        except KubeError as exc:
            hint = " (is Hubble Relay enabled? Helm value hubble.relay.enabled)" if exc.not_found else ""
            raise RelayError(f"cannot find Hubble Relay: {exc}{hint}", "port-forward", via=self.via) from exc
        selector = dict(service.spec.selector or {})
        if not selector:
            raise RelayError(f"service {namespace}/{name} has no pod selector: cannot port-forward to it",
                             "port-forward", via=self.via)
        ports = list(service.spec.ports or [])
        chosen = next((p for p in ports if p.name == "grpc"), ports[0] if ports else None)
        target: Any = chosen.target_port if chosen is not None and chosen.target_port is not None else (
            chosen.port if chosen is not None else RELAY_TARGET_PORT)
        label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        try:
            pods = kube.call(f"list pods {label_selector} in {namespace}", kube.core.list_namespaced_pod, namespace,
                             label_selector=label_selector).items
        except KubeError as exc:
            raise RelayError(f"cannot list the Hubble Relay pods: {exc}", "port-forward", via=self.via) from exc
        running = [p for p in pods if (p.status and p.status.phase == "Running")
                   and not p.metadata.deletion_timestamp]
        if not running:
            raise RelayError(f"no Running pod of service {namespace}/{name} ({label_selector}): is Hubble Relay up?",
                             "port-forward", via=self.via)

        def ready(pod: Any) -> bool:
            return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))

        running.sort(key=lambda p: (not ready(p), p.metadata.name))
        pod = running[0]
        if isinstance(target, str) and not target.isdigit():
            named = [port.container_port for container in (pod.spec.containers or [])
                     for port in (container.ports or []) if port.name == target]
            if not named:
                raise RelayError(f"service {namespace}/{name} targets port {target!r}, which pod "
                                 f"{namespace}/{pod.metadata.name} does not declare", "port-forward", via=self.via)
            target = named[0]
        return pod.metadata.name, int(target)

    def _open_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        for bridge in self._bridges:
            bridge.last_error = None
        target = self.address or self._bridges[0].address
        options: list[tuple[str, Any]] = [("grpc.keepalive_time_ms", KEEPALIVE_MS),
                                          ("grpc.keepalive_timeout_ms", 20000)]
        if SINGLE_THREADED_OPTION:
            options.append((SINGLE_THREADED_OPTION, 1))
        if not self.address:
            options.append(("grpc.enable_http_proxy", 0))
        if self.tls and not self.validate_certs:
            target = self._tls_bridge(target).address
            options.append(("grpc.enable_http_proxy", 0))
            self._channel = grpc.insecure_channel(target, options=options)
        elif self.tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self._read_file(self.ca_cert, "CA certificate"),
                private_key=self._read_file(self.client_key, "client key"),
                certificate_chain=self._read_file(self.client_cert, "client certificate"))
            if self.server_name:
                options.append(("grpc.ssl_target_name_override", self.server_name))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._target = target
        self._get_flows = self._channel.unary_stream(
            GET_FLOWS, request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
            response_deserializer=None)  # raw bytes: decoded as a view in _stream, kept for the rare full read
        self._server_status = self._channel.unary_unary(
            SERVER_STATUS, request_serializer=observer_pb2.ServerStatusRequest.SerializeToString,
            response_deserializer=observer_pb2.ServerStatusResponse.FromString)

    def _reopen(self) -> None:
        """A new channel after a broken stream; through a port-forward, to the Relay pod found anew (it may have
        been replaced)."""
        if self.address is None:
            for bridge in self._bridges:
                bridge.close()
            self._bridges = []
            self._open_port_forward()
        self._open_channel()

    def _tls_bridge(self, upstream_address: str) -> LocalBridge:
        """TLS without certificate checks, which gRPC cannot do: Python's ssl talks TLS, gRPC talks to the bridge."""
        for bridge in self._bridges:
            if bridge.name == "tls":
                return bridge
        host, _sep, port = upstream_address.rpartition(":")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        if self.client_cert:
            try:
                context.load_cert_chain(self.client_cert, self.client_key)
            except (OSError, ssl.SSLError) as exc:
                raise RelayError(f"cannot load the client certificate {self.client_cert}: {exc}", "options") from exc
        server_name = self.server_name or (host.strip("[]") if self.address else None)

        def connect() -> _Upstream:
            raw = socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)
            try:
                wrapped = context.wrap_socket(raw, server_hostname=server_name)
            except (OSError, ssl.SSLError):
                raw.close()
                raise
            wrapped.settimeout(None)
            return _Upstream(wrapped, wrapped.close, lambda: None)

        bridge = LocalBridge(connect, "tls")
        self._bridges.append(bridge)
        return bridge

    def close(self) -> None:
        self._closing = True
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        for bridge in self._bridges:
            bridge.close()
        self._bridges = []

    def __enter__(self) -> RelayClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- errors ----------------------------------------------------------------------------------------------------
    def error(self, error: Any, doing: str) -> RelayError:
        """A RelayError that names the Relay, how it was reached and what went wrong."""
        code, details = _code_name(error), _details(error)
        forward = next((b.last_error for b in self._bridges if b.name != "tls" and b.last_error), None)
        tls_bridge = next((b.last_error for b in self._bridges if b.name == "tls" and b.last_error), None)
        option = self.option_prefix
        kind = None
        if forward and code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            kind = "port-forward"
            if "refused" in forward.lower() or "connect call failed" in forward.lower():
                # the API server and the kubelet did their part: inside the pod, nothing listens on the port
                problem = (f"the Kubernetes API opened the port-forward, but nothing accepts connections on port "
                           f"{self.target_port} of pod {self.namespace}/{self.pod} (is the Relay container running "
                           f"and listening there?): {_short_api_error(forward)}")
            else:
                problem = f"the port-forward failed: {_short_api_error(forward)}"
        elif self.tls:
            kind = classify_tls_error(details) or (classify_tls_error(tls_bridge) if tls_bridge else None)
            if kind is None and not self.client_cert and any(
                    marker in (details + (tls_bridge or "")).lower() for marker in ("socket closed", "reset by peer")):
                kind = "tls-client-cert"
        name = self.server_name or (self.address or "").rpartition(":")[0].strip("[]") or "127.0.0.1"
        if kind == "port-forward":
            pass
        elif kind == "tls-ca":
            problem = (f"certificate verify failed: its TLS certificate is not signed by the CA in {self.ca_cert} "
                       f"({option}ca_cert)" if self.ca_cert else
                       "certificate verify failed: its TLS certificate is not signed by a CA this host trusts "
                       f"(give {option}ca_cert)")
        elif kind == "tls-name":
            names = self.certificate_names()
            given = (f"the {option}server_name given" if self.server_name else
                     "the host it was reached at" if self.address else "the local end of the port-forward")
            if names:
                wildcard = next((n for n in names if n.startswith("*.")), None)
                example = f", e.g. instance{wildcard[1:]}" if wildcard else ""
                problem = (f"its TLS certificate is for {', '.join(names)}, not {name!r} ({given}; set "
                           f"{option}server_name to a name the certificate carries{example})")
            else:
                problem = (f"its TLS certificate is not valid for the name {name!r} ({given}; set "
                           f"{option}server_name to a name the certificate carries)")
        elif kind == "tls-client-cert" and self.client_cert:
            problem = f"it does not accept the client certificate {self.client_cert} ({option}client_cert)"
        elif kind == "tls-client-cert":
            problem = ("the connection closed during the TLS handshake: the Relay may require a client certificate "
                       f"(mutual TLS: give {option}client_cert and {option}client_key), or may not serve TLS")
        elif kind == "tls":
            problem = "the TLS handshake failed (is TLS enabled on the Relay, and are the certificates right?)"
        elif code == "DEADLINE_EXCEEDED":
            kind, problem = "unreachable", f"no answer within {self.timeout:g}s"
        elif code == "UNAVAILABLE" and "refused" in details.lower():
            kind, problem = "refused", "connection refused (nothing listens there)"
        elif code == "UNAVAILABLE":
            kind, problem = "unreachable", "unreachable" + ("" if self.tls else f" (if the Relay serves TLS, set "
                                                                                f"{option}tls)")
        else:
            kind, problem = "stream", "the Relay answered with an error"
        message = f"Hubble Relay at {self.describe}: {doing}: {problem} [{code}: {details}]"
        if tls_bridge and tls_bridge not in message:
            message += f" [TLS bridge: {tls_bridge}]"
        return RelayError(message, kind, address=self.address or self._target, via=self.via, code=code,
                          details=details)

    def certificate_names(self) -> list[str]:
        """The DNS names and IP addresses the Relay's certificate is for, read over a separate TLS connection that
        checks the chain against the CA but not the name; empty when that fails (the names are only a hint)."""
        target = self._target or self.address
        if not target or not self.validate_certs:
            return []
        host, _sep, port = target.rpartition(":")
        try:
            context = ssl.create_default_context(cafile=self.ca_cert)
            context.check_hostname = False
            context.set_alpn_protocols(["h2"])
            if self.client_cert:
                context.load_cert_chain(self.client_cert, self.client_key)
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(self.timeout, 5.0)) as raw, \
                    context.wrap_socket(raw, server_hostname=None) as wrapped:
                certificate = wrapped.getpeercert() or {}
        except (OSError, ValueError, ssl.SSLError):
            return []
        names = [str(value) for kind, value in certificate.get("subjectAltName", ())
                 if kind in ("DNS", "IP Address")]
        if not names:  # an old certificate without SANs: the common name
            names = [str(value) for rdn in certificate.get("subject", ()) for key, value in rdn
                     if key == "commonName"]
        return names

    # --- calls -----------------------------------------------------------------------------------------------------
    def server_status(self) -> RelayStatus:
        """The Relay's flow counters and node availability."""
        if self._channel is None:
            self._open_channel()
        try:
            reply = self._server_status(observer_pb2.ServerStatusRequest(), timeout=self.timeout)
        except grpc.RpcError as error:
            raise self.error(error, "ServerStatus") from None
        return RelayStatus(
            int(reply.num_flows), int(reply.max_flows), int(reply.seen_flows), int(reply.uptime_ns),
            reply.num_connected_nodes.value if reply.HasField("num_connected_nodes") else None,
            reply.num_unavailable_nodes.value if reply.HasField("num_unavailable_nodes") else None,
            tuple(reply.unavailable_nodes), reply.version, float(reply.flows_rate))

    def request(self, *, since: datetime.datetime | None = None, until: datetime.datetime | None = None,
                follow: bool = False, number: int = 0, first: bool = False, whitelist: Sequence[Any] = (),
                blacklist: Sequence[Any] = ()) -> Any:
        """A GetFlowsRequest (the filters as FlowFilter messages)."""
        request = observer_pb2.GetFlowsRequest(number=number, first=first, follow=follow)
        request.whitelist.extend(whitelist)
        request.blacklist.extend(blacklist)
        if since is not None:
            since_ns = timestamp_ns(since)
            request.since.seconds, request.since.nanos = divmod(since_ns, _NS)
        if until is not None:
            until_ns = timestamp_ns(until)
            request.until.seconds, request.until.nanos = divmod(until_ns, _NS)
        return request

    def events(self, *, since: datetime.datetime | None = None, until: datetime.datetime | None = None,
               follow: bool = False, duration: float | None = None, number: int = 0, first: bool = False,
               verdicts: Iterable[str] = AUDIT_VERDICTS, event_types: Iterable[int | str] = AUDIT_EVENT_TYPES,
               drop_reasons: Iterable[str] = (), namespaces: Iterable[str] = (),
               whitelist: Sequence[Any] | None = None, blacklist: Sequence[Any] = ()) -> Iterator[RelayEvent]:
        """FlowRecord, LostEvents, NodeStatus and StreamGap events of one window.

        Windows: ``since``/``until`` (the ring buffers; until defaults to now), ``number`` (the last, or with
        ``first`` the first, flows per node), or ``follow`` for ``duration`` seconds of wall time from now (from
        ``since`` when given). Filters: ``whitelist`` (FlowFilter messages) replaces the ones built from verdicts,
        event types, drop reasons and namespaces.
        """
        if self._channel is None:
            self.connect()
        if follow and duration is None and until is None:
            raise RelayError("a follow window needs a duration (or until)", "options")
        filters = list(whitelist) if whitelist is not None else build_filters(verdicts, event_types, namespaces,
                                                                              drop_reasons)
        started = time.monotonic()
        deadline = started + duration if follow and duration is not None else None
        if not follow and until is None and (since is not None or number == 0):
            until = datetime.datetime.now(_UTC)  # pinned, so that a resumed read covers the same window
        request = self.request(since=since, until=until, follow=follow, number=number, first=first,
                               whitelist=filters, blacklist=blacklist)
        # where the window starts (a follow without since: when it is opened), for a stream that breaks before its
        # first flow: the gap starts there, and the read resumes from there
        opened_ns = timestamp_ns(since) if since is not None else time.time_ns() if follow else 0
        yield from self._stream(request, deadline, opened_ns)

    def _stream(self, request: Any, deadline: float | None, opened_ns: int = 0) -> Iterator[RelayEvent]:
        stats, convert = self.stats, self.converter
        decode = flow_view_pb2.GetFlowsResponseView.FromString
        overlap_ns = int(RESUME_OVERLAP_SECONDS * _NS)
        last_ns = 0  # time of the latest flow delivered
        # Keys (uuid, else node/time/addresses) of the flows delivered in the last overlap_ns at least: two
        # generations, the older one dropped whenever the newer one spans overlap_ns.
        recent: dict[Any, int] = {}
        older: dict[Any, int] = {}
        generation_start = 0
        resume_until = 0  # after a reconnect: flows up to this time may have been delivered already
        gap: tuple[str | None, str] | None = None  # (start, reason) of a stream break not yet reported
        resumable = True  # the reopened read can go back to where the break was (a time to ask from is known)
        failures = 0
        received = 0
        while True:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return
            call = self._get_flows(request, timeout=timeout)
            try:
                for raw in call:
                    response = decode(raw)
                    received += 1
                    stats.messages += 1
                    if gap is not None:
                        stats.gaps += 1
                        yield StreamGap(gap[0], rfc3339(*divmod(time.time_ns(), _NS)), gap[1], resumable)
                        gap = None
                    if response.HasField("flow"):
                        flow = response.flow
                        stamp = flow.time
                        flow_ns = stamp.seconds * _NS + stamp.nanos
                        key = flow.uuid or (response.node_name, flow_ns, flow.IP, flow.source, flow.verdict,
                                            flow.event_type)
                        if resume_until and flow_ns <= resume_until and (key in recent or key in older):
                            stats.duplicates += 1
                            continue
                        recent[key] = flow_ns
                        if flow_ns > last_ns:
                            last_ns = flow_ns
                            if last_ns - generation_start > overlap_ns:
                                older, recent, generation_start = recent, {}, last_ns
                        stats.flows += 1
                        failures = 0  # progress: the next break gets the full number of reconnects again
                        yield convert(flow, response.node_name, raw)
                        continue
                    kind = response.WhichOneof("response_types")
                    if kind == "lost_events":
                        lost = lost_events_from_proto(response.lost_events, response.node_name, response.time)
                        stats.lost_messages += 1
                        stats.lost_events += lost.count
                        yield lost
                    elif kind == "node_status":
                        stats.node_status += 1
                        yield node_status_from_proto(response.node_status, response.time)
                if gap is not None:
                    stats.gaps += 1
                    yield StreamGap(gap[0], rfc3339(*divmod(time.time_ns(), _NS)), gap[1], resumable)
                return
            except grpc.RpcError as error:
                code = _code_name(error)
                if code == "DEADLINE_EXCEEDED" and deadline is not None and time.monotonic() >= deadline - 0.05:
                    return  # the follow window is over
                if code == "CANCELLED" and self._closing:
                    return
                if code not in RETRYABLE_CODES or failures >= self.max_reconnects:
                    if not received and not failures:
                        raise self.error(error, "GetFlows") from None
                    start = rfc3339(*divmod(last_ns or opened_ns, _NS)) if last_ns or opened_ns else (
                        gap[0] if gap else None)
                    reason = f"{code}: {_details(error)}"
                    if code in RETRYABLE_CODES:
                        reason += f" (gave up after {failures} reconnects)"
                    stats.gaps += 1
                    yield StreamGap(start, None, reason)
                    raise self.error(error, f"GetFlows (after {received} messages, {failures} reconnects)") from None
                if gap is None:
                    resume_ns = last_ns or opened_ns
                    resumable = bool(resume_ns) or not request.follow or request.HasField("since")
                    gap = (rfc3339(*divmod(resume_ns, _NS)) if resume_ns else None,
                           f"stream broken ({code}: {_details(error)})")
                while True:
                    self._sleep(min(self.max_backoff, self.backoff * (2 ** failures)))
                    failures += 1
                    stats.reconnects += 1
                    try:
                        self._reopen()
                        break
                    except RelayError as reopen_error:
                        if failures >= self.max_reconnects:
                            stats.gaps += 1
                            yield StreamGap(gap[0], None, f"{gap[1]}; gave up after {failures} reconnects: "
                                            f"{reopen_error}")
                            raise
                if last_ns:
                    resume_until = last_ns
                    since_ns = last_ns - overlap_ns
                    if request.HasField("since"):
                        since_ns = max(since_ns, request.since.seconds * _NS + request.since.nanos)
                    request = _resumed(request, since_ns)
                elif opened_ns and not request.HasField("since"):
                    request = _resumed(request, opened_ns)  # nothing delivered yet: from the window's start
            finally:
                call.cancel()


def _resumed(request: Any, since_ns: int) -> Any:
    """The same request from ``since_ns`` on: a window of time now (number/first no longer apply)."""
    resumed = observer_pb2.GetFlowsRequest()
    resumed.CopyFrom(request)
    resumed.number = 0
    resumed.first = False
    resumed.since.seconds, resumed.since.nanos = divmod(since_ns, _NS)
    return resumed


def relay_events(address: str | None = None, *, kube: Any = None, namespace: str = RELAY_NAMESPACE,
                 service: str = RELAY_SERVICE, tls: bool | None = None, ca_cert: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None, server_name: str | None = None,
                 validate_certs: bool = True, timeout: float = 12.0, max_reconnects: int = 5,
                 workloads: dict[str, str] | None = None, **window: Any) -> Iterator[RelayEvent]:
    """Connect, yield the events of one window (see ``RelayClient.events`` for the window options), close."""
    client = RelayClient(address, kube=kube, namespace=namespace, service=service, tls=tls, ca_cert=ca_cert,
                         client_cert=client_cert, client_key=client_key, server_name=server_name,
                         validate_certs=validate_certs, timeout=timeout, max_reconnects=max_reconnects,
                         workloads=workloads)
    try:
        client.connect()
        yield from client.events(**window)
    finally:
        client.close()
