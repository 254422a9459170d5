"""The audit-mode guard and the ledger's durations: what counts as expired, unledgered or stale."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.netpol.cilium.plugins.module_utils._guard import check
from ansible_collections.netpol.cilium.plugins.module_utils._ledger import expires_at, parse_duration

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
DB = {"id": 1742, "node": "w3", "namespace": "shop", "pod": "db-0"}


def entry(key: str, scope: str, expires: str | None, **extra) -> dict:
    return {"scope_key": key, "scope": scope, "enabled_at": "2026-11-27T12:00:00Z", "expires_at": expires,
            "reason": "CHG-1", "enabled_by": "alice@ctl", **extra}


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("90m", 5400), ("1d12h", 129600), ("2w", 1209600),
                                               ("45s", 45), (" 3H ", 10800)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "1h 30m", "-1h", "0m", "tomorrow", None, "1y", "30m1h",
                                  "1h1h"])
def test_bad_durations_name_the_option(text) -> None:
    with pytest.raises(ValueError, match="^audit_max_duration: expected a duration"):
        parse_duration(text, "audit_max_duration")


def test_expiry_counts_from_the_first_enable() -> None:
    assert expires_at("2026-11-27T12:00:00Z", "1d12h") == "2026-11-29T00:00:00Z"
    assert expires_at("yesterday", "1h") is None and expires_at("2026-11-27T12:00:00Z", "soon") is None


def test_nothing_on_and_no_ledger_is_ok() -> None:
    result = check({"cluster": False, "nodes": [], "endpoints": []}, False, [], NOW)
    assert result == {"ok": True, "checked_at": "2026-11-28T12:00:00Z", "expired": [], "unledgered": [], "stale": [],
                      "messages": []}


def test_an_endpoint_within_its_expiry_is_ok_and_past_it_is_expired() -> None:
    where = {"cluster": False, "nodes": [], "endpoints": [DB]}
    fresh = entry("endpoints.a", "endpoints", "2026-11-28T12:00:01Z", endpoints=[DB])
    assert check(where, False, [fresh], NOW)["ok"] is True
    old = dict(fresh, expires_at="2026-11-28T12:00:00Z")  # the expiry instant itself is past
    result = check(where, False, [old], NOW)
    assert result["ok"] is False and result["unledgered"] == []
    assert result["expired"] == [{
        "where": "endpoint w3/1742 shop/db-0", "kind": "endpoint", **DB, "scope_key": "endpoints.a",
        "scope": "endpoints", "enabled_at": "2026-11-27T12:00:00Z", "expires_at": "2026-11-28T12:00:00Z",
        "reason": "CHG-1", "enabled_by": "alice@ctl"}]
    assert result["messages"] == ["endpoint w3/1742 shop/db-0: audit mode on since 2026-11-27T12:00:00Z, expired "
                                  "2026-11-28T12:00:00Z (reason: CHG-1; enabled by alice@ctl)"]


def test_an_entry_without_an_expiry_counts_as_expired() -> None:
    result = check({"cluster": True, "nodes": [], "endpoints": []}, True, [entry("cluster.x", "cluster", None)], NOW)
    assert [f["where"] for f in result["expired"]] == ["cluster (every agent)"]
    assert "(no expiry recorded)" in result["messages"][0]


def test_wider_scopes_cover_narrower_places_and_one_live_entry_is_enough() -> None:
    where = {"cluster": False, "nodes": ["w1"], "endpoints": [DB]}
    node_entry = entry("nodes.n", "nodes", "2026-11-29T00:00:00Z", nodes=["w1", "w3"])
    assert check(where, False, [node_entry], NOW)["ok"] is True
    expired_endpoint = entry("endpoints.a", "endpoints", "2026-11-01T00:00:00Z", endpoints=[DB])
    assert check(where, False, [expired_endpoint, node_entry], NOW)["ok"] is True
    cluster = entry("cluster.x", "cluster", "2026-11-29T00:00:00Z")
    assert check(where, False, [cluster], NOW)["ok"] is True


def test_unledgered_places_and_stale_entries() -> None:
    where = {"cluster": False, "nodes": ["w2"], "endpoints": [DB]}
    other = entry("endpoints.b", "endpoints", "2026-11-29T00:00:00Z",
                  endpoints=[{"id": 99, "node": "w3", "namespace": "shop", "pod": "web-0"}])
    result = check(where, False, [other], NOW)
    assert [(f["where"], f["kind"]) for f in result["unledgered"]] == [
        ("node w2", "node"), ("endpoint w3/1742 shop/db-0", "endpoint")]
    assert result["stale"] == [{"scope_key": "endpoints.b", "scope": "endpoints", "enabled_at": "2026-11-27T12:00:00Z",
                                "expires_at": "2026-11-29T00:00:00Z"}]
    assert result["messages"][0] == ("node w2: audit mode on with no ledger entry (not switched on by netpol.cilium, "
                                     "or its entry was removed)")


def test_cilium_config_asking_for_audit_mode_is_checked_before_the_agents_restart() -> None:
    result = check({"cluster": False, "nodes": [], "endpoints": []}, True, [], NOW)
    assert [f["where"] for f in result["unledgered"]] == ["cluster (cilium-config; agents not restarted)"]
