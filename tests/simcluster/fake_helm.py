"""A fake ``helm`` (Helm 3 CLI) that knows one chart, ``cilium``, and keeps its releases in the Kubernetes API.

The point is fidelity where our product can go wrong: value merging on ``helm upgrade`` (``--reuse-values``,
``--reset-values``, ``--reset-then-reuse-values``), an unpinned ``--version`` silently upgrading Cilium, release
records stored exactly like Helm's secrets driver, and the live objects changing the way a real chart upgrade
changes them. It is driven through ``main(argv)`` (the ``tests/bin/helm`` wrapper) by our roles, by
kubernetes.core's ``helm``/``helm_info`` modules and by tests; the pieces are importable for scenario seeding.

Layers, top-down: the command line (flag parsing, commands, output formats) -> release actions (install,
upgrade, rollback, uninstall) over two small interfaces (``ReleaseStorage`` for the release records,
``ClusterApplier`` for the rendered objects) -> the Kubernetes implementations of those interfaces (they take a
``kubernetes.client.ApiClient``) -> pure parts (chart catalogue, ``--set`` parsing, value coalescing, rendering,
release encoding) that import nothing from the ``kubernetes`` package.

Environment knobs for tests:

- ``FAKE_HELM_LOG``: append every invocation's argv (a JSON list) as one line to this file.
- ``FAKE_HELM_FAIL_UPGRADE``: ``1``/``before`` fails upgrades before any object changes; ``after`` applies the
  objects and then fails like a ``--wait`` timeout. Either way a ``failed`` revision is written and helm exits 1.
- ``FAKE_HELM_FAIL_ROLLBACK=1``: rollbacks write a ``failed`` revision and exit 1.
- ``FAKE_HELM_WAIT=1``: ``--wait``/``--atomic`` really poll the DaemonSet/Deployments until ready (bounded by
  ``--timeout``); without it ``--wait`` is accepted and returns at once.
- ``FAKE_HELM_PLUGINS=diff``: pretend the helm-diff plugin is installed (``helm plugin list``, ``helm diff upgrade``).
- ``FAKE_HELM_CHART_VERSIONS``: comma-separated chart versions the ``cilium`` repository offers.
- ``FAKE_HELM_VERSION``: the version ``helm version`` reports (default below).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import difflib
import gzip
import hashlib
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, Any, NamedTuple, Protocol

import yaml

# --------------------------------------------------------------------------------------------------------------
# Identity of the fake binary and of its one chart
# --------------------------------------------------------------------------------------------------------------

# A Helm 3 release new enough for every kubernetes.core version gate (take_ownership needs 3.17); the commit and
# Go version are placeholders in the shape `helm version` prints.
HELM_VERSION = "v3.17.3"
HELM_GIT_COMMIT = "e4da49785aa6e6ee2b86efd5dd9e43400318262b"
HELM_GO_VERSION = "go1.23.7"
HELM_DIFF_VERSION = "3.9.14"

CHART_NAME = "cilium"
CHART_REPO_URL = "https://helm.cilium.io/"
DEFAULT_CHART_VERSIONS = ("1.14.19", "1.15.1", "1.15.6", "1.16.5")

RELEASE_SECRET_TYPE = "helm.sh/release.v1"
CHECKSUM_ANNOTATION = "cilium.io/cilium-configmap-checksum"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RELEASE_NAME_ANNOTATION = "meta.helm.sh/release-name"
RELEASE_NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"


class HelmError(Exception):
    """A failure reported the way helm does: ``Error: <message>`` on stderr, exit status 1."""


# --------------------------------------------------------------------------------------------------------------
# Chart catalogue (pure)
# --------------------------------------------------------------------------------------------------------------


def known_chart_versions(env: Mapping[str, str] | None = None) -> list[str]:
    """The versions the ``cilium`` repository offers, oldest first."""
    env = os.environ if env is None else env
    raw = env.get("FAKE_HELM_CHART_VERSIONS", "")
    versions = [v.strip().lstrip("v") for v in raw.split(",") if v.strip()] or list(DEFAULT_CHART_VERSIONS)
    return sorted(set(versions), key=_semver_sort_key)


def chart_metadata(version: str) -> dict[str, Any]:
    """Chart.yaml of ``cilium`` at ``version`` (appVersion equals the chart version, as for Cilium)."""
    return {
        "annotations": {"artifacthub.io/license": "Apache-2.0"},
        "apiVersion": "v2",
        "appVersion": version,
        "description": "eBPF-based Networking, Security, and Observability",
        "home": "https://cilium.io/",
        "icon": "https://cdn.jsdelivr.net/gh/cilium/cilium@main/Documentation/images/logo-solo.svg",
        "keywords": ["BPF", "eBPF", "Kubernetes", "Networking", "Security", "Observability", "Troubleshooting"],
        "kubeVersion": ">= 1.16.0-0",
        "name": CHART_NAME,
        "sources": ["https://github.com/cilium/cilium"],
        "version": version,
    }


def chart_default_values(version: str) -> dict[str, Any]:
    """A small but realistic slice of the chart's values.yaml.

    Like the real chart, there is NO ``policyAuditMode`` key (the template tests it with ``hasKey``), Hubble is on
    while Hubble Relay is off by default, and ``rollOutCiliumPods`` is false.
    """
    kpr = "disabled" if _semver_sort_key(version) < _semver_sort_key("1.15.0") else "false"
    return {
        "bpf": {"events": {"policyVerdict": {"enabled": True}}, "monitorAggregation": "medium"},
        "cluster": {"id": 0, "name": "default"},
        "debug": {"enabled": False},
        "hubble": {
            "enabled": True,
            "eventBufferCapacity": "4095",
            "listenAddress": ":4244",
            "relay": {"enabled": False, "rollOutPods": False,
                      "image": {"repository": "quay.io/cilium/hubble-relay", "tag": f"v{version}"}},
            "ui": {"enabled": False},
        },
        "image": {"pullPolicy": "IfNotPresent", "repository": "quay.io/cilium/cilium", "tag": f"v{version}",
                  "useDigest": False},
        "ipam": {"mode": "cluster-pool",
                 "operator": {"clusterPoolIPv4MaskSize": 24, "clusterPoolIPv4PodCIDRList": ["10.0.0.0/8"]}},
        "kubeProxyReplacement": kpr,
        "operator": {"enabled": True, "replicas": 2, "rollOutPods": False,
                     "image": {"repository": "quay.io/cilium/operator", "suffix": "", "tag": f"v{version}"}},
        "policyEnforcementMode": "default",
        "rollOutCiliumPods": False,
        "routingMode": "",
        "tunnelProtocol": "",
    }


def chart_notes(version: str, values: Mapping[str, Any]) -> str:
    """The chart's NOTES.txt, rendered."""
    minor = ".".join(version.split(".")[:2])
    hubble = _go_truthy(dig(values, "hubble.enabled"))
    relay = hubble and _go_truthy(dig(values, "hubble.relay.enabled"))
    flavour = " with Hubble Relay" if relay else (" with Hubble" if hubble else "")
    return (f"You have successfully installed Cilium{flavour}.\n\nYour release version is {version}.\n\n"
            f"For any further help, visit https://docs.cilium.io/en/v{minor}/gettinghelp\n")


def build_chart(version: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``chart`` object of a release record (Helm's JSON shape of ``chart.Chart``)."""
    chart_values = chart_default_values(version) if values is None else copy.deepcopy(dict(values))
    return {"metadata": chart_metadata(version), "lock": None, "templates": [], "values": _sorted_map(chart_values),
            "schema": None, "files": []}


# --------------------------------------------------------------------------------------------------------------
# Versions and chart references (pure)
# --------------------------------------------------------------------------------------------------------------

_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
_CONSTRAINT = re.compile(
    r"^(!=|>=|<=|=>|=<|==|=|>|<|~>|~|\^)?\s*v?([0-9xX*]+(?:\.[0-9xX*]+){0,2}(?:-[0-9A-Za-z.-]+)?)$")


def _semver_sort_key(version: str) -> tuple[int, int, int, int, str]:
    match = _SEMVER.match(version.strip())
    if not match:
        return (-1, -1, -1, 0, version)
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor or 0), int(patch or 0), 0 if pre else 1, pre or "")


def _constraint_matches(version: str, constraint: str) -> bool:
    """Masterminds-style semver constraint (the subset Helm users write): ``1.15.1``, ``1.15.x``, ``~1.15``,
    ``^1.15.0``, ``>=1.15.0 <1.16.0``, ``>=1.14,<1.16``, ``a || b``."""
    key = _semver_sort_key(version)
    if key[0] < 0:
        return False
    for alternative in constraint.split("||"):
        parts = [p for p in re.split(r"\s*,\s*|\s+(?=[<>=!~^v0-9])", alternative.strip()) if p]
        if parts and all(_single_constraint(key, p) for p in parts):
            return True
    return False


def _single_constraint(key: tuple[int, int, int, int, str], text: str) -> bool:
    match = _CONSTRAINT.match(text.strip())
    if not match:
        raise HelmError(f"improper constraint: {text}")
    op, target = match.group(1) or "=", match.group(2)
    pieces = target.split("-", 1)[0].split(".")
    wild = [p.lower() in ("x", "*") for p in pieces] + [True] * (3 - len(pieces))
    nums = [0 if w else int(p) for p, w in zip(pieces + ["0"] * (3 - len(pieces)), wild, strict=True)]
    fixed = next((i for i, w in enumerate(wild) if w), 3)
    version = key[:3]
    if key[3] == 0 and "-" not in target:  # pre-releases only match constraints that name one
        return False
    low = tuple(nums)

    def upper(position: int) -> tuple[int, int, int]:
        if position <= 0:
            return (nums[0] + 1, 0, 0)
        if position == 1:
            return (nums[0], nums[1] + 1, 0)
        return (nums[0], nums[1], nums[2] + 1)

    if op in ("=", "=="):
        return version == low if fixed == 3 else low <= version < upper(fixed - 1)
    if op == "!=":
        return not (version == low if fixed == 3 else low <= version < upper(fixed - 1))
    if op == ">":
        return version > low if fixed == 3 else version >= upper(fixed - 1)
    if op in (">=", "=>"):
        return version >= low
    if op == "<":
        return version < low
    if op in ("<=", "=<"):
        return version <= low if fixed == 3 else version < upper(fixed - 1)
    if op in ("~", "~>"):
        return low <= version < upper(0 if fixed == 1 else 1)
    # caret: the leftmost non-zero part is fixed
    if nums[0] > 0 or fixed == 1:
        return low <= version < upper(0)
    if nums[1] > 0 or fixed == 2:
        return low <= version < upper(1)
    return low <= version < upper(2)


def select_chart_version(available: Iterable[str], constraint: str | None, devel: bool = False) -> str | None:
    """The newest available version matching ``constraint``; with no constraint, the newest stable version
    (which is exactly how an unpinned ``helm upgrade`` ends up upgrading Cilium)."""
    candidates = sorted(available, key=_semver_sort_key, reverse=True)
    if not constraint:
        for version in candidates:
            if devel or _semver_sort_key(version)[3] == 1:
                return version
        return None
    wanted = constraint.strip()
    for version in candidates:
        if version == wanted.lstrip("v"):
            return version
    if devel and "-" not in wanted:
        wanted = wanted + "-0" if _SEMVER.match(wanted) else wanted
    for version in candidates:
        if _constraint_matches(version, wanted):
            return version
    return None


@dataclasses.dataclass(frozen=True)
class ChartRef:
    """A resolved chart reference: which chart, and a version fixed by the reference itself (a ``.tgz`` file or
    an OCI tag), if any."""

    ref: str
    name: str
    pinned_version: str | None = None
    repo: str | None = None


def resolve_chart_ref(ref: str, repo_url: str | None = None) -> ChartRef:
    """Accept ``cilium/cilium`` (any repository alias), ``oci://.../cilium[:tag]``, a path or URL ending in
    ``cilium`` or ``cilium-<version>.tgz``, or ``cilium`` together with ``--repo``."""
    text = ref.strip()
    if not text:
        raise HelmError("chart reference is empty")
    if text.endswith(".tgz"):
        base = text.rstrip("/").rsplit("/", 1)[-1][: -len(".tgz")]
        match = re.match(r"^cilium-(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)$", base)
        if not match:
            raise HelmError(f'chart "{base}" not found: the fake helm only knows the cilium chart')
        return ChartRef(ref, CHART_NAME, match.group(1))
    if text.startswith("oci://"):
        last = text[len("oci://"):].rstrip("/").rsplit("/", 1)[-1]
        name, _colon, tag = last.partition(":")
        if name != CHART_NAME:
            raise HelmError(f"{text}: not found")
        return ChartRef(ref, CHART_NAME, tag.lstrip("v") or None)
    if "://" in text:
        raise HelmError(f"failed to fetch {text} : 404 Not Found")
    if repo_url:
        name = text.rstrip("/").rsplit("/", 1)[-1]
        if name != CHART_NAME:
            raise HelmError(f'chart "{name}" not found in {repo_url} repository')
        return ChartRef(ref, CHART_NAME, repo=repo_url)
    is_path = text.startswith((".", "/", "~")) or text.count("/") != 1
    if is_path:
        name = text.rstrip("/").rsplit("/", 1)[-1]
        if name != CHART_NAME:
            raise HelmError(f"path \"{text}\" not found")
        return ChartRef(ref, CHART_NAME)
    repo_alias, name = text.split("/", 1)
    if name != CHART_NAME:
        raise HelmError(f'chart "{name}" matching  not found in {repo_alias} index. (try \'helm repo update\'): '
                        f"no chart name found")
    return ChartRef(ref, CHART_NAME, repo=repo_alias)


