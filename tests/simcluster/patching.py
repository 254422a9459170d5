"""The three PATCH flavours of the Kubernetes API: JSON merge, strategic merge and JSON patch."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

# List fields that strategic merge patch merges by a key instead of replacing (a subset of the
# Kubernetes patchMergeKey tags: enough for pods, daemonsets, deployments and services).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "tolerations": "key",
}


class PatchError(ValueError):
    """A patch the API server would refuse (422/400)."""


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null removes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str | None = None) -> Any:
    """Strategic merge: like a merge patch, but keyed lists merge element-wise."""
    if isinstance(patch, dict):
        directive = patch.get("$patch")
        if directive == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        if directive == "delete":
            return None
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            else:
                merged = strategic_merge_patch(result.get(key), value, key)
                if merged is None:
                    result.pop(key, None)
                else:
                    result[key] = merged
        return result
    if isinstance(patch, list) and field in MERGE_KEYS and isinstance(target, list):
        key = MERGE_KEYS[field]
        result_list = copy.deepcopy(target)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise PatchError(f"map: {item} does not contain declared merge key: {key}")
            index = next((i for i, old in enumerate(result_list)
                          if isinstance(old, dict) and old.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    result_list.pop(index)
                continue
            if index is None:
                result_list.append(copy.deepcopy(item))
            else:
                result_list[index] = strategic_merge_patch(result_list[index], item)
        return result_list
    return copy.deepcopy(patch)


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp")
    try:
        return jsonpatch.apply_patch(copy.deepcopy(target), operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(f"the server rejected our request due to an error in our request: {exc}") from exc


PATCH_TYPES = {
    "application/merge-patch+json": json_merge_patch,
    "application/strategic-merge-patch+json": strategic_merge_patch,
    "application/json-patch+json": json_patch,
    # Server-side apply is treated as a merge of the applied configuration (no field ownership).
    "application/apply-patch+yaml": json_merge_patch,
}


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    function = PATCH_TYPES.get(content_type.split(";")[0].strip())
    if function is None:
        raise PatchError(f"unsupported patch type {content_type!r}")
    if function is not json_patch and not isinstance(patch, dict):
        raise PatchError(f"json: cannot unmarshal {type(patch).__name__} into Go value of type "
                         "map[string]interface {}")
    result = function(target, patch)
    if not isinstance(result, dict):
        raise PatchError("patch did not produce an object")
    return result
