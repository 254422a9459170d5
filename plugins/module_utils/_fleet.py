# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Fleet rollouts: waves of clusters, one record per cluster, and the fleet summary (JSON, Markdown, JUnit).

Note that this module util is PRIVATE to the collection. It can change at any time.

Plain Python, no Ansible imports: ``plugins/filter/fleet.py`` exposes these functions to
``playbooks/fleet_rollout.yml``.

- :func:`plan_waves` splits the clusters into waves exactly as Ansible's ``serial`` does (sizes or percentages of all
  clusters, the last size repeated until every cluster has a wave), so the summary can name the clusters a stopped
  fleet never reached.
- :func:`cluster_record` condenses what one cluster's rollout left (the ``policy_rollout_result`` fact and a
  whole-cluster ``cilium_audit_mode_info`` result) into a small record.
- :func:`fleet_summary` combines the records of every cluster with the wave plan; :func:`render_markdown` and
  :func:`render_junit` turn the summary into text a person or a CI system reads. The output is deterministic.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FLEET_SUMMARY_VERSION = 1
DEFAULT_WAVES: tuple[int | str, ...] = (1, "25%", "100%")
# Beyond this many clusters the Mermaid picture shows one box per wave with its counts instead of one per cluster.
MAX_GRAPH_CLUSTERS = 60
MAX_TABLE_TEXT = 160

# Cluster states. planned: preflight read it, the rollout has not reached it (yet).
PASSED = "passed"
FAILED = "failed"
PLANNED = "planned"
PREFLIGHT_FAILED = "preflight_failed"
CLUSTER_STATES = (PASSED, FAILED, PLANNED, PREFLIGHT_FAILED)

_WAVE_ITEM = re.compile(r"^\s*(\d+)\s*(%?)\s*$")


class FleetError(ValueError):
    """Bad input to a fleet function; the message names the option and what was expected."""


# --- waves ------------------------------------------------------------------------------------------------------


def parse_waves(waves: Any, option: str = "fleet_waves") -> list[int | str]:
    """Normalise a wave list: a list of sizes and percentages, or the same as text (``"1,25%,100%"``)."""
    if waves is None or waves == "" or waves == []:
        return list(DEFAULT_WAVES)
    items: Iterable[Any] = waves.split(",") if isinstance(waves, str) else waves
    if isinstance(items, Mapping) or not isinstance(items, Iterable):
        raise FleetError(f"{option} must be a list of wave sizes such as [1, '25%', '100%'] or the text "
                         f"'1,25%,100%', got {waves!r}")
    result: list[int | str] = []
    for item in items:
        if isinstance(item, bool):
            raise FleetError(f"{option}: {item!r} is not a wave size (a count such as 1 or a percentage such as '25%')")
        if isinstance(item, int):
            if item < 1:
                raise FleetError(f"{option}: wave sizes must be at least 1, got {item}")
            result.append(item)
            continue
        match = _WAVE_ITEM.match(str(item))
        if not match:
            raise FleetError(f"{option}: {item!r} is not a wave size (a count such as 1 or a percentage such as '25%')")
        number = int(match.group(1))
        if match.group(2):
            if not 1 <= number <= 100:
                raise FleetError(f"{option}: percentages must be between 1% and 100%, got {item!r}")
            result.append(f"{number}%")
        else:
            if number < 1:
                raise FleetError(f"{option}: wave sizes must be at least 1, got {item!r}")
            result.append(number)
    if not result:
        raise FleetError(f"{option} is empty: give at least one wave size, e.g. [1, '25%', '100%']")
    return result


def _wave_size(item: int | str, total: int) -> int:
    # As ansible.utils.helpers.pct_to_int: a percentage of ALL clusters, rounded down, at least 1.
    if isinstance(item, str) and item.endswith("%"):
        return int(int(item[:-1]) / 100.0 * total) or 1
    return int(item)


def plan_waves(clusters: Sequence[str], waves: Any = None) -> list[list[str]]:
    """The clusters of each wave, in order, as ``serial: <waves>`` runs them (the last size repeats)."""
    sizes = parse_waves(waves)
    remaining = [str(name) for name in clusters]
    total = len(remaining)
    plan: list[list[str]] = []
    index = 0
    while remaining:
        size = _wave_size(sizes[index], total)
        plan.append(remaining[:size])
        remaining = remaining[size:]
        index = min(index + 1, len(sizes) - 1)
    return plan


