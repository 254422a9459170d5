# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Audit reports: JSON, Markdown (with a Mermaid graph), JUnit XML and suggested CiliumNetworkPolicies.

Note that this module util is PRIVATE to the collection. It can change at any time.

Every renderer takes the :class:`Judgement`, a ``meta`` mapping (free keys; ``title``, ``cluster``, ``generated_at``
and ``source`` are shown when present) and optionally the summary (``Judgement.summary(...)``; computed with the
defaults when left out). Output is deterministic: the same judgement and meta give the same bytes.
:func:`write_reports` writes the files atomically: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from ._flows import Peer
from ._judge import Group, Judgement

REPORT_VERSION = 1
REPORT_FILES = {"json": "report.json", "md": "report.md", "junit": "junit.xml", "policies": "suggested-policies.yaml"}
MAX_GRAPH_EDGES = 150
_SELECTOR_NOISE_PREFIXES = ("io.cilium.k8s.", "io.kubernetes.pod.namespace")
_NON_SELECTOR_SOURCES = ("reserved", "cidr", "fqdn")
_NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"
_ENTITY_PEERS = ("host", "remote-node", "kube-apiserver", "health", "init", "ingress", "unmanaged")
_WORLD = ("world", "world-ipv4", "world-ipv6")
_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_DNS_SELECTOR = {"k8s-app": "kube-dns", _NAMESPACE_LABEL: "kube-system"}
_DNS_PORTS = (("UDP", 53), ("TCP", 53))


class ReportError(Exception):
    """A report cannot be written; the message names the directory or file."""


