"""The Hubble and file rows of the fault matrix (issue #7): each fault is caused for real - a Relay that is not there,
a stream the simulated Relay breaks, a node it loses, events it loses, certificates that do not fit, damaged and
empty files, a report directory the module may not write, a module process killed while it writes report.json - and
each test asserts what the product ends with: the summary's counts, completeness and its reasons, the stream gaps,
the message, and the files on disk.

Two ways of running the product: ``ansible-playbook`` with the module (``run_tasks``), where the message and the
module's own handling matter, and ``make_report`` in this process (what the module calls, with the module's option
defaults) for the Relay faults that need the simulated Relay changed between windows.

The module process is put in a real condition through ``ANSIBLE_PYTHON_INTERPRETER``: a small launcher that changes
what the kernel lets the process do (a file size limit; without the capability that lets root ignore directory
permissions) and then runs the module unchanged. Nothing inside the product is patched.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.netpol.cilium.plugins.module_utils._audit_report import ReportFailure, make_report
from ansible_collections.netpol.cilium.plugins.module_utils._flows import FlowRecord
from ansible_collections.netpol.cilium.plugins.module_utils._hubble_relay import RelayClient, StreamGap
from ansible_collections.netpol.cilium.plugins.modules.hubble_audit_report import MODULE_SPEC
from simcluster.cluster import SimCluster
from simcluster.fixtures import shared_fixtures_dir
from simcluster.hubble import HubbleRelay
from simcluster.playbook import run_tasks
from simcluster.tls import CertificateAuthority

from .conftest import seeded_cluster

pytestmark = pytest.mark.integration

REAL = shared_fixtures_dir() / "hubble" / "real-1.15.1"
FRONTEND_TO_DB = {"from": {"namespace": "shop", "workload": "frontend"}, "to": {"namespace": "shop", "workload": "db"},
                  "ports": ["5432/TCP"], "reason": "only the backend may talk to db"}
# the real capture: 3 frontend -> db 5432 (expected above) and 1 frontend -> db 9187 (unexpected)
CAPTURE = (REAL / "audit-ingress.jsonl").read_text().splitlines()
REPORT_FILES = ("report.json", "report.md", "junit.xml", "suggested-policies.yaml")


def report(**options: Any) -> dict[str, Any]:
    return {"netpol.cilium.hubble_audit_report": options}


def _db(cluster: SimCluster) -> Any:
    return next(r for r in cluster.endpoints.values() if r.namespace == "shop" and r.pod_labels.get("app") == "db")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """The seed scenario with the db endpoint in audit mode: frontend -> db is AUDIT."""
    with seeded_cluster("faults", tmp_path_factory) as sim:
        db = _db(sim)
        result = sim.agent(db.node).exec(["cilium-dbg", "endpoint", "config", str(db.id), "PolicyAuditMode=Enabled"])
        assert result.exit_code == 0, result.stderr
        yield sim


@pytest.fixture
def relay(cluster: SimCluster) -> Iterator[HubbleRelay]:
    """A Relay that generates nothing by itself: each test emits exactly the connections it counts."""
    started = cluster.start_hubble(generate=False)
    yield started
    started.stop()
    cluster.hubble = None


def params(**options: Any) -> dict[str, Any]:
    """The module's parameters: its option defaults, then ``options``."""
    values = {name: spec.get("default") for name, spec in MODULE_SPEC.items()}
    values.update(options)
    return values


