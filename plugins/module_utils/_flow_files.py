# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""The ``file`` flow source: Hubble JSON lines from ``hubble observe -o jsonpb`` or the Hubble exporter.

Note that this module util is PRIVATE to the collection. It can change at any time.

Line shapes read (one JSON object per line, protojson with proto field names):

* ``{"flow": {...}, "node_name": "...", "time": "..."}``: ``hubble observe -o jsonpb``/``-o json`` and exporter files;
* ``{"lost_events": {"source": "...", "num_events_lost": "12", ...}, ...}``: Hubble could not keep some events;
* ``{"node_status": {"state_change": "NODE_UNAVAILABLE", "node_names": [...], ...}, ...}``: from the Relay;
* ``{"time": "...", "verdict": "...", ...}``: a bare flow (the legacy JSON output of old Hubble CLIs).

Speed: exporter files hold every verdict, and usually only a few percent of their lines are audited flows. Files
(plain or gzip) are read in binary blocks of a few MiB; a line cut by the end of a block is carried over to the next,
so memory does not grow with the file. A block is cut into lines in C (``io.BytesIO`` over the block's memory), and
each line costs one more C-level call: a look at the place where recent lines had their verdict key (or, when that
fails, at the place before it: Hubble drops the trailing zeros of a time, so the key moves by a byte now and then).
With ``"verdict":"...`` and one of the verdicts not wanted there, the line is counted and skipped without being parsed;
with a wanted verdict there, it is read at once (the one further look a file of audited flows alone costs per line).
Otherwise the verdict key is searched for; a line whose first one (near the start of the line) names none of the
wanted verdicts is skipped too. Only the lines that can match, and lines that do not look like an ordinary flow (lost
events, node status, odd formatting), are parsed. In a parsed flow line, the long run of members from ``"source"``
to the end of the flow (endpoints, labels, node, direction) repeats from flow to flow and is parsed once per distinct
text, which also gives the parts of the record that come from it; when the rest of the line has the shape Hubble
writes, its few values (time, verdict, addresses, protocol, port, node) are read by regular expressions that match
only JSON without escapes, and the JSON parser is not called at all (see ``_Reader._cached_run``). The record is
always the one a whole parse gives.

Malformed lines: a parsed line that is not valid JSON or has the wrong shape is skipped and counted, with the first
few line numbers of each file. A line skipped unparsed is only known to hold a verdict key near its start: its JSON
is not checked, except that a file's last line without a newline must end its object (a file copied while Hubble was
writing it ends with a cut line).
"""

from __future__ import annotations

import glob
import json
import json.scanner
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from io import BytesIO
from typing import Any, BinaryIO

from ._flows import (
    DIRECTIONS,
    POLICY_VERDICT_EVENT,
    VERDICTS,
    Event,
    FlowRecord,
    LostEvents,
    NodeStatus,
    Peer,
    peer_from_dict,
)

MAX_SAMPLES_PER_FILE = 5
# Files are read in blocks of this size (or MAX_LINE_BYTES when smaller); memory stays flat whatever the file.
READ_BLOCK = 4 << 20
# A longer line is not a Hubble event (a whole JSON array on one line, say): it is skipped, never held in memory.
MAX_LINE_BYTES = 8 << 20
# Where the verdict key must start for the fast path; protojson writes it right after time, uuid and emitter.
VERDICT_WINDOW = 768
PEER_CACHE_SIZE = 16384
# Runs of flow members kept by their JSON text (about a KiB each): a few MiB at most.
RUN_CACHE_SIZE = 4096

# The C scanner behind json.loads, without its wrapper: (object, end) from a str at an offset.
_SCAN_JSON = json.scanner.make_scanner(json.JSONDecoder())
_VERDICT_KEY = b'"verdict":"'
# The verdicts, the commonest in Hubble's output first.
_COMMON_VERDICTS = ("FORWARDED", "DROPPED", "TRACED")
_VERDICTS_BY_FREQUENCY = _COMMON_VERDICTS + tuple(verdict for verdict in VERDICTS if verdict not in _COMMON_VERDICTS)
_GZIP_MAGIC = b"\x1f\x8b"
_EMPTY: dict[str, Any] = {}
# The member put where a cached run of members was cut out of a line: a key no Hubble flow has.
_HOLE_KEY = "\x00netpol.cilium cut\x00"
_HOLE = f",{json.dumps(_HOLE_KEY)}:0"
_REPARSE = object()
_NO_RUN = object()
# What Reader._part reads of a flow, and what the rest of Reader._convert reads (see Reader._cached_run).
_PART_KEYS = frozenset(("source", "destination", "source_names", "destination_names", "event_type",
                        "traffic_direction", "is_reply", "node_name", "drop_reason_desc", "ingress_denied_by",
                        "egress_denied_by", "policy_match_type"))
_HEAD_KEYS = frozenset(("verdict", "time", "IP", "l4"))
# The head of a flow line as Hubble writes it (protojson, compact, fields in their order): time, uuid, verdict,
# drop reason, ethernet, IP and TCP/UDP/SCTP ports, up to the source endpoint. A strict subset of JSON: strings
# without escapes or control characters, numbers without signs, fractions or leading zeros, no spaces; so what it
# captures is exactly what a JSON parser reads. Groups: time, verdict, source IP, destination IP, protocol, port.
# An optional member is spelled (?:member|), not (?:member)?: the same match, and re runs an alternation faster than
# a repeated group.
_JSON_TEXT = r'"([^"\\\x00-\x1f]*)"'
_JSON_UINT = r"(?:0|[1-9][0-9]*)"
_FLOW_HEAD = re.compile(
    r'\{"flow":\{"time":"([^"\\\x00-\x1f]+)"'
    r'(?:,"uuid":"[0-9A-Za-z-]*"|)'
    r',"verdict":"([A-Z_]+)"'
    r'(?:,"drop_reason":' + _JSON_UINT + r"|)"
    r'(?:,"ethernet":\{"source":"[0-9A-Fa-f:]*","destination":"[0-9A-Fa-f:]*"\}|)'
    r'(?:,"IP":\{"source":' + _JSON_TEXT + r',"destination":' + _JSON_TEXT
    + r',"ipVersion":"IPv[46]"(?:,"encrypted":true|)\}|)'
    r'(?:,"l4":\{"(TCP|UDP|SCTP)":\{(?:"source_port":' + _JSON_UINT + r",|)"
    r'"destination_port":(' + _JSON_UINT + r")"
    r'(?:,"flags":\{(?:"[A-Z]+":true(?:,"[A-Z]+":true)*|)\}|)\}\}|)'
    r',"source":\{'
)
_SOURCE_MEMBER = len('"source":{')
# What a JSON string cannot hold as it is (it needs an escape).
_UNPLAIN = re.compile(r'["\\\x00-\x1f]')
# The end of such a line after the run: the flow's closing brace, then the envelope's node name and time.
_FLOW_TAIL = re.compile(r'\}(?:,"node_name":' + _JSON_TEXT + r')?(?:,"time":"[^"\\\x00-\x1f]*")?\}')
# event type, source and destination peers (without address and names), their names, direction, reply, node,
# drop reason, denying policies, policy match type
_Part = tuple[int, Peer, Peer, Any, Any, str, "bool | None", str, "str | None", tuple[str, ...], int]
# node, event type, direction, reply, source and destination peers' first seven fields with their names, drop reason,
# denying policies, policy match type: what the record of a plain line takes from its run (see Reader._parse_run)
_Plain = tuple[str, int, str, "bool | None", tuple[Any, ...], tuple[str, ...], tuple[Any, ...], tuple[str, ...],
               "str | None", tuple[str, ...], int]
_new_tuple = tuple.__new__
_GLOB_CHARS = re.compile(r"[*?\[]")
_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
_ICMP_PROTOCOLS = ("ICMPv4", "ICMPv6")
_OTHER_L4 = ("VRRP", "IGMP")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)$"
)


class FlowFileError(Exception):
    """A flow file option cannot be used at all (a pattern that matches nothing, a file that does not exist)."""


class _Malformed(Exception):
    """A line that is not a Hubble event; the message says why."""


@dataclass
class FileStats:
    """What the file source read. ``flows`` counts every flow line (all verdicts), parsed or skipped unparsed."""

    files: int = 0
    bytes: int = 0
    lines: int = 0
    blank_lines: int = 0
    parsed: int = 0
    flows: int = 0
    matched: int = 0
    filtered: int = 0
    malformed: int = 0
    malformed_samples: list[tuple[str, int, str]] = field(default_factory=list)
    lost_events: int = 0
    lost_event_records: int = 0
    node_status_events: int = 0
    other_events: int = 0
    first_flow_time: str | None = None
    last_flow_time: str | None = None
    errors: list[str] = field(default_factory=list)
    file_names: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "file_names": list(self.file_names),
            "bytes": self.bytes,
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "parsed": self.parsed,
            "flows": self.flows,
            "matched": self.matched,
            "filtered": self.filtered,
            "malformed": self.malformed,
            "malformed_samples": [{"file": name, "line": line, "reason": reason}
                                  for name, line, reason in self.malformed_samples],
            "lost_events": self.lost_events,
            "lost_event_records": self.lost_event_records,
            "node_status_events": self.node_status_events,
            "other_events": self.other_events,
            "first_flow_time": self.first_flow_time,
            "last_flow_time": self.last_flow_time,
            "errors": list(self.errors),
            "empty_files": list(self.empty_files),
        }


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 time (``2026-09-01T12:00:00.123456789Z``, offsets allowed) as an aware datetime (microseconds)."""
    match = _RFC3339.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = -1 if offset[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    micro = int((fraction or "0").ljust(6, "0")[:6])
    return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)