def _summary(judgement: Judgement, summary: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(summary) if summary is not None else judgement.summary()


# -- JSON ------------------------------------------------------------------------------------------------------------

def render_json(judgement: Judgement, meta: Mapping[str, Any], summary: Mapping[str, Any] | None = None) -> str:
    """The whole judgement as one JSON document (``report_version`` 1)."""
    document = {
        "report_version": REPORT_VERSION,
        "meta": dict(meta),
        "summary": _summary(judgement, summary),
        "unexpected": [group.to_dict() for group in judgement.unexpected],
        "expected": [group.to_dict() for group in judgement.expected],
        "rules": [dict(rule.to_dict(), matched=rule.index not in {unused.index for unused in judgement.unused_rules})
                  for rule in judgement.rules],
    }
    return json.dumps(document, indent=2, sort_keys=False, default=str) + "\n"


# -- Markdown --------------------------------------------------------------------------------------------------------

def verdict_line(summary: Mapping[str, Any]) -> str:
    """``PASS``/``FAIL``/``INCOMPLETE`` and why, in one sentence."""
    unexpected = summary.get("unexpected_groups", 0)
    if unexpected:
        flows = summary.get("unexpected_flows", 0)
        text = (f"FAIL: {unexpected} unexpected would-be {'deny' if unexpected == 1 else 'denies'} ({flows} audited "
                f"{'flow' if flows == 1 else 'flows'}) would break when policy is enforced")
        if not summary.get("complete", True):
            text += "; the window is also incomplete"
        return text
    if not summary.get("complete", True):
        return "INCOMPLETE: no unexpected would-be denies seen, but the window cannot be trusted (see Completeness)"
    return "PASS: every audited flow in the window was an expected would-be deny"


def render_markdown(judgement: Judgement, meta: Mapping[str, Any], summary: Mapping[str, Any] | None = None) -> str:
    """A readable report: verdict, window, completeness, tables of groups, and a Mermaid graph."""
    data = _summary(judgement, summary)
    window = data.get("window") or {}
    title = meta.get("title") or "Cilium policy audit report"
    if meta.get("cluster"):
        title += f": {meta['cluster']}"
    out = [f"# {_md(title)}", "", f"**{_md(verdict_line(data))}**", ""]
    rows = [
        ("Window", _window_text(window)),
        ("Flows seen", _count(data.get("flows_seen"))),
        ("Audited flows", f"{_count(data.get('audited'))} ({_count(data.get('unexpected_flows'))} unexpected, "
                          f"{_count(data.get('expected_flows'))} expected)"),
        ("Groups", f"{data.get('unexpected_groups', 0)} unexpected, {data.get('expected_groups', 0)} expected"),
        ("Replies skipped", _count(data.get("replies_skipped"))),
        ("Other flows skipped (not audited policy verdicts)", _count(data.get("other_skipped"))),
        ("Lost events", _count(data.get("lost_events"))),
        ("Malformed lines", _count(data.get("malformed_lines"))),
        ("Nodes unavailable", ", ".join(data.get("nodes_unavailable") or []) or "none"),
        ("First / last audited flow", f"{data.get('first_seen') or '-'} / {data.get('last_seen') or '-'}"),
    ]
    for key in ("source", "generated_at"):
        if meta.get(key):
            rows.append((key.replace("_", " ").capitalize(), str(meta[key])))
    out += ["| | |", "|---|---|"] + [f"| {_md(name)} | {_md(value)} |" for name, value in rows] + [""]

    out += ["## Completeness", ""]
    if data.get("complete", True):
        out += ["Complete: no lost events, no unavailable nodes, no malformed lines over the limits, and flows were "
                "seen.", ""]
    else:
        out += ["**Incomplete window**: a green result would not be trustworthy.", ""]
        out += [f"- {_md(reason)}" for reason in data.get("incomplete_reasons") or []] + [""]
    gaps = data.get("gaps") or []
    if gaps:
        out += ["| Stream gap from | to | Resumed | Why |", "|---|---|---|---|"]
        out += [f"| {_md(gap.get('start') or '-')} | {_md(gap.get('end') or 'never')} | "
                f"{'yes' if gap.get('resumed') else 'no'} | {_md(gap.get('reason') or '-')} |" for gap in gaps] + [""]

    unexpected = judgement.unexpected
    out += [f"## Unexpected would-be denies ({len(unexpected)})", ""]
    if unexpected:
        out += ["These flows were audited (allowed only because of audit mode) and no expected rule covers them: they "
                "will be dropped once policy is enforced.", "",
                "| Direction | From | To | Port | Flows | First seen | Last seen | Nodes | Sample pods | Denied by |",
                "|---|---|---|---|---:|---|---|---|---|---|"]
        for group in unexpected:
            out.append("| " + " | ".join(_md(cell) for cell in (
                group.direction, group.source, group.destination, group.port_text, _count(group.count),
                group.first_seen or "-", group.last_seen or "-", ", ".join(sorted(group.nodes)) or "-",
                _pods_text(group), ", ".join(sorted(group.denied_by)) or "-")) + " |")
        out.append("")
    else:
        out += ["None.", ""]

    expected = judgement.expected
    out += [f"## Expected would-be denies ({len(expected)})", ""]
    if expected:
        out += ["| Direction | From | To | Port | Flows | Rule | Reason |", "|---|---|---|---|---:|---|---|"]
        for group in expected:
            rule = group.rule
            out.append("| " + " | ".join(_md(cell) for cell in (
                group.direction, group.source, group.destination, group.port_text, _count(group.count),
                rule.label if rule else "-", (rule.reason if rule else None) or "-")) + " |")
        out.append("")
    else:
        out += ["None.", ""]
    unused = data.get("unused_rules") or []
    if unused:
        out += ["Expected rules that matched no audited flow (stale, or the traffic did not happen in the window): "
                + ", ".join(f"`{_md(name)}`" for name in unused) + ".", ""]

    if judgement.groups:
        out += ["## Graph", "", "Solid red edges: unexpected would-be denies. Dashed grey edges: expected ones.", ""]
        out += ["```mermaid"] + _mermaid(judgement) + ["```", ""]
    return "\n".join(out)


def _mermaid(judgement: Judgement) -> list[str]:
    groups = (judgement.unexpected + judgement.expected)[:MAX_GRAPH_EDGES]
    names = sorted({name for group in groups for name in (group.source, group.destination)})
    ids = {name: f"n{index}" for index, name in enumerate(names)}
    lines = ["graph LR"]
    lines += [f'  {ids[name]}["{_mermaid_text(name)}"]' for name in names]
    styles = []
    # parallel edges of one pair (several ports) are merged into one edge label
    edges: dict[tuple[bool, str, str], list[Group]] = {}
    for group in groups:
        edges.setdefault((group.expected, group.source, group.destination), []).append(group)
    for index, ((expected, source, destination), members) in enumerate(edges.items()):
        label = ", ".join(f"{group.direction.lower()} {group.port_text} x{group.count}" for group in members)
        arrow = "-.->" if expected else "-->"
        lines.append(f'  {ids[source]} {arrow}|"{_mermaid_text(label)}"| {ids[destination]}')
        style = "stroke:#888888,stroke-dasharray:4 4" if expected else "stroke:#d62728,stroke-width:2px"
        styles.append(f"  linkStyle {index} {style}")
    lines += styles
    hidden = len(judgement.groups) - len(groups)
    if hidden > 0:
        lines.append(f"  %% {hidden} more groups are not drawn (see the tables)")
    return lines


def _mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: entity codes for the characters that would end or break it."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("|", "#124;"),
                       ("\n", " "), ("`", "#96;")):
        text = text.replace(char, code)
    return text


