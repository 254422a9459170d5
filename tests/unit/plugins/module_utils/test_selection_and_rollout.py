"""Pure logic: selector options, policy selectors, node selectors, rollout completeness, ledger keys."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.netpol.cilium.plugins.module_utils._audit_mode import _selector_matches
from ansible_collections.netpol.cilium.plugins.module_utils._endpoints import (
    _selector_to_string,
    build_selection,
    parse_namespaced_name,
)
from ansible_collections.netpol.cilium.plugins.module_utils._ledger import scope_key
from ansible_collections.netpol.cilium.plugins.module_utils._rollout import daemonset_rolled_out


def test_selection_is_the_union_of_valid_options() -> None:
    selection = build_selection({"endpoint_ids": [1742, "17"], "pods": ["shop/db-0"], "namespace": "shop",
                                 "label_selector": "app=db", "policy": "shop/db-ingress", "nodes": ["w1"]})
    assert selection.endpoint_ids == [1742, 17]
    assert selection.pods == [("shop", "db-0")]
    assert selection.policy == ("shop", "db-ingress")
    assert selection.describe() == ("endpoint_ids=1742,17 pods=shop/db-0 namespace=shop label_selector=app=db "
                                    "policy=shop/db-ingress nodes=w1")


@pytest.mark.parametrize(("params", "message"), [
    ({"pods": ["db-0"]}, "pods: expected 'namespace/name', got 'db-0'"),
    ({"pods": ["shop/db;rm"]}, "pods: 'shop/db;rm' is not a valid 'namespace/name'"),
    ({"policy": "a/b/c"}, "policy: expected 'namespace/name'"),
    ({"label_selector": "app=db"}, "label_selector: needs namespace"),
    ({"namespace": "Shop"}, "namespace: 'Shop' is not a valid namespace name"),
    ({"endpoint_ids": ["1 2"]}, "endpoint_ids: expected endpoint ids as whole numbers"),
    ({"endpoint_ids": [70000]}, "endpoint_ids: endpoint id 70000 is out of range"),
])
def test_bad_selection_options_name_the_option(params: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        build_selection(params)
    assert message in str(error.value)


def test_parse_namespaced_name() -> None:
    assert parse_namespaced_name("kube-system/cilium-abc12", "pods") == ("kube-system", "cilium-abc12")


def test_cilium_endpoint_selector_becomes_a_label_selector() -> None:
    selector = {"matchLabels": {"k8s:app": "db", "any:tier": "data"},
                "matchExpressions": [{"key": "k8s:env", "operator": "In", "values": ["prod", "stage"]},
                                     {"key": "legacy", "operator": "DoesNotExist"},
                                     {"key": "team", "operator": "Exists"}]}
    assert _selector_to_string(selector) == "app=db,tier=data,env in (prod,stage),!legacy,team"
    assert _selector_to_string({}) == ""
    assert _selector_to_string(None) is None


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ({"matchLabels": {"zone": "a"}}, {"zone": "a", "x": "y"}, True),
    ({"matchLabels": {"zone": "a"}}, {"zone": "b"}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}, {"zone": "b"}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"zone": "a"}, False),
    ({}, {"zone": "a"}, True),
    (None, {"zone": "a"}, False),
])
def test_node_selector_matching(selector: dict | None, labels: dict, expected: bool) -> None:
    assert _selector_matches(selector, labels) is expected


def daemonset(generation: int, observed: int, desired: int, updated: int, available: int) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(generation=generation),
                           status=SimpleNamespace(observed_generation=observed, desired_number_scheduled=desired,
                                                  updated_number_scheduled=updated, number_available=available))


@pytest.mark.parametrize(("ds", "done", "says"), [
    (daemonset(3, 2, 3, 3, 3), False, "observe generation 3"),
    (daemonset(3, 3, 3, 1, 2), False, "1 of 3 agent pods updated"),
    (daemonset(3, 3, 3, 3, 2), False, "2 of 3 updated agent pods available"),
    (daemonset(3, 3, 3, 3, 3), True, "3 agent pods updated and available"),
])
def test_rollout_is_done_only_like_kubectl_rollout_status(ds: SimpleNamespace, done: bool, says: str) -> None:
    assert daemonset_rolled_out(ds) == (done, daemonset_rolled_out(ds)[1])
    assert says in daemonset_rolled_out(ds)[1]


def test_ledger_keys_are_stable_and_valid_configmap_keys() -> None:
    one = scope_key("endpoints", {"namespace": "shop", "label_selector": "app=db"})
    two = scope_key("endpoints", {"label_selector": "app=db", "namespace": "shop"})
    other = scope_key("endpoints", {"namespace": "shop"})
    assert one == two != other
    assert one.startswith("endpoints.") and all(c.isalnum() or c in "-._" for c in one)