def wave_of(cluster: str, plan: Sequence[Sequence[str]]) -> int:
    """The 1-based wave number of a cluster in a plan (0 when it is in none)."""
    for number, members in enumerate(plan, start=1):
        if cluster in members:
            return number
    return 0


# --- one cluster ------------------------------------------------------------------------------------------------


def _first_line(text: Any, limit: int = MAX_TABLE_TEXT) -> str:
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _descriptions(groups: Any) -> list[str]:
    result = []
    for group in groups or []:
        if isinstance(group, Mapping):
            text = group.get("description") or ""
            count = group.get("count")
            if text and count and f" x{count}" not in text:
                text = f"{text} x{count}"
            result.append(str(text or group))
        else:
            result.append(str(group))
    return result


def audit_state(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Where audit mode is on, from a ``cilium_audit_mode_info`` result (``known`` is false when it could not be
    read)."""
    if not info or info.get("failed") or info.get("skipped") or "audit_active" not in info:
        error = None
        if info:
            error = _first_line(info.get("msg") or ("skipped" if info.get("skipped") else "no result"), 400)
        return {"known": False, "active": None, "cluster": False, "nodes": [], "endpoints": [], "ledger": [],
                "guard": [], "error": error or "not read"}
    where = info.get("where") or {}
    endpoints = []
    for endpoint in where.get("endpoints") or []:
        if isinstance(endpoint, Mapping):
            endpoints.append(f"{endpoint.get('namespace', '?')}/{endpoint.get('pod', '?')} "
                             f"(endpoint {endpoint.get('id', '?')} on {endpoint.get('node', '?')})")
        else:
            endpoints.append(str(endpoint))
    ledger = []
    for entry in info.get("ledger") or []:
        if isinstance(entry, Mapping):
            ledger.append({key: entry.get(key) for key in ("scope", "scope_key", "enabled_at", "expires_at", "reason",
                                                           "enabled_by") if entry.get(key) is not None})
    guard = info.get("guard") or {}
    return {
        "known": True,
        "active": bool(info.get("audit_active")),
        "cluster": bool(where.get("cluster")),
        "nodes": sorted(str(node) for node in where.get("nodes") or []),
        "endpoints": sorted(endpoints),
        "ledger": ledger,
        "guard": [str(message) for message in guard.get("messages") or []],
        "error": None,
    }


def cluster_record(
    cluster: str,
    wave: int,
    rollout: Mapping[str, Any] | None = None,
    audit: Mapping[str, Any] | None = None,
    error: str | None = None,
    failed_task: str | None = None,
    phase: str = "rollout",
) -> dict[str, Any]:
    """One cluster's record.

    ``phase`` ``preflight``: the fleet read the cluster before the first wave (state ``planned``, or
    ``preflight_failed`` with ``error``). ``rollout``: ``rollout`` is the role's ``policy_rollout_result`` (missing
    when the play failed before the role could record anything; then ``error`` and ``failed_task`` say why).
    """
    if phase not in ("preflight", "rollout"):
        raise FleetError(f"phase must be 'preflight' or 'rollout', got {phase!r}")
    record: dict[str, Any] = {
        "cluster": str(cluster),
        "wave": int(wave or 0),
        "status": PLANNED,
        "stopped_at": None,
        "error": None,
        "steps_done": [],
        "gate": None,
        "enforce": None,
        "audit_mode": audit_state(audit),
        "artifacts_dir": None,
        "started_at": None,
        "why": None,
    }
    if phase == "preflight":
        if error:
            record["status"] = PREFLIGHT_FAILED
            record["stopped_at"] = f"preflight ({failed_task})" if failed_task else "preflight"
            record["error"] = str(error)
        record["why"] = why_stopped(record)
        return record

    if rollout:
        record["status"] = PASSED if rollout.get("passed") else FAILED
        record["stopped_at"] = rollout.get("stopped_at") or None
        record["error"] = rollout.get("error") or None
        record["steps_done"] = [str(step) for step in rollout.get("steps_done") or []]
        record["artifacts_dir"] = rollout.get("artifacts_dir")
        record["started_at"] = rollout.get("started_at")
        gate = rollout.get("gate")
        if isinstance(gate, Mapping):
            summary = gate.get("summary") or {}
            record["gate"] = {
                "result": gate.get("result"),
                "passed": bool(gate.get("passed")),
                "complete": bool(gate.get("complete")),
                "audited": summary.get("audited"),
                "expected_groups": summary.get("expected_groups"),
                "unexpected_groups": summary.get("unexpected_groups"),
                "lost_events": summary.get("lost_events"),
                "unexpected": _descriptions(gate.get("unexpected")),
                "report_dir": gate.get("report_dir"),
            }
        enforce = rollout.get("enforce")
        if isinstance(enforce, Mapping):
            record["enforce"] = {
                "enforced": bool(enforce.get("enforced")),
                "reverted": bool(enforce.get("reverted")),
                "unexpected_drops": _descriptions(enforce.get("unexpected_drops")),
                "report_dir": enforce.get("report_dir"),
            }
    if error:
        # The play failed outside the role's own bookkeeping: that failure wins.
        record["status"] = FAILED
        record["stopped_at"] = record["stopped_at"] or (f"fleet ({failed_task})" if failed_task else "fleet")
        record["error"] = record["error"] or str(error)
    elif not rollout:
        record["status"] = FAILED
        record["stopped_at"] = "fleet"
        record["error"] = "the rollout left no result (policy_rollout_result is missing)"
    record["why"] = why_stopped(record)
    return record


def why_stopped(record: Mapping[str, Any]) -> str | None:
    """One line on why a cluster stopped: its unexpected denies or drops when there are any, else the error's first
    line."""
    if record.get("status") not in (FAILED, PREFLIGHT_FAILED):
        return None
    for key, field, noun in (("gate", "unexpected", "unexpected deny group(s)"),
                             ("enforce", "unexpected_drops", "unexpected policy drop group(s) after enforcing")):
        groups = (record.get(key) or {}).get(field) or []
        if groups:
            shown = "; ".join(str(text) for text in groups[:3])
            more = f"; and {len(groups) - 3} more" if len(groups) > 3 else ""
            return f"{len(groups)} {noun}: {shown}{more}"
    gate = record.get("gate") or {}
    if gate and not gate.get("complete", True):
        return "the observation window is incomplete: " + _first_line(record.get("error"), 400)
    return _first_line(record.get("error"), 400) or "(no message)"


# --- the fleet --------------------------------------------------------------------------------------------------


def _wave_status(states: list[str]) -> str:
    if any(state == FAILED for state in states):
        return FAILED
    if any(state == PREFLIGHT_FAILED for state in states):
        return "preflight failed"
    if states and all(state == PASSED for state in states):
        return PASSED
    if all(state == PLANNED for state in states):
        return "not started"
    return "incomplete"


def fleet_summary(
    records: Iterable[Mapping[str, Any]],
    plan: Sequence[Sequence[str]],
    started_at: str | None = None,
    written_at: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The fleet's state: per wave and per cluster, with what needs a person's attention first."""
    by_cluster: dict[str, dict[str, Any]] = {}
    for record in records:
        if not isinstance(record, Mapping) or "cluster" not in record:
            raise FleetError(f"fleet records must be mappings with a 'cluster' key, got {record!r}")
        by_cluster[str(record["cluster"])] = dict(record)
    planned_names = [str(cluster) for wave in plan for cluster in wave]
    for number, wave in enumerate(plan, start=1):
        for cluster in wave:
            if str(cluster) not in by_cluster:
                placeholder = cluster_record(str(cluster), number, phase="preflight")
                placeholder["audit_mode"]["error"] = "not read (the fleet did not reach this cluster)"
                by_cluster[str(cluster)] = placeholder
    extra = sorted(set(by_cluster) - set(planned_names))

    waves = []
    stopped_at_wave = None
    preflight_failed = any(record["status"] == PREFLIGHT_FAILED for record in by_cluster.values())
    for number, wave in enumerate(plan, start=1):
        states = [by_cluster[str(cluster)]["status"] for cluster in wave]
        status = _wave_status(states)
        if status == FAILED and stopped_at_wave is None:
            stopped_at_wave = number
        waves.append({"wave": number, "clusters": [str(cluster) for cluster in wave], "status": status,
                      "canary": number == 1 and len(plan) > 1 and len(wave) < len(planned_names)})

    clusters = [by_cluster[name] for name in planned_names + extra]
    for record in clusters:
        record["reached"] = record["status"] in (PASSED, FAILED)
        if record["status"] == PLANNED:
            if preflight_failed:
                record["note"] = "not started: the preflight failed on another cluster"
            elif stopped_at_wave is not None:
                record["note"] = f"not started: the fleet stopped at wave {stopped_at_wave}"
            else:
                record["note"] = "not started (yet)"

    if preflight_failed:
        status = PREFLIGHT_FAILED
    elif stopped_at_wave is not None:
        status = "stopped"
    elif waves and all(wave["status"] == PASSED for wave in waves):
        status = PASSED
    else:
        status = "incomplete"

    counts = {state: sum(1 for record in clusters if record["status"] == state) for state in CLUSTER_STATES}
    counts["total"] = len(clusters)
    audit_on = [record["cluster"] for record in clusters if record["audit_mode"].get("active")]
    audit_unknown = [record["cluster"] for record in clusters if not record["audit_mode"].get("known")]
    return {
        "version": FLEET_SUMMARY_VERSION,
        "name": name or "fleet rollout",
        "status": status,
        "passed": status == PASSED,
        "stopped_at_wave": stopped_at_wave,
        "started_at": started_at,
        "written_at": written_at,
        "counts": counts,
        "waves": waves,
        "audit_mode_on": audit_on,
        "audit_mode_unknown": audit_unknown,
        "unexpected_denies": sum(len((record.get("gate") or {}).get("unexpected") or []) for record in clusters),
        "unexpected_drops": sum(len((record.get("enforce") or {}).get("unexpected_drops") or [])
                                for record in clusters),
        "clusters": clusters,
    }


