"""Emulation of one Cilium agent as its debug CLI (``cilium-dbg``, or ``cilium`` up to 1.14) shows it.

The simulated Kubernetes API routes pod-exec requests for container ``cilium-agent`` of an agent pod to
:meth:`CiliumAgent.exec`. The output shapes, texts and exit codes follow output captured from a real 1.15.1 agent
(the shared ``cilium-dbg/real-1.15.1`` fixtures) byte for byte. Where no capture exists, behaviour follows a reading of
Cilium's source; those places say so in a comment ("not captured").

Semantics kept from real Cilium:

* the daemon option ``PolicyAuditMode`` is set once at start from the global flag; every endpoint created or restored
  copies the daemon options, so per-endpoint settings are lost on restart (no ``--keep-config``);
* ``endpoint config <id> PolicyAuditMode=...`` changes one endpoint until the next restart;
* ``config PolicyAuditMode=...`` changes the daemon option at runtime and, on agents >= 1.14, overrides the option on
  every endpoint of the node (``OverrideEndpointOpts``);
* ``policy-enabled`` shows ``audit-*`` only where a policy enforces that direction and audit mode is on.

Determinism for tests: pass ``clock``, ``uuid_factory`` and ``seed`` to the constructor, and adjust the volatile values
of one endpoint (controller uuids and times, log time, MACs, interface) through :meth:`CiliumAgent.runtime`.
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

__all__ = [
    "CiliumAgent",
    "ControllerState",
    "EndpointRuntime",
    "EndpointSpec",
    "ExecResult",
    "LogEntry",
    "l4_policy_rule",
    "standard_pod_labels",
]

# --- options -------------------------------------------------------------------------------------------------------

DISABLED = 0
ENABLED = 1

_MONITOR_LEVELS: dict[str, int] = {
    "": 0, "none": 0, "disabled": 0, "lowest": 1, "low": 2, "medium": 3, "max": 4, "maximum": 4,
    "0": 0, "1": 1, "2": 2, "3": 3, "4": 4,
}
_MONITOR_NAMES: dict[int, str] = {0: "None", 1: "Lowest", 2: "Low", 3: "Medium", 4: "Max"}


class _OptionError(Exception):
    """An option could not be parsed (the message is Cilium's error text)."""


def _normalize_bool(value: str) -> int:
    lowered = value.lower()
    if lowered in ("true", "on", "enable", "enabled", "1"):
        return ENABLED
    if lowered in ("false", "off", "disable", "disabled", "0"):
        return DISABLED
    raise _OptionError(f"invalid option value {value}")


def _parse_monitor_level(value: str) -> int:
    level = _MONITOR_LEVELS.get(value.lower())
    if level is not None:
        return level
    try:
        parsed = int(value, 10)
    except ValueError:
        raise _OptionError(f"invalid monitor aggregation level {_go_quote(value)}") from None
    if parsed < 0 or parsed > 4:
        raise _OptionError("monitor aggregation level must be between 0 and 4")
    return parsed


@dataclass(frozen=True)
class _OptionSpec:
    description: str
    parse: Callable[[str], int] | None = None
    format: Callable[[int], str] | None = None

    def render(self, value: int) -> str:
        if self.format is not None:
            return self.format(value)
        return "Disabled" if value == DISABLED else "Enabled"


_MONITOR_SPEC = _OptionSpec("Set the level of aggregation for monitor events in the datapath",
                            _parse_monitor_level, lambda v: _MONITOR_NAMES.get(v, str(v)))

# Descriptions are plausible (only printed by --list-options, which was not captured).
_ALL_OPTIONS: dict[str, _OptionSpec] = {
    "ConntrackAccounting": _OptionSpec("Enable per flow (conntrack) statistics"),
    "ConntrackLocal": _OptionSpec("Use endpoint dedicated tracking table instead of global one"),
    "Debug": _OptionSpec("Enable debugging trace statements"),
    "DebugLB": _OptionSpec("Enable debugging trace statements for load balancer"),
    "DebugPolicy": _OptionSpec("Enable debugging trace statements for policy"),
    "DropNotification": _OptionSpec("Enable drop notifications"),
    "MonitorAggregationLevel": _MONITOR_SPEC,
    "PolicyAuditMode": _OptionSpec("Enable policy audit (non-drop) mode"),
    "PolicyTracing": _OptionSpec("Enable tracing when resolving policy (Debug)"),
    "PolicyVerdictNotification": _OptionSpec("Enable policy verdict notifications"),
    "SourceIPVerification": _OptionSpec("Enable the check of the source IP on egress"),
    "TraceNotification": _OptionSpec("Enable trace notifications"),
}

# The sets a 1.15.1 agent shows (config.txt and endpoint-config-show.txt).
DAEMON_OPTIONS: tuple[str, ...] = (
    "ConntrackAccounting", "ConntrackLocal", "Debug", "DebugLB", "DropNotification", "MonitorAggregationLevel",
    "PolicyAuditMode", "PolicyTracing", "PolicyVerdictNotification", "SourceIPVerification", "TraceNotification",
)
ENDPOINT_OPTIONS: tuple[str, ...] = (
    "ConntrackAccounting", "ConntrackLocal", "Debug", "DebugLB", "DebugPolicy", "DropNotification",
    "MonitorAggregationLevel", "PolicyAuditMode", "PolicyVerdictNotification", "SourceIPVerification",
    "TraceNotification",
)
_DAEMON_DEFAULTS: dict[str, int] = {
    "ConntrackAccounting": ENABLED, "ConntrackLocal": DISABLED, "Debug": DISABLED, "DebugLB": DISABLED,
    "DropNotification": ENABLED, "MonitorAggregationLevel": 0, "PolicyAuditMode": DISABLED,
    "PolicyTracing": DISABLED, "PolicyVerdictNotification": ENABLED, "SourceIPVerification": ENABLED,
    "TraceNotification": ENABLED,
}


def _lookup_option(library: tuple[str, ...], name: str) -> str | None:
    lowered = name.lower()
    for key in library:
        if key.lower() == lowered:
            return key
    return None


def _parse_key_value(library: tuple[str, ...], name: str, value: str) -> tuple[str, int]:
    key = _lookup_option(library, name)
    if key is None:
        raise _OptionError(f"unknown option {_go_quote(name)}")
    spec = _ALL_OPTIONS[key]
    result = spec.parse(value) if spec.parse is not None else _normalize_bool(value)
    return key, result


def _parse_option(library: tuple[str, ...], arg: str) -> tuple[str, int]:
    """Cilium's OptionLibrary.ParseOption (1.15): ``Name=value``; a bare ``!Name`` is rejected."""
    negated = arg.startswith("!")
    if negated:
        arg = arg[1:]
    name, sep, value = arg.partition("=")
    if sep:
        if negated:
            raise _OptionError("invalid boolean format")
        return _parse_key_value(library, name, value)
    raise _OptionError("invalid option format")


# --- Go-compatible helpers -------------------------------------------------------------------------------------------

_GO_ZERO_TIME = "0001-01-01T00:00:00.000Z"


def _go_quote(text: str) -> str:
    """strconv.Quote / %q for the printable text these messages carry."""
    return json.dumps(text, ensure_ascii=False)


def _go_json(data: Any) -> str:
    """json.MarshalIndent(data, "", "  ") of Cilium's swagger models: keys in name order, HTML characters escaped."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _go_json_compact(data: Any) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _strfmt_datetime(moment: datetime | None) -> str:
    """go-openapi strfmt.DateTime: milliseconds (truncated) and ``Z``."""
    if moment is None:
        return _GO_ZERO_TIME
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_parse_int(text: str) -> tuple[int | None, str | None]:
    """strconv.ParseInt(text, 0, 64): (value, None) or (None, error text). Digit separators are not supported."""
    syntax = f"strconv.ParseInt: parsing {_go_quote(text)}: invalid syntax"
    body = text
    negative = False
    if body[:1] in ("+", "-"):
        negative = body[0] == "-"
        body = body[1:]
    if not body:
        return None, syntax
    base = 10
    if body[0] == "0" and len(body) > 1:
        marker = body[1].lower()
        if marker in ("x", "o", "b"):
            base = {"x": 16, "o": 8, "b": 2}[marker]
            body = body[2:]
        else:
            base = 8
            body = body[1:]
    digits = "0123456789abcdef"[:base]
    if not body or any(ch.lower() not in digits for ch in body):
        return None, syntax
    value = int(body, base)
    if negative:
        value = -value
    if value > 2**63 - 1 or value < -(2**63):
        return None, f"strconv.ParseInt: parsing {_go_quote(text)}: value out of range"
    return value, None


def _tabwriter(text: str, minwidth: int = 5, padding: int = 3) -> str:
    """Go's text/tabwriter with padchar ' ' and no flags: column blocks, tab-terminated cells."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(line0: int, line1: int) -> None:
        for index in range(line0, line1):
            cells = lines[index]
            for column, cell in enumerate(cells):
                out.append(cell)
                if column < len(widths) and column < len(cells) - 1:
                    out.append(" " * (widths[column] - len(cell)))
            if index + 1 < len(lines):
                out.append("\n")

    def format_block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            format_block(line0, this)
            widths.pop()
            line0 = this
            this += 1  # Go's loop also steps over the line that ended the block (it lacks this column)
        write_lines(line0, line1)

    format_block(0, len(lines))
    return "".join(out)


def _version_tuple(version: str) -> tuple[int, int]:
    match = re.match(r"v?(\d+)\.(\d+)", version.strip())
    if match is None:
        raise ValueError(f"unparsable Cilium version {version!r}")
    return int(match.group(1)), int(match.group(2))


# --- public data -----------------------------------------------------------------------------------------------------


@dataclass
class EndpointSpec:
    """What the agent knows about one endpoint from outside (CNI, Kubernetes, policy)."""

    id: int
    identity: int
    labels: list[str]
    namespace: str | None = None
    pod_name: str | None = None
    ipv4: str | None = None
    container_id: str | None = None
    policy_ingress: bool = False
    policy_egress: bool = False
    # L4 entries for status.policy.{spec,realized}.l4: each dict has "direction" ("ingress" default or "egress") and
    # the models.PolicyRule keys ("derived-from-rules", "rule", "rules-by-selector"), copied as given.
    policy_rules: list[dict] = field(default_factory=list)

    @property
    def is_host(self) -> bool:
        return self.identity == 1 or "reserved:host" in self.labels


@dataclass
class ExecResult:
    """The outcome of one exec in the agent container."""

    NOT_FOUND: ClassVar[int] = 127
    NOT_FOUND_MESSAGE: ClassVar[str] = ('OCI runtime exec failed: exec failed: unable to start container process: '
                                        'exec: "{name}": executable file not found in $PATH: unknown')
    NO_SUCH_FILE_MESSAGE: ClassVar[str] = ('OCI runtime exec failed: exec failed: unable to start container process: '
                                           'exec: "{name}": stat {name}: no such file or directory: unknown')

    stdout: str
    stderr: str
    exit_code: int

    @property
    def is_not_found(self) -> bool:
        """True when the executable did not exist: the API layer reports this as an exec failure."""
        return self.exit_code == self.NOT_FOUND


@dataclass
class ControllerState:
    """One entry of status.controllers. ``interval`` set means a periodic controller whose runs follow the clock."""

    name: str
    uuid: str
    configuration: dict[str, Any]
    last_success: datetime | None = None
    success_count: int = 0
    interval: timedelta | None = None

    def model(self, now: datetime) -> dict[str, Any]:
        last = self.last_success
        count = self.success_count
        if self.interval is not None and last is not None and now > last:
            runs = int((now - last) / self.interval)
            last = last + runs * self.interval
            count += runs
        status: dict[str, Any] = {
            "last-failure-timestamp": _GO_ZERO_TIME,
            "last-success-timestamp": _strfmt_datetime(last),
        }
        if count:
            status["success-count"] = count
        return {"configuration": dict(self.configuration), "name": self.name, "status": status, "uuid": self.uuid}


@dataclass
class LogEntry:
    """One entry of status.log."""

    timestamp: datetime
    message: str
    code: str = "OK"
    state: str = "ready"

    def model(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "state": self.state,
                "timestamp": _rfc3339(self.timestamp)}


@dataclass
class EndpointRuntime:
    """Volatile, agent-generated values of one endpoint. Tests may change them to reproduce a capture exactly."""

    created_at: datetime
    controllers: list[ControllerState]
    log: list[LogEntry]
    mac: str
    host_mac: str
    interface_name: str
    interface_index: int | None
    identity_labels: list[str]
    policy_revision: int = 2
    policy_build: int = 2
    state: str = "ready"

    def controller(self, name: str) -> ControllerState:
        for item in self.controllers:
            if item.name == name:
                return item
        raise KeyError(name)


def standard_pod_labels(namespace: str, pod_labels: dict[str, str], *, service_account: str = "default",
                        cluster: str = "default", namespace_labels: dict[str, str] | None = None) -> list[str]:
    """Identity labels Cilium derives for a pod, in the order a real agent printed them once."""
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    ns_labels.update(namespace_labels or {})
    labels = [f"k8s:{key}={value}" for key, value in sorted(pod_labels.items())]
    labels += [f"k8s:io.cilium.k8s.namespace.labels.{key}={value}" for key, value in sorted(ns_labels.items())]
    labels.append(f"k8s:io.kubernetes.pod.namespace={namespace}")
    labels.append(f"k8s:io.cilium.k8s.policy.serviceaccount={service_account}")
    labels.append(f"k8s:io.cilium.k8s.policy.cluster={cluster}")
    return labels


def l4_policy_rule(direction: str, port: int, protocol: str, match_labels: dict[str, str], *, policy_name: str,
                   policy_namespace: str, policy_uid: str, kind: str = "CiliumNetworkPolicy") -> dict[str, Any]:
    """An ``EndpointSpec.policy_rules`` entry shaped like a real agent's L4 filter for one selector.

    ``match_labels`` are the selector's labels as Cilium keeps them (``any.app``, ``k8s.io.kubernetes.pod.namespace``).
    """
    inner = ",".join(f"{key}: {value}" for key, value in sorted(match_labels.items()))
    selector = (f"&LabelSelector{{MatchLabels:map[string]string{{{inner},}},"
                "MatchExpressions:[]LabelSelectorRequirement{},}")
    derived = [
        f"k8s:io.cilium.k8s.policy.derived-from={kind}",
        f"k8s:io.cilium.k8s.policy.name={policy_name}",
        f"k8s:io.cilium.k8s.policy.namespace={policy_namespace}",
        f"k8s:io.cilium.k8s.policy.uid={policy_uid}",
    ]
    rule = _go_json_compact({"port": port, "protocol": protocol, "l7-rules": [{selector: None}]})
    return {"direction": direction, "derived-from-rules": [list(derived)], "rule": rule,
            "rules-by-selector": {selector: [list(derived)]}}


# --- the agent -------------------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """An error of the agent's REST API as the Go client renders it."""


@dataclass
class _Endpoint:
    spec: EndpointSpec
    options: dict[str, int]
    runtime: EndpointRuntime


@dataclass
class _Flags:
    values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def has(self, name: str) -> bool:
        return name in self.values


# long name -> (short name, takes a value)
_FLAG_TABLE: dict[str, tuple[str | None, bool]] = {
    "output": ("o", True), "no-headers": (None, False), "labels": ("l", True), "list-options": (None, False),
    "read-only": ("r", False), "all": ("a", False), "num-pages": ("n", True), "brief": (None, False),
    "debug": ("D", False), "host": ("H", True), "config": (None, True), "help": ("h", False),
}
_GLOBAL_FLAGS = frozenset({"debug", "host", "config", "help"})
_COMMAND_FLAGS: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset(),
    ("endpoint",): frozenset(),
    ("endpoint", "list"): frozenset({"output", "no-headers"}),
    ("endpoint", "get"): frozenset({"output", "labels"}),
    ("endpoint", "config"): frozenset({"output", "list-options"}),
    ("config",): frozenset({"output", "list-options", "read-only", "all", "num-pages"}),
    ("status",): frozenset({"output", "brief"}),
    ("version",): frozenset({"output"}),
}
_ALIASES: dict[str, str] = {"ls": "list", "ep": "endpoint"}
_KNOWN_PREFIXES = frozenset({"cilium-local", "cilium-global", "cni-attachment-id", "container-id", "docker-endpoint",
                             "container-name", "pod-name", "cep-name", "ipv4", "ipv6"})