def _in_background(action: Any) -> threading.Thread:
    worker = threading.Thread(target=action, daemon=True)
    worker.start()
    return worker


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _launcher(path: Path, code: str) -> str:
    """An interpreter for ANSIBLE_PYTHON_INTERPRETER: runs ``code`` (Python, in the module's process), then the
    module file Ansible gives it, unchanged."""
    path.write_text(f"#!{sys.executable}\n"
                    "import runpy, sys\n"
                    f"{code}\n"
                    "sys.argv = sys.argv[1:]\n"
                    "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    path.chmod(0o755)
    return str(path)


# --- Hubble: the Relay cannot be reached at the start -------------------------------------------------------------


def test_unreachable_relay_is_named_with_how_it_was_reached(cluster: SimCluster, tmp_path: Path) -> None:
    stopped = cluster.start_hubble(generate=False)
    stopped.stop()  # the hubble-relay Service and pod stay; nothing listens behind them any more
    try:
        closed = stopped.address
        run = run_tasks(cluster, [
            report(relay_address=closed, since="5m", report_dir=str(tmp_path / "direct")),
            report(since="5m", relay_timeout=5, report_dir=str(tmp_path / "forwarded")),
        ], tmp_path)
    finally:
        cluster.hubble = None
    direct, forwarded = run.results
    assert direct["failed"] is True
    assert direct["msg"].startswith(f"Hubble Relay at {closed} (direct): ServerStatus: connection refused")
    assert forwarded["failed"] is True
    api = cluster.api_client()
    try:
        host = api.configuration.host
    finally:
        api.close()
    assert forwarded["msg"].startswith("Hubble Relay at kube-system/hubble-relay (port-forward via pod "
                                       "kube-system/hubble-relay-")
    assert f" port 4245 through the Kubernetes API at {host}): ServerStatus: the Kubernetes API opened the " \
           "port-forward, but nothing accepts connections on port 4245 of pod kube-system/hubble-relay-" \
           in forwarded["msg"]
    # checked before the window: the report directories exist, and hold nothing
    assert os.listdir(tmp_path / "direct") == [] and os.listdir(tmp_path / "forwarded") == []


# --- Hubble: TLS that does not fit ----------------------------------------------------------------------------------


def test_tls_failures_say_which_certificate_check_failed(cluster: SimCluster, tmp_path: Path) -> None:
    relay = cluster.start_hubble(generate=False, tls=True)
    try:
        relay.emit("shop/frontend", "shop/db", count=2)
        other_ca = tmp_path / "other-ca.crt"
        other_ca.write_bytes(CertificateAuthority("someone-else").cert_pem)
        right = {"relay_ca_cert": relay.ca_cert_path, "since": "5m", "expected": [FRONTEND_TO_DB]}
        wrong_ca = {**right, "relay_ca_cert": str(other_ca)}
        run = run_tasks(cluster, [
            report(relay_address=relay.address, **wrong_ca),
            report(relay_server_name="relay.example.org", **right),  # through the port-forward
        ], tmp_path)
        with pytest.raises(ReportFailure) as wrong_name:
            make_report(params(relay_address=relay.address, relay_server_name="relay.example.org", **right))
        good = make_report(params(relay_address=relay.address, relay_server_name="instance.hubble-relay.cilium.io",
                                  **right))
    finally:
        relay.stop()
        cluster.hubble = None
    wrong_ca, wrong_name_forwarded = run.results
    assert wrong_ca["failed"] is True
    assert wrong_ca["msg"].startswith(f"Hubble Relay at {relay.address} (direct, TLS): ServerStatus: certificate "
                                      f"verify failed: its TLS certificate is not signed by the CA in {other_ca} "
                                      "(relay_ca_cert) [UNAVAILABLE: ")
    names = "*.hubble-relay.cilium.io, localhost, 127.0.0.1"
    for message in (wrong_name_forwarded["msg"], str(wrong_name.value)):
        assert f"its TLS certificate is for {names}, not 'relay.example.org' (the relay_server_name given; set " \
               "relay_server_name to a name the certificate carries, e.g. instance.hubble-relay.cilium.io)" in message
        assert "certificate verify failed" not in message
    assert wrong_name_forwarded["failed"] is True
    assert "(port-forward via pod kube-system/hubble-relay-" in wrong_name_forwarded["msg"]
    assert str(wrong_name.value).startswith(f"Hubble Relay at {relay.address} (direct, TLS): ServerStatus: ")
    assert (good["summary"]["audited"], good["summary"]["result"], good.get("failed")) == (2, "pass", None)


# --- Hubble: lost events, unavailable nodes, a broken stream (table) ------------------------------------------------


def _lost_events(relay: HubbleRelay) -> None:
    relay.emit("shop/frontend", "shop/db", count=3)
    relay.inject_lost_events(7, node=_db(relay.cluster).node)


def _node_unavailable(relay: HubbleRelay) -> None:
    relay.emit("shop/frontend", "shop/db", count=3)
    relay.set_node_unavailable(_db(relay.cluster).node)


def _broken_stream(relay: HubbleRelay) -> None:
    relay.emit("shop/frontend", "shop/db", count=40)
    relay.disconnect_after(15)


RELAY_FAULTS = [
    # (fault, what causes it, extra options, audited, complete, the reason that must be given)
    ("lost-events", _lost_events, {}, 3, False, "Hubble lost 7 events (max_lost_events 0): audited flows may be "
                                                "missing"),
    ("lost-events-allowed", _lost_events, {"max_lost_events": 7}, 3, True, None),
    ("node-unavailable", _node_unavailable, {}, 0, False, "nodes unavailable during the window: faults/"),
    ("stream-broken", _broken_stream, {}, 40, False, "1 flow source errors: stream gap "),
]


@pytest.mark.parametrize(("fault", "cause", "options", "audited", "complete", "reason"), RELAY_FAULTS,
                         ids=[case[0] for case in RELAY_FAULTS])
def test_relay_faults_in_a_past_window(relay: HubbleRelay, fault: str, cause: Any, options: dict[str, Any],
                                       audited: int, complete: bool, reason: str | None) -> None:
    cause(relay)
    result = make_report(params(relay_address=relay.address, since="5m", expected=[FRONTEND_TO_DB], **options))
    summary = result["summary"]
    assert (summary["audited"], summary["expected_flows"], summary["unexpected_groups"]) == (audited, audited, 0)
    assert summary["complete"] is complete and summary["result"] == ("pass" if complete else "incomplete")
    assert bool(result.get("failed")) is not complete
    if reason:
        assert any(text.startswith(reason) for text in summary["incomplete_reasons"]), summary["incomplete_reasons"]
        assert "the window is incomplete, so its result cannot be trusted" in result["msg"]
    else:
        assert summary["incomplete_reasons"] == []
    stream = result["source"]["stream"]
    if fault.startswith("lost-events"):
        assert summary["lost_events"] == 7 == stream["lost_events"]
    if fault == "node-unavailable":
        db_node = relay.node_name(_db(relay.cluster).node)
        assert summary["nodes_unavailable"] == [db_node]
        assert result["source"]["server_status"]["unavailable_node_names"] == [db_node]
    if fault == "stream-broken":
        # 15 flows, the break, then the read again from the time of the 15th flow: the 15 come again and are skipped
        assert (stream["flows"], stream["duplicates"], stream["reconnects"], stream["gaps"]) == (40, 15, 1, 1)
        [gap] = summary["gaps"] == result["gaps"] and summary["gaps"]
        assert gap["resumed"] is True and gap["end"] is not None and "UNAVAILABLE" in gap["reason"]
        assert relay.streams[1].request.since.seconds * 10 ** 9 + relay.streams[1].request.since.nanos <= \
            _nanoseconds(gap["start"])
        assert [group["count"] for group in result["expected"]] == [40]
    else:
        assert summary["gaps"] == []


def _nanoseconds(text: str) -> int:
    whole, _dot, fraction = text.rstrip("Z").partition(".")
    moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp()) * 10 ** 9 + int(fraction.ljust(9, "0") or 0)


