#!/usr/bin/python
# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: cilium_audit_mode
short_description: Switch Cilium policy audit mode per endpoint, per workload, per node or cluster-wide, and prove it
version_added: 0.1.0
description:
  - Sets Cilium policy audit mode (would-be denies are allowed and reported as AUDIT verdicts) to O(state) for a
    O(scope), reading the live state first and changing only what differs.
  - O(scope=endpoints) runs C(cilium-dbg endpoint config <id> PolicyAuditMode=Enabled|Disabled) in the
    C(cilium-agent) container on each endpoint's node - one exec per node for all of its endpoints, nodes in
    parallel - then reads every touched endpoint back from its agent. Endpoints are chosen by O(endpoint_ids),
    O(pods), O(namespace) with O(label_selector), or O(policy) (the union).
  - Per-endpoint settings do not survive an agent restart, and new pods start with the agent's global value. Re-running
    O(state=enabled) with the same selectors is a reconcile - it re-applies the setting where it was lost and reports
    why in RV(reapplied).
  - O(scope=nodes) writes a CiliumNodeConfig with O(node_selector) and C(policy-audit-mode) in its C(defaults), then
    restarts the agent pods of the selected nodes only, one node at a time, each gated on readiness and
    C(cilium-dbg status --brief), and verifies the daemons run with the new value.
  - O(scope=cluster) is for Cilium installations not managed by Helm - it sets C(policy-audit-mode) in the ConfigMap
    C(cilium-config) and does a health-gated rolling restart of the agent DaemonSet. A ConfigMap owned by a Helm
    release is refused unless O(force=true) (use the role C(netpol.cilium.audit_mode_helm) instead, which sets the
    value through Helm and then calls this module with O(write_config=false) for the restart and the proof).
  - Audit mode gives no isolation while it is on. Every enable is recorded in the ConfigMap
    C(netpol-cilium-audit-ledger) in the Cilium namespace - scope, selection, reason, who, since when and until when
    (O(max_duration)) - which M(netpol.cilium.cilium_audit_mode_info) reports and C(playbooks/audit_guard.yml)
    checks. Audit mode found on without an entry is recorded as C(adopted) by the next enable.
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
attributes:
  check_mode:
    support: full
    details:
      - Reads the live state and predicts which endpoints, configurations and agents would change; writes nothing.
  diff_mode:
    support: full
    details:
      - Before and after per endpoint (scope endpoints), per CiliumNodeConfig or ConfigMap value and restarted node.
  idempotent:
    support: full
    details:
      - A second run reports no change, unless an agent restart or a new pod reset an endpoint in between (reconcile).
options:
  state:
    description:
      - V(enabled) switches audit mode on (no isolation), V(disabled) back to enforcement.
    type: str
    choices: [enabled, disabled]
    required: true
  scope:
    description:
      - What to switch - selected endpoints, the agents of selected nodes, or every agent of the cluster.
    type: str
    choices: [endpoints, nodes, cluster]
    default: endpoints
  node_selector:
    description:
      - Node labels (exact matches) of the nodes to switch; required with O(scope=nodes).
    type: dict
  node_config_name:
    description:
      - Name of the CiliumNodeConfig that O(scope=nodes) writes in the Cilium namespace.
    type: str
    default: netpol-cilium-audit
  restart:
    description:
      - With O(scope=nodes) or O(scope=cluster), restart the agents whose running value differs, so the change takes
        effect. With V(false) only the configuration is written (agents pick it up at their next start).
    type: bool
    default: true
  rollout_timeout:
    description:
      - Seconds to wait for restarted agents to be ready and healthy.
    type: int
    default: 600
  force:
    description:
      - With O(scope=cluster), patch C(cilium-config) even though a Helm release owns it (the next C(helm upgrade)
        reverts it).
    type: bool
    default: false
  reason:
    description:
      - Why audit mode is switched on; kept in the ledger entry (with who, when and until when).
      - Required to switch audit mode on with O(scope=cluster), unless the ledger entry of the cluster already has
        one (a re-run) - cluster-wide audit mode is a security downgrade of the whole cluster.
    type: str
  max_duration:
    description:
      - How long audit mode may stay on, from when it was first switched on for this selection - V(24h), V(90m),
        V(1d12h), V(2w) (units w, d, h, m, s). Required with O(state=enabled).
      - The ledger entry gets C(expires_at); C(playbooks/audit_guard.yml) and
        M(netpol.cilium.cilium_audit_mode_info) report audit mode that is still on after it. Re-running with another
        value moves the expiry (counted from the first enable) and is a change.
    type: str
  enabled_by:
    description:
      - Who or what switches audit mode on, for the ledger (e.g. the AWX user and job). Defaults to the OS user and
        host that run the module (kept from the first enable on re-runs).
    type: str
  write_config:
    description:
      - With O(scope=cluster), write C(policy-audit-mode) to C(cilium-config). V(false) is for Helm-managed Cilium
        after C(helm upgrade) has set C(policyAuditMode) (what the role C(netpol.cilium.audit_mode_helm) does) - the
        ConfigMap must already hold the desired value (the task fails otherwise), and the module only restarts the
        agents whose running value differs and verifies them.
    type: bool
    default: true