_MAX_ENDPOINT_ID = 65535
_UNDEFINED_STATUS = ("response status code does not match any response statuses defined for this endpoint in the "
                     "swagger spec")
_REASON_API = "endpoint was updated via API"
_REASON_CREATE = "Initial build on endpoint creation"  # not captured
_REASON_POLICY = "one or more identities created or deleted"  # not captured


class _Exit(Exception):
    """Ends a command early with the given result."""

    def __init__(self, result: ExecResult) -> None:
        super().__init__(result.stderr)
        self.result = result


class CiliumAgent:
    """One Cilium agent: its daemon options, its endpoints and the CLI in its container."""

    def __init__(self, node_name: str, version: str = "1.15.1", cluster_name: str = "default", *,
                 clock: Callable[[], datetime] | None = None, uuid_factory: Callable[[], str] | None = None,
                 seed: int | None = None) -> None:
        self.node_name = node_name
        self.version = version
        self.cluster_name = cluster_name
        self.healthy = True
        self._clock = clock or (lambda: datetime.now(UTC))
        self._uuid_factory = uuid_factory or (lambda: str(uuid.uuid4()))
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._daemon: dict[str, int] = dict(_DAEMON_DEFAULTS)
        self._policy_enforcement = "default"
        self._monitor_num_pages = 64
        self._endpoints: dict[int, _Endpoint] = {}
        self._host_mac = self._random_mac()

    # --- properties of the image ----------------------------------------------------------------------------------
    @property
    def binary(self) -> str:
        """The CLI the agent image ships: ``cilium-dbg`` from 1.15 on, ``cilium`` before."""
        return "cilium-dbg" if _version_tuple(self.version) >= (1, 15) else "cilium"

    # --- state control (for the simulated cluster and tests) --------------------------------------------------------
    def start(self, global_audit: bool, endpoints: list[EndpointSpec]) -> None:
        """(Re)boot the agent: daemon options from the flags, every endpoint restored with the daemon's options."""
        ids = [spec.id for spec in endpoints]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate endpoint ids in {ids}")
        for spec in endpoints:
            _check_endpoint_id(spec.id)
        with self._lock:
            self._daemon = dict(_DAEMON_DEFAULTS)
            self._daemon["PolicyAuditMode"] = ENABLED if global_audit else DISABLED
            self._policy_enforcement = "default"
            previous = self._endpoints
            self._endpoints = {}
            for spec in endpoints:
                old = previous.get(spec.id)
                same_workload = old is not None and (old.spec.namespace, old.spec.pod_name) == (spec.namespace,
                                                                                                spec.pod_name)
                self._endpoints[spec.id] = self._new_endpoint(spec, old.runtime if same_workload and old else None)

    def add_endpoint(self, spec: EndpointSpec) -> None:
        """A new endpoint (CNI ADD): it takes the daemon's current options, PolicyAuditMode included."""
        _check_endpoint_id(spec.id)
        with self._lock:
            if spec.id in self._endpoints:
                raise ValueError(f"endpoint {spec.id} already exists on {self.node_name}")
            self._endpoints[spec.id] = self._new_endpoint(spec, None)

    def remove_endpoint(self, endpoint_id: int) -> None:
        with self._lock:
            if endpoint_id not in self._endpoints:
                raise KeyError(endpoint_id)
            del self._endpoints[endpoint_id]

    def set_policy(self, endpoint_id: int, ingress: bool, egress: bool) -> None:
        """Whether a policy selects the endpoint for ingress / egress (enforcement on in that direction)."""
        with self._lock:
            ep = self._endpoints[endpoint_id]
            if (ep.spec.policy_ingress, ep.spec.policy_egress) == (ingress, egress):
                return
            ep.spec.policy_ingress = ingress
            ep.spec.policy_egress = egress
            ep.runtime.policy_revision += 1
            ep.runtime.policy_build += 1
            ep.runtime.log = [LogEntry(self._clock(), _regenerated(_REASON_POLICY))]

    def endpoint_audit_mode(self, endpoint_id: int) -> bool:
        with self._lock:
            return self._endpoints[endpoint_id].options["PolicyAuditMode"] != DISABLED

    def daemon_audit_mode(self) -> bool:
        with self._lock:
            return self._daemon["PolicyAuditMode"] != DISABLED

    def endpoints(self) -> list[int]:
        with self._lock:
            return sorted(self._endpoints)

    def runtime(self, endpoint_id: int) -> EndpointRuntime:
        """The volatile values of one endpoint, to adjust in tests (do so while no exec runs)."""
        with self._lock:
            return self._endpoints[endpoint_id].runtime

    # --- exec -------------------------------------------------------------------------------------------------------
    def exec(self, argv: list[str]) -> ExecResult:
        """Run argv in the agent container. Only the image's CLI exists; there is deliberately no shell."""
        if not argv:
            return ExecResult("", ExecResult.NOT_FOUND_MESSAGE.format(name=""), ExecResult.NOT_FOUND)
        program = argv[0]
        name = program.rsplit("/", 1)[-1]
        binary = self.binary
        if "/" in program:
            if program not in (f"/usr/bin/{binary}", f"/usr/local/bin/{binary}"):
                return ExecResult("", ExecResult.NO_SUCH_FILE_MESSAGE.format(name=program), ExecResult.NOT_FOUND)
        elif name != binary:
            return ExecResult("", ExecResult.NOT_FOUND_MESSAGE.format(name=program), ExecResult.NOT_FOUND)
        with self._lock:
            try:
                return self._run(binary, list(argv[1:]))
            except _Exit as stop:
                return stop.result

    # --- internals: state -------------------------------------------------------------------------------------------
    def _random_mac(self) -> str:
        octets = [self._rng.randrange(256) for _octet in range(6)]
        octets[0] = (octets[0] & 0xFC) | 0x02  # locally administered, unicast
        return ":".join(f"{octet:02x}" for octet in octets)

    def _new_endpoint(self, spec: EndpointSpec, keep: EndpointRuntime | None) -> _Endpoint:
        spec = EndpointSpec(id=spec.id, identity=spec.identity, labels=list(spec.labels), namespace=spec.namespace,
                            pod_name=spec.pod_name, ipv4=spec.ipv4, container_id=spec.container_id,
                            policy_ingress=spec.policy_ingress, policy_egress=spec.policy_egress,
                            policy_rules=[dict(rule) for rule in spec.policy_rules])
        options = {key: self._daemon.get(key, DISABLED) for key in ENDPOINT_OPTIONS}
        now = self._clock()
        controllers = [
            ControllerState(f"endpoint-{spec.id}-regeneration-recovery", self._uuid_factory(),
                            {"error-retry": True, "error-retry-base": "2s"}),
            ControllerState(f"resolve-identity-{spec.id}", self._uuid_factory(),
                            {"error-retry": True, "interval": "5m0s"}, now, 1),
            ControllerState(f"sync-policymap-{spec.id}", self._uuid_factory(),
                            {"error-retry": True, "interval": "15m0s"}, now + timedelta(milliseconds=75), 1),
        ]
        if not spec.is_host:
            controllers += [
                ControllerState(f"resolve-labels-{spec.namespace or ''}/{spec.pod_name or ''}", self._uuid_factory(),
                                {"error-retry": True}, now, 1),
                ControllerState(f"sync-to-k8s-ciliumendpoint ({spec.id})", self._uuid_factory(),
                                {"error-retry": True, "interval": "10s"}, now, 1, timedelta(seconds=10)),
            ]
        controllers.sort(key=lambda item: item.name)
        if keep is not None:
            mac, host_mac, ifname, ifindex = keep.mac, keep.host_mac, keep.interface_name, keep.interface_index
        elif spec.is_host:
            mac, host_mac, ifname, ifindex = self._host_mac, self._host_mac, "cilium_host", None
        else:
            mac, host_mac = self._random_mac(), self._random_mac()
            ifname = "lxc" + "".join(self._rng.choice("0123456789abcdef") for _char in range(12))
            ifindex = self._rng.randrange(10, 400)
        runtime = EndpointRuntime(created_at=now, controllers=controllers,
                                  log=[LogEntry(now, _regenerated(_REASON_CREATE))], mac=mac, host_mac=host_mac,
                                  interface_name=ifname, interface_index=ifindex, identity_labels=list(spec.labels))
        return _Endpoint(spec, options, runtime)

    def _enforced(self, ep: _Endpoint) -> tuple[bool, bool]:
        if self._policy_enforcement == "never":
            return False, False
        if self._policy_enforcement == "always" and not ep.spec.is_host:
            return True, True
        return ep.spec.policy_ingress, ep.spec.policy_egress

    def _policy_enabled(self, ep: _Endpoint) -> str:
        ingress, egress = self._enforced(ep)
        mode = {(False, False): "none", (True, False): "ingress", (False, True): "egress", (True, True): "both"}[
            (ingress, egress)]
        if mode != "none" and ep.options["PolicyAuditMode"] != DISABLED:
            mode = "audit-" + mode
        return mode

    def _apply_endpoint_options(self, ep: _Endpoint, changes: dict[str, int]) -> None:
        changed = False
        for key, value in changes.items():
            if key in ep.options and ep.options[key] != value:
                ep.options[key] = value
                changed = True
        if changed:  # a real agent regenerates the endpoint only when an option changed
            ep.runtime.log = [LogEntry(self._clock(), _regenerated(_REASON_API))]

    # --- internals: models ------------------------------------------------------------------------------------------
    def _options_model(self, ep: _Endpoint) -> dict[str, str]:
        return {key: _ALL_OPTIONS[key].render(value) for key, value in ep.options.items()}

    def _daemon_options_model(self) -> dict[str, str]:
        return {key: _ALL_OPTIONS[key].render(value) for key, value in self._daemon.items()}

    def _policy_model(self, ep: _Endpoint) -> dict[str, Any]:
        ingress, egress = self._enforced(ep)
        l4: dict[str, list[Any]] = {"egress": [], "ingress": []}
        for rule in ep.spec.policy_rules:
            direction = str(rule.get("direction", "ingress"))
            l4.setdefault(direction, []).append({key: value for key, value in rule.items() if key != "direction"})
        # Enforced ingress allows the host (allow-localhost); not enforced means the wildcard identity 0. An enforced
        # egress without L3-only allows is an empty list: not captured.
        return {
            "allowed-egress-identities": [] if egress else [0],
            "allowed-ingress-identities": [1] if ingress else [0],
            "build": ep.runtime.policy_build,
            "denied-egress-identities": None,
            "denied-ingress-identities": None,
            "id": ep.spec.identity,
            "l4": l4,
            "policy-enabled": self._policy_enabled(ep),
            "policy-revision": ep.runtime.policy_revision,
        }

    def _endpoint_model(self, ep: _Endpoint, now: datetime) -> dict[str, Any]:
        spec, rt = ep.spec, ep.runtime
        options = self._options_model(ep)
        if spec.is_host:
            identifiers: dict[str, Any] = {"pod-name": "/"}
            networking: dict[str, Any] = {"addressing": [{}], "host-mac": rt.host_mac,
                                          "interface-name": rt.interface_name, "mac": rt.mac}
            labels: dict[str, Any] = {"derived": sorted(spec.labels), "realized": {},
                                      "security-relevant": sorted(spec.labels)}
        else:
            namespace, pod = spec.namespace or "", spec.pod_name or ""
            container_id = spec.container_id or f"{spec.id:064x}"
            identifiers = {"cni-attachment-id": f"{container_id}:eth0", "container-id": container_id,
                           "k8s-namespace": namespace, "k8s-pod-name": pod, "pod-name": f"{namespace}/{pod}"}
            address: dict[str, Any] = {}
            if spec.ipv4:
                address = {"ipv4": spec.ipv4, "ipv4-pool-name": "default"}
            networking = {"addressing": [address], "container-interface-name": "eth0", "host-mac": rt.host_mac,
                          "interface-name": rt.interface_name, "mac": rt.mac}
            if rt.interface_index is not None:
                networking["interface-index"] = rt.interface_index
            labels = {"realized": {}, "security-relevant": sorted(spec.labels)}
        policy = self._policy_model(ep)
        return {
            "id": spec.id,
            "spec": {"label-configuration": {}, "options": dict(options)},
            "status": {
                "controllers": [item.model(now) for item in sorted(rt.controllers, key=lambda item: item.name)],
                "external-identifiers": identifiers,
                "health": {"bpf": "OK", "connected": True, "overallHealth": "OK", "policy": "OK"},
                "identity": {"id": spec.identity, "labels": list(rt.identity_labels)},
                "labels": labels,
                "log": [entry.model() for entry in rt.log],
                "networking": networking,
                "policy": {"proxy-statistics": [], "realized": policy, "spec": json.loads(json.dumps(policy))},
                "realized": {"label-configuration": {}, "options": dict(options)},
                "state": rt.state,
            },
        }

    # --- internals: endpoint lookup as the agent's API does it -------------------------------------------------------
    def _lookup(self, ident: str) -> _Endpoint | None:
        """endpointmanager.Lookup: raises _ApiError(payload) for a 400, returns None for a 404."""
        prefix, _sep, rest = ident.partition(":") if ":" in ident else ("cilium-local", "", ident)
        if prefix not in _KNOWN_PREFIXES:
            raise _ApiError(f"unknown endpoint prefix '{prefix}'")  # not captured
        if prefix == "cilium-local":
            value, error = _go_parse_int(rest)
            if error is not None or value is None or value < 0:
                raise _ApiError(f"invalid numeric cilium id: {error if error is not None else '%!s(<nil>)'}")
            if value > _MAX_ENDPOINT_ID:
                raise _ApiError(f"endpoint id too large: {value}")
            return self._endpoints.get(value)
        if prefix == "cilium-global":
            raise _ApiError("unsupported endpoint ID format")  # not captured
        for ep in self._endpoints.values():
            spec = ep.spec
            if spec.is_host:
                continue
            container_id = spec.container_id or f"{spec.id:064x}"
            candidates = {
                "pod-name": f"{spec.namespace}/{spec.pod_name}",
                "cep-name": f"{spec.namespace}/{spec.pod_name}",
                "container-id": container_id,
                "cni-attachment-id": f"{container_id}:eth0",
                "ipv4": spec.ipv4 or "",
            }
            if candidates.get(prefix) == rest:
                return ep
        return None

    # --- internals: the CLI -----------------------------------------------------------------------------------------
    def _run(self, binary: str, args: list[str]) -> ExecResult:
        positional, flags = self._parse_flags(args)
        path, rest = _resolve_command(positional)
        if not path or (path == ("endpoint",) and not rest):
            if path == () and rest:
                return _fail(f'Error: unknown command "{rest[0]}" for "{binary}"\n'
                             f"Run '{binary} --help' for usage.\n")
            return ExecResult(_help_text(binary, path), "", 0)
        if path == ("endpoint",):
            return _fail(f'Error: unknown command "{rest[0]}" for "{binary} endpoint"\n'
                         f"Run '{binary} endpoint --help' for usage.\n")  # real cobra prints help here: not captured
        allowed = _COMMAND_FLAGS[path] | _GLOBAL_FLAGS
        for name in flags.values:
            if name not in allowed:
                raise _Exit(_fail(f"Error: unknown flag: --{name}\n"))
        if flags.has("help"):
            return ExecResult(_help_text(binary, path), "", 0)
        handler = {
            ("endpoint", "list"): self._cmd_endpoint_list,
            ("endpoint", "get"): self._cmd_endpoint_get,
            ("endpoint", "config"): self._cmd_endpoint_config,
            ("config",): self._cmd_config,
            ("status",): self._cmd_status,
            ("version",): self._cmd_version,
        }[path]
        return handler(binary, rest, flags)

    def _parse_flags(self, args: list[str]) -> tuple[list[str], _Flags]:
        """pflag-style parsing: flags anywhere, ``--`` ends them, ``-o json``/``-ojson``/``--output=json``."""
        positional: list[str] = []
        flags = _Flags()
        shorts = {entry[0]: long for long, entry in _FLAG_TABLE.items() if entry[0]}
        index = 0
        while index < len(args):
            arg = args[index]
            index += 1
            if arg == "--":
                positional.extend(args[index:])
                break
            if arg.startswith("--") and len(arg) > 2:
                name, has_value, value = arg[2:].partition("=")
                if name not in _FLAG_TABLE:
                    raise _Exit(_fail(f"Error: unknown flag: --{name}\n"))
                takes_value = _FLAG_TABLE[name][1]
                if takes_value and not has_value:
                    if index >= len(args):
                        raise _Exit(_fail(f"Error: flag needs an argument: --{name}\n"))
                    value = args[index]
                    index += 1
                if takes_value:
                    flags.values[name] = value
                elif not has_value or value.lower() in ("true", "t", "1"):
                    flags.values[name] = "true"
                elif value.lower() not in ("false", "f", "0"):
                    raise _Exit(_fail(f'Error: invalid argument "{value}" for "--{name}" flag: '
                                      f'strconv.ParseBool: parsing "{value}": invalid syntax\n'))
                continue
            if arg.startswith("-") and len(arg) > 1:
                short = arg[1]
                long = shorts.get(short)
                if long is None:
                    raise _Exit(_fail(f"Error: unknown shorthand flag: '{short}' in {arg}\n"))
                if _FLAG_TABLE[long][1]:
                    value = arg[2:]
                    if value.startswith("="):
                        value = value[1:]
                    if not value:
                        if index >= len(args):
                            raise _Exit(_fail(f"Error: flag needs an argument: '{short}' in -{short}\n"))
                        value = args[index]
                        index += 1
                    flags.values[long] = value
                else:
                    if len(arg) > 2:  # combined short booleans are not used by this CLI's callers
                        raise _Exit(_fail(f"Error: unknown shorthand flag: '{arg[2]}' in {arg}\n"))
                    flags.values[long] = "true"
                continue
            positional.append(arg)
        return positional, flags

    def _print_output(self, data: Any, output: str) -> str | None:
        """pkg/command PrintOutput: JSON (plus the extra newline of dumpJSON) or a jsonpath template."""
        if output == "json":
            return _go_json(data) + "\n\n"
        if output.startswith("jsonpath="):
            return _jsonpath(data, output[len("jsonpath="):]) + "\n"
        return None

    def _cmd_endpoint_list(self, binary: str, args: list[str], flags: _Flags) -> ExecResult:
        now = self._clock()
        eps = [self._endpoints[key] for key in sorted(self._endpoints)]
        output = flags.get("output")
        if output:
            text = self._print_output([self._endpoint_model(ep, now) for ep in eps], output)
            return ExecResult(text, "", 0) if text is not None else _fail("")
        rows: list[str] = []
        if not flags.has("no-headers"):
            rows.append("ENDPOINT\tPOLICY (ingress)\tPOLICY (egress)\tIDENTITY\tLABELS (source:key[=value])\tIPv6\t"
                        "IPv4\tSTATUS\t\n")
            rows.append("\tENFORCEMENT\tENFORCEMENT\t\t\t\t\t\n")
        for ep in eps:
            ingress, egress = _enforcement_columns(self._policy_enabled(ep))
            labels = sorted(ep.spec.labels) or ["no labels"]
            ipv4 = "" if ep.spec.is_host else (ep.spec.ipv4 or "")
            for index, label in enumerate(labels):
                if index == 0:
                    rows.append(f"{ep.spec.id}\t{ingress}\t{egress}\t{ep.spec.identity}\t{label}\t\t{ipv4}\t"
                                f"{ep.runtime.state}\t\n")
                else:
                    rows.append(f"\t\t\t\t{label}\t\t\t\t\n")
        return ExecResult(_tabwriter("".join(rows)), "", 0)

    def _require_endpoint_id(self, binary: str, path: str, args: list[str]) -> str:
        if not args:
            usage = _help_text(binary, ("endpoint", path))
            raise _Exit(ExecResult(usage, "Error: Missing endpoint id argument\n\n", 1))
        ident = args[0]
        if ":" in ident and ident.partition(":")[0] not in _KNOWN_PREFIXES:
            prefix = ident.partition(":")[0]
            raise _Exit(_fail(f'Error: Cannot parse endpoint id "{ident}": unknown endpoint ID prefix "{prefix}"\n'))
        return ident

    def _cmd_endpoint_get(self, binary: str, args: list[str], flags: _Flags) -> ExecResult:
        if flags.has("labels"):
            return _not_emulated("endpoint get -l")
        ident = self._require_endpoint_id(binary, "get", args)
        try:
            ep = self._lookup(ident)
        except _ApiError as error:
            return _fail(f"Error: Cannot get endpoint {ident}: [GET /endpoint/{{id}}][400] getEndpointIdInvalid  "
                         f"{error}\n\n")
        if ep is None:
            return _fail(f"Error: Cannot get endpoint {ident}: [GET /endpoint/{{id}}][404] getEndpointIdNotFound \n\n")
        # Without -o the real CLI forces JSON; a bad -o value makes it exit 1 silently.
        text = self._print_output([self._endpoint_model(ep, self._clock())], flags.get("output") or "json")
        return ExecResult(text, "", 0) if text is not None else _fail("")

    def _cmd_endpoint_config(self, binary: str, args: list[str], flags: _Flags) -> ExecResult:
        if flags.has("list-options"):
            lines = [f"{key:<24} {_ALL_OPTIONS[key].description}\n" for key in ENDPOINT_OPTIONS]
            return ExecResult("".join(lines), "", 0)  # real order is Go map order: not captured
        ident = self._require_endpoint_id(binary, "config", args)
        # The CLI drops any prefix and asks GET /endpoint/{id}/config, which defines no 400 response.
        ep_id = ident.partition(":")[2] if ":" in ident else ident
        try:
            ep = self._lookup(ep_id)
        except _ApiError:
            return _fail(f"Error: Cannot get configuration of endpoint {ep_id}: {_UNDEFINED_STATUS} (status 400): {{}}"
                         "\n\n")
        if ep is None:
            return _fail(f"Error: Cannot get configuration of endpoint {ep_id}: [GET /endpoint/{{id}}/config][404] "
                         "getEndpointIdConfigNotFound \n\n")
        options = args[1:]
        if not options:
            realized = self._options_model(ep)
            output = flags.get("output")
            if output:
                text = self._print_output({"realized": {"label-configuration": {}, "options": realized}}, output)
                return ExecResult(text, "", 0) if text is not None else _fail("")
            return ExecResult(_dump_config(realized), "", 0)
        changes: dict[str, int] = {}
        for option in options:
            if option == "":
                return _go_panic("index out of range [0] with length 0")
            try:
                key, value = _parse_option(ENDPOINT_OPTIONS, option)
            except _OptionError as error:
                return _fail(f"Error: Cannot parse option {option}: {error}\n")
            changes[key] = value
        self._apply_endpoint_options(ep, changes)
        return ExecResult(f"Endpoint {ep_id} configuration updated successfully\n", "", 0)

    def _cmd_config(self, binary: str, args: list[str], flags: _Flags) -> ExecResult:
        if flags.has("list-options"):
            lines = [f"{key:<24} {_ALL_OPTIONS[key].description}\n" for key in DAEMON_OPTIONS]
            return ExecResult("".join(lines), "", 0)  # real order is Go map order: not captured
        if flags.has("read-only") or flags.has("all") or flags.has("num-pages"):
            return _not_emulated("config -r/-a/-n")
        if not args:
            options = self._daemon_options_model()
            output = flags.get("output")
            if output:
                text = self._print_output(options, output)
                if text is None:
                    return _fail("Error: Cannot show configurations: couldn't find output printer\n")  # not captured
                return ExecResult(text, "", 0)
            text = "##### Read-write configurations #####\n" + _dump_config(options)
            text += f"{'MonitorNumPages':<34}: {self._monitor_num_pages}\n"
            text += f"{'PolicyEnforcement':<34}: {self._policy_enforcement}\n"
            return ExecResult(text, "", 0)
        # cilium-dbg/cmd/config.go configDaemon; nothing here was captured from a real agent.
        changes: dict[str, int] = {}
        enforcement: str | None = None
        for option in args:
            name, sep, raw = option.partition("=")
            if not sep:
                return _fail("Error: Improper configuration format provided\n")
            if name == "PolicyEnforcement":
                enforcement = raw
                continue
            try:
                key, value = _parse_option(DAEMON_OPTIONS, option)
            except _OptionError as error:
                return ExecResult(f"{error}\n", "", 1)  # the real CLI prints this one on stdout
            changes[key] = value
        if enforcement is not None and enforcement not in ("never", "default", "always"):
            return _fail("Error: Unable to change agent configuration: [PATCH /config][400] patchConfigBadRequest  "
                         f"Invalid option for PolicyEnforcement {enforcement}\n\n")
        if enforcement is not None:
            self._policy_enforcement = enforcement
        self._daemon.update(changes)
        if _version_tuple(self.version) >= (1, 14):
            # The PATCH /config handler calls OverrideEndpointOpts with every option of the request.
            for ep in self._endpoints.values():
                self._apply_endpoint_options(ep, changes)
        # The real command prints nothing on success (configDaemon has no success message).
        return ExecResult("", "", 0)

    def _cmd_status(self, binary: str, args: list[str], flags: _Flags) -> ExecResult:
        if not flags.has("brief"):
            return _not_emulated("status without --brief")
        if self.healthy:
            return ExecResult("OK\n", "", 0)
        # Not captured: what a brief status prints while the agent's API is not up.
        return _fail('Error: Unable to reach out daemon: Get "http://localhost/v1/healthz": dial unix '
                     "/var/run/cilium/cilium.sock: connect: connection refused\n\n")

    def _cmd_version(self, binary: str, args: list[str], flags: _Flags) -> ExecResult:
        # Not captured: the shape of `cilium-dbg version` with a plausible commit and Go version.
        commit = "a368c8f0" if self.version.lstrip("v") == "1.15.1" else "0000000000"
        line = f"{self.version.lstrip('v')} {commit} 2024-02-14T22:16:57+00:00 go version go1.21.6 linux/amd64"
        return ExecResult(f"Client: {line}\nDaemon: {line}\n", "", 0)


