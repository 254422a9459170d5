# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""What we send to the Cilium agent CLI and how we read its answers. Pure Python: no Ansible, no Kubernetes.

Note that this module util is PRIVATE to the collection. It can change at any time.

Facts this relies on (Cilium source and a real 1.15.1 agent):

* the binary is ``cilium-dbg`` from 1.15 on and ``cilium`` before;
* ``endpoint list -o json`` and ``endpoint get <id> -o json`` print a JSON array of endpoint models, with the audit
  switch at ``spec.options.PolicyAuditMode`` ("Enabled"/"Disabled") and ``status.policy.realized.policy-enabled``
  one of none|ingress|egress|both|audit-ingress|audit-egress|audit-both;
* ``config -o json`` prints the daemon's runtime options, ``PolicyAuditMode`` among them;
* ``endpoint config <id> PolicyAuditMode=Enabled`` takes one numeric id and answers
  ``Endpoint <id> configuration updated successfully``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

BINARIES = ("cilium-dbg", "cilium")
MAX_ENDPOINT_ID = 65535
AUDIT_OPTION = "PolicyAuditMode"

# One exec per node changes many endpoints: a fixed script, never built from input. The binary, the value and the
# endpoint ids reach it as positional arguments (argv), so no input is ever parsed by the shell.
# After the loop the script reads every endpoint back (``endpoint list -o json``) in the same exec, so a node costs two
# round trips in all: the read before the change and this one.
BATCH_SCRIPT = (
    'bin="$1"; value="$2"; shift 2; '
    'for id in "$@"; do '
    'printf "@@netpol-begin %s\\n" "$id"; '
    '"$bin" endpoint config "$id" "PolicyAuditMode=$value" 2>&1; rc=$?; '
    'printf "\\n@@netpol-end %s %s\\n" "$id" "$rc"; '
    "done; "
    'printf "@@netpol-readback\\n"; '
    '"$bin" endpoint list -o json'
)
READBACK_MARK = "@@netpol-readback"

_BEGIN = re.compile(r"^@@netpol-begin (\S+)$")
_END = re.compile(r"^@@netpol-end (\S+) (\d+)$")


class CiliumDbgError(Exception):
    """Output of the agent CLI that we could not understand."""


@dataclass
class EndpointState:
    id: int
    namespace: str | None
    pod: str | None
    audit_mode: bool | None  # None when the agent did not report the option
    policy_enabled: str
    identity: int | None
    labels: list[str] = field(default_factory=list)
    state: str | None = None
    ipv4: str | None = None

    @property
    def is_host(self) -> bool:
        return "reserved:host" in self.labels

    @property
    def enforced(self) -> bool:
        """A policy selects this endpoint in at least one direction (audit mode only shows anything then)."""
        return self.policy_enabled not in ("none", "", None)


@dataclass
class BatchItem:
    endpoint_id: str
    rc: int | None
    output: str


def validate_endpoint_id(value: Any, option: str = "endpoint_ids") -> int:
    """An endpoint id as the agent API accepts it: a whole number from 1 to 65535, nothing else."""
    if isinstance(value, bool):
        raise ValueError(f"{option}: expected endpoint ids as whole numbers from 1 to {MAX_ENDPOINT_ID}, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}", value.strip()):
        number = int(value.strip())
    else:
        raise ValueError(f"{option}: expected endpoint ids as whole numbers from 1 to {MAX_ENDPOINT_ID}, got {value!r}")
    if not 1 <= number <= MAX_ENDPOINT_ID:
        raise ValueError(f"{option}: endpoint id {number} is out of range (1 to {MAX_ENDPOINT_ID})")
    return number


def option_value(enabled: bool) -> str:
    return "Enabled" if enabled else "Disabled"


def endpoint_config_argv(binary: str, endpoint_id: int, enabled: bool) -> list[str]:
    _check_binary(binary)
    return [binary, "endpoint", "config", str(validate_endpoint_id(endpoint_id)),
            f"{AUDIT_OPTION}={option_value(enabled)}"]


def batch_argv(binary: str, endpoint_ids: list[int], enabled: bool) -> list[str]:
    """``sh -c BATCH_SCRIPT sh <binary> <Enabled|Disabled> <id>...``: one exec for all endpoints of a node."""
    _check_binary(binary)
    ids = [str(validate_endpoint_id(i)) for i in endpoint_ids]
    return ["sh", "-c", BATCH_SCRIPT, "sh", binary, option_value(enabled), *ids]


def endpoint_list_argv(binary: str) -> list[str]:
    _check_binary(binary)
    return [binary, "endpoint", "list", "-o", "json"]


def config_argv(binary: str) -> list[str]:
    _check_binary(binary)
    return [binary, "config", "-o", "json"]


def status_argv(binary: str) -> list[str]:
    _check_binary(binary)
    return [binary, "status", "--brief"]