def _md(value: Any) -> str:
    """Text for a Markdown table cell (no pipes, no line breaks, no raw HTML)."""
    text = str(value)
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
            .replace("<", "&lt;").replace(">", "&gt;"))


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value if value is not None else "-")


def _window_text(window: Mapping[str, Any]) -> str:
    since, until, duration = window.get("since"), window.get("until"), window.get("duration")
    if not since and not until:
        return "all flows in the source (no window given)"
    text = f"{since or 'start of data'} to {until or 'end of data'}"
    return text + (f" ({duration})" if duration else "")


def _pods_text(group: Group) -> str:
    parts = []
    if group.source_pods:
        parts.append("from " + ", ".join(group.source_pods))
    if group.destination_pods:
        parts.append("to " + ", ".join(group.destination_pods))
    return "; ".join(parts) or "-"


# -- JUnit -----------------------------------------------------------------------------------------------------------

def render_junit(judgement: Judgement, meta: Mapping[str, Any], summary: Mapping[str, Any] | None = None) -> str:
    """JUnit XML: one test case per group (unexpected ones fail) and one for the window's completeness."""
    data = _summary(judgement, summary)
    suite_name = "cilium-policy-audit" + (f".{meta['cluster']}" if meta.get("cluster") else "")
    cases: list[ET.Element] = []

    window_case = ET.Element("testcase", {"classname": f"{suite_name}.window", "name": "window is complete",
                                          "time": "0"})
    if not data.get("complete", True):
        reasons = data.get("incomplete_reasons") or []
        failure = ET.SubElement(window_case, "failure", {
            "message": "incomplete window: " + "; ".join(reasons), "type": "IncompleteWindow"})
        failure.text = "\n".join(reasons)
    cases.append(window_case)

    for group in judgement.groups:
        kind = "expected" if group.expected else "unexpected"
        name = f"{group.direction} {group.source} -> {group.destination} {group.port_text}"
        if group.rule is not None:
            name += f" [{group.rule.label}]"
        case = ET.Element("testcase", {"classname": f"{suite_name}.{kind}", "name": name, "time": "0"})
        details = [
            f"flows: {group.count}",
            f"first seen: {group.first_seen or '-'}",
            f"last seen: {group.last_seen or '-'}",
            f"nodes: {', '.join(sorted(group.nodes)) or '-'}",
            f"sample pods: {_pods_text(group)}",
            f"denied by: {', '.join(sorted(group.denied_by)) or '-'}",
        ]
        if group.expected and group.rule is not None:
            details.insert(0, f"expected by {group.rule.label}: {group.rule.reason or '(no reason given)'}")
            ET.SubElement(case, "system-out").text = "\n".join(details)
        else:
            failure = ET.SubElement(case, "failure", {"message": group.describe(), "type": "UnexpectedAuditedFlow"})
            failure.text = "\n".join(details)
        cases.append(case)

    failures = sum(1 for case in cases if case.find("failure") is not None)
    attributes = {"name": suite_name, "tests": str(len(cases)), "failures": str(failures), "errors": "0",
                  "skipped": "0", "time": "0"}
    timestamp = _junit_timestamp(meta.get("generated_at"))
    if timestamp:
        attributes["timestamp"] = timestamp
    root = ET.Element("testsuites", {"name": "netpol.cilium policy audit", "tests": str(len(cases)),
                                     "failures": str(failures), "errors": "0", "time": "0"})
    suite = ET.SubElement(root, "testsuite", attributes)
    properties = ET.SubElement(suite, "properties")
    window = data.get("window") or {}
    for key, value in (("window.since", window.get("since")), ("window.until", window.get("until")),
                       ("window.duration", window.get("duration")), ("flows_seen", data.get("flows_seen")),
                       ("audited", data.get("audited")), ("lost_events", data.get("lost_events")),
                       ("malformed_lines", data.get("malformed_lines")), ("complete", data.get("complete")),
                       ("result", data.get("result"))):
        if value is not None:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            ET.SubElement(properties, "property", {"name": key, "value": text})
    suite.extend(cases)
    _indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _junit_timestamp(value: Any) -> str | None:
    """JUnit's timestamp is ISO 8601 without a zone (the XSD's pattern); ours is UTC."""
    if not value:
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", str(value))
    return match.group(1) if match else None


