"""Kubernetes label and field selectors, parsed and matched the way the API server does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


class SelectorError(ValueError):
    """A selector string the API server would reject with 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects that lack the key, as in Kubernetes.
        return not present or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``app=db,tier in (a,b),!legacy`` into requirements; raise SelectorError on bad syntax."""
    if not text or not text.strip():
        return []
    requirements: list[Requirement] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in '{text}'")
        match = re.fullmatch(rf"(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)", part)
        if match:
            values = tuple(v.strip() for v in match.group("values").split(",") if v.strip())
            requirements.append(Requirement(match.group("key"), match.group("op"), values))
            continue
        match = re.fullmatch(rf"(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})", part)
        if match:
            operator = "!=" if match.group("op") == "!=" else "="
            requirements.append(Requirement(match.group("key"), operator, (match.group("value"),)))
            continue
        match = re.fullmatch(rf"!\s*(?P<key>{_KEY})", part)
        if match:
            requirements.append(Requirement(match.group("key"), "!"))
            continue
        match = re.fullmatch(rf"(?P<key>{_KEY})", part)
        if match:
            requirements.append(Requirement(match.group("key"), "exists"))
            continue
        raise SelectorError(f"unable to parse requirement: <nil>: Invalid value: \"{part}\": invalid label selector")
    return requirements


def match_labels(requirements: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(req.matches(labels) for req in requirements)


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    """Parse ``spec.nodeName=n1,metadata.name!=x`` into (path, operator, value) triples."""
    if not text or not text.strip():
        return []
    result: list[tuple[str, str, str]] = []
    for raw in text.split(","):
        part = raw.strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        operator = "!=" if match.group(2) == "!=" else "="
        result.append((match.group(1), operator, match.group(3)))
    return result


def _field_value(obj: dict[str, Any], path: str) -> str:
    current: Any = obj
    for key in path.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(key)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def match_fields(selectors: list[tuple[str, str, str]], obj: dict[str, Any]) -> bool:
    for path, operator, value in selectors:
        actual = _field_value(obj, path)
        if (operator == "=") != (actual == value):
            return False
    return True


def match_label_selector_object(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Match a ``metav1.LabelSelector`` object (matchLabels + matchExpressions)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expression in selector.get("matchExpressions") or []:
        operator = operators.get(expression.get("operator", ""))
        if operator is None:
            return False
        req = Requirement(expression["key"], operator, tuple(expression.get("values") or ()))
        if not req.matches(labels):
            return False
    return True