def chart_version_for(chart: ChartRef, version_flag: str | None, env: Mapping[str, str] | None = None,
                      devel: bool = False) -> str:
    """The chart version an install/upgrade/show uses, or the ``helm`` error for a version that does not exist."""
    available = known_chart_versions(env)
    if chart.pinned_version:
        if chart.pinned_version not in available:
            raise HelmError(f"chart \"{CHART_NAME}\" version \"{chart.pinned_version}\" not found")
        return chart.pinned_version
    chosen = select_chart_version(available, version_flag, devel=devel)
    if chosen is None:
        where = chart.repo or CHART_REPO_URL
        raise HelmError(f'chart "{CHART_NAME}" matching {version_flag} not found in {where} index. '
                        f"(try 'helm repo update'): no chart version found for {CHART_NAME}-{version_flag}")
    return chosen


# --------------------------------------------------------------------------------------------------------------
# Values: --set parsing, value files, Helm's coalescing rules (pure)
# --------------------------------------------------------------------------------------------------------------

_INT = re.compile(r"^[+-]?[0-9]+$")
_MAX_INDEX = 65536


def typed_value(text: str) -> Any:
    """How ``--set`` types a scalar (Helm's strvals): true/false -> bool, null -> None, integers -> int (but not
    with a leading zero, so ``007`` stays a string), anything else -> string (floats included)."""
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered == "null":
        return None
    if text == "0":
        return 0
    if text and text[0] != "0" and _INT.match(text):
        number = int(text)
        if -(2**63) <= number < 2**63:
            return number
    return text


class _SetParser:
    """``--set`` / ``--set-string`` / ``--set-literal`` syntax: ``a.b=v,c[0]=w,d={x,y}``, backslash escapes."""

    def __init__(self, text: str, mode: str) -> None:
        self.text = text
        self.mode = mode  # "typed", "string", "literal", "json", "file"
        self.pos = 0

    def parse_into(self, dest: dict[str, Any], reader: Callable[[str], str] | None = None) -> None:
        while self.pos < len(self.text):
            path = self._key()
            if self.pos >= len(self.text) or self.text[self.pos] != "=":
                where = "" if self.pos >= len(self.text) else f" (cannot end with {self.text[self.pos]})"
                raise HelmError(f'key "{_path_text(path)}" has no value{where}')
            self.pos += 1
            value = self._value(reader)
            _assign(dest, path, value)
            if self.mode in ("literal", "json"):
                return
            if self.pos < len(self.text):
                if self.text[self.pos] != ",":
                    raise HelmError(f"key \"{_path_text(path)}\" has unexpected text after its value")
                self.pos += 1

    def _key(self) -> list[str | int]:
        path: list[str | int] = []
        current: list[str] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text):
                current.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char in "=,":
                break
            if char == ".":
                if not current and (not path or isinstance(path[-1], str)):
                    raise HelmError(f"key \"{text}\" has an empty segment")
                if current:
                    path.append("".join(current))
                    current = []
                self.pos += 1
                continue
            if char == "[":
                if current:
                    path.append("".join(current))
                    current = []
                end = text.find("]", self.pos)
                if end < 0:
                    raise HelmError(f'key "{text}" has an unterminated index')
                index_text = text[self.pos + 1:end]
                if not index_text.isdigit():
                    raise HelmError(f'failed to parse index: strconv.Atoi: parsing "{index_text}": invalid syntax')
                index = int(index_text)
                if index > _MAX_INDEX:
                    raise HelmError(f"index of {index} is greater than maximum supported index value of {_MAX_INDEX}")
                path.append(index)
                self.pos = end + 1
                continue
            current.append(char)
            self.pos += 1
        if current:
            path.append("".join(current))
        if not path:
            raise HelmError(f'key "{text}" has no value')
        return path

    def _value(self, reader: Callable[[str], str] | None) -> Any:
        text = self.text
        if self.mode in ("literal", "json"):
            raw = text[self.pos:]
            self.pos = len(text)
            if self.mode == "literal":
                return raw
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise HelmError(f"failed parsing --set-json data {raw}: {exc}") from exc
        if self.mode != "file" and text.startswith("{", self.pos):
            return self._list()
        raw = self._scalar(stop=",")
        if self.mode == "file":
            if reader is None:
                raise HelmError("--set-file is not available here")
            return reader(raw)
        return raw if self.mode == "string" else typed_value(raw)

    def _scalar(self, stop: str) -> str:
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text):
                out.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char in stop:
                break
            out.append(char)
            self.pos += 1
        return "".join(out)

    def _list(self) -> list[Any]:
        self.pos += 1  # "{"
        items: list[Any] = []
        while True:
            if self.pos >= len(self.text):
                raise HelmError(f"list must terminate with '}}': {self.text}")
            raw = self._scalar(stop=",}")
            if self.pos >= len(self.text):
                raise HelmError(f"list must terminate with '}}': {self.text}")
            if raw or self.text[self.pos] == ",":
                items.append(raw if self.mode == "string" else typed_value(raw))
            closing = self.text[self.pos] == "}"
            self.pos += 1
            if closing:
                return items


def _path_text(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _assign(dest: dict[str, Any], path: list[str | int], value: Any) -> None:
    container: Any = dest
    for position, part in enumerate(path):
        last = position == len(path) - 1
        following = None if last else path[position + 1]
        fresh: Any = [] if isinstance(following, int) else {}
        if isinstance(part, int):
            if not isinstance(container, list):
                raise HelmError(f"unable to parse key: {_path_text(path)}")
            while len(container) <= part:
                container.append(None)
            if last:
                container[part] = value
            else:
                if not isinstance(container[part], (dict, list)) or isinstance(container[part], list) != isinstance(
                        fresh, list):
                    container[part] = fresh
                container = container[part]
        else:
            if not isinstance(container, dict):
                raise HelmError(f"unable to parse key: {_path_text(path)}")
            if last:
                container[part] = value
            else:
                existing = container.get(part)
                if not isinstance(existing, (dict, list)) or isinstance(existing, list) != isinstance(fresh, list):
                    container[part] = fresh
                container = container[part]


def parse_set(text: str, dest: dict[str, Any] | None = None, *, mode: str = "typed",
              reader: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Apply one ``--set`` (``mode="typed"``), ``--set-string`` (``"string"``), ``--set-literal``
    (``"literal"``), ``--set-json`` (``"json"``) or ``--set-file`` (``"file"``, with ``reader``) argument to
    ``dest`` and return it."""
    dest = {} if dest is None else dest
    if mode == "json" and text.lstrip().startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HelmError(f"failed parsing --set-json data JSON: {exc}") from exc
        merged = merge_maps(dest, loaded)
        dest.clear()
        dest.update(merged)
        return dest
    _SetParser(text, mode).parse_into(dest, reader)
    return dest


def merge_maps(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """How ``-f`` files combine: nested maps merge, anything else in ``override`` wins (lists are replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_maps(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def coalesce_tables(dst: Mapping[str, Any] | None, src: Mapping[str, Any] | None) -> dict[str, Any]:
    """Helm's ``chartutil.CoalesceTables``: ``dst`` wins, ``src`` fills gaps, nested maps coalesce, and a null in
    ``dst`` removes the key (that is how ``--set key=null`` deletes a value)."""
    out = copy.deepcopy(dict(dst or {}))
    for key, value in (src or {}).items():
        if key in out:
            if out[key] is None:
                del out[key]
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = coalesce_tables(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def coalesce_values(chart_values: Mapping[str, Any] | None, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Helm's ``chartutil.CoalesceValues``: the values templates see (user config over the chart's values)."""
    return coalesce_tables(config, chart_values)


@dataclasses.dataclass
class ValueOptions:
    """The value flags of install/upgrade/template, in the order Helm applies them."""

    value_files: list[str] = dataclasses.field(default_factory=list)
    json_values: list[str] = dataclasses.field(default_factory=list)
    values: list[str] = dataclasses.field(default_factory=list)
    string_values: list[str] = dataclasses.field(default_factory=list)
    file_values: list[str] = dataclasses.field(default_factory=list)
    literal_values: list[str] = dataclasses.field(default_factory=list)

    def is_empty(self) -> bool:
        return not any(dataclasses.astuple(self))


def merge_value_options(options: ValueOptions, stdin: IO[str] | None = None) -> dict[str, Any]:
    """The user-supplied values of one command (Helm's ``values.Options.MergeValues``): ``-f`` files in order, then
    ``--set-json``, ``--set``, ``--set-string``, ``--set-file``, ``--set-literal``."""
    base: dict[str, Any] = {}
    for path in options.value_files:
        if path == "-":
            text = (stdin or sys.stdin).read()
        else:
            try:
                with open(os.path.expanduser(path), encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise HelmError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise HelmError(f"failed to parse {path}: error converting YAML to JSON: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise HelmError(f"failed to parse {path}: error unmarshaling JSON: json: cannot unmarshal "
                            f"{type(loaded).__name__} into Go value of type map[string]interface {{}}")
        base = merge_maps(base, loaded)

    def read_file(path: str) -> str:
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as handle:
                return handle.read()
        except OSError as exc:
            raise HelmError(f"open {path}: no such file or directory") from exc

    for text in options.json_values:
        parse_set(text, base, mode="json")
    for text in options.values:
        parse_set(text, base, mode="typed")
    for text in options.string_values:
        parse_set(text, base, mode="string")
    for text in options.file_values:
        parse_set(text, base, mode="file", reader=read_file)
    for text in options.literal_values:
        parse_set(text, base, mode="literal")
    return base


@dataclasses.dataclass(frozen=True)
class UpgradeValues:
    """What an upgrade stores: the chart's values (``chart.values``) and the user config (``config``)."""

    chart_values: dict[str, Any]
    config: dict[str, Any]
    mode: str


def compute_upgrade_values(*, new_chart_defaults: Mapping[str, Any], current_chart_values: Mapping[str, Any],
                           current_config: Mapping[str, Any] | None, new_values: Mapping[str, Any],
                           reset_values: bool = False, reuse_values: bool = False,
                           reset_then_reuse_values: bool = False) -> UpgradeValues:
    """Helm 3's value rules for ``helm upgrade`` (``pkg/action/upgrade.go``, ``Upgrade.reuseValues``; flag help in
    ``cmd/helm/upgrade.go``; ``--reset-then-reuse-values`` from helm/helm PR #9653, Helm 3.14):

    1. ``--reset-values``: the config is only this command's ``-f``/``--set`` values; the previous config is ignored
       and every other flag below is ignored too.
    2. ``--reuse-values``: the config is this command's values coalesced over the previous config, AND the chart's
       own values are replaced by the previous release's computed values (old chart values + old config). So new
       chart defaults are not picked up ("If '--reset-values' is specified, this is ignored").
    3. ``--reset-then-reuse-values``: new chart's values, config = this command's values over the previous config
       (ignored if ``--reset-values`` or ``--reuse-values`` is given).
    4. None of them: if this command gives no values at all, the previous config is kept as it is; otherwise the
       config is only this command's values (the previous user values are dropped).
    """
    previous = copy.deepcopy(dict(current_config or {}))
    supplied = copy.deepcopy(dict(new_values))
    if reset_values:
        return UpgradeValues(copy.deepcopy(dict(new_chart_defaults)), supplied, "reset")
    if reuse_values:
        old_computed = coalesce_values(current_chart_values, previous)
        return UpgradeValues(old_computed, coalesce_tables(supplied, previous), "reuse")
    if reset_then_reuse_values:
        return UpgradeValues(copy.deepcopy(dict(new_chart_defaults)), coalesce_tables(supplied, previous),
                             "reset-then-reuse")
    if not supplied and previous:
        return UpgradeValues(copy.deepcopy(dict(new_chart_defaults)), previous, "copied")
    return UpgradeValues(copy.deepcopy(dict(new_chart_defaults)), supplied, "supplied")


def dig(values: Mapping[str, Any] | None, path: str, default: Any = None) -> Any:
    """``values["a"]["b"]`` for ``"a.b"``, or ``default`` when any part is missing."""
    current: Any = values
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return default
        current = current[part]
    return current


def _has_key(values: Mapping[str, Any] | None, path: str) -> bool:
    parent, _dot, leaf = path.rpartition(".")
    holder = dig(values, parent) if parent else values
    return isinstance(holder, Mapping) and leaf in holder


def _go_truthy(value: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings/collections are false; the string "false" is true."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, dict)):
        return len(value) > 0
    return True


def go_string(value: Any) -> str:
    """How ``{{ x | quote }}`` prints a value (without the quotes)."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value)) if abs(value) < 1e21 else f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _sorted_map(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_map(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_map(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------------------
# Rendering the chart (pure)
# --------------------------------------------------------------------------------------------------------------

TEMPLATE_SOURCES = {
    ("ConfigMap", "cilium-config"): "cilium/templates/cilium-configmap.yaml",
    ("DaemonSet", "cilium"): "cilium/templates/cilium-agent/daemonset.yaml",
    ("Deployment", "cilium-operator"): "cilium/templates/cilium-operator/deployment.yaml",
    ("Deployment", "hubble-relay"): "cilium/templates/hubble-relay/deployment.yaml",
    ("Service", "hubble-relay"): "cilium/templates/hubble-relay/service.yaml",
}


def render_configmap_data(values: Mapping[str, Any]) -> dict[str, str]:
    """The ``cilium-config`` keys this fake chart renders. ``policy-audit-mode`` exists only when the values
    have the key (``{{- if hasKey .Values "policyAuditMode" }}``) and is ``{{ .Values.policyAuditMode | quote }}``."""
    data: dict[str, str] = {
        "cluster-name": go_string(dig(values, "cluster.name", "default")),
        "cluster-id": go_string(dig(values, "cluster.id", 0)),
        "debug": go_string(_go_truthy(dig(values, "debug.enabled"))),
        "enable-policy": go_string(dig(values, "policyEnforcementMode", "default")).lower(),
        "ipam": go_string(dig(values, "ipam.mode", "cluster-pool")),
        "kube-proxy-replacement": go_string(dig(values, "kubeProxyReplacement", "false")),
        "bpf-events-policy-verdict-enabled": go_string(dig(values, "bpf.events.policyVerdict.enabled", True)),
        "monitor-aggregation": go_string(dig(values, "bpf.monitorAggregation", "medium")),
        "routing-mode": go_string(dig(values, "routingMode") or "tunnel"),
        "tunnel-protocol": go_string(dig(values, "tunnelProtocol") or "vxlan"),
    }
    if _go_truthy(dig(values, "hubble.enabled")):
        data["enable-hubble"] = go_string(dig(values, "hubble.enabled"))
        data["hubble-listen-address"] = go_string(dig(values, "hubble.listenAddress", ":4244"))
        data["hubble-event-buffer-capacity"] = go_string(dig(values, "hubble.eventBufferCapacity", "4095"))
    if _has_key(values, "policyAuditMode"):
        data["policy-audit-mode"] = go_string(values["policyAuditMode"])
    return dict(sorted(data.items()))


def _helm_metadata(obj: dict[str, Any], release: str, namespace: str) -> dict[str, Any]:
    meta = obj["metadata"]
    meta.setdefault("labels", {})[MANAGED_BY_LABEL] = "Helm"
    meta.setdefault("annotations", {}).update({RELEASE_NAME_ANNOTATION: release,
                                               RELEASE_NAMESPACE_ANNOTATION: namespace})
    return obj


def _to_yaml_block(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=1 << 30)


def configmap_checksum(configmap: Mapping[str, Any]) -> str:
    """``{{ include (print $.Template.BasePath "/cilium-configmap.yaml") . | sha256sum }}``: the sha256 of the
    rendered ConfigMap document."""
    return hashlib.sha256(_to_yaml_block(dict(configmap)).encode()).hexdigest()


def render_objects(release: str, namespace: str, chart_version: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The objects the fake chart renders for computed ``values`` (chart values coalesced with the config)."""
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "cilium-config", "namespace": namespace},
                 "data": render_configmap_data(values)}
    agent_labels = {"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent",
                    "app.kubernetes.io/part-of": "cilium"}
    template_meta: dict[str, Any] = {"labels": dict(agent_labels)}
    if _go_truthy(dig(values, "rollOutCiliumPods")):
        template_meta["annotations"] = {CHECKSUM_ANNOTATION: configmap_checksum(configmap)}
    daemonset = {"apiVersion": "apps/v1", "kind": "DaemonSet",
                 "metadata": {"name": "cilium", "namespace": namespace, "labels": dict(agent_labels)},
                 "spec": {"selector": {"matchLabels": {"k8s-app": "cilium"}},
                          "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                          "template": {"metadata": template_meta,
                                       "spec": {"hostNetwork": True, "serviceAccountName": "cilium",
                                                "containers": [{"name": "cilium-agent",
                                                                "image": f"quay.io/cilium/cilium:v{chart_version}"}]}}}}
    operator_labels = {"io.cilium/app": "operator", "name": "cilium-operator",
                       "app.kubernetes.io/name": "cilium-operator", "app.kubernetes.io/part-of": "cilium"}
    operator = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "cilium-operator", "namespace": namespace, "labels": dict(operator_labels)},
                "spec": {"selector": {"matchLabels": {"io.cilium/app": "operator", "name": "cilium-operator"}},
                         "template": {"metadata": {"labels": dict(operator_labels)},
                                      "spec": {"hostNetwork": True,
                                               "containers": [{"name": "cilium-operator",
                                                               "image": "quay.io/cilium/operator-generic:"
                                                                        f"v{chart_version}"}]}}}}
    objects = [configmap, daemonset, operator]
    if _go_truthy(dig(values, "hubble.enabled")) and _go_truthy(dig(values, "hubble.relay.enabled")):
        relay_labels = {"k8s-app": "hubble-relay", "app.kubernetes.io/name": "hubble-relay",
                        "app.kubernetes.io/part-of": "cilium"}
        objects.append({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "hubble-relay", "namespace": namespace, "labels": dict(relay_labels)},
                        "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "hubble-relay"}},
                                 "template": {"metadata": {"labels": dict(relay_labels)},
                                              "spec": {"containers": [{"name": "hubble-relay",
                                                                       "image": "quay.io/cilium/hubble-relay:"
                                                                                f"v{chart_version}"}]}}}})
        objects.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "hubble-relay", "namespace": namespace,
                                     "labels": {"k8s-app": "hubble-relay", "app.kubernetes.io/part-of": "cilium"}},
                        "spec": {"type": "ClusterIP", "selector": {"k8s-app": "hubble-relay"},
                                 "ports": [{"name": "grpc", "port": 80, "protocol": "TCP", "targetPort": 4245}]}})
    return [_helm_metadata(obj, release, namespace) for obj in objects]