def _indent(element: ET.Element, level: int = 0) -> None:
    """Pretty-print in place (ElementTree.indent is Python 3.9+, but this keeps the output identical everywhere)."""
    pad = "\n" + "  " * level
    children = list(element)
    if children:
        if not (element.text or "").strip():
            element.text = pad + "  "
        for child in children:
            _indent(child, level + 1)
            if not (child.tail or "").strip():
                child.tail = pad + "  "
        children[-1].tail = pad


# -- suggested policies ----------------------------------------------------------------------------------------------

POLICY_HEADER = """\
# Suggested CiliumNetworkPolicies from audited flows (netpol.cilium hubble_audit_report).
#
# REVIEW BEFORE APPLYING. Each policy ALLOWS what policy audit mode saw as a would-be deny that no expected rule
# covered, so applying them makes the unexpected audited flows of this report keep working once policy is enforced.
# Expected would-be denies are not allowed here: they are meant to stay denied. Replies are never turned into rules.
#
# Default deny: a policy with an ingress or egress section normally switches the workloads it selects into default
# deny for that direction, which would drop their other traffic. These policies only add allows:
#   * each sets spec.enableDefaultDeny to false for its direction (Cilium 1.16 and later), so it never turns default
#     deny on by itself;
#   * an audited flow is itself the proof that the workload's endpoint already enforces policy in that direction
#     (audit verdicts are only emitted under enforcement), so the allows below are added to a default deny that
#     exists already.
# On Cilium 1.15 and earlier, where enableDefaultDeny does not exist, delete that field: the policy is then safe only
# while the policy that enforces that direction today stays in place.
#
# toFQDNs needs Cilium's DNS proxy to see the names: every egress policy with toFQDNs also allows DNS to kube-dns on
# port 53 (UDP and TCP) with an L7 DNS rule matching every name ("*"). DNS rules are enforced even in audit mode, and
# this one allows all names. Adjust the kube-dns selector if your cluster DNS has other labels.
"""


