# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""The audit-mode ledger: what this collection switched on, where, when and why, kept in the cluster itself.

Note that this module util is PRIVATE to the collection. It can change at any time.

Audit mode gives no isolation, so the cluster must remember it is on. Each enable writes one entry (a JSON value) to
the ConfigMap ``netpol-cilium-audit-ledger`` in the Cilium namespace, keyed by scope and selection; a disable of the
same scope removes it. Re-runs compare against the entry to tell endpoints that were reset by an agent restart from
new ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from ._args import duration_seconds
from ._k8s import Kube, KubeError

LEDGER_CONFIGMAP = "netpol-cilium-audit-ledger"


def utc_now() -> str:
    return format_time(dt.datetime.now(dt.timezone.utc))


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    """A ledger time (``2026-11-27T04:11:37Z``) as an aware datetime; None when missing or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def parse_duration(value: Any, option: str = "max_duration") -> dt.timedelta:
    """``24h``, ``90m``, ``1d12h`` or ``2w`` (units w, d, h, m, s) as a positive timedelta (ValueError names it)."""
    seconds = duration_seconds(str(value)) if value is not None else None
    if seconds is None:
        raise ValueError(f"{option}: expected a duration such as 24h, 90m, 1d12h or 2w (units w, d, h, m, s, in "
                         f"that order), got {value!r}")
    if seconds <= 0:
        raise ValueError(f"{option}: expected a duration longer than zero, got {value!r}")
    return dt.timedelta(seconds=seconds)


def expires_at(enabled_at: str, max_duration: str) -> str | None:
    """When an entry enabled at ``enabled_at`` for ``max_duration`` expires (None when either is unreadable)."""
    start = parse_time(enabled_at)
    if start is None:
        return None
    try:
        return format_time(start + parse_duration(max_duration))
    except ValueError:
        return None


def scope_key(scope: str, selection: dict[str, Any]) -> str:
    """A stable ConfigMap key for one scope + selection (ConfigMap keys allow [-._a-zA-Z0-9])."""
    canonical = json.dumps({"scope": scope, **selection}, sort_keys=True, separators=(",", ":"))
    return f"{scope}.{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


class Ledger:
    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def _read(self) -> Any | None:
        try:
            return self.kube.call(f"read ConfigMap {self.namespace}/{LEDGER_CONFIGMAP}",
                                  self.kube.core.read_namespaced_config_map, LEDGER_CONFIGMAP, self.namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def entries(self) -> dict[str, dict[str, Any]]:
        config = self._read()
        result: dict[str, dict[str, Any]] = {}
        for key, value in ((config.data or {}) if config else {}).items():
            try:
                result[key] = json.loads(value)
            except ValueError:
                result[key] = {"raw": value}
        return result

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries().get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        value = json.dumps(entry, sort_keys=True)
        config = self._read()
        if config is None:
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": LEDGER_CONFIGMAP, "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "netpol.cilium"},
                                 "annotations": {"netpol.cilium/description": "Where policy audit mode was switched "
                                                 "on by netpol.cilium (audit mode gives no isolation)"}},
                    "data": {key: value}}
            try:  # retried like a read: a create that did happen answers 409 the next time, and we patch
                self.kube.call(f"create ConfigMap {self.namespace}/{LEDGER_CONFIGMAP}",
                               self.kube.core.create_namespaced_config_map, self.namespace, body)
                return
            except KubeError as exc:
                if exc.status != 409:
                    raise
        self.kube.call(f"patch ConfigMap {self.namespace}/{LEDGER_CONFIGMAP}",
                       self.kube.core.patch_namespaced_config_map, LEDGER_CONFIGMAP, self.namespace,
                       {"data": {key: value}}, on_conflict=lambda: self._value(key) != value)

    def remove(self, key: str) -> bool:
        config = self._read()
        if config is None or key not in (config.data or {}):
            return False
        self.kube.call(f"patch ConfigMap {self.namespace}/{LEDGER_CONFIGMAP}",
                       self.kube.core.patch_namespaced_config_map, LEDGER_CONFIGMAP, self.namespace,
                       {"data": {key: None}}, on_conflict=lambda: self._value(key) is not None)
        return True

    def _value(self, key: str) -> str | None:
        """The raw value of one entry as the API has it now (after a 409 Conflict: is our write still needed?)."""
        config = self._read()
        return ((config.data or {}) if config else {}).get(key)