def time_key(value: str | None) -> str:
    """A string that sorts like the instant it names: UTC, nanoseconds always written (``...:SS.fffffffffZ``).

    Hubble writes UTC with trailing zeros of the fraction dropped, so the raw strings do not sort; this does.
    An unreadable or missing time gives ``""`` (sorts first).
    """
    if not value:
        return ""
    size = len(value)
    if size >= 20 and value[-1] == "Z" and value[10] == "T":
        if value[19] == "." and size <= 30:
            return value if size == 30 else value[:20] + value[20:-1].ljust(9, "0") + "Z"
        if size == 20:
            return value[:19] + ".000000000Z"
    try:
        moment = parse_rfc3339(value)
    except ValueError:
        return ""
    fraction = value.rsplit(".", 1)[1] if "." in value else ""
    nanos = "".join(ch for ch in fraction if ch.isdigit())[:9].ljust(9, "0")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + nanos + "Z"


def datetime_key(moment: datetime) -> str:
    """The :func:`time_key` of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("since/until must be timezone-aware datetimes")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files named by ``paths`` (globs allowed), in order, each once. A pattern that matches nothing is an error."""
    if isinstance(paths, (str, bytes)):
        paths = [paths]  # type: ignore[list-item]
    result: list[str] = []
    seen: set[str] = set()
    for pattern in paths:
        if not isinstance(pattern, str) or not pattern:
            raise FlowFileError(f"flow file paths must be non-empty strings, got {pattern!r}")
        expanded = os.path.expanduser(pattern)
        if _GLOB_CHARS.search(expanded):
            matches = sorted(name for name in glob.glob(expanded) if os.path.isfile(name))
            if not matches:
                raise FlowFileError(f"flow file pattern {pattern!r} matched no files")
        else:
            if not os.path.exists(expanded):
                raise FlowFileError(f"flow file {pattern!r} does not exist")
            if os.path.isdir(expanded):
                raise FlowFileError(f"flow file {pattern!r} is a directory (use a pattern such as "
                                    f"{pattern.rstrip('/')}/*.log)")
            matches = [expanded]
        for name in matches:
            real = os.path.realpath(name)
            if real not in seen:
                seen.add(real)
                result.append(name)
    return result