notes:
  - Audit mode only covers L3/L4 policy. L7 rules (Envoy), DNS rules and FQDN policies keep enforcing.
  - An endpoint that no policy selects (C(policy-enabled=none)) produces no AUDIT verdicts; the module warns.
  - Needs C(create) on C(pods/exec) in the Cilium namespace; O(scope=nodes) also CiliumNodeConfig write and pod delete,
    O(scope=cluster) ConfigMap patch and DaemonSet patch.
seealso:
  - module: netpol.cilium.cilium_audit_mode_info
  - name: Cilium policy audit mode
    description: Cilium documentation on creating policies with audit mode.
    link: https://docs.cilium.io/en/stable/security/policy-creation/
"""

EXAMPLES = r"""
- name: Audit mode for the endpoints the db policy selects
  netpol.cilium.cilium_audit_mode:
    state: enabled
    policy: shop/db-ingress
    reason: "CHG-1234: observe db-ingress before enforcing"
    max_duration: 24h

- name: Audit mode for the db pods (re-run on a schedule to reconcile after agent restarts)
  netpol.cilium.cilium_audit_mode:
    state: enabled
    namespace: shop
    label_selector: app=db
    max_duration: 2d
  register: audit

- name: Show what a reconcile had to re-apply
  ansible.builtin.debug:
    var: audit.reapplied

- name: Audit mode on the canary nodes only
  netpol.cilium.cilium_audit_mode:
    state: enabled
    scope: nodes
    node_selector:
      rollout.example.com/canary: "true"
    max_duration: 12h
    reason: canary nodes first

- name: Back to enforcement on a cluster that is not managed by Helm
  netpol.cilium.cilium_audit_mode:
    state: disabled
    scope: cluster
"""

RETURN = r"""
changed:
  description: Whether anything was (or, in check mode, would be) changed.
  returned: always
  type: bool
endpoints:
  description: With O(scope=endpoints), one entry per selected endpoint.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Endpoint id (unique per node).
      type: int
    node:
      description: Node of the endpoint.
      type: str
    namespace:
      description: Pod namespace (null for host endpoints).
      type: str
    pod:
      description: Pod name.
      type: str
    before:
      description: PolicyAuditMode before (V(Enabled), V(Disabled), V(unknown)).
      type: str
    after:
      description: PolicyAuditMode read back after the change.
      type: str
    policy_enabled:
      description: The agent's policy-enabled for the endpoint (C(audit-*) only when a policy enforces it).
      type: str
    verified:
      description: The value was read back from the agent and is the desired one.
      type: bool
    status:
      description: V(unchanged), V(changed), V(would_change) (check mode) or V(failed).
      type: str
    error:
      description: Why this endpoint failed.
      type: str
    selected_by:
      description: The selector that picked the endpoint.
      type: str
  sample: [{"id": 1742, "node": "worker-3", "namespace": "shop", "pod": "db-0", "before": "Disabled",
            "after": "Enabled", "policy_enabled": "audit-ingress", "verified": true, "status": "changed",
            "error": null, "selected_by": "policy shop/db-ingress"}]
nodes:
  description: Per node - agent pod, endpoints selected and changed, exec time, error.
  returned: always
  type: list
  elements: dict
counts:
  description: Endpoints selected, changed, would_change, unchanged and failed.
  returned: always
  type: dict
  sample: {"selected": 3, "changed": 2, "would_change": 0, "unchanged": 1, "failed": 0}
reapplied:
  description: On a re-run of O(state=enabled), the endpoints switched again and why (agent restart, new pod).
  returned: when a ledger entry for the same selection existed
  type: list
  elements: dict
node_config:
  description: With O(scope=nodes), the CiliumNodeConfig before and after.
  returned: when O(scope=nodes)
  type: dict
config:
  description: With O(scope=cluster), C(policy-audit-mode) in cilium-config before and after.
  returned: when O(scope=cluster)
  type: dict
restart_nodes:
  description: Nodes whose agents were (or would be) restarted.
  returned: when O(scope=nodes) or O(scope=cluster)
  type: list
  elements: str
rollout:
  description: The restart - nodes restarted, seconds, health per node.
  returned: when agents were restarted
  type: dict
verified:
  description: With O(scope=nodes) or O(scope=cluster), every restarted agent runs with the desired value.
  returned: when agents were restarted
  type: bool
diff:
  description: Before and after, in diff mode.
  returned: when diff mode is on
  type: dict