def _check_binary(binary: str) -> None:
    if binary not in BINARIES:
        raise ValueError(f"unknown agent binary {binary!r}; expected one of {', '.join(BINARIES)}")


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        snippet = text.strip().replace("\n", " ")[:200]
        raise CiliumDbgError(f"{what}: the agent answered with something that is not JSON: {snippet!r}") from exc


def _audit_flag(value: Any) -> bool | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("enabled", "true", "on", "1"):
        return True
    if text in ("disabled", "false", "off", "0"):
        return False
    return None


def endpoint_from_model(model: dict[str, Any]) -> EndpointState:
    """One EndpointState from a models.Endpoint object of the agent API."""
    if not isinstance(model, dict) or not isinstance(model.get("id"), int):
        raise CiliumDbgError(f"endpoint without a numeric id in agent output: {str(model)[:200]!r}")
    spec = model.get("spec") or {}
    status = model.get("status") or {}
    options = spec.get("options") or (status.get("realized") or {}).get("options") or {}
    identifiers = status.get("external-identifiers") or {}
    pod_name = identifiers.get("pod-name") or ""  # "ns/pod"; the host endpoint reports "/"
    namespace = identifiers.get("k8s-namespace") or (pod_name.split("/", 1)[0] if "/" in pod_name else None) or None
    pod = identifiers.get("k8s-pod-name") or (pod_name.split("/", 1)[1] if "/" in pod_name else None) or None
    policy = status.get("policy") or {}
    realized = policy.get("realized") or policy.get("spec") or {}
    identity = status.get("identity") or {}
    addressing = (status.get("networking") or {}).get("addressing") or [{}]
    return EndpointState(
        id=model["id"],
        namespace=namespace,
        pod=pod,
        audit_mode=_audit_flag(options.get(AUDIT_OPTION)),
        policy_enabled=str(realized.get("policy-enabled") or "none"),
        identity=identity.get("id"),
        labels=list(identity.get("labels") or []),
        state=status.get("state"),
        ipv4=(addressing[0] or {}).get("ipv4"),
    )


def parse_endpoints(text: str, what: str = "endpoint list -o json") -> list[EndpointState]:
    data = parse_json(text, what)
    if not isinstance(data, list):
        raise CiliumDbgError(f"{what}: expected a JSON array of endpoints, got {type(data).__name__}")
    try:
        return [endpoint_from_model(item) for item in data]
    except CiliumDbgError as exc:
        raise CiliumDbgError(f"{what}: {exc}") from exc


def parse_daemon_config(text: str) -> dict[str, Any]:
    """``config -o json``: the daemon's runtime options, with ``audit_mode`` derived."""
    data = parse_json(text, "config -o json")
    if not isinstance(data, dict):
        raise CiliumDbgError("config -o json: expected a JSON object of options")
    return {"options": data, "audit_mode": _audit_flag(data.get(AUDIT_OPTION))}


def split_readback(text: str) -> tuple[str, str | None]:
    """The per-endpoint part of BATCH_SCRIPT's output and the ``endpoint list -o json`` read back after it."""
    head, mark, tail = text.partition(f"\n{READBACK_MARK}\n")
    if not mark and text.startswith(f"{READBACK_MARK}\n"):
        return "", text[len(READBACK_MARK) + 1:]
    return (head, tail) if mark else (text, None)


def parse_batch_output(text: str) -> dict[str, BatchItem]:
    """Split the output of BATCH_SCRIPT into one item per endpoint id (rc None: the script died before its end)."""
    items: dict[str, BatchItem] = {}
    current: str | None = None
    lines: list[str] = []
    for line in split_readback(text)[0].splitlines():
        begin = _BEGIN.match(line)
        end = _END.match(line)
        if begin:
            current, lines = begin.group(1), []
        elif end and current == end.group(1):
            items[current] = BatchItem(current, int(end.group(2)), "\n".join(lines).strip())
            current, lines = None, []
        elif current is not None:
            lines.append(line)
    if current is not None:
        items[current] = BatchItem(current, None, "\n".join(lines).strip())
    return items


def version_from_image(image: str) -> str | None:
    """``quay.io/cilium/cilium:v1.15.1@sha256:...`` -> ``1.15.1``."""
    match = re.search(r":v?(\d+\.\d+(?:\.\d+)?(?:[-+][\w.]+)?)(?:@|$)", image or "")
    return match.group(1) if match else None


def binary_for_version(version: str | None) -> str:
    """Agents older than 1.15 ship ``cilium``; newer ones ``cilium-dbg`` (unknown: try the new name first)."""
    if version:
        match = re.match(r"(\d+)\.(\d+)", version)
        if match and (int(match.group(1)), int(match.group(2))) < (1, 15):
            return "cilium"
    return "cilium-dbg"