def read_flow_files(paths: list[str], *, since: datetime | None = None, until: datetime | None = None,
                    workloads: dict[str, str] | None = None, verdicts: Iterable[str] | None = ("AUDIT",),
                    event_types: Iterable[int] | None = (POLICY_VERDICT_EVENT,),
                    namespaces: Iterable[str] | None = None, stats: FileStats) -> Iterator[Event]:
    """Events from Hubble JSON-lines files (plain or gzip, globs allowed), streamed.

    Flows are kept when their verdict is in ``verdicts`` and their ``event_type.type`` in ``event_types`` (``None``:
    any), their time is in ``[since, until)``, and, with ``namespaces``, when either side is in one of them.
    Lost-events and node-status events are always passed on (within the time window), because they decide whether
    the window is complete. ``workloads`` maps ``pod`` or ``namespace/pod`` to a workload name.

    Raises :class:`FlowFileError` at once when a pattern matches no file. Files that cannot be read, or gzip data
    that is corrupt, are reported in ``stats.errors`` (naming the file) and reading goes on with the next file.
    """
    files = expand_paths(paths)
    reader = _Reader(since=since, until=until, workloads=workloads, verdicts=verdicts, event_types=event_types,
                     namespaces=namespaces, stats=stats)
    return reader.run(files)


