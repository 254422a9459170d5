# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Judging audited flows: which would-be denies were expected, which were not, and whether the window can be trusted.

Note that this module util is PRIVATE to the collection. It can change at any time.

* :func:`parse_window` turns ``since``/``until``/``duration`` options into a time window.
* :func:`parse_expected` checks the list of expected would-be denies (rules) and compiles it.
* :func:`judge_flows` groups audited flows by (direction, source, destination, port, protocol, matching rule) and
  counts what makes a window incomplete (lost events, unavailable nodes); memory grows with the number of groups,
  never with the number of flows.
* :meth:`Judgement.summary` says whether the result can be trusted: an empty or lossy window is never green.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, Union

from ._args import duration_seconds
from ._flow_files import parse_rfc3339, time_key
from ._flows import POLICY_VERDICT_EVENT, FlowRecord, LostEvents, NodeStatus, Peer, workload_name

ENTITIES = ("all", "cluster", "health", "host", "ingress", "init", "kube-apiserver", "remote-node", "unmanaged",
            "world", "world-ipv4", "world-ipv6")
RULE_KEYS = ("direction", "from", "name", "ports", "reason", "to")
PEER_KEYS = ("cidr", "entity", "fqdn", "identity", "labels", "namespace", "pod", "workload")
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
UNAVAILABLE_NODE_STATES = ("NODE_UNAVAILABLE", "NODE_GONE", "NODE_ERROR")
DEFAULT_MAX_GROUPS = 10000
MAX_SAMPLE_PODS = 3
MAX_NAMES = 20
_MEMO_SIZE = 100000
_WORLD = ("world", "world-ipv4", "world-ipv6")
_RELATIVE_HELP = "a relative time such as 15m, 2h, 1h30m, 90s or 1d"
_PORT = re.compile(r"^(?:(\d+)(?:-(\d+))?)?(?:/?([A-Za-z][A-Za-z0-9]*))?$")
_PORT_HELP = 'a port 1-65535 or a string like "5432/TCP", "8000-8080", "8000-8080/UDP", "53/UDP" or "8/ICMPv4"'
_PROTOCOL_NAMES = {"TCP": "TCP", "UDP": "UDP", "SCTP": "SCTP", "ANY": None, "ICMP": "ICMPv4", "ICMPV4": "ICMPv4",
                   "ICMPV6": "ICMPv6"}
_FQDN = re.compile(r"^[a-z0-9*_.-]+$")

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


# -- time window -----------------------------------------------------------------------------------------------------

