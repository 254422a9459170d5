# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Argument specs shared by our modules (they mirror plugins/doc_fragments/_cilium.py).

Note that this module util is PRIVATE to the collection. It can change at any time.
"""

from __future__ import annotations

import copy
import re
from typing import Any

CILIUM_ARG_SPEC: dict[str, Any] = {
    "cilium_namespace": {"type": "str", "default": "kube-system"},
    "agent_binary": {"type": "str", "choices": ["auto", "cilium-dbg", "cilium"], "default": "auto"},
    "exec_timeout": {"type": "int", "default": 60},
    "api_timeout": {"type": "int", "default": 30},
    "max_parallel_nodes": {"type": "int", "default": 10},
}

SELECTION_ARG_SPEC: dict[str, Any] = {
    "endpoint_ids": {"type": "list", "elements": "raw"},
    "nodes": {"type": "list", "elements": "str"},
    "pods": {"type": "list", "elements": "str"},
    "namespace": {"type": "str"},
    "label_selector": {"type": "str"},
    "policy": {"type": "str"},
    "allow_empty": {"type": "bool", "default": False},
}


# A duration: units in this order, each optional, at least one (``2w``, ``1d12h``, ``1h30m``, ``90s``).
_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNIT_SECONDS = (604800, 86400, 3600, 60, 1)


def duration_seconds(text: str, *, weeks: bool = True) -> int | None:
    """The seconds of a duration such as ``1d12h`` (any case, spaces around it allowed), or None when ``text`` is
    not one (or names weeks where ``weeks`` is false). The options' own parsers say what they accept."""
    match = _DURATION.match(text.strip().lower())
    if not match or not any(match.groups()) or (match.group(1) and not weeks):
        return None
    return sum(int(number or 0) * size for number, size in zip(match.groups(), _UNIT_SECONDS))


def merged(*specs: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for spec in specs:
        result.update(copy.deepcopy(spec))
    return result


def check_ranges(params: dict[str, Any]) -> None:
    """Refuse values the spec types cannot express (ValueError names the option and what was expected)."""
    if params["exec_timeout"] < 1:
        raise ValueError(f"exec_timeout: expected a number of seconds of at least 1, got {params['exec_timeout']}")
    if params.get("api_timeout") is not None and params["api_timeout"] < 1:
        raise ValueError(f"api_timeout: expected a number of seconds of at least 1, got {params['api_timeout']}")
    if not 1 <= params["max_parallel_nodes"] <= 100:
        raise ValueError(f"max_parallel_nodes: expected 1 to 100, got {params['max_parallel_nodes']}")


def binary_option(params: dict[str, Any]) -> str | None:
    return None if params.get("agent_binary") in (None, "auto") else params["agent_binary"]