class _Reader:
    def __init__(self, *, since: datetime | None, until: datetime | None, workloads: dict[str, str] | None,
                 verdicts: Iterable[str] | None, event_types: Iterable[int] | None, namespaces: Iterable[str] | None,
                 stats: FileStats) -> None:
        if stats is None:
            raise ValueError("read_flow_files needs a FileStats to report into")
        self.stats = stats
        self.since_key = datetime_key(since) if since is not None else None
        self.until_key = datetime_key(until) if until is not None else None
        self.workloads = dict(workloads) if workloads else None
        if verdicts is None:
            self.verdicts: frozenset[str] | None = None
            self.verdict_prefixes: tuple[bytes, ...] | None = None
        else:
            names = [str(verdict).upper() for verdict in verdicts]
            if not names:
                raise ValueError("verdicts: give at least one verdict (or None for every verdict)")
            for name in names:
                if name not in VERDICTS:
                    raise ValueError(f"unknown verdict {name!r} (expected one of {', '.join(VERDICTS[1:])})")
            self.verdicts = frozenset(names)
            self.verdict_prefixes = tuple(name.encode() + b'"' for name in names)
        self.event_types = frozenset(int(value) for value in event_types) if event_types is not None else None
        if self.event_types is not None and not self.event_types:
            raise ValueError("event_types: give at least one event type (or None for every type)")
        self.namespaces = frozenset(namespaces) if namespaces else None
        self.windowed = since is not None or until is not None
        self._peers: dict[tuple[Any, ...], Peer] = {}
        self._runs: dict[str, tuple[frozenset[str], _Part, str | None, _Plain | None] | object] = {}
        self._file_samples = 0
        self._line_count = 0
        self._at = 0  # the number of the line being looked at
        self._skipped = 0
        self._first_key = time_key(stats.first_flow_time)
        self._last_key = time_key(stats.last_flow_time)

    # -- files ---------------------------------------------------------------------------------------------------

    def run(self, files: list[str]) -> Iterator[Event]:
        for name in files:
            yield from self._read_file(name)

    def _open(self, name: str) -> BinaryIO:
        with open(name, "rb") as probe:
            magic = probe.read(2)
        if magic == _GZIP_MAGIC:
            return _GzipStream(open(name, "rb", buffering=0))  # type: ignore[return-value]
        return open(name, "rb", buffering=0)  # pylint: disable=consider-using-with

    def _read_file(self, name: str) -> Iterator[Event]:
        stats = self.stats
        try:
            handle = self._open(name)
        except OSError as exc:
            stats.errors.append(f"{name}: cannot read: {exc.strerror or exc}")
            return
        stats.files += 1
        stats.file_names.append(name)
        self._file_samples = 0
        self._line_count = 0
        lines_before, blank_before, failed = stats.lines, stats.blank_lines, False
        try:
            with handle:
                yield from self._scan(handle, name)
        except _GzipDamage as exc:
            failed = True
            done = self._line_count
            read_part = f"lines 1-{done} were read, the rest was not" if done else "no line of it could be read"
            stats.errors.append(f"{name}: {exc.what} after line {done} ({read_part}): {exc.detail}")
        except OSError as exc:
            failed = True
            stats.errors.append(f"{name}: read error after line {self._line_count}: {_short(exc)}")
        if not failed and stats.lines - lines_before == stats.blank_lines - blank_before:
            stats.empty_files.append(name)  # no line at all (or blank ones only): nothing was captured there
        try:
            stats.bytes += os.path.getsize(name)
        except OSError:
            pass

    # -- lines ---------------------------------------------------------------------------------------------------

    def _scan(self, handle: BinaryIO, name: str) -> Iterator[Event]:
        """Every event kept; counts everything in ``self.stats``. The hot loop.

        The file is read in large blocks. A line cut by the end of a block is carried over to the next block and
        looked at on its own; the whole lines of a block come from a BytesIO over it (cut at their newlines in C),
        and each is looked at where recent lines had their verdict key (a skipped verdict there: done; a wanted one:
        read) before anything else is done with it.
        """
        stats = self.stats
        limit = MAX_LINE_BYTES  # read at call time (tests lower it)
        size = min(READ_BLOCK, limit)  # a line inside one block is never over the limit
        read = handle.read
        prefixes = self.verdict_prefixes
        first_bytes = frozenset(prefix[0] for prefix in prefixes) if prefixes is not None else frozenset()
        # the verdict key with each known verdict that is not wanted: a line with one of them at the place where
        # the line before had its verdict key is skipped at once (the commonest first: they are tried in turn)
        skips = tuple(_VERDICT_KEY + verdict.encode() + b'"' for verdict in _VERDICTS_BY_FREQUENCY
                      if self.verdicts is not None and verdict not in self.verdicts)
        # where the verdict key was in the last line that had it near its start, and the place before that: Hubble
        # drops the trailing zeros of a time's nanoseconds, so the key moves by a byte or two on about a line in ten
        at = other = 0
        verdict_key = _VERDICT_KEY
        wanted = tuple(verdict_key + prefix for prefix in prefixes) if prefixes is not None else ()
        newline = b"\n"
        lines = 0  # whole lines done (the number of the last one)
        in_block = 0  # lines done in the current block
        looked = 0  # of them, lines that needed more than a look where the last verdict key was (the others: flows)
        skipped_flows = 0
        carry = b""  # the start of a line cut by the end of the previous block
        dropping = False  # inside an overlong line, already reported
        try:
            while True:
                block = read(size)
                if not block:
                    break
                start = 0
                if carry or dropping:
                    cut = block.find(newline)
                    if cut < 0:
                        if not dropping:
                            carry += block
                            if len(carry) >= limit:
                                carry, dropping = b"", True
                                self._malformed(name, lines + 1, self._too_long_reason())
                        continue
                    start = cut + 1
                    lines += 1
                    if dropping:
                        dropping = False
                    else:
                        line, carry = carry + block[:start], b""
                        if len(line) > limit:
                            self._malformed(name, lines, self._too_long_reason())
                        else:
                            self._at = lines
                            event = self._one_line(line, name)
                            if event is not None:
                                yield event
                            skipped_flows += self._skipped
                end = block.rfind(newline) + 1
                if end <= start:
                    carry = block[start:]
                    continue
                carry = block[end:]
                # the whole lines from start to end, then the one cut by the end of the block (when it does not end
                # with a newline: it is carried over, and not counted here); BytesIO shares the block's memory and
                # cuts it into lines in C
                stream = BytesIO(block)
                stream.seek(start)
                in_block = looked = 0
                if prefixes is None:
                    for line in stream:
                        if line[-1] != 10:  # the cut line
                            break
                        in_block += 1
                        looked += 1
                        self._at = lines + in_block
                        event = self._one_line(line, name)
                        if event is not None:
                            yield event
                else:
                    for line in stream:
                        in_block += 1
                        if not line.startswith(skips, at):
                            if line.startswith(wanted, at) and line[-1] == 10:  # a wanted verdict, key in place
                                looked += 1
                                self._at = lines + in_block
                                event = self._parse_line(line, name)
                                if event is not None:
                                    yield event
                                continue
                            if line.startswith(skips, other):  # the other place: swapped, the next line likely
                                at, other = other, at          # has its key at the first one again
                                continue
                            if line[-1] != 10:  # the cut line
                                in_block -= 1
                                break
                            pos = line.find(verdict_key, 0, VERDICT_WINDOW)
                            if pos >= 0:
                                if pos != at:
                                    at, other = pos, at
                                if line[pos + 11] not in first_bytes:
                                    continue  # another verdict, its key at a new place (or not a known one)
                            looked += 1
                            self._at = lines + in_block
                            if pos >= 0 and line.startswith(prefixes, pos + 11):
                                event = self._parse_line(line, name)
                            else:
                                event = self._one_line(line, name)
                                skipped_flows += self._skipped
                            if event is not None:
                                yield event
                    else:
                        if carry:  # the cut line was taken for a skipped flow: it is carried over instead
                            in_block -= 1
                lines += in_block
                skipped_flows += in_block - looked  # the lines not looked at further: flows with another verdict
                in_block = looked = 0
                self._line_count = lines
            if dropping:
                lines += 1
            elif carry:  # the last line, without its newline
                lines += 1
                self._at = lines
                if len(carry) >= limit:
                    self._malformed(name, lines, self._too_long_reason())
                else:
                    event = self._one_line(carry, name)
                    if event is not None:
                        yield event
                    skipped_flows += self._skipped
        finally:
            lines += in_block
            skipped_flows += in_block - looked
            self._line_count = lines
            stats.lines += lines
            stats.flows += skipped_flows

    def _one_line(self, line: bytes, name: str) -> Event | None:
        """One line looked at alone (the prefilter of a line that needs more than the fast path, then its parse).
        Sets ``self._skipped`` to 1 when it was a flow skipped unparsed."""
        self._skipped = 0
        prefixes = self.verdict_prefixes
        if prefixes is not None:
            pos = line.find(_VERDICT_KEY, 0, VERDICT_WINDOW)
            if pos >= 0 and not line.startswith(prefixes, pos + 11):
                # a flow with another verdict; only a file's last line can lack its end
                if line[-1:] == b"\n" or self._skippable(line, name):
                    self._skipped = 1
                return None
            if pos < 0 and self._late_verdict(line) is False:
                if self._skippable(line, name):
                    self._skipped = 1
                return None
        return self._parse_line(line, name)

    def _late_verdict(self, line: bytes) -> bool | None:
        """For a line without the verdict key near its start: False when it is surely a flow with another verdict,
        None when it must be parsed (the key further on and matching, pretty-printed JSON, not a flow, garbage)."""
        pos = line.find(_VERDICT_KEY)
        if pos < 0:
            return None
        if line.startswith(self.verdict_prefixes, pos + 11):  # type: ignore[arg-type]
            return None
        return False

    def _skippable(self, line: bytes, name: str) -> bool:
        """An unparsed line with another verdict: True if it still looks like one JSON object; otherwise it is counted
        as malformed (a truncated last line)."""
        stripped = line.strip()
        if stripped.startswith(b"{") and stripped.endswith(b"}"):
            return True
        self._malformed(name, None, "not a complete JSON object (truncated line?)")
        return False

    @staticmethod
    def _too_long_reason() -> str:
        size = f"{MAX_LINE_BYTES >> 20} MiB" if MAX_LINE_BYTES % (1 << 20) == 0 else f"{MAX_LINE_BYTES} bytes"
        return f"line longer than {size}"

    def _malformed(self, name: str, line_no: int | None, reason: str) -> None:
        self.stats.malformed += 1
        if self._file_samples < MAX_SAMPLES_PER_FILE:
            self._file_samples += 1
            self.stats.malformed_samples.append((name, self._at if line_no is None else line_no, reason))

    def _parse_line(self, line: bytes, name: str) -> Event | None:
        stats = self.stats
        stripped = line.strip()
        if not stripped:
            stats.blank_lines += 1
            return None
        stats.parsed += 1
        try:
            try:
                text = stripped.decode("utf-8")
                if self.verdicts is not None:  # a candidate line of an ordinary filtered read
                    event = self._cached_run(text)
                    if event is not _REPARSE:
                        return event  # type: ignore[return-value]
                obj, end = _SCAN_JSON(text, 0)
                if end != len(text):
                    raise ValueError(f"extra data at column {end + 1}")
            except (ValueError, StopIteration) as exc:  # ValueError includes UnicodeDecodeError
                if stripped.startswith(b"["):
                    raise _Malformed("a JSON array: expected one JSON object per line (hubble observe -o jsonpb)") \
                        from None
                reason = "not JSON" if isinstance(exc, StopIteration) else _short(exc)
                raise _Malformed(f"invalid JSON ({reason})") from None
            return self._dispatch(obj)
        except _Malformed as exc:
            self._malformed(name, None, str(exc))
            return None

    def _cached_run(self, text: str) -> Event | None | object:
        """The flow of ``text`` with the bulk of the line taken from a cache keyed by its exact text, or ``_REPARSE``
        when the line does not have the usual shape (it is then parsed whole, as any other line).

        In a ``{"flow": {...}, ...}`` line, the run of members from ``"source"`` to the end of the flow object
        (both endpoints with their labels, node, direction, event type, summary: most of the line) repeats from
        flow to flow, because the same pods talk over and over; the members before it (time, uuid, addresses,
        ports) change every time. So the run is cut out and parsed, and turned into its part of the record, only
        the first time its text is seen. What is around it is read one of two ways:

        * when it has the shape Hubble writes (``_FLOW_HEAD`` before the run, ``_FLOW_TAIL`` after it), its few
          values are taken from the regular expressions' groups: those match only JSON without escapes, so the
          values are the ones a parser reads;
        * otherwise it is parsed as usual, with a placeholder member where the run was.

        The run is used only when it parses as whole members, holds what :meth:`_part` reads and none of what the
        rest is read for (time, verdict, addresses, ports), and (second way) the placeholder comes back as a member
        of the flow object and no key is in both parts; anything else goes the long way, so the record is always the
        one a whole parse gives. (Members the record does not read, such as ``uuid``, may repeat: JSON keeps the
        last, and neither is read.)
        """
        head = _FLOW_HEAD.match(text)
        if head is None and not text.startswith('{"flow":{'):
            return _REPARSE
        start = head.end() - _SOURCE_MEMBER if head is not None else text.find(',"source":{') + 1
        end = text.rfind('},"')
        if start <= 0 or end <= start:
            return _REPARSE
        run_text = text[start:end]
        cached = self._runs.get(run_text) or self._parse_run(run_text)
        if cached is _NO_RUN:
            return _REPARSE
        keys, part, tail_start, plain = cached  # type: ignore[misc]
        record: FlowRecord | None
        node: Any = _REPARSE  # the envelope's node name, once the tail is read
        usual = False  # the usual tail: the run's node, the flow's time
        try:
            if head is not None:
                when, verdict, source_ip, destination_ip, protocol, port = head.groups()
                if tail_start is not None and text[end:] == f'{tail_start}{when}"}}':
                    usual = True
                else:
                    tail = _FLOW_TAIL.fullmatch(text, end)
                    node = tail.group(1) if tail is not None else _REPARSE
            if usual:
                # the commonest line of all: its record is made from the run's ready parts, as _record would make it
                # (the same filters, the same values)
                if plain is None or verdict not in self.verdicts or (self.windowed and not self._in_window(when)):
                    record = None
                else:
                    (node, event_type, direction, reply, source_base, source_names, destination_base,
                     destination_names, drop_reason, policies, match) = plain
                    record = _new_tuple(FlowRecord, (
                        when, node, verdict, event_type, direction, reply,
                        _new_tuple(Peer, source_base + (source_ip, source_names)),
                        _new_tuple(Peer, destination_base + (destination_ip, destination_names)),
                        protocol, int(port) if port is not None else None, drop_reason, policies, match,
                    ))
            elif node is not _REPARSE:
                record = self._record(part, verdict, when, (source_ip, destination_ip),
                                      (protocol, int(port) if port is not None else None), node)
            else:
                reduced = f"{text[:start - 1]}{_HOLE}{text[end:]}"
                obj, stop = _SCAN_JSON(reduced, 0)
                if stop != len(reduced) or obj.__class__ is not dict:
                    return _REPARSE
                flow = obj.get("flow")
                if flow.__class__ is not dict or flow.pop(_HOLE_KEY, None) != 0 or not flow.keys().isdisjoint(keys):
                    return _REPARSE
                record = self._convert(flow, obj, part)
        except (ValueError, StopIteration, TypeError, AttributeError, KeyError, IndexError):
            return _REPARSE
        self.stats.flows += 1
        return self._count(record)

    def _parse_run(self, run: str) -> tuple[frozenset[str], _Part, str | None, _Plain | None] | object:
        """For a run of flow members (``"source":{...},...``), kept for the next line with the same text: the keys
        the rest of the line must not have, the run's :meth:`_part`, the usual tail after it up to the time (when
        its node name needs no escapes), and what the record of a line with that tail takes from the run (None when
        the run's event type or namespaces are filtered out); ``_NO_RUN`` when it cannot be used."""
        cached: tuple[frozenset[str], _Part, str | None, _Plain | None] | object = _NO_RUN
        try:
            members, stop = _SCAN_JSON(f"{{{run}}}", 0)
            if stop == len(run) + 2 and members.__class__ is dict and _HEAD_KEYS.isdisjoint(members) \
                    and members.get("source").__class__ is dict and members.get("destination").__class__ is dict:
                part = self._part(members)
                (event_type, source_base, destination_base, source_names, destination_names, direction, reply, node,
                 drop_reason, policies, match) = part
                # the tail after a plain flow of this run, up to the time: compared whole, it needs no expression
                tail_start = f'}},"node_name":"{node}","time":"' if node and not _UNPLAIN.search(node) else None
                # the record of such a line (see _record and _with_address): each peer is its endpoint's first
                # seven fields, then the flow's address and the run's names
                for names in (source_names, destination_names):
                    if names and not isinstance(names, list):
                        raise TypeError("source_names/destination_names is not a list")
                plain: _Plain | None = None
                if (self.event_types is None or event_type in self.event_types) and (
                        self.namespaces is None or source_base.namespace in self.namespaces
                        or destination_base.namespace in self.namespaces):
                    plain = (node, event_type, direction, reply, source_base[:7], tuple(source_names or ()),
                             destination_base[:7], tuple(destination_names or ()), drop_reason, policies, match)
                cached = (frozenset(members) | _PART_KEYS, part, tail_start, plain)
        except (ValueError, StopIteration, TypeError, AttributeError, KeyError, IndexError):
            pass
        if len(self._runs) >= RUN_CACHE_SIZE:
            self._runs.clear()
        self._runs[run] = cached
        return cached

    # -- events --------------------------------------------------------------------------------------------------

    def _dispatch(self, obj: Any) -> Event | None:
        if isinstance(obj, list):
            raise _Malformed("a JSON array: expected one JSON object per line (hubble observe -o jsonpb)")
        if not isinstance(obj, dict):
            raise _Malformed(f"not a JSON object but {type(obj).__name__}")
        stats = self.stats
        flow = obj.get("flow")
        if flow is not None:
            if not isinstance(flow, dict):
                raise _Malformed("'flow' is not an object")
            stats.flows += 1
            return self._flow(flow, obj)
        lost = obj.get("lost_events")
        if lost is not None:
            return self._lost_events(lost, obj)
        status = obj.get("node_status")
        if status is not None:
            return self._node_status(status, obj)
        if any(key in obj for key in ("verdict", "IP", "l4", "source", "destination", "event_type", "Type",
                                      "traffic_direction")):
            stats.flows += 1
            return self._flow(obj, None)  # a bare flow: legacy JSON output
        if "time" in obj or "node_name" in obj or "agent_event" in obj or "debug_event" in obj:
            stats.other_events += 1  # agent/debug events and event kinds newer than this code
            return None
        raise _Malformed("unknown line shape (expected a flow, lost_events or node_status)")

    def _in_window(self, moment: str | None) -> bool:
        if self.since_key is None and self.until_key is None:
            return True
        key = time_key(moment)
        if not key:
            return False
        if self.since_key is not None and key < self.since_key:
            return False
        return not (self.until_key is not None and key >= self.until_key)

    def _lost_events(self, lost: Any, envelope: dict[str, Any]) -> Event | None:
        if not isinstance(lost, dict):
            raise _Malformed("'lost_events' is not an object")
        when = envelope.get("time") or None
        if not self._in_window(when):
            self.stats.filtered += 1
            return None
        try:
            count = int(lost.get("num_events_lost") or 0)  # uint64: a JSON string
        except (TypeError, ValueError):
            raise _Malformed(f"lost_events.num_events_lost is not a number: {lost.get('num_events_lost')!r}") from None
        source = lost.get("source") or "UNKNOWN_LOST_EVENT_SOURCE"
        self.stats.lost_events += count
        self.stats.lost_event_records += 1
        return LostEvents(source=str(source), count=count, node=envelope.get("node_name") or None, time=when)

    def _node_status(self, status: Any, envelope: dict[str, Any]) -> Event | None:
        if not isinstance(status, dict):
            raise _Malformed("'node_status' is not an object")
        when = envelope.get("time") or None
        if not self._in_window(when):
            self.stats.filtered += 1
            return None
        names = status.get("node_names") or []
        if not isinstance(names, list):
            raise _Malformed("node_status.node_names is not a list")
        self.stats.node_status_events += 1
        return NodeStatus(state=str(status.get("state_change") or "UNKNOWN_NODE_STATE"),
                          nodes=tuple(str(node) for node in names), message=str(status.get("message") or ""),
                          time=when)

    def _flow(self, flow: dict[str, Any], envelope: dict[str, Any] | None) -> FlowRecord | None:
        try:
            record = self._convert(flow, envelope)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise _Malformed(f"unexpected flow shape ({_short(exc)})") from None
        return self._count(record)

    def _count(self, record: FlowRecord | None) -> FlowRecord | None:
        stats = self.stats
        if record is None:
            stats.filtered += 1
            return None
        stats.matched += 1
        when = record.time
        key = time_key(when)
        if key:  # ties between spellings of one instant go to the smaller string, whatever the order of the lines
            last = self._last_key
            if key >= last and (key > last or when > (stats.last_flow_time or "")):
                self._last_key, stats.last_flow_time = key, when
            first = self._first_key
            if not first or key < first or (key == first and when < (stats.first_flow_time or "")):
                self._first_key, stats.first_flow_time = key, when
        return record

    def _convert(self, flow: dict[str, Any], envelope: dict[str, Any] | None,
                 part: _Part | None = None) -> FlowRecord | None:
        """The FlowRecord of a parsed flow, or None when a filter drops it. Called for every parsed flow: kept lean.
        ``part``: the :meth:`_part` of the flow's members, when already known."""
        get = flow.get
        verdict = get("verdict") or "VERDICT_UNKNOWN"
        if verdict.__class__ is not str:
            verdict = VERDICTS[verdict] if isinstance(verdict, int) and 0 <= verdict < len(VERDICTS) else str(verdict)
        if self.verdicts is not None and verdict not in self.verdicts:
            return None
        return self._record(part if part is not None else self._part(flow), verdict,
                            get("time") or (envelope.get("time") if envelope else None) or "", get("IP") or _EMPTY,
                            get("l4"), envelope.get("node_name") if envelope else None)

    def _record(self, part: _Part, verdict: str, when: Any, ip: Any, l4: Any,
                envelope_node: Any) -> FlowRecord | None:
        """The FlowRecord of a flow's values, or None when a filter drops it. ``ip`` and ``l4``: the flow's objects,
        or (source, destination) and (protocol, port) when already read."""
        if self.verdicts is not None and verdict not in self.verdicts:
            return None
        (event_type, source_base, destination_base, source_names, destination_names, direction, reply, node,
         drop_reason, policies, match) = part
        if self.event_types is not None and event_type not in self.event_types:
            return None
        if when.__class__ is not str:
            raise TypeError("time is not a string")
        if self.windowed and not self._in_window(when):
            return None
        source_ip, destination_ip = ip if ip.__class__ is tuple else (ip.get("source"), ip.get("destination"))
        source = _with_address(source_base, source_ip, source_names)
        destination = _with_address(destination_base, destination_ip, destination_names)
        if self.namespaces is not None and source.namespace not in self.namespaces \
                and destination.namespace not in self.namespaces:
            return None
        protocol, port = l4 if l4.__class__ is tuple else _layer4(l4)
        if not node:
            node = envelope_node or ""
            if node.__class__ is not str:
                node = str(node)
        return _new_tuple(FlowRecord, (
            when, node, verdict, event_type, direction, reply, source, destination, protocol, port, drop_reason,
            policies, match,
        ))

    def _part(self, flow: dict[str, Any]) -> _Part:
        """What a flow's members from ``_PART_KEYS`` give its record: the same for every flow with the same
        members (see :meth:`_cached_run`)."""
        get = flow.get
        event = get("event_type")
        event_type = int(event.get("type") or 0) if event else 0
        direction = get("traffic_direction") or "TRAFFIC_DIRECTION_UNKNOWN"
        if direction.__class__ is not str:
            direction = DIRECTIONS[direction] if isinstance(direction, int) and 0 <= direction < len(DIRECTIONS) \
                else str(direction)
        reply = get("is_reply")
        if reply is not None:
            if isinstance(reply, dict):  # a BoolValue written as a message
                reply = reply.get("value", False)
            reply = bool(reply)
        node = get("node_name") or ""
        drop_reason = get("drop_reason_desc")
        ingress_denied, egress_denied = get("ingress_denied_by"), get("egress_denied_by")
        return (
            event_type, self._peer(get("source") or _EMPTY), self._peer(get("destination") or _EMPTY),
            get("source_names"), get("destination_names"), direction, reply,
            node if node.__class__ is str else str(node),
            str(drop_reason) if drop_reason not in (None, "", 0) else None,
            _policies(ingress_denied, egress_denied) if ingress_denied or egress_denied else (),
            int(get("policy_match_type") or 0),
        )

    def _peer(self, endpoint: Any) -> Peer:
        """The Peer of an endpoint object, without the flow's address and names (see :func:`_with_address`), built
        once per distinct endpoint: flows repeat the same endpoints over and over."""
        get = endpoint.get  # AttributeError (a wrong shape) is reported by the caller
        identity = get("identity")
        # identities stand for a label set; without one, the labels themselves must be part of the key
        key = (identity, get("namespace"), get("pod_name"), get("ID"),
               tuple(get("labels") or ()) if identity is None else None)
        base = self._peers.get(key)
        if base is None:
            labels = get("labels")
            if labels is not None and not isinstance(labels, list):
                raise TypeError("labels is not a list")
            base = peer_from_dict(endpoint, None, None, self.workloads)
            if len(self._peers) >= PEER_CACHE_SIZE:
                self._peers.clear()
            self._peers[key] = base
        return base