class Window(NamedTuple):
    """A time window; ``None`` ends are open."""

    since: datetime | None = None
    until: datetime | None = None

    @property
    def duration(self) -> timedelta | None:
        if self.since is None or self.until is None:
            return None
        return self.until - self.since

    def to_dict(self) -> dict[str, Any]:
        duration = self.duration
        return {
            "since": format_time(self.since) if self.since else None,
            "until": format_time(self.until) if self.until else None,
            "duration": format_duration(duration) if duration is not None else None,
            "duration_seconds": int(duration.total_seconds()) if duration is not None else None,
        }


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, ``Z``, whole seconds unless there is a fraction."""
    utc = moment.astimezone(timezone.utc)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def format_duration(duration: timedelta) -> str:
    """``1h30m``, ``90s`` -> ``1m30s``, ``1d2h``; ``0s`` for nothing."""
    seconds = int(duration.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + ("".join(parts) or "0s")


def parse_duration(value: Any, option: str = "duration") -> timedelta:
    """``15m``, ``2h``, ``1h30m``, ``90s``, ``1d`` (or a number of seconds) as a timedelta."""
    if isinstance(value, bool):
        raise ValueError(f"{option}: expected {_RELATIVE_HELP}, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{option}: expected {_RELATIVE_HELP} (or seconds >= 0), got {value!r}")
        return timedelta(seconds=value)
    if isinstance(value, timedelta):
        return value
    seconds = duration_seconds(value, weeks=False) if isinstance(value, str) else None
    if seconds is None:
        raise ValueError(f"{option}: expected {_RELATIVE_HELP}, got {value!r}")
    return timedelta(seconds=seconds)


def _parse_moment(value: Any, option: str, now: datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{option}: {value.isoformat()} has no timezone (expected an RFC 3339 time such as "
                             "2026-09-01T12:00:00Z)")
        return value
    if isinstance(value, str):
        text = value.strip()
        if duration_seconds(text, weeks=False) is not None:
            return now - parse_duration(text, option)
        try:
            return parse_rfc3339(text)
        except ValueError:
            pass
    raise ValueError(f"{option}: {value!r} is neither an RFC 3339 time (such as 2026-09-01T12:00:00Z) nor "
                     f"{_RELATIVE_HELP} (meaning that long before now)")


def parse_window(since: Any = None, until: Any = None, duration: Any = None, *, now: datetime | None = None) -> Window:
    """The window the options name. ``since``/``until``: RFC 3339, or relative (``15m`` = 15 minutes before now);
    ``duration``: the window's length, with one of them or (alone) ending now. At most two of the three."""
    now = now or datetime.now(timezone.utc)
    given = [name for name, value in (("since", since), ("until", until), ("duration", duration))
             if value not in (None, "")]
    if len(given) == 3:
        raise ValueError("since, until, duration: give at most two of them (the third follows)")
    start = _parse_moment(since, "since", now) if "since" in given else None
    end = _parse_moment(until, "until", now) if "until" in given else None
    if "duration" in given:
        length = parse_duration(duration, "duration")
        if length <= timedelta(0):
            raise ValueError(f"duration: must be longer than 0s, got {duration!r}")
        if start is not None:
            end = start + length
        elif end is not None:
            start = end - length
        else:
            start, end = now - length, now
    if start is not None and end is not None and start >= end:
        raise ValueError(f"since ({format_time(start)}) must be before until ({format_time(end)})")
    return Window(start, end)


# -- expected would-be denies (rules) --------------------------------------------------------------------------------

class PortSpec(NamedTuple):
    """Ports ``first``-``last`` of ``protocol`` (``None``: TCP, UDP or SCTP). For ICMP the numbers are ICMP types."""

    first: int
    last: int
    protocol: str | None = None

    def matches(self, protocol: str | None, port: int | None) -> bool:
        if port is None or protocol is None:
            return False
        if self.protocol is None:
            if protocol not in PORT_PROTOCOLS:
                return False
        elif protocol != self.protocol:
            return False
        return self.first <= port <= self.last

    def text(self) -> str:
        ports = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{ports}/{self.protocol}" if self.protocol else ports


@dataclass(frozen=True)
class PeerMatch:
    """What ``from``/``to`` of a rule asks of a flow's source/destination; ``None`` fields match anything."""

    namespace: str | None = None
    workload: str | None = None
    pod: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    identity: int | None = None
    entity: str | None = None
    fqdn: str | None = None
    cidr: Network | None = None

    def matches(self, peer: Peer) -> bool:
        if self.namespace is not None and not _glob(peer.namespace, self.namespace):
            return False
        if self.workload is not None and not _glob(peer.workload, self.workload):
            return False
        if self.pod is not None and not _glob(peer.pod, self.pod):
            return False
        if self.identity is not None and peer.identity != self.identity:
            return False
        if self.labels:
            labels = peer.label_map()
            for key, value in self.labels:
                if labels.get(key) != value:
                    return False
        if self.entity is not None and not _entity_matches(peer, self.entity):
            return False
        if self.fqdn is not None and not any(fnmatch.fnmatchcase(name.lower().rstrip("."), self.fqdn)
                                             for name in peer.fqdns):
            return False
        return self.cidr is None or _in_network(peer.ip, self.cidr)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key in ("namespace", "workload", "pod", "identity", "entity", "fqdn"):
            value = getattr(self, key)
            if value is not None:
                result[key] = value
        if self.labels:
            result["labels"] = dict(self.labels)
        if self.cidr is not None:
            result["cidr"] = str(self.cidr)
        return result