def render_suggested_policies(judgement: Judgement, meta: Mapping[str, Any],
                              summary: Mapping[str, Any] | None = None) -> str:
    """YAML (multi-document) of CiliumNetworkPolicies that would allow the unexpected audited flows, with comments."""
    data = _summary(judgement, summary)
    builder = _PolicyBuilder(data.get("window") or {})
    for group in judgement.unexpected:
        builder.add(group)
    out = [POLICY_HEADER]
    window_text = _window_text(data.get("window") or {})
    out.append(f"# Window: {window_text}" + (f"; cluster: {meta['cluster']}" if meta.get("cluster") else "") + "\n")
    policies = builder.policies()
    if not policies:
        out.append("# No policy to suggest: no unexpected audited flow that a policy could allow.\n")
    for policy in policies:
        out.append("---\n")
        out.append(f"# {policy['metadata']['namespace']}/{policy['metadata']['name']} allows:\n")
        out += [f"#   {line}\n" for line in builder.covered[id(policy)]]
        out.append(to_yaml(policy))
    if builder.skipped:
        out.append("\n# Unexpected audited flows with no suggested policy (write these by hand):\n")
        out += [f"#   {line}\n" for line in builder.skipped]
    return "".join(out)


_YAML_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists, strings, numbers, booleans and None (no PyYAML needed on the node).

    Strings are written plain only when no YAML reader could take them for anything else; otherwise double-quoted
    (a JSON string is a valid YAML double-quoted scalar). Lists under a key are not indented, as kubectl prints them.
    """
    return "".join(_yaml_lines(value, indent))


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _YAML_PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _yaml_inline(value: Any) -> str:
    """A scalar, or an empty collection (the only collections written on one line)."""
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _yaml_scalar(value)


def _yaml_lines(value: Any, indent: int) -> Iterable[str]:
    pad = " " * indent
    if isinstance(value, dict) and value:
        for key, item in value.items():
            head = f"{pad}{_yaml_scalar(key)}:"
            if isinstance(item, (dict, list)) and item:
                yield head + "\n"
                # a list under a key starts at the key's column; a mapping one level deeper
                yield from _yaml_lines(item, indent if isinstance(item, list) else indent + 2)
            else:
                yield f"{head} {_yaml_inline(item)}\n"
    elif isinstance(value, list) and value:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = list(_yaml_lines(item, indent + 2))
                yield pad + "- " + nested[0][indent + 2:]
                yield from nested[1:]
            else:
                yield f"{pad}- {_yaml_inline(item)}\n"
    else:
        yield pad + _yaml_inline(value) + "\n"


def _selector_labels(labels: Iterable[str]) -> dict[str, str]:
    """Labels a selector may use: ``k8s:app=db`` -> ``app: db``, without Cilium's own and the namespace label."""
    result: dict[str, str] = {}
    for label in labels:
        source, sep, rest = label.partition(":")
        if not sep:
            source, rest = "", label
        if source in _NON_SELECTOR_SOURCES:
            continue
        key, _eq, value = rest.partition("=")
        if not key or key.startswith(_SELECTOR_NOISE_PREFIXES):
            continue
        result[key] = value
    return dict(sorted(result.items()))


def _entity(peer: Peer) -> str | None:
    if peer.entity in _WORLD:
        return "world"
    return peer.entity