# --- renderers --------------------------------------------------------------------------------------------------

_STATUS_TEXT = {
    PASSED: "PASSED",
    "stopped": "STOPPED",
    "incomplete": "INCOMPLETE",
    PREFLIGHT_FAILED: "PREFLIGHT FAILED",
}
_CLUSTER_TEXT = {PASSED: "passed", FAILED: "FAILED", PLANNED: "not started", PREFLIGHT_FAILED: "PREFLIGHT FAILED"}


def _cell(text: Any) -> str:
    return _first_line(text).replace("|", "\\|") or "-"


def _audit_text(audit: Mapping[str, Any]) -> str:
    if not audit.get("known"):
        return "unknown"
    if not audit.get("active"):
        return "off"
    parts = []
    if audit.get("cluster"):
        parts.append("cluster-wide")
    if audit.get("nodes"):
        parts.append(f"{len(audit['nodes'])} node(s)")
    if audit.get("endpoints"):
        parts.append(f"{len(audit['endpoints'])} endpoint(s)")
    expiries = sorted(str(entry["expires_at"]) for entry in audit.get("ledger") or [] if entry.get("expires_at"))
    text = "**ON** " + ", ".join(parts or ["(agents)"])
    if expiries:
        text += f" until {expiries[0]}"
    return text