"""

import getpass
import socket

from ansible_collections.netpol.cilium.plugins.module_utils._args import (
    CILIUM_ARG_SPEC,
    SELECTION_ARG_SPEC,
    binary_option,
    check_ranges,
    merged,
)
from ansible_collections.netpol.cilium.plugins.module_utils._audit_mode import (
    AuditModeService,
    ModuleFailure,
    Outcome,
)
from ansible_collections.netpol.cilium.plugins.module_utils._endpoints import build_selection
from ansible_collections.netpol.cilium.plugins.module_utils._k8s import (
    Kube,
    KubeError,
    auth_argument_spec,
    build_module,
)
from ansible_collections.netpol.cilium.plugins.module_utils._ledger import (
    Ledger,
    expires_at,
    parse_duration,
    scope_key,
    utc_now,
)

MODULE_SPEC = {
    "state": {"type": "str", "choices": ["enabled", "disabled"], "required": True},
    "scope": {"type": "str", "choices": ["endpoints", "nodes", "cluster"], "default": "endpoints"},
    "node_selector": {"type": "dict"},
    "node_config_name": {"type": "str", "default": "netpol-cilium-audit"},
    "restart": {"type": "bool", "default": True},
    "rollout_timeout": {"type": "int", "default": 600},
    "force": {"type": "bool", "default": False},
    "reason": {"type": "str"},
    "max_duration": {"type": "str"},
    "enabled_by": {"type": "str"},
    "write_config": {"type": "bool", "default": True},
}

SELECTORS = ("endpoint_ids", "pods", "namespace", "label_selector", "policy")
CLUSTER_REASON_REQUIRED = (
    "reason: required to switch audit mode on cluster-wide (scope cluster) - every policy of the cluster stops "
    "isolating while it is on, so the ledger must say why (e.g. a change number); nothing was changed")


def check_scope(params: dict) -> None:
    scope = params["scope"]
    chosen = [name for name in SELECTORS if params.get(name)]
    if scope == "endpoints" and not any(params.get(n) for n in ("endpoint_ids", "pods", "namespace", "policy")):
        raise ValueError("scope endpoints needs at least one of endpoint_ids, pods, namespace (with optional "
                         "label_selector) or policy")
    if scope != "endpoints" and chosen:
        raise ValueError(f"{', '.join(chosen)}: only used with scope endpoints (scope is {scope})")
    if scope == "nodes":
        selector = params.get("node_selector")
        if not selector:
            raise ValueError("node_selector: required with scope nodes (node labels, e.g. {'kubernetes.io/hostname': "
                             "'worker-1'})")
        bad = [key for key, value in selector.items() if not isinstance(value, str)]
        if bad:
            raise ValueError(f"node_selector: label values must be strings (quote them), not for {', '.join(bad)}")
    elif params.get("node_selector"):
        raise ValueError(f"node_selector: only used with scope nodes (scope is {scope})")
    if params["rollout_timeout"] < 1:
        raise ValueError(f"rollout_timeout: expected seconds of at least 1, got {params['rollout_timeout']}")
    if params["state"] == "enabled":
        if not params.get("max_duration"):
            raise ValueError("max_duration: required with state enabled - audit mode gives no isolation, so say how "
                             "long it may stay on (e.g. 24h, 90m, 2d); audit_guard.yml reports it once expired")
        parse_duration(params["max_duration"])
    if not params["write_config"] and scope != "cluster":
        raise ValueError(f"write_config: only used with scope cluster (scope is {scope})")


def diff_of(params: dict, outcome: Outcome) -> dict:
    if params["scope"] == "endpoints":
        def key(row: dict) -> str:
            name = f"{row['namespace']}/{row['pod']}" if row["pod"] else "host"
            return f"{row['node']}/{row['id']} {name}"

        rows = outcome.result()["endpoints"]
        return {"before": {key(r): r["before"] for r in rows}, "after": {key(r): r["after"] for r in rows}}
    if params["scope"] == "nodes":
        config = outcome.extra.get("node_config", {})
        return {"before": {"node_config": config.get("before")},
                "after": {"node_config": config.get("after"), "restart_nodes": outcome.extra.get("restart_nodes")}}
    config = outcome.extra.get("config", {})
    return {"before": {"policy-audit-mode": config.get("before")},
            "after": {"policy-audit-mode": config.get("after"), "restart_nodes": outcome.extra.get("restart_nodes")}}


def ledger_entry(params: dict, outcome: Outcome, existing: dict | None) -> dict:
    """The ledger entry of an enable: times of the first enable kept, the declared fields from this run."""
    existing = existing or {}
    enabled_at = existing.get("enabled_at") or utc_now()
    entry = {
        "scope": params["scope"],
        "selection": {k: params.get(k) for k in (*SELECTORS, "nodes", "node_selector") if params.get(k)},
        "enabled_at": enabled_at,
        "last_applied_at": utc_now() if outcome.changed else existing.get("last_applied_at") or enabled_at,
        "max_duration": params["max_duration"],
        "expires_at": expires_at(enabled_at, params["max_duration"]),
        "reason": params.get("reason") or existing.get("reason"),
        "enabled_by": params.get("enabled_by") or existing.get("enabled_by") or default_actor(),
        "recorded_by": "netpol.cilium.cilium_audit_mode",
    }
    if params["scope"] == "endpoints":
        # an enable that failed on some endpoints is recorded too (audit mode is on elsewhere): those are marked
        entry["endpoints"] = [{"id": r.id, "node": r.node, "namespace": r.namespace, "pod": r.pod,
                               **({"failed": True} if r.status == "failed" else {})} for r in outcome.rows]
    else:
        entry["nodes"] = sorted(outcome.nodes)
    if params["scope"] == "nodes":
        entry["node_config_name"] = params["node_config_name"]
    if params["scope"] == "cluster":
        entry["write_config"] = params["write_config"]
    if existing.get("adopted") or (not existing.get("enabled_at") and not outcome.changed):
        entry["adopted"] = True  # audit mode was on already: when it was switched on is not known
    return entry


def default_actor() -> str:
    """Who runs the module, as far as it can tell: the OS user and host of the controller (or execution node)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def record(module, service: AuditModeService, params: dict, outcome: Outcome, key: str) -> bool:
    """Keep the ledger in step: an entry for audit mode that is on (with its expiry), none once it is off.

    Returns whether the ledger itself changed: a new or updated entry (e.g. another max_duration or reason) for audit
    mode that was already on, or a removed one, is a change too."""
    ledger = Ledger(service.kube, params["cilium_namespace"])
    try:
        if params["state"] == "disabled":
            if module.check_mode:
                return ledger.get(key) is not None
            return ledger.remove(key)
        if params["scope"] == "endpoints" and not outcome.rows:
            return False  # nothing selected (allow_empty): nothing is on, nothing to record
        existing = ledger.get(key)
        entry = ledger_entry(params, outcome, existing)
        if existing == entry:
            return False
        if module.check_mode:
            return True
        ledger.put(key, entry)
        return not outcome.changed
    except KubeError as exc:
        module.warn(f"audit mode is set, but the ledger ConfigMap could not be written ({exc}); "
                    "cilium_audit_mode_info and audit_guard.yml will not know since when it is on")
    return False


