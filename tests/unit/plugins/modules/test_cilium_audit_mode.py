"""Argument checks of cilium_audit_mode: refused before anything touches a cluster, naming the option."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.netpol.cilium.plugins.modules import cilium_audit_mode


def run_module(capsys: pytest.CaptureFixture[str], args: dict) -> dict:
    # a kubeconfig that does not exist: any attempt to connect would fail with a different message
    with patch_module_args({"kubeconfig": "/nonexistent/kubeconfig", **args}), pytest.raises(SystemExit):
        cilium_audit_mode.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("args", "message"), [
    ({"state": "enabled"}, "scope endpoints needs at least one of endpoint_ids, pods, namespace"),
    ({"state": "enabled", "scope": "nodes"}, "node_selector: required with scope nodes"),
    ({"state": "enabled", "scope": "nodes", "node_selector": {"canary": True}},
     "node_selector: label values must be strings (quote them), not for canary"),
    ({"state": "enabled", "scope": "cluster", "namespace": "shop"}, "namespace: only used with scope endpoints"),
    ({"state": "enabled", "pods": ["shop/db"], "node_selector": {"a": "b"}},
     "node_selector: only used with scope nodes"),
    ({"state": "enabled", "endpoint_ids": ["12; reboot"], "max_duration": "1h"},
     "endpoint_ids: expected endpoint ids as whole numbers"),
    ({"state": "enabled", "pods": ["shop/db"]}, "max_duration: required with state enabled"),
    ({"state": "enabled", "pods": ["shop/db"], "max_duration": "tomorrow"},
     "max_duration: expected a duration such as 24h, 90m, 1d12h or 2w"),
    ({"state": "enabled", "pods": ["shop/db"], "max_duration": "1h 30m"}, "max_duration: expected a duration"),
    ({"state": "enabled", "pods": ["shop/db"], "max_duration": "0h"}, "max_duration: expected a duration longer"),
    ({"state": "disabled", "pods": ["shop/db"], "write_config": False}, "write_config: only used with scope cluster"),
    ({"state": "enabled", "pods": ["shop/db"], "exec_timeout": 0}, "exec_timeout: expected a number of seconds"),
    ({"state": "enabled", "pods": ["shop/db"], "max_parallel_nodes": 500}, "max_parallel_nodes: expected 1 to 100"),
    ({"state": "enabled", "scope": "cluster", "rollout_timeout": -5}, "rollout_timeout: expected seconds"),
    ({"state": "on", "pods": ["shop/db"]}, "value of state must be one of: enabled, disabled, got: on"),
])
def test_bad_arguments_are_refused_with_the_option_named(
        capsys: pytest.CaptureFixture[str], args: dict, message: str) -> None:
    result = run_module(capsys, args)
    assert result["failed"] is True
    assert message in result["msg"]