def _gate_text(record: Mapping[str, Any]) -> str:
    gate = record.get("gate")
    if not gate:
        return "-"
    text = f"{gate.get('result') or '?'}: {gate.get('audited', '?')} audited, "
    text += f"{gate.get('unexpected_groups', '?')} unexpected"
    if not gate.get("complete"):
        text += " (incomplete window)"
    return text


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid(summary: Mapping[str, Any]) -> list[str]:
    lines = ["```mermaid", "flowchart LR"]
    classes: dict[str, list[str]] = {}
    by_name = {record["cluster"]: record for record in summary["clusters"]}
    per_cluster = summary["counts"]["total"] <= MAX_GRAPH_CLUSTERS
    index = 0
    for wave in summary["waves"]:
        title = f"wave {wave['wave']}" + (" (canary)" if wave.get("canary") else "") + f": {wave['status']}"
        lines.append(f'  subgraph w{wave["wave"]}["{_mermaid_label(title)}"]')
        if per_cluster:
            for name in wave["clusters"]:
                record = by_name[name]
                label = f"{name}<br/>{_CLUSTER_TEXT.get(record['status'], record['status'])}"
                if record["audit_mode"].get("active"):
                    label += "<br/>audit mode ON"
                lines.append(f'    c{index}["{_mermaid_label(label)}"]')
                classes.setdefault(record["status"], []).append(f"c{index}")
                index += 1
        else:
            states = [by_name[name]["status"] for name in wave["clusters"]]
            label = ", ".join(f"{states.count(state)} {_CLUSTER_TEXT[state]}" for state in CLUSTER_STATES
                              if states.count(state))
            lines.append(f'    c{index}["{_mermaid_label(label)}"]')
            classes.setdefault(_wave_status(states) if _wave_status(states) in CLUSTER_STATES else PLANNED,
                               []).append(f"c{index}")
            index += 1
        lines.append("  end")
    if len(summary["waves"]) > 1:
        lines.append("  " + " --> ".join(f"w{wave['wave']}" for wave in summary["waves"]))
    lines.extend([
        "  classDef passed fill:#d8f5d8,stroke:#2e7d32",
        "  classDef failed fill:#ffd9d9,stroke:#c62828",
        "  classDef preflight_failed fill:#ffd9d9,stroke:#c62828",
        "  classDef planned fill:#eeeeee,stroke:#9e9e9e,stroke-dasharray: 4 2",
    ])
    for state in CLUSTER_STATES:
        if classes.get(state):
            lines.append(f"  class {','.join(classes[state])} {state}")
    lines.append("```")
    return lines