def _host_network(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    return f"{address}/{32 if address.version == 4 else 128}"


class _PolicyBuilder:
    """Collects allows per (namespace, workload, direction) and turns them into policy objects."""

    def __init__(self, window: Mapping[str, Any]) -> None:
        self.window = window
        # (namespace, workload, direction) -> {"selector": {...}, "rules": {selector json: rule state}, "flows": n}
        self.targets: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.skipped: list[str] = []
        self.covered: dict[int, list[str]] = {}

    def add(self, group: Group) -> None:
        if group.direction not in ("INGRESS", "EGRESS"):
            self.skipped.append(f"{group.describe()}: the traffic direction is unknown")
            return
        ingress = group.direction == "INGRESS"
        local, remote = (group.destination_peer, group.source_peer) if ingress else \
            (group.source_peer, group.destination_peer)
        local_labels = group.destination_labels if ingress else group.source_labels
        remote_labels = group.source_labels if ingress else group.destination_labels
        if not local.namespace:
            what = _entity(local) or "an endpoint outside any namespace"
            self.skipped.append(f"{group.describe()}: the deciding endpoint is {what} (host firewall policies are "
                                "CiliumClusterwideNetworkPolicies with a nodeSelector; not suggested)")
            return
        selector = _selector_labels(local_labels)
        if not selector:
            self.skipped.append(f"{group.describe()}: no labels known for {local.namespace}/"
                                f"{local.workload or local.pod} to select it (labels missing from the flows?)")
            return
        remote_names = group.source_names if ingress else group.destination_names
        peer = self._peer_selector(group, remote, remote_labels, remote_names, local.namespace, ingress)
        if isinstance(peer, str):
            self.skipped.append(f"{group.describe()}: {peer}")
            return
        ports = self._ports(group)
        if isinstance(ports, str):
            self.skipped.append(f"{group.describe()}: {ports}")
            return
        workload = local.workload or local.pod or "workload"
        key = (local.namespace, workload, group.direction)
        target = self.targets.setdefault(key, {"selector": selector, "rules": {}, "flows": 0, "lines": []})
        # pods of one workload may differ in labels: select them by what they share
        target["selector"] = {name: value for name, value in target["selector"].items()
                              if selector.get(name) == value}
        peer_key = json.dumps(peer, sort_keys=True)
        remote_name = group.source if ingress else group.destination
        rule = target["rules"].setdefault(peer_key, {"name": remote_name, "ports": set(), "icmps": set(), "l3": False})
        kind, value = ports
        if kind == "port":
            rule["ports"].add(value)
        elif kind == "icmp":
            rule["icmps"].add(value)
        else:
            rule["l3"] = True
        target["flows"] += group.count
        target["lines"].append(group.describe())

    @staticmethod
    def _ports(group: Group) -> tuple[str, Any] | str:
        if group.protocol in ("TCP", "UDP", "SCTP"):
            if group.port is None:
                return f"a {group.protocol} flow without a destination port"
            return "port", (group.protocol, group.port)
        if group.protocol in ("ICMPv4", "ICMPv6"):
            return "icmp", ("IPv4" if group.protocol == "ICMPv4" else "IPv6", group.port or 0)
        if group.protocol is None:
            return "l3", None
        return f"protocol {group.protocol} cannot be allowed by port (only TCP, UDP, SCTP and ICMP are)"

    @staticmethod
    def _peer_selector(group: Group, remote: Peer, remote_labels: Iterable[str], remote_names: list[str],
                       namespace: str, ingress: bool) -> dict[str, Any] | str:
        entity = _entity(remote)
        if remote.namespace and entity is None:
            labels = _selector_labels(remote_labels)
            if not labels:
                return f"no labels known for {group.source if ingress else group.destination} to select it"
            if remote.namespace != namespace:
                labels[_NAMESPACE_LABEL] = remote.namespace
            return {("fromEndpoints" if ingress else "toEndpoints"): [{"matchLabels": labels}]}
        if entity == "world":
            if not ingress and remote_names:
                names = sorted({name.rstrip(".") for name in remote_names})
                return {"toFQDNs": [{"matchName": name} for name in names]}
            if remote.ip:
                try:
                    network = _host_network(remote.ip)
                except ValueError:
                    return f"world peer with an unreadable address {remote.ip!r}"
                if ingress:
                    return {"fromCIDR": [network]}
                return {"toCIDRSet": [{"cidr": network}]}
            return {("fromEntities" if ingress else "toEntities"): ["world"]}
        if entity in _ENTITY_PEERS:
            return {("fromEntities" if ingress else "toEntities"): [entity]}
        if entity:
            return f"the peer is the {entity} identity, which no policy can select"
        what = f"identity {remote.identity}" if remote.identity is not None else "an unknown peer"
        return f"the peer ({what}) has no namespace, labels or entity to select it by"

    def policies(self) -> list[dict[str, Any]]:
        result = []
        names: set[tuple[str, str]] = set()
        for (namespace, workload, direction) in sorted(self.targets):
            target = self.targets[(namespace, workload, direction)]
            base = f"allow-audited-{_NAME_CHARS.sub('-', workload.lower()).strip('-')[:200] or 'workload'}-" \
                   f"{direction.lower()}"
            name, suffix = base, 2
            while (namespace, name) in names:
                name, suffix = f"{base}-{suffix}", suffix + 1
            names.add((namespace, name))
            if not target["selector"]:
                self.skipped += [f"{line}: the pods of {namespace}/{workload} share no label to select them by"
                                 for line in target["lines"]]
                continue
            section = "ingress" if direction == "INGRESS" else "egress"
            rules = self._rules(target["rules"], section)
            annotations = {"netpol.cilium/audited-flows": str(target["flows"])}
            if self.window.get("since") or self.window.get("until"):
                annotations["netpol.cilium/audit-window"] = f"{self.window.get('since') or ''}/" \
                                                            f"{self.window.get('until') or ''}"
            policy = {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"netpol.cilium/suggested": "true"},
                    "annotations": annotations,
                },
                "spec": {
                    "description": f"Allow the {section} that policy audit mode saw as unexpected would-be denies of "
                                   f"{namespace}/{workload} (suggested by netpol.cilium; review before applying)",
                    "endpointSelector": {"matchLabels": target["selector"]},
                    "enableDefaultDeny": {section: False},
                    section: rules,
                },
            }
            self.covered[id(policy)] = sorted(target["lines"])
            result.append(policy)
        return result

    @staticmethod
    def _rules(rules: dict[str, dict[str, Any]], section: str) -> list[dict[str, Any]]:
        """Rules ordered by peer; each rule gets its own copy of the peer (no YAML anchors)."""
        result: list[dict[str, Any]] = []
        dns_key = json.dumps({"toEndpoints": [{"matchLabels": _DNS_SELECTOR}]}, sort_keys=True)
        needs_dns = section == "egress" and any('"toFQDNs"' in peer_key for peer_key in rules)
        for peer_key in sorted(rules, key=lambda item: (rules[item]["name"], item)):
            state = rules[peer_key]
            ports = state["ports"]
            if needs_dns and peer_key == dns_key:
                ports = ports - set(_DNS_PORTS)  # the DNS rule below allows these already
            if state["l3"]:
                result.append(json.loads(peer_key))  # the audited flow had no port: every port of the peer
            if ports:
                entries = [{"port": str(port), "protocol": protocol}
                           for protocol, port in sorted(ports, key=lambda item: (item[1], item[0]))]
                result.append(dict(json.loads(peer_key), toPorts=[{"ports": entries}]))
            if state["icmps"]:
                fields = [{"type": icmp_type, "family": family} for family, icmp_type in sorted(state["icmps"])]
                result.append(dict(json.loads(peer_key), icmps=[{"fields": fields}]))
        if needs_dns:
            result.append({
                "toEndpoints": [{"matchLabels": dict(_DNS_SELECTOR)}],
                "toPorts": [{"ports": [{"port": str(port), "protocol": protocol} for protocol, port in _DNS_PORTS],
                             "rules": {"dns": [{"matchPattern": "*"}]}}],
            })
        return result


