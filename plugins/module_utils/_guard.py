# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""The audit-mode guard: where audit mode is on past its expiry, or on with no ledger entry at all.

Note that this module util is PRIVATE to the collection. It can change at any time.

Plain data in, plain data out: ``where`` is what cilium_audit_mode_info found on (cluster-wide, nodes, endpoints,
and whether cilium-config asks for it), ``ledger`` its ledger entries. A place that is on is covered by an entry
of its own scope or of a wider one (an endpoint by an entry of its node or of the cluster). Covered places whose
entries have all expired (or never had an expiry) are ``expired``; places no entry covers are ``unledgered``;
entries that cover nothing that is on any more are ``stale`` (reported, harmless).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ._ledger import format_time, parse_time


def _endpoint_name(endpoint: dict[str, Any]) -> str:
    pod = f"{endpoint.get('namespace')}/{endpoint.get('pod')}" if endpoint.get("pod") else "(no pod)"
    return f"endpoint {endpoint.get('node')}/{endpoint.get('id')} {pod}"


def _covers(entry: dict[str, Any], kind: str, node: str | None = None, endpoint_id: Any = None) -> bool:
    scope = entry.get("scope")
    if scope == "cluster":
        return True
    if scope == "nodes":
        return kind != "cluster" and node in (entry.get("nodes") or [])
    if scope == "endpoints":
        return kind == "endpoint" and any(e.get("node") == node and e.get("id") == endpoint_id
                                          for e in entry.get("endpoints") or [])
    return False


def _expired(entry: dict[str, Any], now: dt.datetime) -> bool:
    expiry = parse_time(entry.get("expires_at"))
    return expiry is None or expiry <= now


def check(where: dict[str, Any], config_on: bool, ledger: list[dict[str, Any]],
          now: dt.datetime | None = None) -> dict[str, Any]:
    """The guard's findings (``ok`` is true when there are neither expired nor unledgered places)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    places: list[tuple[str, str, str | None, Any, dict[str, Any]]] = []  # (label, kind, node, id, details)
    if where.get("cluster") or config_on:
        label = "cluster (every agent)" if where.get("cluster") else "cluster (cilium-config; agents not restarted)"
        places.append((label, "cluster", None, None, {}))
    for node in where.get("nodes") or []:
        places.append((f"node {node}", "node", node, None, {"node": node}))
    for endpoint in where.get("endpoints") or []:
        places.append((_endpoint_name(endpoint), "endpoint", endpoint.get("node"), endpoint.get("id"),
                       {k: endpoint.get(k) for k in ("id", "node", "namespace", "pod")}))
    expired: list[dict[str, Any]] = []
    unledgered: list[dict[str, Any]] = []
    used: set[str] = set()
    for label, kind, node, endpoint_id, details in places:
        covering = [e for e in ledger if _covers(e, kind, node, endpoint_id)]
        used.update(str(e.get("scope_key")) for e in covering)
        finding = {"where": label, "kind": kind, **details}
        if not covering:
            unledgered.append(finding)
        elif all(_expired(e, now) for e in covering):
            latest = max(covering, key=lambda e: e.get("expires_at") or "")
            expired.append({**finding, "scope_key": latest.get("scope_key"), "scope": latest.get("scope"),
                            "enabled_at": latest.get("enabled_at"), "expires_at": latest.get("expires_at"),
                            "reason": latest.get("reason"), "enabled_by": latest.get("enabled_by")})
    stale = [{"scope_key": e.get("scope_key"), "scope": e.get("scope"), "enabled_at": e.get("enabled_at"),
              "expires_at": e.get("expires_at")} for e in ledger if str(e.get("scope_key")) not in used]
    messages = [f"{f['where']}: audit mode on since {f['enabled_at'] or '(unknown)'}, expired "
                f"{f['expires_at'] or '(no expiry recorded)'} (reason: {f['reason'] or 'none given'}; enabled by "
                f"{f['enabled_by'] or 'unknown'})" for f in expired]
    messages += [f"{f['where']}: audit mode on with no ledger entry (not switched on by netpol.cilium, or its entry "
                 "was removed)" for f in unledgered]
    return {"ok": not expired and not unledgered, "checked_at": format_time(now), "expired": expired,
            "unledgered": unledgered, "stale": stale, "messages": messages}