def render_markdown(summary: Mapping[str, Any]) -> str:
    """The fleet summary for people: verdict, waves picture, one row per cluster, then what needs attention."""
    counts = summary["counts"]
    lines = [f"# {summary.get('name') or 'fleet rollout'}", ""]
    verdict = f"**{_STATUS_TEXT.get(summary['status'], summary['status'].upper())}**"
    if summary.get("stopped_at_wave"):
        verdict += f" at wave {summary['stopped_at_wave']} of {len(summary['waves'])}"
    preflight = f", {counts['preflight_failed']} failed the preflight" if counts["preflight_failed"] else ""
    verdict += (f" - {counts['passed']} passed, {counts['failed']} failed, {counts['planned']} not started"
                f"{preflight} of {counts['total']} cluster(s).")
    lines.append(verdict)
    times = []
    if summary.get("started_at"):
        times.append(f"started {summary['started_at']}")
    if summary.get("written_at"):
        times.append(f"written {summary['written_at']}")
    if times:
        text = ", ".join(times)
        lines.extend(["", text[0].upper() + text[1:] + "."])
    if summary["status"] == "incomplete":
        lines.extend(["", "Not every wave has run: the run is still going, or it ended before the last wave "
                          "(interrupted, or limited). Clusters marked *not started* were not touched."])
    if summary["audit_mode_on"]:
        lines.extend(["", f"**Audit mode is ON in {len(summary['audit_mode_on'])} cluster(s): "
                          f"{', '.join(summary['audit_mode_on'])}.** Policies there give no isolation where it is on."])
    if summary["audit_mode_unknown"]:
        lines.extend(["", f"Audit mode could not be read in: {', '.join(summary['audit_mode_unknown'])}."])
    lines.extend(["", "## Waves", ""])
    lines.extend(_mermaid(summary))
    lines.extend(["", "## Clusters", "",
                  "| cluster | wave | result | stopped at | gate | unexpected denies | audit mode now |",
                  "|---|---|---|---|---|---|---|"])
    for record in summary["clusters"]:
        result = _CLUSTER_TEXT.get(record["status"], record["status"])
        unexpected = len((record.get("gate") or {}).get("unexpected") or [])
        drops = len((record.get("enforce") or {}).get("unexpected_drops") or [])
        denies = str(unexpected) + (f" (+{drops} drop(s) after enforcing)" if drops else "")
        lines.append(f"| {_cell(record['cluster'])} | {record.get('wave') or '-'} | {result} | "
                     f"{_cell(record.get('stopped_at'))} | {_cell(_gate_text(record))} | "
                     f"{denies if record.get('gate') or drops else '-'} | {_audit_text(record['audit_mode'])} |")
    problems = [record for record in summary["clusters"] if record["status"] in (FAILED, PREFLIGHT_FAILED)]
    if problems:
        lines.extend(["", "## Why it stopped"])
        for record in problems:
            lines.extend(["", f"### {record['cluster']} - {record.get('stopped_at') or '?'}", "",
                          str(record.get("why") or ""), "", "```text",
                          str(record.get("error") or "(no message)").rstrip(), "```"])
            gate = record.get("gate") or {}
            if gate.get("unexpected"):
                lines.extend(["", "Unexpected would-be denies:", ""])
                lines.extend(f"- `{text}`" for text in gate["unexpected"])
            drops = (record.get("enforce") or {}).get("unexpected_drops") or []
            if drops:
                lines.extend(["", "Unexpected policy drops after enforcing:", ""])
                lines.extend(f"- `{text}`" for text in drops)
            if record.get("artifacts_dir"):
                lines.extend(["", f"Reports: `{record['artifacts_dir']}`"])
    on = [record for record in summary["clusters"] if record["audit_mode"].get("active")]
    if on:
        lines.extend(["", "## Where audit mode is on", ""])
        for record in on:
            audit = record["audit_mode"]
            places = (["every agent (cluster-wide)"] if audit.get("cluster") else []) + \
                [f"node {node}" for node in audit.get("nodes") or []] + list(audit.get("endpoints") or [])
            lines.append(f"- **{record['cluster']}**: {'; '.join(places) or 'on'}")
            for entry in audit.get("ledger") or []:
                lines.append(f"  - ledger: {entry.get('scope', '?')} since {entry.get('enabled_at', '?')}, expires "
                             f"{entry.get('expires_at', '?')} ({entry.get('reason') or 'no reason given'})")
            for message in audit.get("guard") or []:
                lines.append(f"  - guard: {message}")
        lines.extend(["", "Fix the policies or the expected denies and run the fleet again (clusters already in audit "
                          "mode pick up from there), or switch back with `playbooks/audit_disable.yml`. "
                          "`playbooks/audit_guard.yml` reports audit mode past its expiry."])
    return "\n".join(lines) + "\n"


