"""Fleet rollouts: wave plans as Ansible's serial makes them, cluster records, the fleet summary and its renderers.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/plugins/module_utils/test_fleet.py`` and review
the diff: they are the specification of the fleet summary.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from ansible.executor.playbook_executor import PlaybookExecutor
from ansible.playbook.play import Play

from ansible_collections.netpol.cilium.plugins.filter.fleet import FilterModule
from ansible_collections.netpol.cilium.plugins.module_utils import _fleet

GOLDEN = Path(__file__).parent / "golden" / "fleet"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _ansible_batches(hosts: list[str], serial: list[Any]) -> list[list[str]]:
    """What ansible-core itself makes of ``serial`` (its own batching code, with a stand-in inventory)."""

    class Inventory:
        def get_hosts(self, pattern: Any, order: Any = None) -> list[str]:
            return list(hosts)

    executor = PlaybookExecutor.__new__(PlaybookExecutor)
    executor._inventory = Inventory()
    play = Play()
    play.serial = serial
    return executor._get_serialized_batches(play)


@pytest.mark.parametrize(
    ("count", "serial"),
    [
        (20, [1, "25%", "100%"]),
        (3, [1, "25%", "100%"]),
        (1, [1, "25%", "100%"]),
        (7, [2]),
        (10, ["10%", "30%"]),
        (5, [1, 1]),
        (9, ["50%"]),
        (4, [3, "100%"]),
    ],
)
def test_plan_waves_matches_ansible_serial_batches(count: int, serial: list[Any]) -> None:
    hosts = [f"cluster-{index:02d}" for index in range(count)]
    assert _fleet.plan_waves(hosts, serial) == _ansible_batches(hosts, serial)


def test_wave_sizes_from_survey_text_and_defaults() -> None:
    assert _fleet.parse_waves("1, 25%,100%") == [1, "25%", "100%"]
    assert _fleet.parse_waves(None) == [1, "25%", "100%"]
    assert _fleet.parse_waves("") == [1, "25%", "100%"]
    assert _fleet.parse_waves(["2", 3]) == [2, 3]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1,abc", "'abc' is not a wave size"),
        ([0], "at least 1"),
        (["0%"], "between 1% and 100%"),
        (["150%"], "between 1% and 100%"),
        ([True], "is not a wave size"),
        ({"a": 1}, "must be a list of wave sizes"),
        (5, "must be a list of wave sizes"),
    ],
)
def test_bad_wave_sizes_name_the_option(value: Any, message: str) -> None:
    with pytest.raises(_fleet.FleetError, match="fleet_waves") as error:
        _fleet.parse_waves(value)
    assert message in str(error.value)


def _gate(unexpected: list[str], passed: bool, complete: bool = True) -> dict[str, Any]:
    return {
        "passed": passed,
        "result": "pass" if passed else "fail",
        "complete": complete,
        "summary": {"audited": 203, "expected_groups": 1, "unexpected_groups": len(unexpected), "lost_events": 0},
        "unexpected": [{"description": text, "count": 24} for text in unexpected],
        "report_dir": "artifacts/c/gate",
    }


def _info(endpoints: list[dict[str, Any]] | None = None, ledger: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "changed": False,
        "audit_active": bool(endpoints),
        "where": {"cluster": False, "nodes": [], "endpoints": endpoints or []},
        "ledger": ledger or [],
        "guard": {"ok": True, "messages": []},
    }


def _fleet_state() -> dict[str, Any]:
    plan = _fleet.plan_waves(["canary", "eu-1", "eu-2", "us-1", "us-2"], [1, 2])
    passed_rollout = {"passed": True, "steps_done": ["apply", "audit", "gate", "enforce"], "gate": _gate([], True),
                      "enforce": {"enforced": True, "reverted": False, "unexpected_drops": []},
                      "artifacts_dir": "artifacts/canary", "started_at": "2026-11-27T09:00:00Z"}
    failed_rollout = {
        "passed": False, "stopped_at": "gate (Fail the play on unexpected denies or an incomplete window)",
        "error": "Audit gate failed for eu-2 (window ...):\n1 unexpected deny group(s)",
        "steps_done": ["apply", "audit"],
        "gate": _gate(["INGRESS monitoring/metrics-agent -> shop/db 9100/TCP"], False),
        "artifacts_dir": "artifacts/eu-2",
    }
    ledger = [{"scope": "endpoints", "scope_key": "endpoints", "enabled_at": "2026-11-27T09:01:00Z",
               "expires_at": "2026-11-28T09:01:00Z", "reason": "CHG-1234"}]
    on = [{"id": 3653, "node": "worker-3", "namespace": "shop", "pod": "db-0"}]
    records = [
        _fleet.cluster_record("canary", 1, rollout=passed_rollout, audit=_info()),
        _fleet.cluster_record("eu-1", 2, rollout=dict(passed_rollout, artifacts_dir="artifacts/eu-1"), audit=_info()),
        _fleet.cluster_record("eu-2", 2, rollout=failed_rollout, audit=_info(on, ledger)),
        _fleet.cluster_record("us-1", 3, audit=_info(), phase="preflight"),
        _fleet.cluster_record("us-2", 3, audit={"failed": True, "msg": "connection refused"}, phase="preflight"),
    ]
    return _fleet.fleet_summary(records, plan, started_at="2026-11-27T09:00:00Z", written_at="2026-11-27T09:20:00Z",
                                name="Fleet rollout CHG-1234")


def test_a_failed_wave_stops_the_fleet_and_later_clusters_are_not_started() -> None:
    state = _fleet_state()
    assert state["status"] == "stopped"
    assert not state["passed"]
    assert state["stopped_at_wave"] == 2
    assert [wave["status"] for wave in state["waves"]] == ["passed", "failed", "not started"]
    assert state["waves"][0]["canary"]
    assert state["counts"] == {"passed": 2, "failed": 1, "planned": 2, "preflight_failed": 0, "total": 5}
    assert state["audit_mode_on"] == ["eu-2"]
    assert state["audit_mode_unknown"] == ["us-2"]
    assert state["unexpected_denies"] == 1
    by_name = {record["cluster"]: record for record in state["clusters"]}
    assert by_name["us-1"]["note"] == "not started: the fleet stopped at wave 2"
    assert by_name["eu-2"]["why"] == (
        "1 unexpected deny group(s): INGRESS monitoring/metrics-agent -> shop/db 9100/TCP x24")
    assert by_name["eu-2"]["audit_mode"]["endpoints"] == ["shop/db-0 (endpoint 3653 on worker-3)"]


def test_fleet_status_passed_incomplete_and_preflight_failed() -> None:
    plan = [["a"], ["b"]]
    ok = {"passed": True, "steps_done": ["apply", "audit", "gate", "enforce"]}
    done = [_fleet.cluster_record(name, wave, rollout=ok, audit=_info()) for name, wave in (("a", 1), ("b", 2))]
    assert _fleet.fleet_summary(done, plan)["status"] == "passed"
    # the run ended after wave 1 (interrupted or --limit): not every wave ran, nothing failed
    partial = [done[0], _fleet.cluster_record("b", 2, audit=_info(), phase="preflight")]
    assert _fleet.fleet_summary(partial, plan)["status"] == "incomplete"
    # a cluster with no record at all counts as not started
    state = _fleet.fleet_summary([done[0]], plan)
    assert state["status"] == "incomplete"
    assert state["clusters"][1]["status"] == "planned"
    preflight = [_fleet.cluster_record("a", 1, audit=_info(), phase="preflight"),
                 _fleet.cluster_record("b", 2, error="Unauthorized", failed_task="Read audit mode", phase="preflight")]
    state = _fleet.fleet_summary(preflight, plan)
    assert state["status"] == "preflight_failed"
    assert state["stopped_at_wave"] is None
    assert [wave["status"] for wave in state["waves"]] == ["not started", "preflight failed"]
    assert state["clusters"][0]["note"] == "not started: the preflight failed on another cluster"
    assert state["clusters"][1]["stopped_at"] == "preflight (Read audit mode)"


def test_a_failure_outside_the_rollout_is_recorded_with_its_task() -> None:
    record = _fleet.cluster_record("a", 1, rollout=None, audit=None, error="argument spec: bad value",
                                   failed_task="Validating arguments against arg spec main")
    assert record["status"] == "failed"
    assert record["stopped_at"] == "fleet (Validating arguments against arg spec main)"
    assert record["why"] == "argument spec: bad value"
    assert not record["audit_mode"]["known"]
    # the role's own result, but the play failed afterwards: the failure wins
    record = _fleet.cluster_record("a", 1, rollout={"passed": True}, error="boom", failed_task="x")
    assert record["status"] == "failed"
    missing = _fleet.cluster_record("a", 1, rollout=None)
    assert missing["status"] == "failed"
    assert "policy_rollout_result is missing" in missing["error"]


def test_why_prefers_unexpected_drops_and_incomplete_windows_over_the_raw_error() -> None:
    rollout = {"passed": False, "stopped_at": "enforce", "error": "Enforce watch failed ...",
               "gate": _gate([], True),
               "enforce": {"enforced": True, "reverted": True,
                           "unexpected_drops": [{"description": f"EGRESS shop/api -> world {port}/TCP"}
                                                for port in (1, 2, 3, 4)]}}
    why = _fleet.cluster_record("a", 1, rollout=rollout)["why"]
    assert why.startswith("4 unexpected policy drop group(s) after enforcing: EGRESS shop/api -> world 1/TCP;")
    assert why.endswith("; and 1 more")
    rollout = {"passed": False, "stopped_at": "gate", "error": "Audit window incomplete: 0 flows\nmore",
               "gate": _gate([], False, complete=False)}
    assert _fleet.cluster_record("a", 1, rollout=rollout)["why"] == (
        "the observation window is incomplete: Audit window incomplete: 0 flows")


def test_junit_is_valid_with_one_case_per_cluster() -> None:
    root = ET.fromstring(_fleet.render_junit(_fleet_state()))
    assert root.attrib["tests"] == "5"
    assert root.attrib["failures"] == "1"
    assert root.attrib["skipped"] == "2"
    cases = {case.attrib["name"]: case for case in root.iter("testcase")}
    assert set(cases) == {"canary", "eu-1", "eu-2", "us-1", "us-2"}
    failure = cases["eu-2"].find("failure")
    assert failure is not None
    assert "INGRESS monitoring/metrics-agent -> shop/db 9100/TCP" in failure.attrib["message"]
    assert cases["us-1"].find("skipped") is not None


def test_large_fleets_draw_one_box_per_wave() -> None:
    hosts = [f"c{index}" for index in range(100)]
    plan = _fleet.plan_waves(hosts, [1, "25%", "100%"])
    records = [_fleet.cluster_record(name, _fleet.wave_of(name, plan), audit=_info(), phase="preflight")
               for name in hosts]
    markdown = _fleet.render_markdown(_fleet.fleet_summary(records, plan))
    graph = markdown.split("```mermaid")[1].split("```")[0]
    assert graph.count('["') == 3 + 3  # three wave titles, three boxes
    assert "74 not started" in graph


@pytest.mark.parametrize("name", ["summary.md", "junit.xml", "summary.json"])
def test_renderers_match_the_golden_files(name: str) -> None:
    state = _fleet_state()
    text = {"summary.md": _fleet.render_markdown(state), "junit.xml": _fleet.render_junit(state),
            "summary.json": json.dumps(state, indent=2, sort_keys=True) + "\n"}[name]
    golden = GOLDEN / f"{name}.golden"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_filters_turn_bad_input_into_filter_errors() -> None:
    from ansible.errors import AnsibleFilterError

    filters = FilterModule().filters()
    assert filters["fleet_wave_sizes"]("1,25%") == [1, "25%"]
    assert filters["fleet_waves"](["a", "b", "c"], "1,100%") == [["a"], ["b", "c"]]
    record = filters["fleet_record"](None, "b", plan=[["a"], ["b", "c"]], phase="preflight")
    assert record["wave"] == 2
    with pytest.raises(AnsibleFilterError, match="netpol.cilium.fleet_wave_sizes: fleet_waves: 'x' is not"):
        filters["fleet_wave_sizes"]("x")
    with pytest.raises(AnsibleFilterError, match="phase must be"):
        filters["fleet_record"](None, "a", phase="later")