def test_a_follow_broken_before_its_first_flow_resumes_from_the_window_start(relay: HubbleRelay) -> None:
    """The stream breaks on the first flow of a live window: the read goes on from the start of the window, so the
    flows that came meanwhile are counted, each once, and the gap starts at the window's start. Both ways a follow
    is asked for: the module's (since = now) and the client's own (no since: from the time it opened)."""

    def traffic() -> None:
        relay.wait_for_followers(1, timeout=60)
        relay.emit("shop/frontend", "shop/db", count=6)

    relay.disconnect_after(0)
    worker = _in_background(traffic)
    result = make_report(params(relay_address=relay.address, duration="3s", expected=[FRONTEND_TO_DB]))
    worker.join(10)
    summary = result["summary"]
    assert (summary["audited"], summary["expected_flows"], summary["flows_seen"]) == (6, 6, 6)
    [gap] = summary["gaps"]
    assert gap["resumed"] is True and _nanoseconds(gap["start"]) // 1000 == _nanoseconds(summary["window"]["since"]) \
        // 1000  # the window's start (the summary shows microseconds)
    assert summary["complete"] is False
    assert summary["incomplete_reasons"][0].startswith(f"1 flow source errors: stream gap {gap['start']} .. ")
    assert (result["source"]["stream"]["duplicates"], result["source"]["stream"]["reconnects"]) == (0, 1)

    relay.wait_for_no_followers()  # the window above has ended: the next follower is the client below
    relay.disconnect_after(0)
    worker = _in_background(traffic)
    with RelayClient(relay.address, backoff=0.01) as client:
        opened = time.time_ns()
        events = list(client.events(follow=True, duration=3))
    worker.join(10)
    flows = [event for event in events if isinstance(event, FlowRecord)]
    [gap_event] = [event for event in events if isinstance(event, StreamGap)]
    assert len(flows) == 6 and len({flow.time for flow in flows}) == 6
    assert opened <= _nanoseconds(gap_event.start) <= min(_nanoseconds(flow.time) for flow in flows)
    resumed = relay.streams[-1].request
    assert resumed.HasField("since") and resumed.since.seconds * 10 ** 9 + resumed.since.nanos == \
        _nanoseconds(gap_event.start)


