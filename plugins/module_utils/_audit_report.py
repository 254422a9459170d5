# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""One audit report: take a window of flows from a source, judge them against the expected denies, write reports.

Note that this module util is PRIVATE to the collection. It can change at any time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from ._audit_reports import ReportError, check_report_dir, write_reports
from ._flow_files import FileStats, FlowFileError, read_flow_files
from ._judge import Judgement, Window, judge_flows, parse_expected, parse_window


class ReportFailure(Exception):
    """The report could not be made (bad input, unreachable source, unwritable directory)."""


def load_expected(rules: Any, expected_file: str | None) -> list[Any]:
    """Rules from the ``expected`` option, then from ``expected_file`` (YAML: a list, or ``{expected: [...]}``)."""
    combined = list(rules or [])
    if expected_file:
        import yaml

        try:
            with open(expected_file, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle)
        except OSError as exc:
            raise ValueError(f"expected_file: cannot read {expected_file}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"expected_file: {expected_file} is not valid YAML: {exc}") from None
        if isinstance(loaded, dict) and "expected" in loaded:
            loaded = loaded["expected"]
        if loaded is None:
            loaded = []
        if not isinstance(loaded, list):
            raise ValueError(f"expected_file: {expected_file} must hold a list of rules (or a mapping with key "
                             "'expected')")
        combined += loaded
    return combined


class Collected:
    """Events from a source, with what the source itself had to say (gaps, errors, counts)."""

    def __init__(self) -> None:
        self.source_errors: list[str] = []
        self.gaps: list[dict[str, Any]] = []
        self.flows_seen: int | None = None
        self.malformed = 0
        self.source: dict[str, Any] = {}
        self.empty_files: list[str] = []


def describe_gap(gap: dict[str, Any]) -> str:
    """One sentence for a stream gap: where it was, whether the read went on, and what that means for the window."""
    start = gap.get("start") or "the start of the window"
    if gap.get("end") is None:
        return (f"stream gap from {start}: the Relay stream broke and could not be resumed, flows after it are "
                f"missing ({gap.get('reason')})")
    return (f"stream gap {start} .. {gap['end']}: the Relay stream broke and was resumed from the ring buffers at "
            f"{start} (flows already counted skipped); flows of that stretch are there only if the buffers still "
            f"held them ({gap.get('reason')})")


def _watch_gaps(events: Iterable[Any], collected: Collected) -> Iterator[Any]:
    for event in events:
        if type(event).__name__ == "StreamGap":
            gap = {key: (value if value is None or isinstance(value, bool) else str(value))
                   for key, value in event._asdict().items()}
            collected.gaps.append(gap)
            collected.source_errors.append(describe_gap(gap))
            continue
        yield event


def collect_files(params: dict[str, Any], window: Window, workloads: dict[str, str] | None,
                  verdicts: list[str], collected: Collected) -> Iterator[Any]:
    stats = FileStats()
    try:
        events = read_flow_files(params["paths"], since=window.since, until=window.until, workloads=workloads,
                                 verdicts=verdicts, namespaces=params.get("namespaces") or None, stats=stats)
        yield from events
    except FlowFileError as exc:
        raise ReportFailure(str(exc)) from exc
    collected.flows_seen = stats.flows
    collected.malformed = stats.malformed
    collected.source_errors += stats.errors
    collected.empty_files = list(stats.empty_files)
    collected.source = {"type": "file", **stats.to_dict()}


def collect_relay(params: dict[str, Any], window: Window, workloads: dict[str, str] | None, verdicts: list[str],
                  kube: Any, collected: Collected) -> Iterator[Any]:
    from ._hubble_relay import RelayClient, RelayError

    client = RelayClient(params.get("relay_address"), kube=kube, namespace=params["relay_namespace"],
                         service=params["relay_service"], tls=params.get("relay_tls"),
                         ca_cert=params.get("relay_ca_cert"), client_cert=params.get("relay_client_cert"),
                         client_key=params.get("relay_client_key"), server_name=params.get("relay_server_name"),
                         validate_certs=params["relay_validate_certs"], timeout=params["relay_timeout"],
                         workloads=workloads, option_prefix="relay_")
    try:
        try:
            status = client.connect()
        except RelayError as exc:
            raise ReportFailure(str(exc)) from exc
        now = dt.datetime.now(dt.timezone.utc)
        options: dict[str, Any] = {"verdicts": verdicts, "namespaces": params.get("namespaces") or ()}
        if window.until is not None and window.until > now:
            # the window reaches into the future: follow the live stream until its end
            options.update(follow=True, since=window.since, duration=(window.until - now).total_seconds())
        else:
            # a past window (until defaults to now): what the Relay's ring buffers still hold
            options.update(since=window.since, until=window.until or now)
        try:
            yield from _watch_gaps(client.events(**options), collected)
        except RelayError as exc:
            raise ReportFailure(str(exc)) from exc
        collected.source = {"type": "relay", "address": client.describe,
                            "server_status": status.as_dict() if status is not None else None,
                            "stream": client.stats.as_dict()}
    finally:
        client.close()


def describe_source(source: dict[str, Any]) -> str:
    """One line for the reports: which Relay (and how it was reached) or which files."""
    if source.get("type") == "relay":
        return f"Hubble Relay {source.get('address')}"
    if source.get("type") == "file":
        names = source.get("file_names") or []
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return f"{len(names)} file(s): {shown}"
    return "unknown"


def make_report(params: dict[str, Any], kube: Any = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """Run one report; returns the module result (``failed``/``msg`` set when the gate fails)."""
    rules = parse_expected(load_expected(params.get("expected"), params.get("expected_file")))
    now = now or dt.datetime.now(dt.timezone.utc)
    if params["source"] == "relay" and params.get("duration") and not params.get("since") and not params.get("until"):
        # a relay window given by its length alone starts now and follows the live stream (Hubble keeps only a small
        # ring buffer per node, so a long window has to be streamed as it happens)
        window = parse_window(now, None, params["duration"], now=now)
    else:
        window = parse_window(params.get("since"), params.get("until"), params.get("duration"), now=now)
    if params["source"] == "file" and not params.get("paths"):
        raise ValueError("paths: required with source file (files of `hubble observe -o jsonpb` or Hubble exporter "
                         "output; globs and .gz allowed)")
    if params["source"] == "relay" and params.get("paths"):
        raise ValueError("paths: only used with source file")
    if window.since is None and params["source"] == "relay":
        raise ValueError("since or duration: a relay window needs a start (since: 15m, or duration: 10m to follow the "
                         "live stream)")
    workloads = params.get("workloads") or None
    verdicts = list(params.get("verdicts") or ["AUDIT"])
    if params.get("report_dir"):
        # before the window is read: a 15-minute follow must not end with nowhere to write its reports
        try:
            check_report_dir(params["report_dir"])
        except ReportError as exc:
            raise ReportFailure(f"{exc} (checked before reading any flow; nothing was written)") from exc
    collected = Collected()
    if params["source"] == "file":
        events = collect_files(params, window, workloads, verdicts, collected)
    else:
        events = collect_relay(params, window, workloads, verdicts, kube, collected)
    judgement: Judgement = judge_flows(events, rules, workloads, verdicts=verdicts)
    min_flows = params.get("min_flows")
    if min_flows is None:
        live = params["source"] == "relay" and params.get("duration")
        min_flows = 1 if live and "AUDIT" in verdicts else 0
    summary = judgement.summary(window=window, max_lost_events=params["max_lost_events"], min_flows=min_flows,
                                max_malformed=params["max_malformed"], malformed_lines=collected.malformed,
                                flows_seen=collected.flows_seen, source_errors=collected.source_errors)
    summary["gaps"] = collected.gaps
    warnings = []
    if collected.empty_files:
        shown = ", ".join(collected.empty_files[:5]) + (" ..." if len(collected.empty_files) > 5 else "")
        warnings.append(f"{len(collected.empty_files)} flow file(s) hold no line at all: {shown}")
        if params.get("min_flows") is None and len(collected.empty_files) == collected.source.get("files"):
            # nothing was captured: an empty input is never green unless min_flows: 0 says it may be
            _incomplete(summary, f"every flow file is empty ({shown}): nothing was captured (min_flows: 0 accepts an "
                                 "empty window)")
    summary["empty_files"] = collected.empty_files
    result: dict[str, Any] = {
        "changed": False,
        "summary": summary,
        "unexpected": [group.to_dict() for group in judgement.unexpected],
        "expected": [group.to_dict() for group in judgement.expected],
        "source": collected.source,
        "gaps": collected.gaps,
    }
    if params.get("report_dir"):
        meta = {"title": params.get("report_title") or "Cilium policy audit report",
                "source": describe_source(collected.source),
                "cluster": params.get("cluster_name"), "generated_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        try:
            result["reports"] = write_reports(params["report_dir"], judgement, meta, params["report_formats"],
                                              summary=summary)
        except ReportError as exc:
            # the window was read and judged: keep its result, and say that no report file was replaced
            result["reports"] = {}
            report_problem = f"the reports could not be written, the previous ones are left as they were: {exc}"
        else:
            report_problem = None
    else:
        report_problem = None
    if warnings:
        result["warnings"] = warnings
    problems = []
    if judgement.unexpected and params["fail_on_unexpected"]:
        lines = judgement.failure_lines(limit=20)
        problems.append(f"{len(judgement.unexpected)} unexpected deny group(s) in the audit window:\n  "
                        + "\n  ".join(lines))
    if not summary["complete"] and params["fail_on_incomplete"]:
        problems.append("the window is incomplete, so its result cannot be trusted: "
                        + "; ".join(summary["incomplete_reasons"]))
    if report_problem:
        problems.append(report_problem)
    if problems:
        result["failed"] = True
        result["msg"] = "\n".join(problems)
    return result


def _incomplete(summary: dict[str, Any], reason: str) -> None:
    """Add a reason the window cannot be trusted to a summary made already."""
    summary["incomplete_reasons"] = [*summary["incomplete_reasons"], reason]
    summary["complete"] = summary["passed"] = False
    if summary["result"] == "pass":
        summary["result"] = "incomplete"
