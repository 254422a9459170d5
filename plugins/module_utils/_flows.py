# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""The one normalised flow record. Every Hubble source (Relay gRPC, jsonpb files, exporter files) produces these at
its edge; judging, grouping and reports know nothing about where a flow came from.

Note that this module util is PRIVATE to the collection. It can change at any time.

Hubble facts kept here: direction is relative to the endpoint that decided (INGRESS: the local endpoint is the
destination; EGRESS: the source); policy-verdict events are event type 5; AUDIT flows carry no drop reason.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Union

POLICY_VERDICT_EVENT = 5
DROP_EVENT = 1
VERDICTS = ("VERDICT_UNKNOWN", "FORWARDED", "DROPPED", "ERROR", "AUDIT", "REDIRECTED", "TRACED", "TRANSLATED")
DIRECTIONS = ("TRAFFIC_DIRECTION_UNKNOWN", "INGRESS", "EGRESS")
WORKLOAD_LABELS = ("app", "app.kubernetes.io/name", "k8s-app")
# Kubernetes controller suffixes: <deployment>-<replicaset hash>-<pod hash>, <statefulset>-<ordinal>, <ds>-<hash>.
# Kubernetes draws generated names from an alphabet without vowels ("bcdfghjklmnpqrstvwxz2456789", apimachinery's
# util/rand); a ReplicaSet's pod-template-hash is the decimal FNV hash of the template through that alphabet, so it
# only holds 4-9, b, c, d and f. Matching those alphabets keeps words out: node-exporter-x2x8q is the DaemonSet
# node-exporter, not the Deployment "node".
_GENERATED = "bcdfghjklmnpqrstvwxz2456789"
_REPLICASET_POD = re.compile(rf"^(?P<base>.+)-[4-9bcdf]{{6,10}}-[{_GENERATED}]{{5}}$")
_DAEMONSET_POD = re.compile(rf"^(?P<base>.+)-[{_GENERATED}]{{5}}$")
_STATEFULSET_POD = re.compile(r"^(?P<base>.+)-\d+$")


class Peer(NamedTuple):
    """One side of a flow, as Hubble describes it."""

    namespace: str | None = None
    pod: str | None = None
    workload: str | None = None
    labels: tuple[str, ...] = ()  # "k8s:app=db", "reserved:world", ...
    identity: int | None = None
    endpoint_id: int | None = None  # set for endpoints local to the reporting node
    entity: str | None = None  # "world", "host", "remote-node", "kube-apiserver", "health", "init", ...
    ip: str | None = None
    fqdns: tuple[str, ...] = ()

    def label_map(self) -> dict[str, str]:
        """Labels as key -> value, without the source prefix (``k8s:app=db`` -> ``app: db``)."""
        return label_map(self.labels)

    def display(self) -> str:
        if self.namespace and (self.workload or self.pod):
            return f"{self.namespace}/{self.workload or self.pod}"
        if self.entity:
            if self.entity == "world" and (self.fqdns or self.ip):
                return f"world:{self.fqdns[0] if self.fqdns else self.ip}"
            return f"reserved:{self.entity}"
        return self.ip or (f"identity:{self.identity}" if self.identity is not None else "unknown")


class FlowRecord(NamedTuple):
    """A Hubble flow reduced to what judging and reporting need."""

    time: str  # RFC 3339
    node: str  # "cluster/node" as Hubble names it
    verdict: str  # AUDIT, DROPPED, FORWARDED, ...
    event_type: int  # 5 policy verdict, 1 drop, 4 trace, ...
    direction: str  # INGRESS, EGRESS, TRAFFIC_DIRECTION_UNKNOWN
    is_reply: bool | None
    source: Peer
    destination: Peer
    protocol: str | None  # TCP, UDP, SCTP, ICMPv4, ICMPv6
    port: int | None  # destination port (ICMP: type)
    drop_reason: str | None = None  # POLICY_DENIED, POLICY_DENY, ...
    denied_by: tuple[str, ...] = ()  # "namespace/name" of denying policies, when the agent reports them
    match_type: int = 0

    @property
    def local(self) -> Peer:
        """The endpoint whose policy decided (INGRESS: destination, EGRESS: source)."""
        return self.source if self.direction == "EGRESS" else self.destination

    @property
    def remote(self) -> Peer:
        return self.destination if self.direction == "EGRESS" else self.source

    @property
    def is_policy_verdict(self) -> bool:
        return self.event_type == POLICY_VERDICT_EVENT


class LostEvents(NamedTuple):
    """Hubble reports flows it could not keep (ring buffer overrun, queue full)."""

    source: str  # PERF_EVENT_RING_BUFFER, OBSERVER_EVENTS_QUEUE, HUBBLE_RING_BUFFER, ...
    count: int
    node: str | None
    time: str | None


class NodeStatus(NamedTuple):
    """The Relay says a node is connected, unavailable, gone or in error."""

    state: str  # NODE_CONNECTED, NODE_UNAVAILABLE, NODE_GONE, NODE_ERROR
    nodes: tuple[str, ...]
    message: str
    time: str | None


Event = Union[FlowRecord, LostEvents, NodeStatus]


def label_map(labels: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Hubble labels (``k8s:app=db``, ``reserved:world``) as key -> value, without the source prefix."""
    result: dict[str, str] = {}
    for label in labels:
        source, sep, rest = label.partition(":")
        if not sep:
            rest = source
        key, _eq, value = rest.partition("=")
        result[key] = value
    return result


def workload_name(pod: str | None, labels: dict[str, str], workloads: dict[str, str] | None = None,
                  namespace: str | None = None, hubble_workload: str | None = None) -> str | None:
    """The workload a pod belongs to: user mapping, Hubble's own workload, the app labels, else the pod name
    without its controller suffix."""
    if workloads and pod:
        for key in (f"{namespace}/{pod}" if namespace else None, pod):
            if key and key in workloads:
                return workloads[key]
    if hubble_workload:
        return hubble_workload
    for label in WORKLOAD_LABELS:
        if labels.get(label):
            return labels[label]
    if not pod:
        return None
    for pattern in (_REPLICASET_POD, _DAEMONSET_POD, _STATEFULSET_POD):
        match = pattern.match(pod)
        if match:
            return match.group("base")
    return pod


def entity_from_labels(labels: tuple[str, ...] | list[str]) -> str | None:
    """``reserved:world`` -> ``world``; None for workload endpoints."""
    for label in labels:
        if label.startswith("reserved:"):
            name = label[len("reserved:"):]
            return name.split("=", 1)[0]
    return None


def peer_from_dict(endpoint: dict[str, Any], ip: str | None, fqdns: Any,
                   workloads: dict[str, str] | None = None) -> Peer:
    """A Peer from a jsonpb/protobuf-shaped ``flow.Endpoint`` dict (proto field names)."""
    labels = tuple(endpoint.get("labels") or ())
    namespace = endpoint.get("namespace") or None
    pod = endpoint.get("pod_name") or None
    hubble_workloads = endpoint.get("workloads") or []
    hubble_workload = hubble_workloads[0].get("name") if hubble_workloads else None
    label_map = Peer(labels=labels).label_map()
    identity = endpoint.get("identity")
    endpoint_id = endpoint.get("ID")
    return Peer(
        namespace=namespace,
        pod=pod,
        workload=workload_name(pod, label_map, workloads, namespace, hubble_workload) if (pod or namespace) else None,
        labels=labels,
        identity=int(identity) if identity is not None else None,
        endpoint_id=int(endpoint_id) if endpoint_id else None,
        entity=entity_from_labels(labels),
        ip=ip,
        fqdns=tuple(fqdns or ()),
    )