def test_a_live_window_broken_mid_way_is_resumed_and_its_gap_reported(relay: HubbleRelay, tmp_path: Path) -> None:
    """The module follows a live window; the Relay breaks the stream after 10 of 30 flows. The task ends with the 30
    flows counted once, the gap (from the 10th flow's time) in the summary, report.json and report.md, and the window
    incomplete because the gap cannot be proven covered."""
    relay.disconnect_after(10)

    def traffic() -> None:
        relay.wait_for_followers(1, timeout=120)
        relay.emit("shop/frontend", "shop/db", count=30)

    worker = _in_background(traffic)
    [result] = run_tasks(relay.cluster, [
        report(relay_address=relay.address, duration="6s", expected=[FRONTEND_TO_DB],
               report_dir=str(tmp_path / "reports")),
    ], tmp_path).results
    worker.join(10)
    summary = result["summary"]
    assert result["failed"] is True and summary["result"] == "incomplete"
    assert (summary["audited"], summary["expected_flows"], summary["unexpected_groups"]) == (30, 30, 0)
    stream = result["source"]["stream"]
    assert (stream["flows"], stream["duplicates"], stream["reconnects"], stream["gaps"]) == (30, 10, 1, 1)
    [gap] = summary["gaps"]
    assert gap["resumed"] is True and gap["end"] is not None
    tenth = sorted(_nanoseconds(group["first_seen"]) for group in result["expected"])[0]
    assert _nanoseconds(gap["start"]) > tenth  # the 10th flow, after the first one
    reason = summary["incomplete_reasons"][0]
    assert reason.startswith(f"1 flow source errors: stream gap {gap['start']} .. {gap['end']}: the Relay stream "
                             f"broke and was resumed from the ring buffers at {gap['start']}")
    assert "simulated relay disconnect" in reason
    saved = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert saved["summary"]["gaps"] == summary["gaps"] and saved["summary"]["audited"] == 30
    markdown = (tmp_path / "reports" / "report.md").read_text()
    assert f"| {gap['start']} | {gap['end']} | yes |" in markdown


# --- files: garbled, truncated, empty, damaged gzip (table) --------------------------------------------------------


def _write_lines(path: Path, lines: list[str], end: str = "\n") -> str:
    path.write_text("".join(line + end for line in lines))
    return str(path)