@dataclass(frozen=True)
class Rule:
    """One expected would-be deny. All given parts must match; ``index`` is its place in the option's list."""

    index: int
    name: str | None = None
    reason: str | None = None
    source: PeerMatch | None = None
    destination: PeerMatch | None = None
    ports: tuple[PortSpec, ...] = ()
    direction: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"expected[{self.index}]"

    def matches(self, flow: FlowRecord) -> bool:
        if self.direction is not None and flow.direction != self.direction:
            return False
        if self.ports and not any(spec.matches(flow.protocol, flow.port) for spec in self.ports):
            return False
        if self.source is not None and not self.source.matches(flow.source):
            return False
        return self.destination is None or self.destination.matches(flow.destination)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "reason": self.reason}


def parse_expected(rules: Any, option: str = "expected") -> list[Rule]:
    """Check and compile the expected would-be denies; errors name the rule, the field and what was expected."""
    if rules is None:
        return []
    if not isinstance(rules, (list, tuple)):
        raise ValueError(f"{option}: expected a list of rules, got {type(rules).__name__}")
    return [_parse_rule(rule, index, f"{option}[{index}]") for index, rule in enumerate(rules)]


def _parse_rule(rule: Any, index: int, where: str) -> Rule:
    if not isinstance(rule, Mapping):
        raise ValueError(f"{where}: expected a mapping with keys {', '.join(RULE_KEYS)}, got {_type(rule)}")
    _check_keys(rule, RULE_KEYS, where)
    if not any(rule.get(key) not in (None, "", [], {}) for key in ("from", "to", "ports", "direction")):
        raise ValueError(f"{where}: give at least one of from, to, ports or direction (a rule without them would "
                         "expect every flow)")
    direction = rule.get("direction")
    if direction is not None:
        if not isinstance(direction, str) or direction.strip().upper() not in ("INGRESS", "EGRESS"):
            raise ValueError(f"{where}.direction: expected ingress or egress, got {direction!r}")
        direction = direction.strip().upper()
    return Rule(
        index=index,
        name=_optional_string(rule.get("name"), f"{where}.name"),
        reason=_optional_string(rule.get("reason"), f"{where}.reason"),
        source=_parse_peer(rule.get("from"), f"{where}.from"),
        destination=_parse_peer(rule.get("to"), f"{where}.to"),
        ports=_parse_ports(rule.get("ports"), f"{where}.ports"),
        direction=direction,
    )


def _parse_peer(peer: Any, where: str) -> PeerMatch | None:
    if peer is None:
        return None
    if not isinstance(peer, Mapping):
        raise ValueError(f"{where}: expected a mapping with keys {', '.join(PEER_KEYS)}, got {_type(peer)}")
    _check_keys(peer, PEER_KEYS, where)
    if not peer:
        raise ValueError(f"{where}: empty (give at least one of {', '.join(PEER_KEYS)}, or leave {where} out)")
    entity = peer.get("entity")
    if entity is not None:
        if not isinstance(entity, str) or entity.strip().lower() not in ENTITIES:
            raise ValueError(f"{where}.entity: expected one of {', '.join(ENTITIES)}, got {entity!r}")
        entity = entity.strip().lower()
    fqdn = peer.get("fqdn")
    if fqdn is not None:
        if not isinstance(fqdn, str) or not _FQDN.match(fqdn.strip().lower().rstrip(".")):
            raise ValueError(f"{where}.fqdn: expected a DNS name or glob such as api.example.com or *.example.com, "
                             f"got {fqdn!r}")
        fqdn = fqdn.strip().lower().rstrip(".")
    cidr = peer.get("cidr")
    network = None
    if cidr is not None:
        try:
            if not isinstance(cidr, str) or not cidr.strip():
                raise ValueError(cidr)
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{where}.cidr: expected an IPv4 or IPv6 network such as 10.0.0.0/8 or 2001:db8::/32, "
                             f"got {cidr!r}") from None
    return PeerMatch(
        namespace=_optional_string(peer.get("namespace"), f"{where}.namespace", empty=False),
        workload=_optional_string(peer.get("workload"), f"{where}.workload", empty=False),
        pod=_optional_string(peer.get("pod"), f"{where}.pod", empty=False),
        labels=_parse_labels(peer.get("labels"), f"{where}.labels"),
        identity=_parse_identity(peer.get("identity"), f"{where}.identity"),
        entity=entity,
        fqdn=fqdn,
        cidr=network,
    )