def manifest_from_objects(objects: Iterable[Mapping[str, Any]]) -> str:
    """The release manifest: the rendered documents, each with its ``# Source:`` line."""
    parts = []
    for obj in objects:
        source = TEMPLATE_SOURCES.get((obj["kind"], obj["metadata"]["name"]), "cilium/templates/other.yaml")
        parts.append(f"---\n# Source: {source}\n{_to_yaml_block(dict(obj))}")
    return "".join(parts)


def objects_from_manifest(manifest: str | None) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest or "") if isinstance(doc, dict)]


def release_objects(release: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Render a release record again from its chart version, chart values and config."""
    values = coalesce_values(release["chart"].get("values"), release.get("config"))
    return render_objects(release["name"], release["namespace"], release["chart"]["metadata"]["version"], values)


# --------------------------------------------------------------------------------------------------------------
# Release records and their storage encoding (pure)
# --------------------------------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)$")


def format_timestamp(moment: datetime | None = None) -> str:
    """Go's ``time.RFC3339Nano`` (trailing zeros of the fraction trimmed), in UTC."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_timestamp(text: str) -> datetime | None:
    match = _RFC3339.match(text or "")
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if zone in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)


def _ansic(text: str) -> str:
    moment = parse_timestamp(text)
    if moment is None:
        return "-"
    return f"{moment:%a %b} {moment.day:>2} {moment:%H:%M:%S %Y}"


def _list_time(text: str) -> str:
    """Go ``2006-01-02 15:04:05.999999999 -0700 MST`` (the ``updated`` column of ``helm list``)."""
    moment = parse_timestamp(text)
    if moment is None:
        return ""
    out = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        out += "." + f"{moment.microsecond:06d}".rstrip("0")
    offset = moment.strftime("%z") or "+0000"
    zone = "UTC" if offset == "+0000" else moment.tzname() or ""
    return f"{out} {offset} {zone}"


def new_release(*, name: str, namespace: str, version: int, chart: dict[str, Any], config: Mapping[str, Any] | None,
                status: str, description: str, first_deployed: str | None = None, now: str | None = None,
                notes: str | None = None, manifest: str | None = None) -> dict[str, Any]:
    """A release record in Helm 3's JSON shape (``release.Release``; ``omitempty`` fields left out when empty)."""
    stamp = now or format_timestamp()
    values = coalesce_values(chart.get("values"), config)
    chart_version = chart["metadata"]["version"]
    info: dict[str, Any] = {"first_deployed": first_deployed or stamp, "last_deployed": stamp, "deleted": "",
                            "description": description, "status": status}
    info["notes"] = notes if notes is not None else chart_notes(chart_version, values)
    release: dict[str, Any] = {"name": name, "info": info, "chart": chart}
    if config:
        release["config"] = _sorted_map(copy.deepcopy(dict(config)))
    release["manifest"] = manifest if manifest is not None else manifest_from_objects(
        render_objects(name, namespace, chart_version, values))
    release["version"] = version
    release["namespace"] = namespace
    return release


def encode_release(release: Mapping[str, Any]) -> str:
    """Helm's storage encoding: base64(gzip(JSON)). This string is the Secret's ``data.release`` *bytes*; the API
    shows it base64-encoded once more (see ``secret_for_release``)."""
    raw = json.dumps(release, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=9)).decode()


def decode_release(encoded: str | bytes) -> dict[str, Any]:
    """Inverse of ``encode_release`` (gzip is optional, as in Helm)."""
    data = base64.b64decode(encoded)
    if data[:3] == b"\x1f\x8b\x08":
        data = gzip.decompress(data)
    return json.loads(data)


def release_secret_name(name: str, version: int) -> str:
    return f"sh.helm.release.v1.{name}.v{version}"


def secret_for_release(release: Mapping[str, Any], *, created: bool = True,
                       unix_time: int | None = None) -> dict[str, Any]:
    """The Secret (as the API sees it) Helm's secrets driver writes for a release: Create() stamps ``createdAt``,
    Update() rewrites the labels with ``modifiedAt`` instead."""
    labels = {"name": release["name"], "owner": "helm", "status": release["info"]["status"],
              "version": str(release["version"])}
    labels["createdAt" if created else "modifiedAt"] = str(int(time.time()) if unix_time is None else unix_time)
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": release_secret_name(release["name"], release["version"]),
                         "namespace": release["namespace"], "labels": labels},
            "type": RELEASE_SECRET_TYPE,
            "data": {"release": base64.b64encode(encode_release(release).encode()).decode()}}


def release_from_secret(secret: Mapping[str, Any]) -> dict[str, Any]:
    """Decode a release Secret as returned by the API (``data.release`` base64 of Helm's base64 string)."""
    payload = (secret.get("data") or {}).get("release")
    if not payload:
        raise HelmError(f"secret {secret.get('metadata', {}).get('name')} has no release data")
    return decode_release(base64.b64decode(payload))


# --------------------------------------------------------------------------------------------------------------
# Output formats (pure)
# --------------------------------------------------------------------------------------------------------------


def to_yaml(obj: Any) -> str:
    """sigs.k8s.io/yaml output: keys sorted, ``null`` for nothing."""
    if obj is None:
        return "null\n"
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, width=1 << 30, allow_unicode=True)


def to_json(obj: Any) -> str:
    """Go's ``json.Encoder``: compact, one line."""
    return json.dumps(obj, separators=(",", ":")) + "\n"