# --- module helpers ------------------------------------------------------------------------------------------------


def _check_endpoint_id(endpoint_id: int) -> None:
    if not 1 <= endpoint_id <= _MAX_ENDPOINT_ID:
        raise ValueError(f"endpoint id {endpoint_id} outside 1..{_MAX_ENDPOINT_ID}")


def _regenerated(reason: str) -> str:
    return f"Successfully regenerated endpoint program (Reason: {reason})"


def _fail(stderr: str, stdout: str = "") -> ExecResult:
    return ExecResult(stdout, stderr, 1)


def _not_emulated(what: str) -> ExecResult:
    return _fail(f"Error: simcluster agent emulation does not support: {what}\n")


def _go_panic(message: str) -> ExecResult:
    return ExecResult("", f"panic: runtime error: {message}\n\ngoroutine 1 [running]:\n", 2)


def _resolve_command(positional: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """Walk cobra's command tree: ((command path), remaining args). Unknown words stop the walk."""
    if not positional:
        return (), []
    first = _ALIASES.get(positional[0], positional[0])
    if first in ("config", "status", "version"):
        return (first,), positional[1:]
    if first != "endpoint":
        return (), positional
    if len(positional) < 2:
        return ("endpoint",), []
    second = _ALIASES.get(positional[1], positional[1])
    if second in ("list", "get", "config"):
        return ("endpoint", second), positional[2:]
    return ("endpoint",), positional[1:]


def _enforcement_columns(policy_enabled: str) -> tuple[str, str]:
    return {
        "none": ("Disabled", "Disabled"),
        "ingress": ("Enabled", "Disabled"),
        "egress": ("Disabled", "Enabled"),
        "both": ("Enabled", "Enabled"),
        "audit-ingress": ("Disabled (Audit)", "Disabled"),
        "audit-egress": ("Disabled", "Disabled (Audit)"),
        "audit-both": ("Disabled (Audit)", "Disabled (Audit)"),
    }.get(policy_enabled, ("Unknown", "Unknown"))


def _dump_config(options: dict[str, str]) -> str:
    """cilium-dbg's dumpConfig: keys sorted, ``%-34s: %s``, booleans as Enabled/Disabled."""
    lines = []
    for key in sorted(options):
        value = options[key]
        try:
            value = "Disabled" if _normalize_bool(value) == DISABLED else "Enabled"
        except _OptionError:
            pass
        lines.append(f"{key:<34}: {value}\n")
    return "".join(lines)


def _help_text(binary: str, path: tuple[str, ...]) -> str:
    # Not captured: a short stand-in for cobra's help.
    command = " ".join((binary, *path))
    return (f"CLI for interacting with the local Cilium Agent\n\nUsage:\n  {command} [command]\n\n"
            f"Use \"{command} [command] --help\" for more information about a command.\n")


def _jsonpath(data: Any, template: str) -> str:
    """A small subset of Kubernetes jsonpath: ``{.a.b}``, ``{[*].a}``, ``{.a[0].b}`` and literal text."""
    out: list[str] = []
    position = 0
    for match in re.finditer(r"\{([^}]*)\}", template):
        out.append(template[position:match.start()])
        position = match.end()
        values = [data]
        for token in re.findall(r"\[[^\]]*\]|[^.\[\]]+", match.group(1).strip()):
            selected: list[Any] = []
            for value in values:
                if token.startswith("["):
                    index = token[1:-1]
                    if isinstance(value, list):
                        if index == "*":
                            selected.extend(value)
                        elif re.fullmatch(r"-?\d+", index) and -len(value) <= int(index) < len(value):
                            selected.append(value[int(index)])
                elif isinstance(value, dict) and token in value:
                    selected.append(value[token])
            values = selected
        out.append(" ".join(value if isinstance(value, str) else _go_json_compact(value) for value in values))
    out.append(template[position:])
    return "".join(out)
