#!/usr/bin/python
# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: cilium_audit_mode_info
short_description: Show where Cilium policy audit mode is on, and whether the agents really run with it
version_added: 0.1.0
description:
  - Reads, for every Cilium agent, the audit mode the daemon runs with (C(cilium-dbg config -o json)), the value
    configured for it (ConfigMap C(cilium-config), overridden by any CiliumNodeConfig that selects its node), the agent
    version and pod start time.
  - Reads PolicyAuditMode and C(policy-enabled) of the endpoints you select (or of none, when no selector is given).
  - Answers the questions that matter while audit mode gives no isolation - is it on anywhere (RV(audit_active)),
    where (RV(where)), does every agent run with what its configuration says (RV(consistent)) and since when the
    collection recorded it (RV(since)).
  - Never changes anything. It needs C(get/list) on pods, nodes, configmaps, CiliumEndpoints and CiliumNodeConfigs
    and C(create) on C(pods/exec) in the Cilium namespace.
author:
  - netpol.cilium maintainers (@netpol-cilium)
requirements:
  - kubernetes >= 24.2.0 (Python)
  - PyYAML >= 3.11 (Python)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - netpol.cilium._cilium
  - netpol.cilium._cilium.SELECTION
  - netpol.cilium._attributes
  - netpol.cilium._attributes.ACTIONGROUP_CILIUM
  - netpol.cilium._attributes.INFO_MODULE
options:
  all_endpoints:
    description:
      - Report every endpoint of every node (or of O(nodes)), not only selected ones.
    type: bool
    default: false
notes:
  - Endpoints that no policy selects show C(policy_enabled=none) and produce no AUDIT verdicts even with audit mode on.
seealso:
  - module: netpol.cilium.cilium_audit_mode
"""

EXAMPLES = r"""
- name: Is audit mode on anywhere in this cluster?
  netpol.cilium.cilium_audit_mode_info:
    kubeconfig: ~/.kube/prod-a
  register: audit

- name: Fail when audit mode is on or an agent was not restarted after a change
  ansible.builtin.assert:
    that:
      - not audit.audit_active
      - audit.consistent
    fail_msg: "{{ audit.where }} {{ audit.inconsistencies }}"

- name: Audit state of the db pods
  netpol.cilium.cilium_audit_mode_info:
    namespace: shop
    label_selector: app=db
  register: db_audit
"""

RETURN = r"""
audit_active:
  description: Whether audit mode is on anywhere - an agent runs with it, a selected endpoint has it, or cilium-config
    sets it.
  returned: always
  type: bool
where:
  description: Where audit mode is on.
  returned: always
  type: dict
  contains:
    cluster:
      description: Every agent runs with audit mode.
      type: bool
    nodes:
      description: Nodes whose agent runs with audit mode (empty when RV(where.cluster) is true).
      type: list
      elements: str
    endpoints:
      description: Selected endpoints with audit mode on, on nodes whose agent runs without it.
      type: list
      elements: dict
  sample: {"cluster": false, "nodes": [], "endpoints": [{"id": 1742, "node": "worker-3", "namespace": "shop",
           "pod": "db-0"}]}
consistent:
  description: Every agent runs with the audit mode its configuration asks for.
  returned: always
  type: bool
inconsistencies:
  description: One sentence per agent whose runtime audit mode differs from its configuration (not restarted since).
  returned: always
  type: list
  elements: str
config:
  description: The configured values.
  returned: always
  type: dict
  contains:
    namespace:
      description: The Cilium namespace.
      type: str
    policy_audit_mode:
      description: C(policy-audit-mode) in cilium-config (V(Enabled), V(Disabled), or null when the key is absent).
      type: str
    node_configs:
      description: CiliumNodeConfig objects with their node selector and policy-audit-mode default.
      type: list
      elements: dict
agents:
  description: One entry per node.
  returned: always
  type: list
  elements: dict
  contains:
    node:
      description: Node name.
      type: str
    agent_pod:
      description: The agent pod on that node.
      type: str
    version:
      description: Agent version from its image tag.
      type: str
    ready:
      description: The agent pod is ready.
      type: bool
    started_at:
      description: When the agent pod started.
      type: str
    runtime_audit_mode:
      description: PolicyAuditMode the daemon runs with.
      type: str
    configured_audit_mode:
      description: PolicyAuditMode its configuration asks for at the next start.
      type: str
    configured_by:
      description: Where that value comes from (cilium-config or a CiliumNodeConfig).
      type: str
    consistent:
      description: Runtime and configured values agree.
      type: bool
    error:
      description: Why this agent could not be read.
      type: str