def table(rows: list[list[str]]) -> str:
    """gosuri/uitable as helm uses it: cells padded to the column width, tab-separated."""
    if not rows:
        return ""
    widths = [max(len(str(row[i])) for row in rows if i < len(row)) for i in range(max(len(r) for r in rows))]
    lines = []
    for row in rows:
        cells = [str(cell).ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("\t".join(cells).rstrip() if cells else "")
    return "\n".join(lines) + "\n"


def chart_label(release: Mapping[str, Any]) -> str:
    meta = release["chart"]["metadata"]
    return f"{meta['name']}-{meta['version']}"


def list_element(release: Mapping[str, Any]) -> dict[str, str]:
    """One entry of ``helm list -o json|yaml`` (cmd/helm/list.go ``releaseElement``)."""
    return {"name": release["name"], "namespace": release["namespace"], "revision": str(release["version"]),
            "updated": _list_time(release["info"].get("last_deployed", "")), "status": release["info"]["status"],
            "chart": chart_label(release), "app_version": release["chart"]["metadata"].get("appVersion", "")}


def history_element(release: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of ``helm history -o json|yaml`` (cmd/helm/history.go ``releaseInfo``)."""
    return {"revision": release["version"], "updated": release["info"].get("last_deployed", ""),
            "status": release["info"]["status"], "chart": chart_label(release),
            "app_version": release["chart"]["metadata"].get("appVersion", ""),
            "description": release["info"].get("description", "")}


def status_text(release: Mapping[str, Any], *, show_description: bool = False, show_manifest: bool = False) -> str:
    info = release["info"]
    lines = [f"NAME: {release['name']}", f"LAST DEPLOYED: {_ansic(info.get('last_deployed', ''))}",
             f"NAMESPACE: {release['namespace']}", f"STATUS: {info['status']}", f"REVISION: {release['version']}"]
    if show_description:
        lines.append(f"DESCRIPTION: {info.get('description', '')}")
    lines.append("TEST SUITE: None")
    text = "\n".join(lines) + "\n"
    if show_manifest:
        text += "HOOKS:\nMANIFEST:\n" + (release.get("manifest") or "") + "\n"
    if info.get("notes"):
        text += "NOTES:\n" + info["notes"].strip() + "\n"
    return text


def release_metadata(release: Mapping[str, Any]) -> dict[str, Any]:
    """``helm get metadata -o json|yaml``."""
    meta = release["chart"]["metadata"]
    out: dict[str, Any] = {"name": release["name"], "chart": meta["name"], "version": meta["version"],
                           "appVersion": meta.get("appVersion", "")}
    if meta.get("annotations"):
        out["annotations"] = meta["annotations"]
    out.update({"namespace": release["namespace"], "revision": release["version"],
                "status": release["info"]["status"], "deployedAt": release["info"].get("last_deployed", "")})
    return out


# --------------------------------------------------------------------------------------------------------------
# Release storage and cluster application: interfaces, in-memory and Kubernetes implementations
# --------------------------------------------------------------------------------------------------------------


class ReleaseStorage(Protocol):
    """Where release records live (Helm's storage driver), scoped to one namespace or to all."""

    def list(self, name: str | None = None) -> list[dict[str, Any]]: ...

    def create(self, release: dict[str, Any]) -> None: ...

    def update(self, release: dict[str, Any]) -> None: ...

    def delete(self, release: dict[str, Any]) -> None: ...


class ClusterApplier(Protocol):
    """What happens to the live objects when a release is applied, waited for or removed."""

    def apply(self, release: dict[str, Any], previous: dict[str, Any] | None, *, install: bool) -> None: ...

    def wait(self, release: dict[str, Any], timeout: float) -> None: ...

    def remove(self, release: dict[str, Any]) -> None: ...

    def ensure_namespace(self, namespace: str) -> None: ...


class MemoryReleaseStorage:
    """An in-memory ``ReleaseStorage`` that round-trips records through the secret encoding (for unit tests)."""

    def __init__(self, namespace: str | None = None,
                 secrets: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.namespace = namespace
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {} if secrets is None else secrets

    def scoped(self, namespace: str | None) -> MemoryReleaseStorage:
        """Another view on the same records, scoped to ``namespace`` (None: all namespaces)."""
        return MemoryReleaseStorage(namespace, self.secrets)

    def list(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for (namespace, _secret_name), secret in sorted(self.secrets.items()):
            if self.namespace and namespace != self.namespace:
                continue
            if name and secret["metadata"]["labels"]["name"] != name:
                continue
            out.append(release_from_secret(secret))
        return out

    def create(self, release: dict[str, Any]) -> None:
        secret = secret_for_release(release, created=True)
        key = (release["namespace"], secret["metadata"]["name"])
        if key in self.secrets:
            raise HelmError(f'create: failed to create: secrets "{key[1]}" already exists')
        self.secrets[key] = secret

    def update(self, release: dict[str, Any]) -> None:
        secret = secret_for_release(release, created=False)
        self.secrets[(release["namespace"], secret["metadata"]["name"])] = secret

    def delete(self, release: dict[str, Any]) -> None:
        self.secrets.pop((release["namespace"], release_secret_name(release["name"], release["version"])), None)


class RecordingApplier:
    """A ``ClusterApplier`` that only records calls (for unit tests); ``fail_on`` makes a call raise."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_on = fail_on

    def apply(self, release: dict[str, Any], previous: dict[str, Any] | None, *, install: bool) -> None:
        self.calls.append(("apply", release["version"]))
        if self.fail_on == "apply":
            raise HelmError('daemonsets.apps "cilium" not found')

    def wait(self, release: dict[str, Any], timeout: float) -> None:
        self.calls.append(("wait", release["version"]))
        if self.fail_on == "wait":
            raise HelmError("context deadline exceeded")

    def remove(self, release: dict[str, Any]) -> None:
        self.calls.append(("remove", release["version"]))

    def ensure_namespace(self, namespace: str) -> None:
        self.calls.append(("namespace", 0))


def _api_error_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            status = json.loads(body)
            if isinstance(status, dict) and status.get("message"):
                return str(status["message"])
        except (TypeError, ValueError):
            pass
    status_code = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status_code is not None:
        return f"the server responded with the status code {status_code} ({reason})"
    return str(exc)


def _kube_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a ``kubernetes.client`` API method without model decoding and map failures to ``HelmError``.

    Returns the decoded JSON body, or None on 404 when ``missing_ok`` is passed."""
    from kubernetes.client.exceptions import ApiException

    missing_ok = kwargs.pop("missing_ok", False)
    try:
        response = function(*args, _preload_content=False, **kwargs)
    except ApiException as exc:
        if missing_ok and exc.status == 404:
            return None
        raise _KubeError(exc.status or 0, _api_error_message(exc)) from exc
    except Exception as exc:  # urllib3 connection errors and the like
        if type(exc).__module__.startswith(("urllib3", "ssl", "socket")) or isinstance(exc, OSError):
            raise HelmError(f"Kubernetes cluster unreachable: {exc}") from exc
        raise
    data = response.data
    return json.loads(data) if data else {}


class _KubeError(HelmError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class KubeReleaseStorage:
    """Helm 3's secrets driver over the Kubernetes API: one Secret per revision, labelled ``owner=helm``."""

    def __init__(self, api_client: Any, namespace: str | None) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def list(self, name: str | None = None) -> list[dict[str, Any]]:
        selector = "owner=helm" + (f",name={name}" if name else "")
        if self.namespace:
            body = _kube_call(self.core.list_namespaced_secret, self.namespace, label_selector=selector)
        else:
            body = _kube_call(self.core.list_secret_for_all_namespaces, label_selector=selector)
        releases = []
        for item in body.get("items") or []:
            try:
                releases.append(release_from_secret(item))
            except (HelmError, ValueError, OSError):
                continue  # Helm logs "list: failed to decode release" and skips it
        return releases

    def create(self, release: dict[str, Any]) -> None:
        secret = secret_for_release(release, created=True)
        try:
            _kube_call(self.core.create_namespaced_secret, release["namespace"], secret)
        except _KubeError as exc:
            raise HelmError(f"create: failed to create: {exc}") from exc

    def update(self, release: dict[str, Any]) -> None:
        secret = secret_for_release(release, created=False)
        try:
            _kube_call(self.core.replace_namespaced_secret, secret["metadata"]["name"], release["namespace"], secret)
        except _KubeError as exc:
            raise HelmError(f"update: failed to update: {exc}") from exc

    def delete(self, release: dict[str, Any]) -> None:
        _kube_call(self.core.delete_namespaced_secret, release_secret_name(release["name"], release["version"]),
                   release["namespace"], missing_ok=True)


STRATEGIC_MERGE = "application/strategic-merge-patch+json"


class _KindApi(NamedTuple):
    """The ``kubernetes.client`` methods for one kind of object."""

    read: Callable[..., Any]
    create: Callable[..., Any]
    patch: Callable[..., Any]
    delete: Callable[..., Any]


# The objects an upgrade must find in place: they are the ones the scenario creates and our product changes.
REQUIRED_ON_UPGRADE = {("ConfigMap", "cilium-config"), ("DaemonSet", "cilium"), ("Deployment", "cilium-operator")}


class KubeClusterApplier:
    """Applies rendered releases to live objects like Helm's three-way strategic merge would, for the fields the
    fake chart owns: new values are set, keys the previous release rendered but the new one does not are removed,
    everything else on the live object (keys set by ``kubectl patch``, controller fields) is left alone."""

    def __init__(self, api_client: Any, *, really_wait: bool = False, poll_interval: float = 0.5) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.really_wait = really_wait
        self.poll_interval = poll_interval

    # -- plumbing ------------------------------------------------------------------------------------------
    def _methods(self, kind: str) -> _KindApi:
        core, apps = self.core, self.apps
        if kind == "ConfigMap":
            return _KindApi(core.read_namespaced_config_map, core.create_namespaced_config_map,
                            core.patch_namespaced_config_map, core.delete_namespaced_config_map)
        if kind == "Service":
            return _KindApi(core.read_namespaced_service, core.create_namespaced_service,
                            core.patch_namespaced_service, core.delete_namespaced_service)
        if kind == "DaemonSet":
            return _KindApi(apps.read_namespaced_daemon_set, apps.create_namespaced_daemon_set,
                            apps.patch_namespaced_daemon_set, apps.delete_namespaced_daemon_set)
        return _KindApi(apps.read_namespaced_deployment, apps.create_namespaced_deployment,
                        apps.patch_namespaced_deployment, apps.delete_namespaced_deployment)

    def ensure_namespace(self, namespace: str) -> None:
        if _kube_call(self.core.read_namespace, namespace, missing_ok=True) is None:
            _kube_call(self.core.create_namespace, {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": namespace}})

    # -- apply ---------------------------------------------------------------------------------------------
    def apply(self, release: dict[str, Any], previous: dict[str, Any] | None, *, install: bool) -> None:
        target = release_objects(release)
        before = {(o["kind"], o["metadata"]["name"]): o for o in (release_objects(previous) if previous else [])}
        wanted = {(o["kind"], o["metadata"]["name"]) for o in target}
        for obj in target:
            key = (obj["kind"], obj["metadata"]["name"])
            api = self._methods(obj["kind"])
            namespace = obj["metadata"]["namespace"]
            live = _kube_call(api.read, obj["metadata"]["name"], namespace, missing_ok=True)
            if live is None:
                if not install and key in REQUIRED_ON_UPGRADE:
                    plural = {"ConfigMap": "configmaps", "DaemonSet": "daemonsets.apps",
                              "Deployment": "deployments.apps"}[obj["kind"]]
                    raise HelmError(f'failed to patch {obj["kind"]} "{key[1]}": {plural} "{key[1]}" not found')
                _kube_call(api.create, namespace, obj)
                continue
            body = self._patch_for(obj, before.get(key), live)
            if body:
                _kube_call(api.patch, obj["metadata"]["name"], namespace, body, _content_type=STRATEGIC_MERGE)
        for key, old in before.items():
            if key not in wanted:
                _kube_call(self._methods(key[0]).delete, key[1], old["metadata"]["namespace"], missing_ok=True)

    @staticmethod
    def _patch_for(obj: dict[str, Any], old: dict[str, Any] | None, live: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        body: dict[str, Any] = {"metadata": {"labels": dict(meta.get("labels") or {}),
                                             "annotations": dict(meta.get("annotations") or {})}}
        if obj["kind"] == "ConfigMap":
            data: dict[str, Any] = dict(obj["data"])
            for stale in (old or {}).get("data", {}):
                if stale not in data:
                    data[stale] = None
            body["data"] = data
            return body
        if obj["kind"] == "Service":
            return body
        template = obj["spec"]["template"]
        containers = [{"name": c["name"], "image": c["image"]} for c in template["spec"]["containers"]]
        template_patch: dict[str, Any] = {"spec": {"containers": containers}}
        annotations: dict[str, Any] = dict((template.get("metadata") or {}).get("annotations") or {})
        old_annotations = (((old or {}).get("spec") or {}).get("template") or {}).get("metadata", {}).get(
            "annotations") or {}
        for stale in old_annotations:
            if stale not in annotations:
                annotations[stale] = None
        live_annotations = ((live.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
        annotations = {k: v for k, v in annotations.items() if v is not None or k in live_annotations}
        if annotations:
            template_patch["metadata"] = {"annotations": annotations}
        body["spec"] = {"template": template_patch}
        return body

    # -- remove --------------------------------------------------------------------------------------------
    def remove(self, release: dict[str, Any]) -> None:
        for obj in reversed(release_objects(release)):
            _kube_call(self._methods(obj["kind"]).delete, obj["metadata"]["name"], obj["metadata"]["namespace"],
                       missing_ok=True)

    # -- wait ----------------------------------------------------------------------------------------------
    def wait(self, release: dict[str, Any], timeout: float) -> None:
        if not self.really_wait:
            return
        deadline = time.monotonic() + timeout
        workloads = [o for o in release_objects(release) if o["kind"] in ("DaemonSet", "Deployment")]
        while True:
            pending = [o for o in workloads if not self._ready(o)]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise HelmError("context deadline exceeded")
            time.sleep(self.poll_interval)

    def _ready(self, obj: dict[str, Any]) -> bool:
        live = _kube_call(self._methods(obj["kind"]).read, obj["metadata"]["name"], obj["metadata"]["namespace"],
                          missing_ok=True)
        if live is None:
            return False
        live.setdefault("kind", obj["kind"])
        return workload_ready(live)


def _scaled(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return int(-(-exact // 1)) if round_up else int(exact)
    return int(value or 0)


def workload_ready(live: Mapping[str, Any]) -> bool:
    """Helm's ``--wait`` readiness for DaemonSets and Deployments (pkg/kube/ready.go, simplified)."""
    meta, spec, status = live.get("metadata") or {}, live.get("spec") or {}, live.get("status") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    if live.get("kind") == "DaemonSet":
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return True
        desired = int(status.get("desiredNumberScheduled", 0))
        if int(status.get("updatedNumberScheduled", 0)) != desired:
            return False
        unavailable = _scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), desired, True)
        return int(status.get("numberReady", 0)) >= desired - unavailable
    replicas = int(spec.get("replicas", 1))
    if int(status.get("updatedReplicas", 0)) < replicas:
        return False
    max_unavailable = ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    return int(status.get("availableReplicas", 0)) >= replicas - _scaled(max_unavailable, replicas, False)


# --------------------------------------------------------------------------------------------------------------
# Release actions (over the two interfaces)
# --------------------------------------------------------------------------------------------------------------

PENDING_STATUSES = ("pending-install", "pending-upgrade", "pending-rollback")


def _by_version(releases: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(releases, key=lambda r: r["version"])


def release_history(storage: ReleaseStorage, name: str) -> list[dict[str, Any]]:
    return _by_version(storage.list(name))


def last_release(storage: ReleaseStorage, name: str) -> dict[str, Any] | None:
    history = release_history(storage, name)
    return history[-1] if history else None


def get_release(storage: ReleaseStorage, name: str, revision: int = 0) -> dict[str, Any]:
    """The release a ``status``/``get`` shows: a given revision, or the last one (whatever its status)."""
    history = release_history(storage, name)
    if revision > 0:
        history = [r for r in history if r["version"] == revision]
    if not history:
        raise HelmError("release: not found")
    return history[-1]


def _prune_history(storage: ReleaseStorage, name: str, max_history: int) -> None:
    """Keep at most ``max_history - 1`` old revisions before writing a new one (the last deployed one is kept)."""
    if max_history <= 0:
        return
    history = release_history(storage, name)
    if len(history) < max_history:
        return
    deployed = [r for r in history if r["info"]["status"] == "deployed"]
    keep_last_deployed = deployed[-1]["version"] if deployed else None
    removable = [r for r in history if r["version"] != keep_last_deployed]
    for release in removable[: len(history) - (max_history - 1)]:
        storage.delete(release)


@dataclasses.dataclass
class DeployOptions:
    """The flags install/upgrade/rollback share."""

    wait: bool = False
    atomic: bool = False
    timeout: float = 300.0
    dry_run: bool = False
    description: str | None = None
    history_max: int = 10
    create_namespace: bool = False


def _fail_mode(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return None
    return "after" if value in ("after", "wait") else "before"


def run_install(storage: ReleaseStorage, applier: ClusterApplier, *, name: str, namespace: str, chart_version: str,
                values: Mapping[str, Any], options: DeployOptions, replace: bool = False,
                env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``helm install`` (and the install half of ``helm upgrade --install``)."""
    history = release_history(storage, name)
    if history and not replace and any(r["info"]["status"] != "uninstalled" for r in history):
        raise HelmError("INSTALLATION FAILED: cannot re-use a name that is still in use")
    version = history[-1]["version"] + 1 if history else 1
    chart = build_chart(chart_version)
    release = new_release(name=name, namespace=namespace, version=version, chart=chart, config=values,
                          status="pending-install", description="Initial install underway")
    if options.dry_run:
        release["info"]["status"] = "pending-install"
        release["info"]["description"] = "Dry run complete"
        return release
    if options.create_namespace:
        applier.ensure_namespace(namespace)
    _prune_history(storage, name, options.history_max)
    storage.create(release)
    try:
        applier.apply(release, None, install=True)
        if options.wait or options.atomic:
            applier.wait(release, options.timeout)
    except HelmError as exc:
        release["info"]["status"] = "failed"
        release["info"]["description"] = f"Release \"{name}\" failed: {exc}"
        storage.update(release)
        if options.atomic:
            applier.remove(release)
            for old in release_history(storage, name):
                storage.delete(old)
            raise HelmError(f"INSTALLATION FAILED: release {name} failed, and has been uninstalled due to atomic "
                            f"being set: {exc}") from exc
        raise HelmError(f"INSTALLATION FAILED: {exc}") from exc
    release["info"]["status"] = "deployed"
    release["info"]["description"] = options.description or "Install complete"
    storage.update(release)
    return release


@dataclasses.dataclass
class UpgradeRequest:
    name: str
    namespace: str
    chart_version: str
    values: dict[str, Any]
    values_given: bool
    reset_values: bool = False
    reuse_values: bool = False
    reset_then_reuse_values: bool = False


def plan_upgrade(storage: ReleaseStorage,
                 request: UpgradeRequest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Work out the next revision of an upgrade without writing anything: (last, current, target)."""
    last = last_release(storage, request.name)
    if last is None:
        raise HelmError(f'UPGRADE FAILED: "{request.name}" has no deployed releases')
    if last["info"]["status"] in PENDING_STATUSES:
        raise HelmError("UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress")
    current = last
    if last["info"]["status"] != "deployed":
        deployed = [r for r in release_history(storage, request.name) if r["info"]["status"] == "deployed"]
        if deployed:
            current = deployed[-1]
        elif last["info"]["status"] not in ("failed", "superseded"):
            raise HelmError(f'UPGRADE FAILED: "{request.name}" has no deployed releases')
    computed = compute_upgrade_values(
        new_chart_defaults=chart_default_values(request.chart_version),
        current_chart_values=current["chart"].get("values") or {}, current_config=current.get("config"),
        new_values=request.values, reset_values=request.reset_values, reuse_values=request.reuse_values,
        reset_then_reuse_values=request.reset_then_reuse_values)
    chart = build_chart(request.chart_version, computed.chart_values)
    target = new_release(name=request.name, namespace=current["namespace"], version=last["version"] + 1, chart=chart,
                         config=computed.config, status="pending-upgrade", description="Preparing upgrade",
                         first_deployed=current["info"].get("first_deployed"))
    return last, current, target


def run_upgrade(storage: ReleaseStorage, applier: ClusterApplier, request: UpgradeRequest, options: DeployOptions,
                env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``helm upgrade``: write a pending revision, apply it, then supersede the old one (or record the failure)."""
    env = os.environ if env is None else env
    _last, current, target = plan_upgrade(storage, request)
    if options.dry_run:
        target["info"]["description"] = options.description or "Dry run complete"
        return target
    _prune_history(storage, request.name, options.history_max)
    storage.create(target)
    failure = _fail_mode(env, "FAKE_HELM_FAIL_UPGRADE")
    try:
        if failure == "before":
            raise HelmError("failed to create resource: admission webhook \"fake-helm\" denied the request: "
                            "FAKE_HELM_FAIL_UPGRADE is set")
        applier.apply(target, current, install=False)
        if failure == "after":
            raise HelmError("context deadline exceeded")
        if options.wait or options.atomic:
            applier.wait(target, options.timeout)
    except HelmError as exc:
        target["info"]["status"] = "failed"
        target["info"]["description"] = f"Upgrade \"{request.name}\" failed: {exc}"
        storage.update(target)
        if options.atomic:
            good = [r for r in release_history(storage, request.name)
                    if r["info"]["status"] in ("superseded", "deployed")]
            if not good:
                raise HelmError(f"UPGRADE FAILED: unable to find a previously successful release when attempting "
                                f"to rollback. original upgrade error: {exc}") from exc
            try:
                run_rollback(storage, applier, request.name, good[-1]["version"],
                             dataclasses.replace(options, wait=True, atomic=False), env=env)
            except HelmError as rollback_error:
                raise HelmError(f"UPGRADE FAILED: an error occurred while rolling back the release. original "
                                f"upgrade error: {exc}: {rollback_error}") from exc
            raise HelmError(f"UPGRADE FAILED: release {request.name} failed, and has been rolled back due to "
                            f"atomic being set: {exc}") from exc
        raise HelmError(f"UPGRADE FAILED: {exc}") from exc
    current["info"]["status"] = "superseded"
    storage.update(current)
    target["info"]["status"] = "deployed"
    target["info"]["description"] = options.description or "Upgrade complete"
    storage.update(target)
    return target


def run_rollback(storage: ReleaseStorage, applier: ClusterApplier, name: str, revision: int,
                 options: DeployOptions, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``helm rollback``: a NEW revision with the chart and config of ``revision`` (0 = the one before last)."""
    env = os.environ if env is None else env
    history = release_history(storage, name)
    if not history:
        raise HelmError("release: not found")
    current = history[-1]
    if revision < 0:
        raise HelmError("invalid release revision")
    wanted = revision or current["version"] - 1
    source = next((r for r in history if r["version"] == wanted), None)
    if source is None:
        raise HelmError(f"release has no {wanted} version")
    target = new_release(name=name, namespace=current["namespace"], version=current["version"] + 1,
                         chart=copy.deepcopy(source["chart"]), config=source.get("config"),
                         status="pending-rollback", description=f"Rollback to {wanted}",
                         first_deployed=current["info"].get("first_deployed"), notes=source["info"].get("notes"),
                         manifest=source.get("manifest"))
    if options.dry_run:
        return target
    _prune_history(storage, name, options.history_max)
    storage.create(target)
    try:
        if _fail_mode(env, "FAKE_HELM_FAIL_ROLLBACK"):
            raise HelmError("failed to replace object: admission webhook \"fake-helm\" denied the request: "
                            "FAKE_HELM_FAIL_ROLLBACK is set")
        applier.apply(target, current, install=False)
        if options.wait:
            applier.wait(target, options.timeout)
    except HelmError as exc:
        current["info"]["status"] = "superseded"
        storage.update(current)
        target["info"]["status"] = "failed"
        target["info"]["description"] = f"Rollback \"{name}\" failed: {exc}"
        storage.update(target)
        raise
    for old in release_history(storage, name):
        if old["info"]["status"] == "deployed" and old["version"] != target["version"]:
            old["info"]["status"] = "superseded"
            storage.update(old)
    target["info"]["status"] = "deployed"
    storage.update(target)
    return target


def run_uninstall(storage: ReleaseStorage, applier: ClusterApplier, name: str, *, keep_history: bool = False,
                  dry_run: bool = False, description: str | None = None, ignore_not_found: bool = False) -> bool:
    history = release_history(storage, name)
    live = [r for r in history if r["info"]["status"] != "uninstalled"]
    if not live:
        if ignore_not_found:
            return False
        raise HelmError(f"uninstall: Release not loaded: {name}: release: not found")
    last = history[-1]
    if dry_run:
        return True
    applier.remove(last)
    if keep_history:
        last["info"]["status"] = "uninstalled"
        last["info"]["deleted"] = format_timestamp()
        last["info"]["description"] = description or "Uninstallation complete"
        storage.update(last)
    else:
        for release in history:
            storage.delete(release)
    return True


def seed_release(api_client: Any, namespace: str = "kube-system", release: str = "cilium",
                 chart_version: str = "1.15.1", values: dict[str, Any] | None = None, *,
                 render: bool = False) -> None:
    """Write revision 1 (``deployed``, "Install complete") of ``release`` straight into the API, as ``helm install``
    would have left it. The live objects are left alone unless ``render`` is true, in which case they are created
    or patched to match the chart (as ``helm install`` would)."""
    chart = build_chart(chart_version)
    record = new_release(name=release, namespace=namespace, version=1, chart=chart, config=values or {},
                         status="deployed", description="Install complete")
    KubeReleaseStorage(api_client, namespace).create(record)
    if render:
        KubeClusterApplier(api_client).apply(record, None, install=True)


def read_release(api_client: Any, namespace: str, release: str, revision: int = 0) -> dict[str, Any] | None:
    """The decoded release record (last revision unless one is given), or None."""
    try:
        return get_release(KubeReleaseStorage(api_client, namespace), release, revision)
    except HelmError:
        return None


def read_history(api_client: Any, namespace: str, release: str) -> list[dict[str, Any]]:
    return release_history(KubeReleaseStorage(api_client, namespace), release)


# --------------------------------------------------------------------------------------------------------------
# Connection settings (helm's EnvSettings)
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class HelmSettings:
    kubeconfig: str | None = None
    kube_context: str | None = None
    namespace_flag: str | None = None
    apiserver: str | None = None
    token: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], flags: Mapping[str, Any]) -> HelmSettings:
        def pick(flag: str, variable: str) -> str | None:
            value = flags.get(flag)
            return value if value else (env.get(variable) or None)

        insecure = bool(flags.get("kube-insecure-skip-tls-verify")) or env.get(
            "HELM_KUBEINSECURE_SKIP_TLS_VERIFY", "").lower() in ("1", "true", "t")
        return cls(kubeconfig=flags.get("kubeconfig") or None, kube_context=pick("kube-context", "HELM_KUBECONTEXT"),
                   namespace_flag=pick("namespace", "HELM_NAMESPACE"), apiserver=pick("kube-apiserver",
                                                                                      "HELM_KUBEAPISERVER"),
                   token=pick("kube-token", "HELM_KUBETOKEN"), ca_file=pick("kube-ca-file", "HELM_KUBECAFILE"),
                   insecure=bool(insecure), tls_server_name=pick("kube-tls-server-name", "HELM_KUBETLS_SERVER_NAME"))

    def kubeconfig_path(self, env: Mapping[str, str]) -> str | None:
        if self.kubeconfig:
            return os.path.expanduser(self.kubeconfig)
        if env.get("KUBECONFIG"):
            paths = [p for p in env["KUBECONFIG"].split(os.pathsep) if p and os.path.exists(os.path.expanduser(p))]
            return os.pathsep.join(os.path.expanduser(p) for p in paths) or None
        default = os.path.expanduser("~/.kube/config")
        return default if os.path.exists(default) else None

    def namespace(self, env: Mapping[str, str]) -> str:
        """``-n`` / ``HELM_NAMESPACE``, else the kubeconfig context's namespace, else ``default``."""
        if self.namespace_flag:
            return self.namespace_flag
        path = self.kubeconfig_path(env)
        if path:
            try:
                from kubernetes import config

                contexts, active = config.list_kube_config_contexts(config_file=path)
                chosen = next((c for c in contexts if c.get("name") == self.kube_context), None) if \
                    self.kube_context else active
                namespace = ((chosen or {}).get("context") or {}).get("namespace")
                if namespace:
                    return str(namespace)
            except Exception:  # noqa: BLE001 - an unreadable kubeconfig fails later, with the connection
                pass
        return "default"

    def api_client(self, env: Mapping[str, str]) -> Any:
        """A ``kubernetes.client.ApiClient`` configured the way helm would connect."""
        from kubernetes import client, config

        configuration = client.Configuration()
        path = self.kubeconfig_path(env)
        if path:
            try:
                config.load_kube_config(config_file=path, context=self.kube_context,
                                        client_configuration=configuration, persist_config=False)
            except Exception as exc:  # the client raises several types for bad kubeconfigs
                if not self.apiserver:
                    raise HelmError(f"Kubernetes cluster unreachable: {exc}") from exc
        elif not self.apiserver:
            raise HelmError('Kubernetes cluster unreachable: Get "http://localhost:8080/version": dial tcp '
                            "127.0.0.1:8080: connect: connection refused")
        if self.apiserver:
            configuration.host = self.apiserver.rstrip("/")
        if self.token:
            configuration.api_key = {"authorization": f"Bearer {self.token}"}
            configuration.api_key_prefix = {}
        if self.ca_file:
            configuration.ssl_ca_cert = self.ca_file
        if self.insecure:
            configuration.verify_ssl = False
        if self.tls_server_name:
            configuration.tls_server_name = self.tls_server_name
        return client.ApiClient(configuration)


# --------------------------------------------------------------------------------------------------------------
# Command line: flags
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flag:
    """A pflag flag. ``kind``: bool, str, int, duration, optstr (value only with ``=``), array (repeatable),
    slice (repeatable and comma-split), map (``k=v,k2=v2``)."""

    name: str
    kind: str = "bool"
    short: str | None = None
    default: Any = None


def _flags(*specs: Flag) -> tuple[Flag, ...]:
    return specs


GLOBAL_FLAGS = _flags(
    Flag("debug"), Flag("kube-apiserver", "str"), Flag("kube-as-group", "array"), Flag("kube-as-user", "str"),
    Flag("kube-ca-file", "str"), Flag("kube-context", "str"), Flag("kube-insecure-skip-tls-verify"),
    Flag("kube-tls-server-name", "str"), Flag("kube-token", "str"), Flag("kubeconfig", "str"),
    Flag("namespace", "str", "n"), Flag("burst-limit", "int", default=100), Flag("qps", "str"),
    Flag("registry-config", "str"), Flag("repository-cache", "str"), Flag("repository-config", "str"),
    Flag("content-cache", "str"), Flag("help", "bool", "h"),
)

_CHART_PATH_FLAGS = _flags(
    Flag("ca-file", "str"), Flag("cert-file", "str"), Flag("key-file", "str"), Flag("insecure-skip-tls-verify"),
    Flag("keyring", "str"), Flag("pass-credentials"), Flag("password", "str"), Flag("plain-http"),
    Flag("repo", "str"), Flag("username", "str"), Flag("verify"), Flag("version", "str"), Flag("devel"),
)

_VALUE_FLAGS = _flags(
    Flag("values", "slice", "f"), Flag("set", "array"), Flag("set-string", "array"), Flag("set-json", "array"),
    Flag("set-file", "array"), Flag("set-literal", "array"),
)

_DEPLOY_FLAGS = _flags(
    Flag("atomic"), Flag("cleanup-on-fail"), Flag("create-namespace"), Flag("dependency-update"),
    Flag("description", "str"), Flag("disable-openapi-validation"), Flag("dry-run", "optstr"),
    Flag("enable-dns"), Flag("force"), Flag("hide-notes"), Flag("hide-secret"), Flag("labels", "map"),
    Flag("no-hooks"), Flag("output", "str", "o", "table"), Flag("post-renderer", "str"),
    Flag("post-renderer-args", "array"), Flag("render-subchart-notes"), Flag("skip-crds"),
    Flag("skip-schema-validation"), Flag("take-ownership"), Flag("timeout", "duration", default="5m0s"),
    Flag("wait"), Flag("wait-for-jobs"),
)

COMMAND_FLAGS: dict[str, tuple[Flag, ...]] = {
    "version": _flags(Flag("short"), Flag("template", "str"), Flag("client", "bool", "c")),
    "list": _flags(Flag("all", "bool", "a"), Flag("all-namespaces", "bool", "A"), Flag("date", "bool", "d"),
                   Flag("deployed"), Flag("failed"), Flag("filter", "str", "f"), Flag("max", "int", "m", 256),
                   Flag("no-headers"), Flag("offset", "int", default=0), Flag("output", "str", "o", "table"),
                   Flag("pending"), Flag("reverse", "bool", "r"), Flag("selector", "str", "l"),
                   Flag("short", "bool", "q"), Flag("superseded"), Flag("time-format", "str"),
                   Flag("uninstalled"), Flag("uninstalling")),
    "status": _flags(Flag("output", "str", "o", "table"), Flag("revision", "int", default=0), Flag("show-desc"),
                     Flag("show-resources")),
    "get values": _flags(Flag("all", "bool", "a"), Flag("output", "str", "o", "table"),
                         Flag("revision", "int", default=0)),
    "get manifest": _flags(Flag("revision", "int", default=0)),
    "get notes": _flags(Flag("revision", "int", default=0)),
    "get hooks": _flags(Flag("revision", "int", default=0)),
    "get metadata": _flags(Flag("output", "str", "o", "table"), Flag("revision", "int", default=0)),
    "get all": _flags(Flag("revision", "int", default=0), Flag("template", "str")),
    "history": _flags(Flag("max", "int", default=256), Flag("output", "str", "o", "table")),
    "upgrade": _DEPLOY_FLAGS + _CHART_PATH_FLAGS + _VALUE_FLAGS + _flags(
        Flag("install", "bool", "i"), Flag("reset-values"), Flag("reuse-values"), Flag("reset-then-reuse-values"),
        Flag("history-max", "int", default=10)),
    "install": _DEPLOY_FLAGS + _CHART_PATH_FLAGS + _VALUE_FLAGS + _flags(
        Flag("generate-name", "bool", "g"), Flag("name-template", "str"), Flag("replace")),
    "template": _DEPLOY_FLAGS + _CHART_PATH_FLAGS + _VALUE_FLAGS + _flags(
        Flag("api-versions", "array", "a"), Flag("include-crds"), Flag("is-upgrade"), Flag("kube-version", "str"),
        Flag("output-dir", "str"), Flag("release-name"), Flag("show-only", "array", "s"), Flag("validate"),
        Flag("generate-name", "bool", "g"), Flag("name-template", "str"), Flag("replace")),
    "rollback": _flags(Flag("cleanup-on-fail"), Flag("dry-run"), Flag("force"), Flag("history-max", "int", default=10),
                       Flag("no-hooks"), Flag("recreate-pods"), Flag("timeout", "duration", default="5m0s"),
                       Flag("wait"), Flag("wait-for-jobs")),
    "uninstall": _flags(Flag("cascade", "str", default="background"), Flag("description", "str"), Flag("dry-run"),
                        Flag("ignore-not-found"), Flag("keep-history"), Flag("no-hooks"),
                        Flag("timeout", "duration", default="5m0s"), Flag("wait")),
    "show chart": _CHART_PATH_FLAGS,
    "show values": _CHART_PATH_FLAGS + _flags(Flag("jsonpath", "str")),
    "show readme": _CHART_PATH_FLAGS,
    "show all": _CHART_PATH_FLAGS,
    "plugin list": (),
    "repo add": _flags(Flag("force-update"), Flag("username", "str"), Flag("password", "str"),
                       Flag("pass-credentials"), Flag("ca-file", "str"), Flag("cert-file", "str"),
                       Flag("key-file", "str"), Flag("insecure-skip-tls-verify"), Flag("no-update")),
    "repo update": _flags(Flag("fail-on-repo-update-fail")),
    "repo list": _flags(Flag("output", "str", "o", "table")),
    "repo remove": (),
    "search repo": _flags(Flag("devel"), Flag("max-col-width", "int", default=50), Flag("output", "str", "o", "table"),
                          Flag("regexp", "bool", "r"), Flag("version", "str"), Flag("versions", "bool", "l"),
                          Flag("fail-on-no-result")),
    "diff upgrade": _CHART_PATH_FLAGS + _VALUE_FLAGS + _flags(
        Flag("allow-unreleased"), Flag("install"), Flag("reset-values"), Flag("reuse-values"),
        Flag("reset-then-reuse-values"), Flag("detailed-exitcode"), Flag("context", "int", "C", -1),
        Flag("output", "str", default="diff"), Flag("three-way-merge"), Flag("no-hooks"), Flag("suppress-secrets"),
        Flag("show-secrets"), Flag("normalize-manifests"), Flag("dry-run", "optstr"), Flag("disable-validation"),
        Flag("disable-openapi-validation"), Flag("take-ownership"), Flag("suppress", "array"),
        Flag("strip-trailing-cr"), Flag("post-renderer", "str"), Flag("enable-dns"), Flag("skip-crds"),
        Flag("include-tests"), Flag("kube-version", "str"), Flag("api-versions", "array", "a"),
        Flag("color"), Flag("no-color"), Flag("skip-schema-validation")),
    "diff version": (),
    "env": (),
}

COMMAND_ALIASES = {"ls": "list", "hist": "history", "un": "uninstall", "del": "uninstall", "delete": "uninstall",
                   "uninstall": "uninstall", "inspect": "show"}
GROUP_COMMANDS = {"get": ("all", "hooks", "manifest", "metadata", "notes", "values"),
                  "show": ("all", "chart", "crds", "readme", "values"),
                  "plugin": ("list", "ls"), "repo": ("add", "list", "ls", "remove", "rm", "update", "up", "index"),
                  "search": ("repo", "hub"), "diff": ("upgrade", "version", "release", "revision", "rollback")}
SUBCOMMAND_ALIASES = {"ls": "list", "rm": "remove", "up": "update", "inspect": "all"}

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` in seconds (``5m0s``, ``300s``, ``1h30m``, ``500ms``)."""
    raw = text.strip()
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise HelmError(f'time: invalid duration "{text}"')
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(body):
        if re.fullmatch(r"[0-9.]+", body):
            raise HelmError(f'time: missing unit in duration "{text}"')
        raise HelmError(f'time: invalid duration "{text}"')
    return sign * total


class ParsedArgs:
    """Flags (by long name) and positional arguments of one invocation."""

    def __init__(self, command: str, flags: dict[str, Any], args: list[str], given: set[str]) -> None:
        self.command = command
        self.flags = flags
        self.args = args
        self.given = given

    def __getitem__(self, name: str) -> Any:
        return self.flags.get(name)


def _all_flags() -> dict[str, Flag]:
    merged: dict[str, Flag] = {}
    for spec in GLOBAL_FLAGS + tuple(f for flags in COMMAND_FLAGS.values() for f in flags):
        merged.setdefault(spec.name, spec)
    return merged


def _find_command(argv: list[str]) -> tuple[str, list[int]]:
    """Locate the (sub)command words wherever the flags are (cobra strips flags to find them)."""
    known = _all_flags()
    shorts: dict[str, Flag] = {}
    for spec in GLOBAL_FLAGS + tuple(f for flags in COMMAND_FLAGS.values() for f in flags):
        if spec.short and (spec.short not in shorts or spec.kind == "bool"):
            shorts[spec.short] = spec
    positions: list[int] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            positions.extend(range(index + 1, len(argv)))
            break
        if token.startswith("--") and len(token) > 2:
            name, has_value = token[2:].partition("=")[0], "=" in token[2:]
            spec = known.get(name)
            takes = spec is not None and spec.kind not in ("bool", "optstr")
            index += 2 if takes and not has_value else 1
            continue
        if token.startswith("-") and len(token) > 1:
            spec = shorts.get(token[1])
            takes = spec is not None and spec.kind not in ("bool", "optstr") and len(token) == 2
            index += 2 if takes else 1
            continue
        positions.append(index)
        index += 1
    if not positions:
        return "", []
    first = argv[positions[0]]
    command = COMMAND_ALIASES.get(first, first)
    if command in GROUP_COMMANDS:
        if len(positions) > 1 and argv[positions[1]] in GROUP_COMMANDS[command]:
            sub = SUBCOMMAND_ALIASES.get(argv[positions[1]], argv[positions[1]])
            return f"{command} {sub}", positions[:2]
        return command, positions[:1]
    return command, positions[:1]


def parse_command_line(argv: list[str]) -> ParsedArgs:
    """Parse argv like cobra/pflag: flags anywhere (also before the command), ``--flag value``, ``--flag=value``,
    ``-f value``, ``-fvalue``, ``-f=value``, ``--bool=false``, grouped short booleans, ``--`` ends flags."""
    command, used = _find_command(argv)
    specs = {f.name: f for f in GLOBAL_FLAGS}
    for spec in COMMAND_FLAGS.get(command, ()):
        specs[spec.name] = spec
    shorts = {f.short: f for f in specs.values() if f.short}
    flags: dict[str, Any] = {}
    for spec in specs.values():
        if spec.kind in ("array", "slice"):
            flags[spec.name] = []
        elif spec.kind == "map":
            flags[spec.name] = {}
        elif spec.kind == "bool":
            flags[spec.name] = bool(spec.default)
        else:
            flags[spec.name] = spec.default
    given: set[str] = set()
    args: list[str] = []
    rest = [token for position, token in enumerate(argv) if position not in used]

    def store(spec: Flag, value: str | None, shown: str) -> None:
        given.add(spec.name)
        if spec.kind == "bool":
            if value is None:
                flags[spec.name] = True
            elif value in _TRUE:
                flags[spec.name] = True
            elif value in _FALSE:
                flags[spec.name] = False
            else:
                raise HelmError(f'invalid argument "{value}" for "{shown}" flag: strconv.ParseBool: parsing '
                                f'"{value}": invalid syntax')
        elif spec.kind == "optstr":
            flags[spec.name] = "client" if value is None else value
        elif spec.kind == "int":
            if value is None or not re.fullmatch(r"[+-]?\d+", value):
                raise HelmError(f'invalid argument "{value}" for "{shown}" flag: strconv.ParseInt: parsing '
                                f'"{value}": invalid syntax')
            flags[spec.name] = int(value)
        elif spec.kind == "duration":
            try:
                parse_duration(value or "")
            except HelmError as exc:
                raise HelmError(f'invalid argument "{value}" for "{shown}" flag: {exc}') from exc
            flags[spec.name] = value
        elif spec.kind == "array":
            flags[spec.name].append(value)
        elif spec.kind == "slice":
            flags[spec.name].extend(part for part in (value or "").split(",") if part)
        elif spec.kind == "map":
            for pair in (value or "").split(","):
                key, _eq, item = pair.partition("=")
                if key:
                    flags[spec.name][key] = item
        else:
            flags[spec.name] = value

    index = 0
    while index < len(rest):
        token = rest[index]
        index += 1
        if token == "--":
            args.extend(rest[index:])
            break
        if token.startswith("--") and len(token) > 2:
            name, has_value, value = token[2:].partition("=")
            spec = specs.get(name)
            if spec is None:
                raise HelmError(f"unknown flag: --{name}")
            if has_value or spec.kind in ("bool", "optstr"):
                store(spec, value if has_value else None, f"--{name}")
                continue
            if index >= len(rest):
                raise HelmError(f"flag needs an argument: --{name}")
            store(spec, rest[index], f"--{name}")
            index += 1
            continue
        if token.startswith("-") and len(token) > 1:
            chars = token[1:]
            position = 0
            while position < len(chars):
                char = chars[position]
                spec = shorts.get(char)
                if spec is None:
                    raise HelmError(f"unknown shorthand flag: '{char}' in -{chars}")
                shown = f"-{char}, --{spec.name}"
                remainder = chars[position + 1:]
                if spec.kind in ("bool", "optstr"):
                    if remainder.startswith("="):
                        store(spec, remainder[1:], shown)
                        break
                    store(spec, None, shown)
                    position += 1
                    continue
                if remainder:
                    store(spec, remainder[1:] if remainder.startswith("=") else remainder, shown)
                elif index < len(rest):
                    store(spec, rest[index], shown)
                    index += 1
                else:
                    raise HelmError(f"flag needs an argument: '{char}' in -{chars}")
                break
            continue
        args.append(token)
    return ParsedArgs(command, flags, args, given)


# --------------------------------------------------------------------------------------------------------------
# Command line: commands
# --------------------------------------------------------------------------------------------------------------


class Invocation:
    """One run of the fake binary: parsed arguments, environment, output streams, lazily opened API client."""

    def __init__(self, parsed: ParsedArgs, env: Mapping[str, str], stdout: IO[str], stderr: IO[str],
                 stdin: IO[str] | None) -> None:
        self.parsed = parsed
        self.env = env
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.settings = HelmSettings.from_env(env, parsed.flags)
        self._client: Any = None

    @property
    def namespace(self) -> str:
        return self.settings.namespace(self.env)

    def api_client(self) -> Any:
        if self._client is None:
            if importlib.util.find_spec("kubernetes") is None:
                raise HelmError("the fake helm needs the kubernetes Python package: put the venv's bin first on PATH")
            self._client = self.settings.api_client(self.env)
        return self._client

    def storage(self, all_namespaces: bool = False) -> ReleaseStorage:
        return KubeReleaseStorage(self.api_client(), None if all_namespaces else self.namespace)

    def applier(self) -> ClusterApplier:
        return KubeClusterApplier(self.api_client(), really_wait=self.env.get("FAKE_HELM_WAIT") == "1")

    def out(self, text: str) -> None:
        self.stdout.write(text)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a pool must not hide the command's result
                pass


def _require_args(inv: Invocation, count: int, usage: str, *, minimum: bool = False,
                  maximum: int | None = None) -> None:
    args = inv.parsed.args
    name = inv.parsed.command
    if minimum:
        if len(args) < count:
            plural = "argument" if count == 1 else "arguments"
            raise HelmError(f'"helm {name}" requires at least {count} {plural}\n\nUsage:  helm {usage}')
        if maximum is not None and len(args) > maximum:
            raise HelmError(f'"helm {name}" accepts at most {maximum} arguments\n\nUsage:  helm {usage}')
        return
    if len(args) != count:
        plural = "argument" if count == 1 else "arguments"
        raise HelmError(f'"helm {name}" requires {count} {plural}\n\nUsage:  helm {usage}')


def _output_format(inv: Invocation) -> str:
    value = (inv.parsed["output"] or "table").lower()
    if value not in ("table", "json", "yaml"):
        raise HelmError(f'invalid argument "{value}" for "-o, --output" flag: invalid format type')
    return value


def _emit(inv: Invocation, obj: Any, fmt: str) -> None:
    inv.out(to_json(obj) if fmt == "json" else to_yaml(obj))


def cmd_version(inv: Invocation) -> int:
    version = inv.env.get("FAKE_HELM_VERSION") or HELM_VERSION
    info = {"Version": version, "GitCommit": HELM_GIT_COMMIT, "GitTreeState": "clean", "GoVersion": HELM_GO_VERSION}
    template = inv.parsed["template"]
    if template:
        out = template
        for key, value in info.items():
            out = re.sub(r"\{\{\s*\." + key + r"\s*\}\}", value, out)
        inv.out(out if out.endswith("\n") else out + "\n")
    elif inv.parsed["short"]:
        inv.out(f"{version}+g{HELM_GIT_COMMIT[:7]}\n")
    else:
        inv.out(f'version.BuildInfo{{Version:"{version}", GitCommit:"{HELM_GIT_COMMIT}", GitTreeState:"clean", '
                f'GoVersion:"{HELM_GO_VERSION}"}}\n')
    return 0


_LIST_STATES = {"deployed": ("deployed",), "failed": ("failed",), "superseded": ("superseded",),
                "uninstalled": ("uninstalled",), "uninstalling": ("uninstalling",), "pending": PENDING_STATUSES}


def list_releases(releases: Iterable[dict[str, Any]], *, filter_regex: str | None = None,
                  states: Iterable[str] = (), show_all: bool = False, by_date: bool = False, reverse: bool = False,
                  limit: int = 256, offset: int = 0) -> list[dict[str, Any]]:
    """``helm list`` selection (pkg/action/list.go): latest revision per release, then the state mask (default
    deployed + failed), then name order."""
    pattern = re.compile(filter_regex) if filter_regex else None
    chosen = [r for r in releases if pattern is None or pattern.search(r["name"])]
    requested = set(states)
    wanted: set[str] = set()
    if show_all:
        wanted = {s for group in _LIST_STATES.values() for s in group} | {"unknown"}
    else:
        for state in requested:
            wanted.update(_LIST_STATES[state])
        if not wanted:
            wanted = {"deployed", "failed"}
    if requested != {"superseded"} or show_all:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for release in chosen:
            key = (release["namespace"], release["name"])
            if key not in latest or latest[key]["version"] < release["version"]:
                latest[key] = release
        chosen = list(latest.values())
    chosen = [r for r in chosen if r["info"]["status"] in wanted]
    if by_date:
        chosen.sort(key=lambda r: (parse_timestamp(r["info"].get("last_deployed", "")) or datetime.min.replace(
            tzinfo=UTC), r["name"]), reverse=reverse)
    else:
        chosen.sort(key=lambda r: (r["name"], r["namespace"]), reverse=reverse)
    if offset >= len(chosen):
        return []
    end = offset + limit if limit > 0 else len(chosen)
    return chosen[offset:end]


def cmd_list(inv: Invocation) -> int:
    fmt = _output_format(inv)
    p = inv.parsed
    all_namespaces = bool(p["all-namespaces"])
    try:
        re.compile(p["filter"] or "")
    except re.error as exc:
        raise HelmError(f"error parsing regexp: {exc}") from exc
    states = [s for s in _LIST_STATES if p[s]]
    releases = list_releases(inv.storage(all_namespaces).list(), filter_regex=p["filter"], states=states,
                             show_all=bool(p["all"]), by_date=bool(p["date"]), reverse=bool(p["reverse"]),
                             limit=p["max"] or 0, offset=p["offset"] or 0)
    if p["short"]:
        if fmt == "table":
            inv.out("".join(f"{r['name']}\n" for r in releases))
        else:
            _emit(inv, [r["name"] for r in releases], fmt)
        return 0
    elements = [list_element(r) for r in releases]
    if fmt != "table":
        _emit(inv, elements, fmt)
        return 0
    rows = [] if p["no-headers"] else [["NAME", "NAMESPACE", "REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION"]]
    rows += [[e["name"], e["namespace"], e["revision"], e["updated"], e["status"], e["chart"], e["app_version"]]
             for e in elements]
    inv.out(table(rows))
    return 0


def cmd_status(inv: Invocation) -> int:
    _require_args(inv, 1, "status RELEASE_NAME [flags]")
    fmt = _output_format(inv)
    release = get_release(inv.storage(), inv.parsed.args[0], inv.parsed["revision"] or 0)
    if fmt != "table":
        _emit(inv, release, fmt)
    else:
        inv.out(status_text(release, show_description=bool(inv.parsed["show-desc"])))
    return 0


def cmd_get(inv: Invocation) -> int:
    what = inv.parsed.command.split(" ", 1)[1] if " " in inv.parsed.command else ""
    if not what:
        raise HelmError('unknown command "get": use "helm get values|manifest|notes|hooks|metadata|all"')
    _require_args(inv, 1, f"get {what} RELEASE_NAME [flags]")
    release = get_release(inv.storage(), inv.parsed.args[0], inv.parsed["revision"] or 0)
    if what == "values":
        fmt = _output_format(inv)
        values: Any
        if inv.parsed["all"]:
            values = _sorted_map(coalesce_values(release["chart"].get("values"), release.get("config")))
            header = "COMPUTED VALUES:\n"
        else:
            values = release.get("config") or None
            header = "USER-SUPPLIED VALUES:\n"
        if fmt == "table":
            inv.out(header + to_yaml(values))
        else:
            _emit(inv, values, fmt)
    elif what == "manifest":
        inv.out(release.get("manifest") or "")
        if release.get("manifest") and not release["manifest"].endswith("\n"):
            inv.out("\n")
    elif what == "notes":
        if release["info"].get("notes"):
            inv.out("NOTES:\n" + release["info"]["notes"].rstrip("\n") + "\n")
    elif what == "hooks":
        pass  # the cilium chart as faked here has no hooks
    elif what == "metadata":
        fmt = _output_format(inv)
        meta = release_metadata(release)
        if fmt == "table":
            inv.out("".join(f"{label}: {meta[key]}\n" for label, key in (
                ("NAME", "name"), ("CHART", "chart"), ("VERSION", "version"), ("APP_VERSION", "appVersion"),
                ("NAMESPACE", "namespace"), ("REVISION", "revision"), ("STATUS", "status"),
                ("DEPLOYED_AT", "deployedAt"))))
        else:
            _emit(inv, meta, fmt)
    elif what == "all":
        inv.out(status_text(release) + "USER-SUPPLIED VALUES:\n" + to_yaml(release.get("config") or None)
                + "\nCOMPUTED VALUES:\n"
                + to_yaml(_sorted_map(coalesce_values(release["chart"].get("values"), release.get("config"))))
                + "HOOKS:\nMANIFEST:\n" + (release.get("manifest") or ""))
    return 0


def cmd_history(inv: Invocation) -> int:
    _require_args(inv, 1, "history RELEASE_NAME [flags]")
    fmt = _output_format(inv)
    history = release_history(inv.storage(), inv.parsed.args[0])
    if not history:
        raise HelmError("release: not found")
    limit = inv.parsed["max"] or 256
    elements = [history_element(r) for r in history[-limit:]]
    if fmt != "table":
        _emit(inv, elements, fmt)
        return 0
    rows = [["REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION", "DESCRIPTION"]]
    rows += [[str(e["revision"]), _ansic(e["updated"]), e["status"], e["chart"], e["app_version"], e["description"]]
             for e in elements]
    inv.out(table(rows))
    return 0


def _value_options(inv: Invocation) -> ValueOptions:
    p = inv.parsed
    return ValueOptions(value_files=list(p["values"] or []), json_values=list(p["set-json"] or []),
                        values=list(p["set"] or []), string_values=list(p["set-string"] or []),
                        file_values=list(p["set-file"] or []), literal_values=list(p["set-literal"] or []))


def _deploy_options(inv: Invocation) -> DeployOptions:
    p = inv.parsed
    dry_run = p["dry-run"]
    dry = dry_run is not None and str(dry_run).lower() not in ("none", "false")
    return DeployOptions(wait=bool(p["wait"]) or bool(p["wait-for-jobs"]), atomic=bool(p["atomic"]),
                         timeout=parse_duration(p["timeout"] or "5m0s"), dry_run=dry,
                         description=p["description"] or None,
                         history_max=p["history-max"] if p["history-max"] is not None else 10,
                         create_namespace=bool(p["create-namespace"]))


def _chart_version(inv: Invocation, ref: str) -> str:
    chart = resolve_chart_ref(ref, inv.parsed["repo"])
    return chart_version_for(chart, inv.parsed["version"], inv.env, devel=bool(inv.parsed["devel"]))


def _print_release(inv: Invocation, release: dict[str, Any], prefix: str = "", dry_run: bool = False) -> None:
    fmt = _output_format(inv)
    if fmt != "table":
        _emit(inv, release, fmt)
        return
    inv.out(prefix + status_text(release, show_manifest=dry_run))


def cmd_install(inv: Invocation) -> int:
    p = inv.parsed
    args = list(p.args)
    if p["generate-name"]:
        args.insert(0, f"cilium-{int(time.time())}")
    if not args:
        raise HelmError('"helm install" requires at least 1 argument\n\nUsage:  helm install [NAME] [CHART] [flags]')
    if len(args) == 1:
        raise HelmError("must either provide a name or specify --generate-name")
    if len(args) > 2:
        raise HelmError(f"expected at most two arguments, unexpected arguments: {', '.join(args[2:])}")
    name, ref = args
    version = _chart_version(inv, ref)
    values = merge_value_options(_value_options(inv), inv.stdin)
    options = _deploy_options(inv)
    release = run_install(inv.storage(), inv.applier(), name=name, namespace=inv.namespace, chart_version=version,
                          values=values, options=options, replace=bool(p["replace"]), env=inv.env)
    _print_release(inv, release, dry_run=options.dry_run)
    return 0


def cmd_upgrade(inv: Invocation) -> int:
    _require_args(inv, 2, "upgrade [RELEASE] [CHART] [flags]")
    p = inv.parsed
    name, ref = p.args
    version = _chart_version(inv, ref)
    value_options = _value_options(inv)
    values = merge_value_options(value_options, inv.stdin)
    options = _deploy_options(inv)
    storage = inv.storage()
    history = release_history(storage, name) if p["install"] else []
    if p["install"] and (not history or history[-1]["info"]["status"] == "uninstalled"):
        prefix = "" if _output_format(inv) != "table" else f'Release "{name}" does not exist. Installing it now.\n'
        release = run_install(storage, inv.applier(), name=name, namespace=inv.namespace, chart_version=version,
                              values=values, options=options, replace=bool(history), env=inv.env)
        _print_release(inv, release, prefix, dry_run=options.dry_run)
        return 0
    request = UpgradeRequest(name=name, namespace=inv.namespace, chart_version=version, values=values,
                             values_given=not value_options.is_empty(), reset_values=bool(p["reset-values"]),
                             reuse_values=bool(p["reuse-values"]),
                             reset_then_reuse_values=bool(p["reset-then-reuse-values"]))
    release = run_upgrade(storage, inv.applier(), request, options, env=inv.env)
    _print_release(inv, release, f'Release "{name}" has been upgraded. Happy Helming!\n', dry_run=options.dry_run)
    return 0


def cmd_rollback(inv: Invocation) -> int:
    _require_args(inv, 1, "rollback <RELEASE> [REVISION] [flags]", minimum=True, maximum=2)
    args = inv.parsed.args
    revision = 0
    if len(args) == 2:
        if not re.fullmatch(r"[+-]?\d+", args[1]):
            raise HelmError(f'strconv.Atoi: parsing "{args[1]}": invalid syntax')
        revision = int(args[1])
    p = inv.parsed
    options = DeployOptions(wait=bool(p["wait"]) or bool(p["wait-for-jobs"]),
                            timeout=parse_duration(p["timeout"] or "5m0s"), dry_run=bool(p["dry-run"]),
                            history_max=p["history-max"] if p["history-max"] is not None else 10)
    run_rollback(inv.storage(), inv.applier(), args[0], revision, options, env=inv.env)
    inv.out("Rollback was a success! Happy Helming!\n")
    return 0


def cmd_uninstall(inv: Invocation) -> int:
    _require_args(inv, 1, "uninstall RELEASE_NAME [...] [flags]", minimum=True)
    p = inv.parsed
    for name in p.args:
        removed = run_uninstall(inv.storage(), inv.applier(), name, keep_history=bool(p["keep-history"]),
                                dry_run=bool(p["dry-run"]), description=p["description"],
                                ignore_not_found=bool(p["ignore-not-found"]))
        if removed:
            inv.out(f'release "{name}" uninstalled\n')
    return 0


def cmd_template(inv: Invocation) -> int:
    p = inv.parsed
    args = list(p.args)
    if len(args) == 1:
        args.insert(0, "release-name")
    if len(args) != 2:
        raise HelmError('"helm template" requires at least 1 argument\n\nUsage:  helm template [NAME] [CHART] [flags]')
    name, ref = args
    version = _chart_version(inv, ref)
    config = merge_value_options(_value_options(inv), inv.stdin)
    values = coalesce_values(chart_default_values(version), config)
    inv.out(manifest_from_objects(render_objects(name, inv.namespace, version, values)))
    return 0


def cmd_show(inv: Invocation) -> int:
    what = inv.parsed.command.split(" ", 1)[1] if " " in inv.parsed.command else ""
    if not what:
        raise HelmError('"helm show" requires a subcommand: all, chart, crds, readme, values')
    _require_args(inv, 1, f"show {what} [CHART] [flags]")
    version = _chart_version(inv, inv.parsed.args[0])
    if what == "chart":
        inv.out(to_yaml(chart_metadata(version)))
    elif what == "values":
        inv.out(to_yaml(chart_default_values(version)))
    elif what == "readme":
        inv.out(f"# cilium\n\n![Version: {version}](https://img.shields.io/badge/Version-{version}-informational)\n")
    elif what == "crds":
        pass
    else:
        inv.out(to_yaml(chart_metadata(version)) + "---\n" + to_yaml(chart_default_values(version)))
    return 0


def _plugins(inv: Invocation) -> list[str]:
    return [p.strip() for p in inv.env.get("FAKE_HELM_PLUGINS", "").split(",") if p.strip()]


def cmd_plugin(inv: Invocation) -> int:
    if inv.parsed.command != "plugin list":
        raise HelmError('"helm plugin" supports only "list" in the fake helm')
    rows = [["NAME", "VERSION", "DESCRIPTION"]]
    if "diff" in _plugins(inv):
        rows.append(["diff", HELM_DIFF_VERSION, "Preview helm upgrade changes as a diff"])
    inv.out(table(rows))
    return 0


def cmd_repo(inv: Invocation) -> int:
    sub = inv.parsed.command.split(" ", 1)[1] if " " in inv.parsed.command else ""
    if sub == "add":
        _require_args(inv, 2, "repo add [NAME] [URL] [flags]")
        inv.out(f'"{inv.parsed.args[0]}" has been added to your repositories\n')
    elif sub == "update":
        inv.out("Hang tight while we grab the latest from your chart repositories...\n"
                '...Successfully got an update from the "cilium" chart repository\n'
                "Update Complete. \u2388Happy Helming!\u2388\n")
    elif sub == "list":
        fmt = _output_format(inv)
        entries = [{"name": "cilium", "url": CHART_REPO_URL}]
        if fmt == "table":
            inv.out(table([["NAME", "URL"], ["cilium", CHART_REPO_URL]]))
        else:
            _emit(inv, entries, fmt)
    elif sub == "remove":
        for name in inv.parsed.args:
            inv.out(f'"{name}" has been removed from your repositories\n')
    else:
        raise HelmError(f'unknown command "{sub}" for "helm repo"')
    return 0


def cmd_search(inv: Invocation) -> int:
    if inv.parsed.command != "search repo":
        raise HelmError('"helm search" supports only "repo" in the fake helm')
    fmt = _output_format(inv)
    keyword = inv.parsed.args[0] if inv.parsed.args else ""
    versions = sorted(known_chart_versions(inv.env), key=_semver_sort_key, reverse=True)
    if inv.parsed["version"]:
        versions = [v for v in versions if _constraint_matches(v, inv.parsed["version"])]
    if not inv.parsed["versions"]:
        versions = versions[:1]
    description = chart_metadata(versions[0])["description"] if versions else ""
    hits = [] if keyword and keyword.lower() not in "cilium/cilium" else [
        {"name": "cilium/cilium", "version": v, "app_version": v, "description": description} for v in versions]
    if fmt != "table":
        _emit(inv, hits, fmt)
    elif not hits:
        inv.out("No results found\n")
    else:
        inv.out(table([["NAME", "CHART VERSION", "APP VERSION", "DESCRIPTION"]] + [
            [h["name"], h["version"], h["app_version"], h["description"]] for h in hits]))
    return 0


def _manifest_documents(manifest: str | None) -> dict[tuple[str, str, str], str]:
    docs: dict[tuple[str, str, str], str] = {}
    for chunk in (manifest or "").split("\n---\n"):
        chunk = chunk.strip().removeprefix("---").strip("\n")
        if not chunk:
            continue
        obj = yaml.safe_load(chunk)
        if not isinstance(obj, dict):
            continue
        meta = obj.get("metadata") or {}
        docs[(meta.get("namespace", ""), meta.get("name", ""), f"{obj.get('kind')} ({obj.get('apiVersion')})")] = chunk
    return docs


def manifest_diff(old: str | None, new: str | None, context: int = -1) -> str:
    """helm-diff's default output for two manifests."""
    before, after = _manifest_documents(old), _manifest_documents(new)
    out: list[str] = []
    for key in sorted(set(before) | set(after)):
        namespace, name, kind = key
        if key not in before:
            out.append(f"{namespace}, {name}, {kind} has been added:")
            out.extend(f"+ {line}" for line in after[key].splitlines())
        elif key not in after:
            out.append(f"{namespace}, {name}, {kind} has been removed:")
            out.extend(f"- {line}" for line in before[key].splitlines())
        elif before[key] != after[key]:
            out.append(f"{namespace}, {name}, {kind} has changed:")
            old_lines, new_lines = before[key].splitlines(), after[key].splitlines()
            matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes():
                if tag == "equal":
                    chunk = old_lines[i1:i2]
                    if 0 <= context < len(chunk):
                        chunk = chunk[:context] + ["..."] + chunk[len(chunk) - context:] if context else ["..."]
                    out.extend(f"  {line}" for line in chunk)
                    continue
                out.extend(f"- {line}" for line in old_lines[i1:i2])
                out.extend(f"+ {line}" for line in new_lines[j1:j2])
    return "\n".join(out) + ("\n" if out else "")


def cmd_diff(inv: Invocation) -> int:
    if "diff" not in _plugins(inv):
        raise HelmError('unknown command "diff" for "helm"\nRun \'helm --help\' for usage.')
    if inv.parsed.command == "diff version":
        inv.out(f"{HELM_DIFF_VERSION}\n")
        return 0
    if inv.parsed.command != "diff upgrade":
        raise HelmError(f'"helm {inv.parsed.command}" is not supported by the fake helm-diff')
    _require_args(inv, 2, "diff upgrade [flags] [RELEASE] [CHART]")
    p = inv.parsed
    name, ref = p.args
    version = _chart_version(inv, ref)
    value_options = _value_options(inv)
    values = merge_value_options(value_options, inv.stdin)
    storage = inv.storage()
    if not release_history(storage, name):
        if not (p["allow-unreleased"] or p["install"]):
            raise HelmError(f'"{name}" has no deployed releases')
        inv.out("********************\n\n\tRelease was not present in Helm.  Diff will show entire contents as new.\n"
                "\n********************\n")
        target = new_release(name=name, namespace=inv.namespace, version=1, chart=build_chart(version), config=values,
                             status="pending-install", description="")
        text = manifest_diff("", target["manifest"], p["context"] if p["context"] is not None else -1)
    else:
        # helm-diff reuses the old values when no values are given, like helm upgrade does.
        request = UpgradeRequest(name=name, namespace=inv.namespace, chart_version=version, values=values,
                                 values_given=not value_options.is_empty(), reset_values=bool(p["reset-values"]),
                                 reuse_values=bool(p["reuse-values"]),
                                 reset_then_reuse_values=bool(p["reset-then-reuse-values"]))
        _last, current, target = plan_upgrade(storage, request)
        text = manifest_diff(current.get("manifest"), target["manifest"],
                             p["context"] if p["context"] is not None else -1)
    inv.out(text)
    return 2 if text and p["detailed-exitcode"] else 0


def cmd_env(inv: Invocation) -> int:
    namespace = inv.settings.namespace_flag or ""
    for key, value in (("HELM_KUBECONTEXT", inv.settings.kube_context or ""), ("HELM_NAMESPACE", namespace),
                       ("HELM_KUBEAPISERVER", inv.settings.apiserver or ""),
                       ("HELM_KUBECAFILE", inv.settings.ca_file or "")):
        inv.out(f'{key}="{value}"\n')
    return 0


COMMANDS: dict[str, Callable[[Invocation], int]] = {
    "version": cmd_version, "list": cmd_list, "status": cmd_status, "get": cmd_get, "history": cmd_history,
    "install": cmd_install, "upgrade": cmd_upgrade, "rollback": cmd_rollback, "uninstall": cmd_uninstall,
    "template": cmd_template, "show": cmd_show, "plugin": cmd_plugin, "repo": cmd_repo, "search": cmd_search,
    "diff": cmd_diff, "env": cmd_env,
}

USAGE = """The Kubernetes package manager (fake: knows only the cilium chart)

Usage:
  helm [command]

Available Commands:
  diff        (plugin, with FAKE_HELM_PLUGINS=diff)
  env         helm client environment information
  get         download extended information of a named release
  history     fetch release history
  install     install a chart
  list        list releases
  plugin      install, list, or uninstall Helm plugins
  repo        add, list, remove, update, and index chart repositories
  rollback    roll back a release to a previous revision
  search      search for a keyword in charts
  show        show information of a chart
  status      display the status of the named release
  template    locally render templates
  uninstall   uninstall a release
  upgrade     upgrade a release
  version     print the client version information
"""


def _log_invocation(argv: list[str], env: Mapping[str, str]) -> None:
    path = env.get("FAKE_HELM_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(list(argv)) + "\n")


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None, stdin: IO[str] | None = None) -> int:
    """Run the fake helm with ``argv`` (without the program name); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    _log_invocation(argv, env)
    inv: Invocation | None = None
    try:
        command = _find_command(argv)[0]
        root = command.split(" ", 1)[0]
        if root and root not in COMMANDS:
            raise HelmError(f'unknown command "{root}" for "helm"\nRun \'helm --help\' for usage.')
        parsed = parse_command_line(argv)
        if not parsed.command:
            stdout.write(USAGE)
            return 0
        handler = COMMANDS[root]
        if parsed["help"]:
            stdout.write(f"Usage:\n  helm {parsed.command} [flags]\n")
            return 0
        inv = Invocation(parsed, env, stdout, stderr, stdin)
        return handler(inv)
    except HelmError as exc:
        stderr.write(f"Error: {exc}\n")
        return 1
    finally:
        if inv is not None:
            inv.close()


if __name__ == "__main__":
    sys.exit(main())