def main() -> None:
    argument_spec = merged(auth_argument_spec(), CILIUM_ARG_SPEC, SELECTION_ARG_SPEC, MODULE_SPEC)
    module = build_module(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    enabled = params["state"] == "enabled"
    try:
        check_ranges(params)
        check_scope(params)
        selection = build_selection(params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        service = AuditModeService(Kube.from_module(module), cilium_namespace=params["cilium_namespace"],
                                   exec_timeout=params["exec_timeout"], max_parallel_nodes=params["max_parallel_nodes"],
                                   binary=binary_option(params), rollout_timeout=params["rollout_timeout"])
        key = scope_key(params["scope"], {k: params.get(k) for k in (*SELECTORS, "nodes", "node_selector")
                                          if params.get(k)})
        if params["scope"] == "endpoints":
            entry = Ledger(service.kube, params["cilium_namespace"]).get(key) if enabled else None
            outcome = service.set_endpoints(selection, enabled, check_mode=module.check_mode,
                                            allow_empty=params["allow_empty"])
            service.note_reapplied(outcome, entry, service.resolver.last_agents)
        elif params["scope"] == "nodes":
            outcome = service.set_nodes(params["node_selector"], enabled, params["node_config_name"],
                                        check_mode=module.check_mode, restart=params["restart"])
        else:
            if enabled and not params.get("reason"):
                existing = Ledger(service.kube, params["cilium_namespace"]).get(key) or {}
                if not existing.get("reason"):
                    module.fail_json(msg=CLUSTER_REASON_REQUIRED)
            outcome = service.set_cluster(enabled, check_mode=module.check_mode, force=params["force"],
                                          restart=params["restart"], write_config=params["write_config"])
        if record(module, service, params, outcome, key):
            outcome.changed = True
    except ModuleFailure as exc:
        if enabled and exc.outcome is not None and exc.outcome.changed and not module.check_mode:
            # the enable failed part of the way, but audit mode is on (or configured) somewhere: record it anyway
            record(module, service, params, exc.outcome, key)
        module.fail_json(msg=str(exc), **exc.result)
    except KubeError as exc:
        module.fail_json(msg=str(exc), status=exc.status, reason=exc.reason)
    for warning in outcome.warnings:
        module.warn(warning)
    result = outcome.result()
    if module._diff:
        result["diff"] = diff_of(params, outcome)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