endpoints:
  description: The selected endpoints.
  returned: always
  type: list
  elements: dict
  sample: [{"id": 1742, "node": "worker-3", "namespace": "shop", "pod": "db-0", "audit_mode": "Enabled",
            "policy_enabled": "audit-ingress", "error": null}]
errors:
  description: Agents or endpoints that could not be read.
  returned: always
  type: list
  elements: str
ledger:
  description: What the collection recorded when it enabled audit mode - scope, selection, reason, C(enabled_by),
    C(enabled_at), C(max_duration), C(expires_at), and C(scope_key) (the entry's key in the ledger ConfigMap).
  returned: always
  type: list
  elements: dict
since:
  description: The earliest time the collection recorded enabling audit mode that is still recorded, or null.
  returned: always
  type: str
guard:
  description:
    - Audit mode that should not be on - on past the expiry of every ledger entry that covers it (or with no expiry
      recorded), or on with no ledger entry at all. A place is covered by an entry of its own scope or a wider one.
    - Endpoints are only checked when they are reported (selected, or O(all_endpoints=true));
      C(playbooks/audit_guard.yml) uses O(all_endpoints=true).
  returned: always
  type: dict
  contains:
    ok:
      description: Nothing expired and nothing unledgered.
      type: bool
    checked_at:
      description: The time the expiries were compared with (UTC).
      type: str
    expired:
      description: Places on past their expiry, with the covering entry's C(scope_key), C(enabled_at), C(expires_at),
        C(reason) and C(enabled_by).
      type: list
      elements: dict
    unledgered:
      description: Places on that no ledger entry covers (C(where), C(kind) cluster/node/endpoint, and the node or
        endpoint).
      type: list
      elements: dict
    stale:
      description: Ledger entries that cover nothing that is on any more (e.g. endpoints reset by an agent restart).
      type: list
      elements: dict
    messages:
      description: One readable line per expired or unledgered place.
      type: list
      elements: str
  sample: {"ok": false, "checked_at": "2026-11-28T09:00:00Z", "expired": [], "stale": [],
           "unledgered": [{"where": "node worker-2", "kind": "node", "node": "worker-2"}],
           "messages": ["node worker-2: audit mode on with no ledger entry (not switched on by netpol.cilium, or its
             entry was removed)"]}
"""

from ansible_collections.netpol.cilium.plugins.module_utils._args import (
    CILIUM_ARG_SPEC,
    SELECTION_ARG_SPEC,
    binary_option,
    check_ranges,
    merged,
)
from ansible_collections.netpol.cilium.plugins.module_utils._audit_mode import AuditModeService, ModuleFailure
from ansible_collections.netpol.cilium.plugins.module_utils._endpoints import build_selection
from ansible_collections.netpol.cilium.plugins.module_utils._k8s import (
    Kube,
    KubeError,
    auth_argument_spec,
    build_module,
)


def main() -> None:
    argument_spec = merged(auth_argument_spec(), CILIUM_ARG_SPEC, SELECTION_ARG_SPEC,
                           {"all_endpoints": {"type": "bool", "default": False}})
    module = build_module(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        check_ranges(params)
        selection = build_selection(params)
        selection.all_endpoints = params["all_endpoints"]
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        service = AuditModeService(Kube.from_module(module), cilium_namespace=params["cilium_namespace"],
                                   exec_timeout=params["exec_timeout"],
                                   max_parallel_nodes=params["max_parallel_nodes"], binary=binary_option(params))
        result = service.info(selection)
    except ModuleFailure as exc:
        module.fail_json(msg=str(exc), **exc.result)
    except KubeError as exc:
        module.fail_json(msg=str(exc), status=exc.status, reason=exc.reason)
    if not params["allow_empty"] and not selection.empty and not result["endpoints"]:
        module.fail_json(msg=f"the selection matched no endpoint ({selection.describe()}); set allow_empty: true "
                         "if that is expected", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
