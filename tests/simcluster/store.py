"""A stateful object store with the semantics of the Kubernetes API server that clients can observe.

Resource versions, uids, generation, optimistic concurrency (409), AlreadyExists/NotFound, watch history and
server-side dry-run live here; HTTP lives in ``server.py``.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .selectors import match_fields, match_labels, parse_field_selector, parse_label_selector


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    subresources: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


class ApiError(Exception):
    """An error the API server reports as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(rtype: ResourceType, name: str) -> ApiError:
    resource = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    details = {"name": name, "kind": rtype.plural}
    if rtype.group:
        details["group"] = rtype.group
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', details)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WatchEvent:
    resource_version: int
    type: str  # ADDED | MODIFIED | DELETED
    key: tuple[str, str]
    namespace: str | None
    object: dict[str, Any]


Listener = Callable[[str, ResourceType, "dict[str, Any] | None", "dict[str, Any] | None"], None]


@dataclass
class Store:
    """All objects of one simulated cluster."""

    types: dict[tuple[str, str], ResourceType] = field(default_factory=dict)
    objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    history: list[WatchEvent] = field(default_factory=list)
    history_limit: int = 5000
    lock: threading.RLock = field(default_factory=threading.RLock)
    changed: threading.Condition = field(init=False)
    listeners: list[Listener] = field(default_factory=list)
    _rv: itertools.count = field(default_factory=lambda: itertools.count(1000))
    resource_version: int = 1000

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    # --- resource types -------------------------------------------------------------------------------
    def register(self, rtype: ResourceType) -> None:
        with self.lock:
            self.types[rtype.key] = rtype
            self.objects.setdefault(rtype.key, {})

    def unregister(self, group: str, plural: str) -> None:
        with self.lock:
            self.types.pop((group, plural), None)
            self.objects.pop((group, plural), None)

    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        rtype = self.types.get((group, plural))
        if rtype is None or rtype.version != version:
            return None
        return rtype

    def type_for_kind(self, kind: str, group: str | None = None) -> ResourceType:
        for rtype in self.types.values():
            if rtype.kind == kind and (group is None or rtype.group == group):
                return rtype
        raise KeyError(kind)

    # --- internals ------------------------------------------------------------------------------------
    def _next_rv(self) -> int:
        self.resource_version = next(self._rv)
        return self.resource_version

    def _record(self, event_type: str, rtype: ResourceType, old: dict[str, Any] | None,
                new: dict[str, Any] | None, seen: dict[str, Any] | None = None) -> None:
        obj = seen or new or old
        assert obj is not None
        self.history.append(WatchEvent(int(obj["metadata"]["resourceVersion"]), event_type, rtype.key,
                                       obj["metadata"].get("namespace"), copy.deepcopy(obj)))
        if len(self.history) > self.history_limit:
            del self.history[: len(self.history) - self.history_limit]
        self.changed.notify_all()
        for listener in list(self.listeners):
            listener(event_type, rtype, copy.deepcopy(old) if old else None, copy.deepcopy(new) if new else None)

    @staticmethod
    def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}

    # --- CRUD -----------------------------------------------------------------------------------------
    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get(rtype.key, {}).get((namespace or "", name))
            if obj is None:
                raise not_found(rtype, name)
            return copy.deepcopy(obj)

    def try_get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.get(rtype, namespace, name)
        except ApiError:
            return None

    def list(self, rtype: ResourceType, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector)
        with self.lock:
            items = []
            for (ns, _name), obj in sorted(self.objects.get(rtype.key, {}).items()):
                if namespace and ns != namespace:
                    continue
                if not match_labels(labels, obj["metadata"].get("labels")):
                    continue
                if not match_fields(fields, obj):
                    continue
                items.append(copy.deepcopy(obj))
            return items

    def create(self, rtype: ResourceType, namespace: str | None, obj: dict[str, Any],
               dry_run: bool = False) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", f"{rtype.kind} \"\" is invalid: metadata.name: Required value: name or "
                               "generateName is required", {"kind": rtype.kind})
        if rtype.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                               "sent on the request")
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        obj["apiVersion"] = rtype.group_version
        obj["kind"] = rtype.kind
        with self.lock:
            if rtype.namespaced and rtype.plural != "namespaces":
                ns_type = self.types[("", "namespaces")]
                if ("", meta["namespace"]) not in self.objects[ns_type.key]:
                    raise ApiError(404, "NotFound", f'namespaces "{meta["namespace"]}" not found',
                                   {"name": meta["namespace"], "kind": "namespaces"})
            store_key = (meta.get("namespace", ""), meta["name"])
            if store_key in self.objects[rtype.key]:
                resource = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
                details = {"name": meta["name"], "kind": rtype.plural}
                if rtype.group:
                    details["group"] = rtype.group
                raise ApiError(409, "AlreadyExists", f'{resource} "{meta["name"]}" already exists', details)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta.pop("resourceVersion", None)
            if "spec" in obj:
                meta["generation"] = 1
            if dry_run:
                meta["resourceVersion"] = str(self.resource_version)
                return obj
            meta["resourceVersion"] = str(self._next_rv())
            self.objects[rtype.key][store_key] = obj
            self._record("ADDED", rtype, None, obj)
            return copy.deepcopy(obj)

    def replace(self, rtype: ResourceType, namespace: str | None, name: str, obj: dict[str, Any],
                dry_run: bool = False, check_version: bool = True) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        with self.lock:
            current = self.objects.get(rtype.key, {}).get((namespace or "", name))
            if current is None:
                raise not_found(rtype, name)
            meta = obj.setdefault("metadata", {})
            wanted_rv = meta.get("resourceVersion")
            if check_version and wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise conflict(rtype, name)
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            for keep in ("uid", "creationTimestamp", "namespace", "generation"):
                if keep in current["metadata"]:
                    meta[keep] = current["metadata"][keep]
            meta["name"] = name
            obj["apiVersion"] = rtype.group_version
            obj["kind"] = rtype.kind
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            if obj == current:
                return copy.deepcopy(current)  # a no-op update keeps the resourceVersion, as on a real server
            if "generation" in current["metadata"] and self._spec_part(obj) != self._spec_part(current):
                meta["generation"] = current["metadata"]["generation"] + 1
            if dry_run:
                return obj
            meta["resourceVersion"] = str(self._next_rv())
            self.objects[rtype.key][(namespace or "", name)] = obj
            self._record("MODIFIED", rtype, current, obj)
            return copy.deepcopy(obj)

    def mutate(self, rtype: ResourceType, namespace: str | None, name: str,
               change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read-modify-write under the store lock (used by the simulated controllers)."""
        with self.lock:
            current = self.get(rtype, namespace, name)
            change(current)
            current["metadata"].pop("resourceVersion", None)
            return self.replace(rtype, namespace, name, current, check_version=False)

    def delete(self, rtype: ResourceType, namespace: str | None, name: str, dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            current = self.objects.get(rtype.key, {}).get((namespace or "", name))
            if current is None:
                raise not_found(rtype, name)
            if dry_run:
                return copy.deepcopy(current)
            del self.objects[rtype.key][(namespace or "", name)]
            deleted = copy.deepcopy(current)
            deleted["metadata"]["resourceVersion"] = str(self._next_rv())
            self._record("DELETED", rtype, current, None, deleted)
            return deleted

    def events_since(self, resource_version: int) -> list[WatchEvent]:
        with self.lock:
            return [event for event in self.history if event.resource_version > resource_version]

    def oldest_history_version(self) -> int:
        with self.lock:
            return self.history[0].resource_version if self.history else self.resource_version


def conflict(rtype: ResourceType, name: str) -> ApiError:
    resource = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    details = {"name": name, "kind": rtype.plural}
    if rtype.group:
        details["group"] = rtype.group
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again", details)