def _parse_labels(labels: Any, where: str) -> tuple[tuple[str, str], ...]:
    if labels is None:
        return ()
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"{where}: expected a non-empty mapping of label keys to values such as {{app: db}}, "
                         f"got {labels!r}")
    result = []
    for key, value in labels.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{where}: label keys must be non-empty strings, got {key!r}")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif value is None:
            value = ""
        elif not isinstance(value, str):
            raise ValueError(f"{where}.{key}: expected a string label value, got {_type(value)}")
        name = key.strip()
        if ":" in name:  # k8s:app -> app (Hubble label sources are dropped when matching)
            name = name.split(":", 1)[1]
        result.append((name, value))
    return tuple(sorted(result))


def _parse_identity(identity: Any, where: str) -> int | None:
    if identity is None:
        return None
    if isinstance(identity, str) and identity.strip().isdigit():
        identity = int(identity.strip())
    if isinstance(identity, bool) or not isinstance(identity, int) or identity < 0:
        raise ValueError(f"{where}: expected a numeric security identity (an integer >= 0), got {identity!r}")
    return identity


def _parse_ports(ports: Any, where: str) -> tuple[PortSpec, ...]:
    if ports is None:
        return ()
    if isinstance(ports, (str, int)) and not isinstance(ports, bool):
        ports = [ports]
    if not isinstance(ports, (list, tuple)) or not ports:
        raise ValueError(f"{where}: expected a non-empty list of ports ({_PORT_HELP}), got {ports!r}")
    return tuple(_parse_port(item, f"{where}[{index}]") for index, item in enumerate(ports))


def _parse_port(item: Any, where: str) -> PortSpec:
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ValueError(f"{where}: expected {_PORT_HELP}, got {_type(item)}")
    match = _PORT.match(str(item).replace(" ", ""))
    if not match or not (match.group(1) or match.group(3)):
        raise ValueError(f"{where}: expected {_PORT_HELP}, got {item!r}")
    first_text, last_text, protocol_text = match.groups()
    if protocol_text is not None:
        if protocol_text.upper() not in _PROTOCOL_NAMES:
            raise ValueError(f"{where}: unknown protocol {protocol_text!r} in {item!r} (expected TCP, UDP, SCTP, ANY, "
                             "ICMPv4 or ICMPv6)")
        protocol = _PROTOCOL_NAMES[protocol_text.upper()]
    else:
        protocol = None
    low, high = (0, 255) if protocol in ("ICMPv4", "ICMPv6") else (1, 65535)
    what = "an ICMP type 0-255" if low == 0 else "a port 1-65535"
    if first_text is None:
        return PortSpec(low, high, protocol)
    first = int(first_text)
    last = int(last_text) if last_text is not None else first
    for number in (first, last):
        if not low <= number <= high:
            raise ValueError(f"{where}: {number} is out of range in {item!r} (expected {what})")
    if first > last:
        raise ValueError(f"{where}: range {item!r} ends before it starts (expected low-high, e.g. 8000-8080)")
    return PortSpec(first, last, protocol)