def render_junit(summary: Mapping[str, Any]) -> str:
    """JUnit XML: a test suite per wave, a test case per cluster (failed clusters fail, clusters not reached are
    skipped)."""
    suites = ET.Element("testsuites", {"name": summary.get("name") or "fleet rollout"})
    by_name = {record["cluster"]: record for record in summary["clusters"]}
    total = failures = skipped = 0
    for wave in summary["waves"]:
        suite = ET.SubElement(suites, "testsuite", {"name": f"wave {wave['wave']}", "tests": "0", "failures": "0",
                                                    "errors": "0", "skipped": "0", "time": "0"})
        wave_failures = wave_skipped = 0
        for name in wave["clusters"]:
            record = by_name[name]
            case = ET.SubElement(suite, "testcase", {"classname": f"fleet.wave{wave['wave']}", "name": name,
                                                     "time": "0"})
            details = [f"result: {_CLUSTER_TEXT.get(record['status'], record['status'])}",
                       f"steps done: {', '.join(record.get('steps_done') or []) or '-'}",
                       f"gate: {_gate_text(record)}",
                       f"audit mode now: {_audit_text(record['audit_mode']).replace('**', '')}"]
            details.extend(f"unexpected deny: {text}" for text in (record.get("gate") or {}).get("unexpected") or [])
            details.extend(f"unexpected drop after enforcing: {text}"
                           for text in (record.get("enforce") or {}).get("unexpected_drops") or [])
            if record["status"] in (FAILED, PREFLIGHT_FAILED):
                wave_failures += 1
                failure = ET.SubElement(case, "failure", {
                    "message": f"stopped at {record.get('stopped_at') or '?'}: {record.get('why') or '?'}",
                    "type": "PreflightFailed" if record["status"] == PREFLIGHT_FAILED else "RolloutStopped"})
                failure.text = "\n".join(details + ["", str(record.get("error") or "")])
            elif record["status"] == PLANNED:
                wave_skipped += 1
                ET.SubElement(case, "skipped", {"message": record.get("note") or "not started"})
            else:
                ET.SubElement(case, "system-out").text = "\n".join(details)
        suite.set("tests", str(len(wave["clusters"])))
        suite.set("failures", str(wave_failures))
        suite.set("skipped", str(wave_skipped))
        total += len(wave["clusters"])
        failures += wave_failures
        skipped += wave_skipped
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    suites.set("errors", "0")
    suites.set("skipped", str(skipped))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