def _file_cases(tmp_path: Path) -> tuple[list[tuple[str, dict[str, Any], dict[str, Any]]], list[dict[str, Any]]]:
    """The cases - (fault, module options, what the result must end with) - and the expected denies for all."""
    garbled = _write_lines(tmp_path / "garbled.jsonl", [CAPTURE[0], CAPTURE[1][:200] + "\x00garbage", *CAPTURE[2:]])
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(CAPTURE)[:-40])  # a capture copied while Hubble was writing its last line
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    empty_gz = tmp_path / "empty.jsonl.gz"
    empty_gz.write_bytes(gzip.compress(b""))
    good = _write_lines(tmp_path / "good.jsonl", CAPTURE)
    packed = gzip.compress(("\n".join(CAPTURE * 2000) + "\n").encode())  # 8000 lines
    cut_gz = tmp_path / "cut.jsonl.gz"
    cut_gz.write_bytes(packed[: len(packed) // 2])
    not_gz = tmp_path / "bad-header.jsonl.gz"
    not_gz.write_bytes(b"\x1f\x8b\x09" + packed[3:200])
    expected = [FRONTEND_TO_DB, {"from": {"workload": "frontend"}, "ports": ["9187"], "reason": "exporter"}]
    return [
        ("garbled-and-truncated", {"paths": [garbled, str(truncated)]},
         {"malformed_lines": 2, "audited": 6, "complete": False,
          "reason": "2 malformed lines (max_malformed 0)"}),
        ("garbled-tolerated", {"paths": [garbled, str(truncated)], "max_malformed": 2},
         {"malformed_lines": 2, "audited": 6, "complete": True}),
        ("all-empty", {"paths": [str(empty), str(empty_gz)]},
         {"audited": 0, "complete": False, "reason": f"every flow file is empty ({empty}, {empty_gz}): nothing was "
                                                     "captured (min_flows: 0 accepts an empty window)",
          "warning": f"2 flow file(s) hold no line at all: {empty}, {empty_gz}"}),
        ("all-empty-accepted", {"paths": [str(empty)], "min_flows": 0},
         {"audited": 0, "complete": True, "warning": f"1 flow file(s) hold no line at all: {empty}"}),
        ("one-empty", {"paths": [str(empty), good]},
         {"audited": 4, "complete": True, "warning": f"1 flow file(s) hold no line at all: {empty}"}),
        ("cut-gzip", {"paths": [str(cut_gz), good]},
         {"complete": False, "reason": f"1 flow source errors: {cut_gz}: truncated gzip data after line "}),
        ("bad-gzip-header", {"paths": [str(not_gz), good]},
         {"audited": 4, "complete": False,
          "reason": f"1 flow source errors: {not_gz}: corrupt gzip data after line 0 (no line of it could be read): "
                    "unknown compression method: not a valid gzip header"}),
    ], expected


def test_file_faults_are_counted_and_reported(tmp_path: Path) -> None:
    cases, expected = _file_cases(tmp_path)
    results = [make_report(params(source="file", expected=expected, **options)) for _fault, options, _want in cases]
    for (fault, _options, want), result in zip(cases, results, strict=True):
        summary = result["summary"]
        assert summary["unexpected_groups"] == 0, fault
        for key in ("malformed_lines", "audited", "complete"):
            if key in want:
                assert summary[key] == want[key], (fault, key, summary)
        assert summary["result"] == ("pass" if want["complete"] else "incomplete"), fault
        assert bool(result.get("failed")) is not want["complete"], fault
        if "reason" in want:
            assert any(reason.startswith(want["reason"]) for reason in summary["incomplete_reasons"]), \
                (fault, summary["incomplete_reasons"])
        else:
            assert summary["incomplete_reasons"] == [], fault
        assert [w for w in result.get("warnings", []) if "flow file" in w] == ([want["warning"]] if "warning" in want
                                                                               else []), fault
    by_fault = {fault: result for (fault, _o, _w), result in zip(cases, results, strict=True)}
    samples = by_fault["garbled-and-truncated"]["source"]["malformed_samples"]
    assert [(Path(s["file"]).name, s["line"]) for s in samples] == [("garbled.jsonl", 2), ("truncated.jsonl", 4)]
    assert samples[0]["reason"].startswith("invalid JSON")
    # the cut gzip: every whole line before the cut was read and judged, with the good file's 4
    cut = by_fault["cut-gzip"]
    [error] = cut["summary"]["source_errors"]
    read_lines = int(error.split("after line ", 1)[1].split(" ", 1)[0])
    assert 0 < read_lines < 8000 and f"(lines 1-{read_lines} were read, the rest was not)" in error
    assert cut["summary"]["audited"] == read_lines + 4 and cut["summary"]["malformed_lines"] == 0
    assert by_fault["all-empty"]["summary"]["empty_files"] == [str(tmp_path / "empty.jsonl"),
                                                               str(tmp_path / "empty.jsonl.gz")]


# --- the report directory -------------------------------------------------------------------------------------------


def _drop_dac_override() -> str:
    """Python for a launcher: give up the capabilities that let root ignore file permissions (from the bounding set,
    and from this process's effective and permitted sets), so that a read-only directory is read-only for the module
    too. Without root nothing changes: the directory's mode is enough."""
    return ("import ctypes\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER\n"
            "    libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP\n"
            "import os\n"
            "if os.geteuid() == 0:\n"
            "    import struct\n"
            "    header = struct.pack('II', 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process\n"
            "    data = ctypes.create_string_buffer(24)\n"
            "    libc.capget(header, data)\n"
            "    words = list(struct.unpack('6I', data.raw))\n"
            "    for index in (0, 1):  # effective, permitted of the low word\n"
            "        words[index] &= ~0b1110\n"
            "    libc.capset(header, struct.pack('6I', *words))\n")


def test_a_report_directory_that_is_not_writable(cluster: SimCluster, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "report.json").write_text('{"previous": true}\n')
    reports.chmod(0o555)
    launcher = _launcher(tmp_path / "python-no-dac", _drop_dac_override())
    # the same code, then a write into the directory: it must fail, or this machine cannot show the fault
    check = subprocess.run([sys.executable, "-c", _drop_dac_override() + f"open({str(reports / 'probe')!r}, 'w')"],
                           capture_output=True, text=True, check=False)
    if check.returncode == 0:
        os.unlink(reports / "probe")
        reports.chmod(0o755)
        pytest.skip("this process can write into a read-only directory even without CAP_DAC_OVERRIDE")
    try:
        [result] = run_tasks(cluster, [
            report(source="file", paths=[str(REAL / "audit-ingress.jsonl")], expected=[FRONTEND_TO_DB],
                   report_dir=str(reports)),
        ], tmp_path, extra_env={"ANSIBLE_PYTHON_INTERPRETER": launcher}).results
        assert result["failed"] is True
        assert result["msg"] == f"report directory {str(reports)!r} is not writable: Permission denied (checked " \
                                "before reading any flow; nothing was written)"
        assert _snapshot(reports) == {"report.json": b'{"previous": true}\n'}  # as it was, nothing added
    finally:
        reports.chmod(0o755)


def _many_groups_capture(path: Path, groups: int) -> str:
    """The real frontend -> db flow with ``groups`` different destination ports: as many unexpected groups, and a
    report.json of some MiB."""
    flow = json.loads(CAPTURE[0])
    lines = []
    for number in range(groups):
        flow["flow"]["l4"]["TCP"]["destination_port"] = 10000 + number
        lines.append(json.dumps(flow, separators=(",", ":")))
    return _write_lines(path, lines)


@pytest.mark.parametrize("how", ["killed", "write-error"])
def test_a_module_stopped_while_writing_leaves_the_previous_reports(cluster: SimCluster, tmp_path: Path,
                                                                    how: str) -> None:
    """The file size limit of the module's process (RLIMIT_FSIZE) is below the size of the new report.json. With the
    kernel's default for SIGXFSZ the module is killed in the middle of writing it ("killed"); with Python's default
    (the signal ignored) the write fails with EFBIG ("write-error"). Either way the four previous reports stay,
    byte for byte; killed, a hidden temporary file of exactly the limit is left, and the next run removes it."""
    reports = tmp_path / "reports"
    make_report(params(source="file", paths=[str(REAL / "audit-ingress.jsonl")], expected=[FRONTEND_TO_DB],
                       report_dir=str(reports)))
    before = _snapshot(reports)
    assert set(before) == set(REPORT_FILES) and len(before["report.json"]) < 64 * 1024
    many = _many_groups_capture(tmp_path / "many.jsonl", 3000)
    big = report(source="file", paths=[many], report_dir=str(reports), fail_on_unexpected=False)
    limit = 256 * 1024
    code = f"import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    if how == "killed":
        code += "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
    launcher = _launcher(tmp_path / "python-fsize", code)
    (tmp_path / "limited").mkdir()
    [result] = run_tasks(cluster, [big], tmp_path / "limited",
                         extra_env={"ANSIBLE_PYTHON_INTERPRETER": launcher}).results
    assert result["failed"] is True
    after = _snapshot(reports)
    assert {name: after[name] for name in REPORT_FILES} == before  # every previous report, byte for byte
    leftovers = sorted(set(after) - set(REPORT_FILES))
    if how == "write-error":
        assert leftovers == []
        assert result["msg"].endswith("the reports could not be written, the previous ones are left as they were: "
                                      f"cannot write {str(reports / 'report.json')!r}: File too large")
        # the window was judged all the same: its result is in the task's result
        assert (result["summary"]["unexpected_groups"], result["summary"]["audited"]) == (3000, 3000)
        assert result["reports"] == {}
        return
    # the shell Ansible runs the module from says how it ended: killed by SIGXFSZ, no result
    assert result["rc"] == 128 + signal.SIGXFSZ and "File size limit exceeded" in result["module_stderr"]
    [leftover] = leftovers
    assert leftover.startswith(".report.json.") and leftover.endswith(".tmp")
    assert (reports / leftover).stat().st_size == limit  # cut in the middle of report.json
    # the next run, without the limit (and with an empty file among its inputs), writes all four and removes what
    # the killed one left
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    (tmp_path / "next").mkdir()
    [following] = run_tasks(cluster, [report(source="file", paths=[many, str(empty)], report_dir=str(reports),
                                             fail_on_unexpected=False)], tmp_path / "next").results
    assert not following.get("failed"), following.get("msg")
    assert following["warnings"] == [f"1 flow file(s) hold no line at all: {empty}"]
    assert sorted(os.listdir(reports)) == sorted(REPORT_FILES)
    saved = json.loads((reports / "report.json").read_text())
    assert saved["summary"]["unexpected_groups"] == 3000 and len((reports / "report.json").read_bytes()) > limit
    assert saved["summary"]["empty_files"] == [str(empty)] and saved["summary"]["complete"] is True


def test_stale_temporary_files_are_only_removed_when_their_writer_is_gone(tmp_path: Path) -> None:
    from ansible_collections.netpol.cilium.plugins.module_utils._audit_reports import remove_stale_temporaries

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(gone.stdout)
    names = [f".report.json.{dead_pid}.abc123.tmp", f".junit.xml.{os.getppid()}.x1.tmp", "report.json",
             f".other.{dead_pid}.abc.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert remove_stale_temporaries(str(tmp_path)) == [names[0]]
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])


def test_make_report_fails_before_reading_when_the_report_dir_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ReportFailure, match=f"report directory '{afile}' is not a directory \\(checked before "
                                            "reading any flow; nothing was written\\)"):
        make_report(params(source="file", paths=[str(REAL / "audit-ingress.jsonl")], report_dir=str(afile)))
    assert afile.read_text() == "x" and stat.S_ISREG(afile.stat().st_mode)