def _check_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r} (expected one of {', '.join(allowed)})")


def _optional_string(value: Any, where: str, empty: bool = True) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {_type(value)}")
    if not empty and not value.strip():
        raise ValueError(f"{where}: expected a non-empty string")
    return value.strip() if not empty else value


def _type(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _glob(value: str | None, pattern: str) -> bool:
    if value is None:
        return False
    if "*" in pattern or "?" in pattern or "[" in pattern:
        return fnmatch.fnmatchcase(value, pattern)
    return value == pattern


def _entity_matches(peer: Peer, entity: str) -> bool:
    if entity == "all":
        return True
    reserved = {label[len("reserved:"):].split("=", 1)[0] for label in peer.labels if label.startswith("reserved:")}
    if peer.entity:
        reserved.add(peer.entity)
    if entity == "world":
        return bool(reserved.intersection(_WORLD))
    if entity == "cluster":
        return bool(peer.namespace) or bool(reserved - set(_WORLD) - {"unknown"})
    return entity in reserved


def _in_network(ip: str | None, network: Network) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return address.version == network.version and address in network


# -- judging ---------------------------------------------------------------------------------------------------------

def peer_display(peer: Peer) -> str:
    """:meth:`Peer.display`, except that the dual-stack world identities (``reserved:world-ipv4``/``-ipv6``) are named
    like ``world``, by DNS name or address: one group per outside peer, never one for the whole Internet."""
    if peer.entity in ("world-ipv4", "world-ipv6") and not (peer.namespace and (peer.workload or peer.pod)) \
            and (peer.fqdns or peer.ip):
        return f"world:{peer.fqdns[0] if peer.fqdns else peer.ip}"
    return peer.display()


def port_text(protocol: str | None, port: int | None) -> str:
    """``9100/TCP``, ``ICMPv4 type 8``, ``TCP`` (no port), ``any`` (no L4)."""
    if protocol in ("ICMPv4", "ICMPv6"):
        return f"{protocol} type {port}" if port is not None else str(protocol)
    if protocol is None:
        return "any"
    return f"{port}/{protocol}" if port is not None else protocol


@dataclass
class Group:
    """Audited flows that share direction, source, destination, port, protocol and verdict (the rule they match).

    ``source_pods``/``destination_pods`` hold up to three pod names (the smallest, sorted, so that the order of the
    flows does not show); ``source_peer``/``destination_peer`` are the first peers seen (namespace, entity, address).
    """

    direction: str
    source: str
    destination: str
    protocol: str | None
    port: int | None
    rule: Rule | None
    source_peer: Peer
    destination_peer: Peer
    count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    nodes: set[str] = field(default_factory=set)
    source_pods: list[str] = field(default_factory=list)
    destination_pods: list[str] = field(default_factory=list)
    denied_by: set[str] = field(default_factory=set)
    # DNS names Hubble gave each side (world peers): toFQDNs in suggested policies
    source_names: list[str] = field(default_factory=list)
    destination_names: list[str] = field(default_factory=list)
    # labels every peer seen on that side carried (a workload whose pods differ in labels keeps what they share)
    source_labels: frozenset[str] = frozenset()
    destination_labels: frozenset[str] = frozenset()
    first_key: str = field(default="", repr=False)  # time_key of first_seen / last_seen
    last_key: str = field(default="", repr=False)

    @property
    def expected(self) -> bool:
        return self.rule is not None

    @property
    def port_text(self) -> str:
        return port_text(self.protocol, self.port)

    def sort_key(self) -> tuple[Any, ...]:
        return (self.expected, self.direction, self.destination, self.source, self.protocol or "",
                self.port if self.port is not None else -1, self.rule.index if self.rule else -1)

    def describe(self, max_nodes: int = 3) -> str:
        """``INGRESS monitoring/metrics-agent -> shop/db 9100/TCP x12 (nodes: sim-worker-3)``."""
        nodes = sorted(self.nodes)
        shown = ", ".join(nodes[:max_nodes]) + (f" +{len(nodes) - max_nodes} more" if len(nodes) > max_nodes else "")
        text = f"{self.direction} {self.source} -> {self.destination} {self.port_text} x{self.count}"
        return text + (f" (nodes: {shown})" if nodes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "source": self.source,
            "destination": self.destination,
            "protocol": self.protocol,
            "port": self.port,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "nodes": sorted(self.nodes),
            "source_pods": list(self.source_pods),
            "destination_pods": list(self.destination_pods),
            "denied_by": sorted(self.denied_by),
            "expected": self.expected,
            "rule": self.rule.to_dict() if self.rule else None,
            "description": self.describe(),
        }


@dataclass
class Judgement:
    """The result of :func:`judge_flows`."""

    rules: list[Rule]
    groups: list[Group] = field(default_factory=list)
    flows_seen: int = 0
    audited: int = 0
    replies_skipped: int = 0
    other_skipped: int = 0
    lost_events: int = 0
    lost_event_records: int = 0
    node_status_events: int = 0
    nodes_unavailable: set[str] = field(default_factory=set)
    node_messages: list[str] = field(default_factory=list)
    overflow_flows: int = 0
    max_groups: int = DEFAULT_MAX_GROUPS
    first_seen: str | None = None
    last_seen: str | None = None

    @property
    def unexpected(self) -> list[Group]:
        return [group for group in self.groups if not group.expected]

    @property
    def expected(self) -> list[Group]:
        return [group for group in self.groups if group.expected]

    @property
    def unused_rules(self) -> list[Rule]:
        used = {group.rule.index for group in self.groups if group.rule is not None}
        return [rule for rule in self.rules if rule.index not in used]

    def failure_lines(self, limit: int | None = None) -> list[str]:
        """One line per unexpected group, for the failure message."""
        lines = [group.describe() for group in self.unexpected]
        if limit is not None and len(lines) > limit:
            lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
        return lines

    def summary(self, *, window: Window | Mapping[str, Any] | None = None, max_lost_events: int = 0, min_flows: int = 1,
                max_malformed: int = 0, malformed_lines: int = 0, flows_seen: int | None = None,
                source_errors: Iterable[str] = ()) -> dict[str, Any]:
        """Counts, and whether the window is complete (with the reasons when it is not).

        ``flows_seen``: the flows the source saw before its own filters (``FileStats.flows``), when it knows more than
        the flows judged here; ``min_flows`` applies to it. ``malformed_lines`` and ``source_errors`` come from the
        source as well.
        """
        seen = self.flows_seen if flows_seen is None else max(flows_seen, self.flows_seen)
        errors = list(source_errors)
        reasons = []
        if self.lost_events > max_lost_events:
            reasons.append(f"Hubble lost {self.lost_events} events (max_lost_events {max_lost_events}): audited flows "
                           "may be missing")
        if seen < min_flows:
            reasons.append(f"{seen} flows seen (min_flows {min_flows}): the window is empty or flows were not "
                           "collected")
        if malformed_lines > max_malformed:
            reasons.append(f"{malformed_lines} malformed lines (max_malformed {max_malformed})")
        if self.nodes_unavailable:
            reasons.append(f"nodes unavailable during the window: {', '.join(sorted(self.nodes_unavailable))}")
        if errors:
            reasons.append(f"{len(errors)} flow source errors: {errors[0]}" + (" ..." if len(errors) > 1 else ""))
        if self.overflow_flows:
            reasons.append(f"{self.overflow_flows} audited flows were not grouped: more than {self.max_groups} groups")
        unexpected = self.unexpected
        expected = self.expected
        complete = not reasons
        if isinstance(window, Window):
            window_dict = window.to_dict()
        elif window is not None:
            window_dict = dict(window)
        else:
            window_dict = Window().to_dict()
        return {
            "result": "fail" if unexpected else ("pass" if complete else "incomplete"),
            "passed": complete and not unexpected,
            "flows_seen": seen,
            "flows_judged": self.flows_seen,
            "audited": self.audited,
            "expected_groups": len(expected),
            "unexpected_groups": len(unexpected),
            "expected_flows": sum(group.count for group in expected),
            "unexpected_flows": sum(group.count for group in unexpected),
            "lost_events": self.lost_events,
            "malformed_lines": malformed_lines,
            "nodes_unavailable": sorted(self.nodes_unavailable),
            "replies_skipped": self.replies_skipped,
            "other_skipped": self.other_skipped,
            "complete": complete,
            "incomplete_reasons": reasons,
            "source_errors": errors,
            "unused_rules": [rule.label for rule in self.unused_rules],
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "window": window_dict,
        }


def judge_flows(events: Iterable[Any], rules: list[Rule], workloads: Mapping[str, str] | None = None, *,
                verdicts: Iterable[str] = ("AUDIT",), max_groups: int = DEFAULT_MAX_GROUPS) -> Judgement:
    """Group the audited flows in ``events`` and match each group against ``rules`` (first matching rule wins).

    Findings are policy-verdict flows (event type 5) with one of ``verdicts`` that are not replies; replies
    (``is_reply`` true) and every other flow are counted and skipped. ``workloads`` (``pod`` or ``namespace/pod`` ->
    workload name) renames peers the source named otherwise.
    """
    judge = _Judge(rules, workloads, frozenset(str(verdict).upper() for verdict in verdicts), max_groups)
    for event in events:
        judge.add(event)
    return judge.result()


class _Judge:
    def __init__(self, rules: list[Rule], workloads: Mapping[str, str] | None, verdicts: frozenset[str],
                 max_groups: int) -> None:
        self.judgement = Judgement(rules=list(rules), max_groups=max_groups)
        self.rules = list(rules)
        self.workloads = dict(workloads) if workloads else None
        self.verdicts = verdicts
        self.groups: dict[tuple[Any, ...], Group] = {}
        self.memo: dict[tuple[Any, ...], Group | None] = {}
        self.renamed: dict[Peer, Peer] = {}
        # a pod's address changes nothing (display, rules) unless a rule matches on cidr
        self.ip_matters = any(peer is not None and peer.cidr is not None
                              for rule in self.rules for peer in (rule.source, rule.destination))

    def add(self, event: Any) -> None:
        judgement = self.judgement
        if isinstance(event, FlowRecord):
            judgement.flows_seen += 1
            if event.is_reply is True:
                judgement.replies_skipped += 1
                return
            if event.verdict not in self.verdicts or event.event_type != POLICY_VERDICT_EVENT:
                judgement.other_skipped += 1
                return
            self._finding(event)
        elif isinstance(event, LostEvents):
            judgement.lost_events += event.count
            judgement.lost_event_records += 1
        elif isinstance(event, NodeStatus):
            judgement.node_status_events += 1
            if event.state in UNAVAILABLE_NODE_STATES:
                judgement.nodes_unavailable.update(event.nodes or ("(unnamed node)",))
                if event.message and len(judgement.node_messages) < 10:
                    judgement.node_messages.append(f"{event.state}: {event.message}")

    def _finding(self, flow: FlowRecord) -> None:
        judgement = self.judgement
        judgement.audited += 1
        # called for every audited flow: the record's fields are taken in one unpacking, not one by one
        (when, node, _verdict, _event_type, direction, _reply, source, destination, protocol, port, _drop_reason,
         denied_by, _match_type) = flow
        # what of a peer can change its group or its rule: all of it but a pod's address (index 7), unless a rule
        # has a cidr
        if self.ip_matters:
            memo_key = (direction, source, destination, protocol, port)
        else:
            memo_key = (direction, (source[:7], source[8]) if source[0] and (source[2] or source[1]) else source,
                        (destination[:7], destination[8]) if destination[0] and (destination[2] or destination[1])
                        else destination, protocol, port)
        group = self.memo.get(memo_key)
        if group is None:
            if memo_key in self.memo:  # a flow of a group that did not fit
                judgement.overflow_flows += 1
                return
            group = self._group_for(flow)
            if len(self.memo) >= _MEMO_SIZE:
                self.memo.clear()
            self.memo[memo_key] = group
            if group is None:
                judgement.overflow_flows += 1
                return
        group.count += 1
        if node:
            group.nodes.add(node)
        if denied_by:
            group.denied_by.update(denied_by)
        # ties between spellings of one instant (.0Z and Z) go to the smaller string: the order of flows never shows
        key = time_key(when)
        if key:  # (flows mostly come in time order: a later time is the common case, tested first)
            last = group.last_key
            if key >= last and (key > last or when > (group.last_seen or "")):
                group.last_key, group.last_seen = key, when
            first = group.first_key
            if not first or key < first or (key == first and when < (group.first_seen or "")):
                group.first_key, group.first_seen = key, when

    def _rename(self, peer: Peer) -> Peer:
        if self.workloads is None or not peer.pod:
            return peer
        renamed = self.renamed.get(peer)
        if renamed is None:
            name = workload_name(peer.pod, peer.label_map(), self.workloads, peer.namespace, peer.workload)
            renamed = peer if name == peer.workload else peer._replace(workload=name)
            if len(self.renamed) >= _MEMO_SIZE:
                self.renamed.clear()
            self.renamed[peer] = renamed
        return renamed

    def _group_for(self, flow: FlowRecord) -> Group | None:
        """The group of a (direction, source, destination, protocol, port) seen for the first time."""
        source, destination = self._rename(flow.source), self._rename(flow.destination)
        if source is not flow.source or destination is not flow.destination:
            flow = flow._replace(source=source, destination=destination)
        rule = next((rule for rule in self.rules if rule.matches(flow)), None)
        key = (flow.direction, peer_display(source), peer_display(destination), flow.protocol, flow.port,
               rule.index if rule else -1)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= self.judgement.max_groups:
                return None
            group = Group(direction=flow.direction, source=key[1], destination=key[2], protocol=flow.protocol,
                          port=flow.port, rule=rule, source_peer=source, destination_peer=destination,
                          source_labels=frozenset(source.labels), destination_labels=frozenset(destination.labels))
            self.groups[key] = group
        else:
            group.source_labels = group.source_labels.intersection(source.labels)
            group.destination_labels = group.destination_labels.intersection(destination.labels)
        _sample(group.source_pods, source.pod)
        _sample(group.destination_pods, destination.pod)
        _sample(group.source_names, *source.fqdns, limit=MAX_NAMES)
        _sample(group.destination_names, *destination.fqdns, limit=MAX_NAMES)
        return group

    def result(self) -> Judgement:
        judgement = self.judgement
        judgement.groups = sorted(self.groups.values(), key=Group.sort_key)
        # the window's first and last audited flow: the earliest first and latest last of the groups (each already
        # the least and greatest of its flows, ties going to the smaller spelling), not followed flow by flow
        timed = [group for group in judgement.groups if group.first_key]
        if timed:
            judgement.first_seen = min(timed, key=lambda group: (group.first_key, group.first_seen or "")).first_seen
            judgement.last_seen = max(timed, key=lambda group: (group.last_key, group.last_seen or "")).last_seen
        return judgement


def _sample(samples: list[str], *values: str | None, limit: int = MAX_SAMPLE_PODS) -> None:
    """Keep the ``limit`` smallest values seen, sorted: bounded, and the same whatever the order of the flows."""
    for value in values:
        if value and value not in samples:
            samples.append(value)
            samples.sort()
            del samples[limit:]
