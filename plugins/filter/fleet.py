# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Filters for fleet rollouts (playbooks/fleet_rollout.yml): the wave plan, one record per cluster, the summary.

The logic lives in ``plugins/module_utils/_fleet.py`` (plain Python, unit-tested); these are thin front doors that
turn its errors into ``AnsibleFilterError``. Documentation: the ``fleet_*.yml`` files next to this one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.netpol.cilium.plugins.module_utils import _fleet


def _guarded(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except _fleet.FleetError as error:
            raise AnsibleFilterError(f"netpol.cilium.{name}: {error}") from error

    wrapper.__name__ = name
    wrapper.__doc__ = function.__doc__
    return wrapper


def fleet_wave_sizes(waves: Any = None) -> list[int | str]:
    """The wave sizes for a play's ``serial``, from a list or from text such as ``1,25%,100%``."""
    return _fleet.parse_waves(waves)


def fleet_waves(clusters: Sequence[str], waves: Any = None) -> list[list[str]]:
    """The clusters of each wave, as ``serial: <waves>`` runs them."""
    return _fleet.plan_waves(list(clusters), waves)


def fleet_record(
    rollout: Mapping[str, Any] | None,
    cluster: str,
    plan: Sequence[Sequence[str]] | None = None,
    audit: Mapping[str, Any] | None = None,
    error: str | None = None,
    failed_task: str | None = None,
    phase: str = "rollout",
) -> dict[str, Any]:
    """One cluster's record, from its ``policy_rollout_result`` (or none) and a ``cilium_audit_mode_info`` result."""
    wave = _fleet.wave_of(str(cluster), plan or [])
    return _fleet.cluster_record(str(cluster), wave, rollout=rollout or None, audit=audit or None, error=error or None,
                                 failed_task=failed_task or None, phase=phase)


def fleet_summary(records: Sequence[Mapping[str, Any]], waves: Sequence[Sequence[str]], started_at: str | None = None,
                  written_at: str | None = None, name: str | None = None) -> dict[str, Any]:
    """The fleet's state from every cluster's record and the wave plan."""
    return _fleet.fleet_summary(list(records), waves, started_at=started_at, written_at=written_at, name=name)


def fleet_markdown(summary: Mapping[str, Any]) -> str:
    """The fleet summary as Markdown (with a Mermaid picture of the waves)."""
    return _fleet.render_markdown(summary)


def fleet_junit(summary: Mapping[str, Any]) -> str:
    """The fleet summary as JUnit XML."""
    return _fleet.render_junit(summary)


class FilterModule:
    """Fleet rollout filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {name: _guarded(function, name) for name, function in (
            ("fleet_wave_sizes", fleet_wave_sizes),
            ("fleet_waves", fleet_waves),
            ("fleet_record", fleet_record),
            ("fleet_summary", fleet_summary),
            ("fleet_markdown", fleet_markdown),
            ("fleet_junit", fleet_junit),
        )}