class _GzipDamage(Exception):
    """A gzip file that cannot be read to its end: ``what`` happened, ``detail`` from zlib."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.detail = detail


class _GzipStream:
    """A gzip file (one or more members) read in binary blocks, like ``gzip.open`` - except that what decompressed
    well before damage (a file cut while it was copied, corrupt bytes) is returned first, and the damage is raised
    as :class:`_GzipDamage` by the next read. ``gzip.open`` drops the block it was decompressing, so a truncated file
    of a few MiB would give no line at all."""

    CHUNK = 1 << 20
    STEP = 1 << 16

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._input = b""
        self._member_started = False
        self._damage: _GzipDamage | None = None
        self._finished = False

    def __enter__(self) -> _GzipStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._raw.close()

    def read(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted > 0 and not self._finished and self._damage is None:
            if not self._input:
                self._input = self._raw.read(self.CHUNK)
                if not self._input:
                    self._finished = True
                    if self._member_started:
                        self._damage = _GzipDamage("truncated gzip data", "the file ends before the gzip "
                                                   "end-of-stream marker (cut while it was written or copied?)")
                    break
            if not self._member_started:
                stripped = self._input.lstrip(b"\x00")  # zero padding between or after members is allowed
                if not stripped:
                    self._input = b""
                    continue
                self._input = stripped
                self._member_started = True
            try:
                # in small steps: what a step decompressed is kept even when the next one fails (a CRC mismatch is
                # only found at the member's end)
                data = self._inflate.decompress(self._input, min(wanted, self.STEP))
            except zlib.error as exc:
                self._damage = _GzipDamage("corrupt gzip data", _zlib_problem(exc))
                break
            parts.append(data)
            wanted -= len(data)
            if self._inflate.eof:  # the member ended (its CRC and length checked): another may follow
                self._input = self._inflate.unused_data
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._member_started = False
            else:
                self._input = self._inflate.unconsumed_tail
        if parts:
            return b"".join(parts)
        if self._damage is not None:
            damage, self._damage = self._damage, None
            self._finished = True
            raise damage
        return b""


def _zlib_problem(exc: zlib.error) -> str:
    """What a zlib error means for the reader of a report."""
    text = str(exc).split(": ", 1)[-1]
    if "incorrect data check" in text or "incorrect length check" in text:
        return f"{text}: the checksum at the end does not match, so the lines read from it may be damaged too"
    if "header" in text or "compression method" in text:
        return f"{text}: not a valid gzip header"
    return f"{text}: the compressed data is damaged"


def _with_address(base: Peer, ip: Any, names: Any) -> Peer:
    """A peer of a flow: its endpoint's ``base`` with the flow's address and DNS names."""
    if names:
        if not isinstance(names, list):
            raise TypeError("source_names/destination_names is not a list")
        return _new_tuple(Peer, base[:7] + (str(ip) if ip is not None else None, tuple(names)))
    if ip is None:
        return base
    # Peer(...) through tuple.__new__: the same object, without the Python-level __new__ of a NamedTuple
    return _new_tuple(Peer, base[:7] + (ip if ip.__class__ is str else str(ip), ()))


def _layer4(l4: Any) -> tuple[str | None, int | None]:
    """(protocol, destination port); for ICMP the port is the ICMP type (0 when protojson omitted it)."""
    if not l4:
        return None, None
    if not isinstance(l4, dict):
        raise TypeError("l4 is not an object")
    for protocol in _PORT_PROTOCOLS:
        body = l4.get(protocol)
        if body is not None:
            port = body.get("destination_port")
            return protocol, int(port) if port is not None else None
    for protocol in _ICMP_PROTOCOLS:
        body = l4.get(protocol)
        if body is not None:
            return protocol, int(body.get("type") or 0)
    for protocol in _OTHER_L4:
        if protocol in l4:
            return protocol, None
    return None, None


def _policies(*lists: Any) -> tuple[str, ...]:
    """``namespace/name`` (clusterwide policies: ``name``) of the policies in ``*_denied_by``, each once."""
    names: list[str] = []
    for policies in lists:
        if not policies:
            continue
        if not isinstance(policies, list):
            raise TypeError("*_denied_by is not a list")
        for policy in policies:
            if not isinstance(policy, dict):
                raise TypeError("a *_denied_by entry is not an object")
            name = policy.get("name") or "?"
            namespace = policy.get("namespace")
            label = f"{namespace}/{name}" if namespace else str(name)
            if label not in names:
                names.append(label)
    return tuple(names)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