# -- writing ---------------------------------------------------------------------------------------------------------

_RENDERERS = {
    "json": render_json,
    "md": render_markdown,
    "junit": render_junit,
    "policies": render_suggested_policies,
}


def check_report_dir(report_dir: str) -> None:
    """Make sure reports can be written into ``report_dir`` (created if missing): a real file is created there and
    removed again, so that a read-only filesystem or missing rights show up before anything is read or rendered."""
    if os.path.exists(report_dir) and not os.path.isdir(report_dir):
        raise ReportError(f"report directory {report_dir!r} is not a directory")
    try:
        os.makedirs(report_dir, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"report directory {report_dir!r} cannot be created: {exc.strerror or exc}") from None
    try:
        handle, probe = tempfile.mkstemp(prefix=f".write-check.{os.getpid()}.", suffix=_TEMP_SUFFIX, dir=report_dir)
    except OSError as exc:
        raise ReportError(f"report directory {report_dir!r} is not writable: {exc.strerror or exc}") from None
    os.close(handle)
    try:
        os.unlink(probe)
    except OSError:
        pass


def write_reports(report_dir: str, judgement: Judgement, meta: Mapping[str, Any],
                  formats: Iterable[str] = ("json", "md", "junit", "policies"),
                  summary: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Render the reports, then write them atomically into ``report_dir``; returns format -> path.

    Everything is rendered first. Then every file is written to a temporary file in the same directory and flushed
    to disk; only when all of them are written are they renamed over the old ones. A failure while writing (no
    space, no rights, a file size limit) removes the temporary files and leaves every old report as it was; a crash
    leaves the old reports (and a hidden temporary file, removed by the next run).
    """
    wanted = list(dict.fromkeys(formats))
    for name in wanted:
        if name not in _RENDERERS:
            raise ValueError(f"unknown report format {name!r} (expected one of {', '.join(_RENDERERS)})")
    data = _summary(judgement, summary)
    rendered = {name: _RENDERERS[name](judgement, meta, data) for name in wanted}
    check_report_dir(report_dir)
    remove_stale_temporaries(report_dir)
    staged: list[tuple[str, str]] = []  # (temporary, final path)
    try:
        for name in wanted:
            path = os.path.join(report_dir, REPORT_FILES[name])
            staged.append((_write_temporary(path, rendered[name]), path))
        for temporary, path in staged:
            try:
                os.replace(temporary, path)
            except OSError as exc:
                raise ReportError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    finally:
        for temporary, _path in staged:
            if os.path.exists(temporary):
                _discard(temporary)
    _fsync_directory(report_dir)
    return {name: os.path.join(report_dir, REPORT_FILES[name]) for name in wanted}


def _discard(path: str) -> None:
    """Remove a temporary file, as far as possible (a failure to clean up must not hide the error being raised)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory, fsync and rename."""
    temporary = _write_temporary(path, text, mode)
    try:
        os.replace(temporary, path)
    except OSError as exc:
        _discard(temporary)
        raise ReportError(f"cannot write {path!r}: {exc.strerror or exc}") from None


_TEMP_SUFFIX = ".tmp"
# .<file name>.<pid of the writer>.<random>.tmp (and the write check's .write-check.<pid>.<random>.tmp)
_TEMP_NAME = re.compile(r"^\.(?:write-check|" + "|".join(re.escape(name) for name in REPORT_FILES.values())
                        + r")\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


def _write_temporary(path: str, text: str, mode: int = 0o644) -> str:
    """``text`` in a new temporary file next to ``path``, flushed to disk; returns its name (removed on failure)."""
    directory = os.path.dirname(path) or "."
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=_TEMP_SUFFIX,
                                             dir=directory)
    except OSError as exc:
        raise ReportError(f"report directory {directory!r} is not writable: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(text.encode("utf-8"))
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
    except OSError as exc:
        _discard(temporary)
        raise ReportError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    return temporary


def remove_stale_temporaries(report_dir: str) -> list[str]:
    """Remove the temporary files that writers which no longer run left behind (a crash, a kill); returns their
    names. A file whose writer still runs, or that another user's process wrote, is left alone."""
    removed = []
    try:
        names = os.listdir(report_dir)
    except OSError:
        return removed
    for name in names:
        match = _TEMP_NAME.match(name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # the writer still runs
        except ProcessLookupError:
            pass
        except OSError:  # PermissionError: a process of another user runs with that pid
            continue
        try:
            os.unlink(os.path.join(report_dir, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _fsync_directory(directory: str) -> None:
    """Make the renames durable (POSIX); harmless where directories cannot be opened."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
