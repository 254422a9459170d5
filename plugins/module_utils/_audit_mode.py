# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Switching Cilium policy audit mode and proving where it is on: endpoints, nodes, the whole cluster.

Note that this module util is PRIVATE to the collection. It can change at any time.

Every operation reads the live state first, changes only what differs, and reads back what it changed. Nothing here
imports Ansible: the modules turn a ``ModuleFailure`` into ``fail_json`` and everything else into ``exit_json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._agents import AgentPod, AgentRunner, find_agents, run_per_node
from ._cilium_dbg import (
    CiliumDbgError,
    EndpointState,
    batch_argv,
    config_argv,
    parse_batch_output,
    parse_daemon_config,
    parse_endpoints,
    split_readback,
)
from ._endpoints import EndpointResolver, Resolution, Selection, SelectionError
from ._k8s import Kube, KubeError
from . import _guard as guard
from ._ledger import Ledger, parse_time
from ._rollout import AgentRestarter, RolloutError

CONFIG_KEY = "policy-audit-mode"
CNC_GROUP, CNC_PLURAL = "cilium.io", "ciliumnodeconfigs"
CNC_VERSIONS = ("v2", "v2alpha1")


class ModuleFailure(Exception):
    """Fail the task with this message; ``result`` carries the exact state reached so far (and ``outcome`` the
    Outcome it came from, when something may have been changed before the failure)."""

    def __init__(self, message: str, result: dict[str, Any] | None = None, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.result = result or {}
        self.outcome = outcome


def audit_string(value: bool | None) -> str:
    return {True: "Enabled", False: "Disabled", None: "unknown"}[value]


@dataclass
class EndpointRow:
    id: int | None
    node: str
    namespace: str | None
    pod: str | None
    before: bool | None
    after: bool | None = None
    policy_enabled: str | None = None
    verified: bool = False
    status: str = "unchanged"  # unchanged | changed | would_change | failed
    error: str | None = None
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "node": self.node, "namespace": self.namespace, "pod": self.pod,
                "before": audit_string(self.before), "after": audit_string(self.after),
                "policy_enabled": self.policy_enabled, "verified": self.verified, "status": self.status,
                "error": self.error, "selected_by": self.source}


@dataclass
class NodeRow:
    node: str
    agent_pod: str | None
    endpoints: int = 0
    changed: int = 0
    exec_seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "agent_pod": self.agent_pod, "endpoints": self.endpoints, "changed": self.changed,
                "exec_seconds": round(self.exec_seconds, 3), "error": self.error}


@dataclass
class Outcome:
    changed: bool = False
    rows: list[EndpointRow] = field(default_factory=list)
    nodes: dict[str, NodeRow] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts = {"selected": len(self.rows), "changed": 0, "would_change": 0, "unchanged": 0, "failed": 0}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def result(self) -> dict[str, Any]:
        return {"changed": self.changed, "endpoints": [r.as_dict() for r in self.rows],
                "nodes": [n.as_dict() for n in sorted(self.nodes.values(), key=lambda n: n.node)],
                "counts": self.counts(), **self.extra}


def _state_summary(rows: list[EndpointRow]) -> str:
    groups: dict[str, list[str]] = {}
    for row in rows:
        name = f"{row.id}" + (f" ({row.namespace}/{row.pod})" if row.pod else "") + f" on {row.node}"
        key = row.status if row.status != "failed" else f"failed: {row.error}"
        groups.setdefault(key, []).append(name)
    return "; ".join(f"{key}: {', '.join(names)}" for key, names in sorted(groups.items()))


class AuditModeService:
    """One cluster: resolve endpoints, read and switch audit mode, restart agents, report where audit mode is on."""

    def __init__(self, kube: Kube, *, cilium_namespace: str = "kube-system", exec_timeout: float = 60.0,
                 max_parallel_nodes: int = 10, binary: str | None = None, rollout_timeout: float = 600.0,
                 poll: float = 1.0) -> None:
        self.kube = kube
        self.cilium_namespace = cilium_namespace
        self.runner = AgentRunner(kube, timeout=exec_timeout, binary=binary)
        self.resolver = EndpointResolver(kube, self.runner, cilium_namespace, max_parallel_nodes)
        self.restarter = AgentRestarter(kube, self.runner, cilium_namespace, timeout=rollout_timeout, poll=poll,
                                        max_parallel_nodes=max_parallel_nodes)
        self.max_parallel_nodes = max_parallel_nodes

    # --- endpoints ------------------------------------------------------------------------------------
    def resolve(self, selection: Selection, allow_empty: bool = False) -> Resolution:
        try:
            resolution = self.resolver.resolve(selection)
        except SelectionError as exc:
            raise ModuleFailure(str(exc)) from exc
        if not resolution.targets and not allow_empty:
            raise ModuleFailure(f"the selection matched no endpoint ({selection.describe()}); set allow_empty: true "
                                "if that is expected")
        return resolution

    def set_endpoints(self, selection: Selection, enabled: bool, *, check_mode: bool = False,
                      allow_empty: bool = False) -> Outcome:
        resolution = self.resolve(selection, allow_empty)
        outcome = Outcome()
        for node, agent in resolution.agents.items():
            if any(t.node == node for t in resolution.targets):
                outcome.nodes[node] = NodeRow(node, agent.name)
        for target in resolution.targets:
            row = EndpointRow(target.id, target.node, target.namespace, target.pod,
                              target.state.audit_mode if target.state else None,
                              policy_enabled=target.state.policy_enabled if target.state else None,
                              source=target.source)
            if target.error:
                row.status, row.error = "failed", target.error
            outcome.rows.append(row)
            node_row = outcome.nodes.setdefault(target.node, NodeRow(target.node, None))
            node_row.endpoints += 1
        for node, error in resolution.node_errors.items():
            outcome.nodes.setdefault(node, NodeRow(node, None)).error = error
        todo: dict[str, list[EndpointRow]] = {}
        for row in outcome.rows:
            if row.status == "failed":
                continue
            if row.before == enabled:
                row.after, row.verified = row.before, True
            else:
                todo.setdefault(row.node, []).append(row)
        if check_mode:
            for rows in todo.values():
                for row in rows:
                    row.status, row.after = "would_change", enabled
            outcome.changed = bool(todo)
        elif todo:
            readback = self._apply(resolution.agents, todo, enabled, outcome)
            self._verify(resolution.agents, todo, enabled, outcome, readback)
            outcome.changed = any(r.status == "changed" for r in outcome.rows) or any(
                r.status == "failed" and r.error and "did not take" in r.error for r in outcome.rows)
        for row in outcome.rows:
            if enabled and row.after and row.policy_enabled == "none":
                outcome.warnings.append(
                    f"endpoint {row.id} ({row.namespace}/{row.pod}) on {row.node}: audit mode is on but no policy "
                    "enforces this endpoint (policy-enabled: none), so it will not produce AUDIT verdicts")
        failed = [r for r in outcome.rows if r.status == "failed"]
        if failed:
            raise ModuleFailure(f"audit mode could not be set to {audit_string(enabled)} on {len(failed)} of "
                                f"{len(outcome.rows)} endpoints. State now: {_state_summary(outcome.rows)}",
                                outcome.result(), outcome)
        return outcome

    def _apply(self, agents: dict[str, AgentPod], todo: dict[str, list[EndpointRow]], enabled: bool,
               outcome: Outcome) -> dict[str, list[EndpointState]]:
        """One exec per node: switch its endpoints, then read them all back (returned per node when readable)."""
        readback: dict[str, list[EndpointState]] = {}

        def change(node: str) -> tuple[str, Any]:
            agent = agents[node]
            rows = todo[node]
            argv = batch_argv(self.runner.binary(agent), [r.id for r in rows if r.id is not None], enabled)
            return node, self.runner.run(agent, argv)

        for node, result in run_per_node(sorted(todo), change, self.max_parallel_nodes).items():
            rows = todo[node]
            if isinstance(result, Exception):
                for row in rows:
                    row.status, row.error = "failed", str(result)
                continue
            exec_outcome = result[1]
            outcome.nodes[node].exec_seconds += exec_outcome.seconds
            if exec_outcome.error:
                outcome.nodes[node].error = exec_outcome.error
                for row in rows:
                    row.status, row.error = "failed", exec_outcome.error
                continue
            items = parse_batch_output(exec_outcome.stdout)
            listed = split_readback(exec_outcome.stdout)[1]
            if listed is not None and exec_outcome.rc == 0:
                try:
                    readback[node] = parse_endpoints(listed)
                except CiliumDbgError:
                    pass  # read back separately in _verify
            for row in rows:
                item = items.get(str(row.id))
                if item is None or item.rc is None:
                    row.status = "failed"
                    if exec_outcome.rc == 0:  # it ran to the end, but what it printed is not the batch's output
                        row.error = (f"the batch on node {node} printed no result for endpoint {row.id}, only output "
                                     f"that is not the agent's ({exec_outcome.describe()})")
                    else:
                        row.error = (f"the batch on node {node} stopped before endpoint {row.id} "
                                     f"({exec_outcome.describe()})")
                elif item.rc != 0:
                    row.status, row.error = "failed", item.output or f"exit code {item.rc}"
        return readback

    def _verify(self, agents: dict[str, AgentPod], todo: dict[str, list[EndpointRow]], enabled: bool,
                outcome: Outcome, readback: dict[str, list[EndpointState]]) -> None:
        """Check every touched endpoint as its agent reports it after the change (read again where needed)."""
        missing = sorted(node for node in todo if node not in readback)
        states, errors = self.resolver.read_nodes(agents, missing) if missing else ({}, {})
        states.update(readback)
        for node, rows in todo.items():
            by_id = {s.id: s for s in states.get(node, [])}
            for row in rows:
                if row.status == "failed" and "did not take" not in (row.error or ""):
                    state = by_id.get(row.id)
                    row.after = state.audit_mode if state else None
                    continue
                state = by_id.get(row.id)
                if state is None:
                    row.status = "failed"
                    row.error = errors.get(node) or f"endpoint {row.id} disappeared from node {node} during the change"
                    continue
                row.after, row.policy_enabled = state.audit_mode, state.policy_enabled
                row.verified = state.audit_mode == enabled
                if row.verified:
                    row.status = "changed"
                    outcome.nodes[node].changed += 1
                else:
                    row.status = "failed"
                    row.error = (f"did not take: the agent reports PolicyAuditMode={audit_string(state.audit_mode)} "
                                 "after the change")

    def note_reapplied(self, outcome: Outcome, entry: dict[str, Any] | None, agents: dict[str, AgentPod]) -> None:
        """On a re-run (reconcile), say why each endpoint had to be switched again."""
        if not entry:
            return
        known = {(e.get("node"), e.get("namespace"), e.get("pod"), e.get("id")) for e in entry.get("endpoints", [])}
        failed = {(e.get("node"), e.get("namespace"), e.get("pod"), e.get("id")) for e in entry.get("endpoints", [])
                  if e.get("failed")}
        last = entry.get("last_applied_at") or ""
        reapplied = []
        for row in outcome.rows:
            if row.status not in ("changed", "would_change"):
                continue
            if (row.node, row.namespace, row.pod, row.id) in failed:
                reason = f"the last apply, at {last}, failed for this endpoint"
            elif (row.node, row.namespace, row.pod, row.id) in known:
                started = (agents.get(row.node) and agents[row.node].started_at) or ""
                reason = (f"agent pod restarted at {started}, after the last apply at {last}" if started > last
                          else "switched back outside netpol.cilium since the last apply")
            else:
                reason = "new endpoint since the last apply (new pod, or its agent gave it a new id)"
            reapplied.append({"id": row.id, "node": row.node, "namespace": row.namespace, "pod": row.pod,
                              "reason": reason})
        outcome.extra["reapplied"] = reapplied

    # --- global configuration -------------------------------------------------------------------------
    def read_config_value(self) -> tuple[bool | None, dict[str, Any] | None]:
        try:
            config = self.kube.call(f"read ConfigMap {self.cilium_namespace}/cilium-config",
                                    self.kube.core.read_namespaced_config_map, "cilium-config", self.cilium_namespace)
        except KubeError as exc:
            if exc.not_found:
                return None, None
            raise
        data = config.data or {}
        value = data.get(CONFIG_KEY)
        return (None if value is None else value.strip().lower() == "true"), config.to_dict()

    def node_configs(self) -> tuple[str | None, list[dict[str, Any]]]:
        """CiliumNodeConfig objects in the Cilium namespace (and the served API version, None if the CRD is off)."""
        for version in CNC_VERSIONS:
            try:
                items = self.kube.call(f"list CiliumNodeConfigs ({version}) in {self.cilium_namespace}",
                                       self.kube.custom.list_namespaced_custom_object, CNC_GROUP, version,
                                       self.cilium_namespace, CNC_PLURAL)["items"]
            except KubeError as exc:
                if exc.not_found:
                    continue
                raise
            return version, sorted(items, key=lambda i: i["metadata"]["name"])
        return None, []

    def _node_config_spec(self, version: str, name: str) -> dict[str, Any] | None:
        """The spec of one CiliumNodeConfig as the API has it now (None when there is none)."""
        try:
            return self.kube.call(f"read CiliumNodeConfig {self.cilium_namespace}/{name}",
                                  self.kube.custom.get_namespaced_custom_object, CNC_GROUP, version,
                                  self.cilium_namespace, CNC_PLURAL, name).get("spec")
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def expected_by_node(self, config_value: bool | None,
                         cncs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """What each agent should run with after its next start: cilium-config, then matching CNC defaults."""
        nodes = self.kube.call("list nodes", self.kube.core.list_node)
        expected: dict[str, dict[str, Any]] = {}
        for node in nodes.items:
            labels = node.metadata.labels or {}
            value, source = bool(config_value), "cilium-config" if config_value is not None else "default (false)"
            for cnc in cncs:
                spec = cnc.get("spec") or {}
                if _selector_matches(spec.get("nodeSelector"), labels) and CONFIG_KEY in (spec.get("defaults") or {}):
                    value = str(spec["defaults"][CONFIG_KEY]).strip().lower() == "true"
                    source = f"CiliumNodeConfig {cnc['metadata']['name']}"
            expected[node.metadata.name] = {"value": value, "source": source}
        return expected

    # --- info -----------------------------------------------------------------------------------------
    def daemon_states(self, agents: dict[str, AgentPod]) -> dict[str, dict[str, Any]]:
        def read(node: str) -> dict[str, Any]:
            agent = agents[node]
            outcome = self.runner.run(agent, config_argv(self.runner.binary(agent)))
            if not outcome.ok:
                return {"error": outcome.describe()}
            try:
                return {"audit_mode": parse_daemon_config(outcome.stdout)["audit_mode"]}
            except CiliumDbgError as exc:
                return {"error": str(exc)}

        return {node: (value if isinstance(value, dict) else {"error": str(value)})
                for node, value in run_per_node(sorted(agents), read, self.max_parallel_nodes).items()}

    def info(self, selection: Selection) -> dict[str, Any]:
        agents = find_agents(self.kube, self.cilium_namespace)
        config_value = self.read_config_value()[0]
        cnc_version, cncs = self.node_configs()
        expected = self.expected_by_node(config_value, cncs)
        daemons = self.daemon_states(agents)
        agent_rows = []
        inconsistencies = []
        for node in sorted(set(agents) | set(expected)):
            agent = agents.get(node)
            want = expected.get(node, {"value": bool(config_value), "source": "cilium-config"})
            daemon = daemons.get(node, {})
            running = daemon.get("audit_mode")
            row = {"node": node, "agent_pod": agent.name if agent else None,
                   "version": agent.version if agent else None,
                   "ready": agent.ready if agent else False,
                   "started_at": _isoformat(agent.started_at) if agent else None,
                   "runtime_audit_mode": audit_string(running) if "error" not in daemon else None,
                   "configured_audit_mode": audit_string(want["value"]), "configured_by": want["source"],
                   "consistent": running == want["value"] if "error" not in daemon else None,
                   "error": daemon.get("error") if agent else f"no cilium agent pod runs on node {node}"}
            if agent and "error" not in daemon and running != want["value"]:
                inconsistencies.append(
                    f"node {node}: {want['source']} says policy-audit-mode={str(want['value']).lower()} but agent "
                    f"{agent.name} runs with PolicyAuditMode={audit_string(running)}: the agent was not restarted "
                    "since the change (restart it to apply)")
            agent_rows.append(row)
        endpoints: list[dict[str, Any]] = []
        endpoint_errors: list[str] = []
        if not selection.empty:
            resolution = self.resolve(selection, allow_empty=True)
            for target in resolution.targets:
                state = target.state
                endpoints.append({"id": target.id, "node": target.node, "namespace": target.namespace,
                                  "pod": target.pod, "audit_mode": audit_string(state.audit_mode) if state else None,
                                  "policy_enabled": state.policy_enabled if state else None,
                                  "error": target.error})
                if target.error:
                    endpoint_errors.append(target.error)
        nodes_on = sorted(r["node"] for r in agent_rows if r["runtime_audit_mode"] == "Enabled")
        endpoints_on = [e for e in endpoints if e["audit_mode"] == "Enabled"]
        cluster_on = bool(agent_rows) and len(nodes_on) == len(agent_rows)
        ledger = self.read_ledger()
        where = {"cluster": cluster_on, "nodes": [] if cluster_on else nodes_on,
                 "endpoints": [{"id": e["id"], "node": e["node"], "namespace": e["namespace"], "pod": e["pod"]}
                               for e in endpoints_on if e["node"] not in nodes_on]}
        return {
            "changed": False,
            "audit_active": bool(nodes_on or endpoints_on or config_value),
            "where": where,
            "consistent": not inconsistencies,
            "inconsistencies": inconsistencies,
            "config": {"namespace": self.cilium_namespace,
                       "policy_audit_mode": None if config_value is None else audit_string(config_value),
                       "node_configs": [{"name": c["metadata"]["name"], "api_version": f"{CNC_GROUP}/{cnc_version}",
                                         "node_selector": (c.get("spec") or {}).get("nodeSelector"),
                                         "policy_audit_mode": ((c.get("spec") or {}).get("defaults") or {}).get(
                                             CONFIG_KEY)} for c in cncs]},
            "agents": agent_rows,
            "endpoints": endpoints,
            "errors": endpoint_errors + [r["error"] for r in agent_rows if r["error"]],
            "ledger": ledger,
            "since": min((e.get("enabled_at") for e in ledger if e.get("enabled_at")), default=None),
            "guard": guard.check(where, bool(config_value), ledger),
        }

    def read_ledger(self) -> list[dict[str, Any]]:
        """Entries the collection recorded when it enabled audit mode (empty when it never did)."""
        try:
            recorded = Ledger(self.kube, self.cilium_namespace).entries()
        except KubeError as exc:
            if exc.forbidden:
                return []
            raise
        return [dict(entry, scope_key=entry.get("scope_key", key)) for key, entry in sorted(recorded.items())]

    # --- nodes and cluster scopes ---------------------------------------------------------------------
    def _require_agents(self) -> dict[str, AgentPod]:
        agents = find_agents(self.kube, self.cilium_namespace)
        if not agents:
            raise ModuleFailure(f"no cilium agent pods (k8s-app=cilium) found in namespace {self.cilium_namespace}")
        return agents

    def set_nodes(self, node_selector: dict[str, str], enabled: bool, config_name: str, *, check_mode: bool,
                  restart: bool = True) -> Outcome:
        """A CiliumNodeConfig that sets policy-audit-mode for the selected nodes, then restart only those agents."""
        outcome = Outcome()
        version, cncs = self.node_configs()
        if version is None:
            raise ModuleFailure("scope nodes needs the CiliumNodeConfig CRD (cilium.io/v2alpha1 or v2), which this "
                                "cluster does not serve (Cilium >= 1.13)")
        nodes = self.kube.call("list nodes", self.kube.core.list_node)
        selected = sorted(n.metadata.name for n in nodes.items
                          if _selector_matches({"matchLabels": node_selector}, n.metadata.labels or {}))
        if not selected:
            raise ModuleFailure(f"node_selector {node_selector} matches no node")
        existing = next((c for c in cncs if c["metadata"]["name"] == config_name), None)
        desired_spec = {"nodeSelector": {"matchLabels": dict(node_selector)},
                        "defaults": {CONFIG_KEY: "true" if enabled else "false"}}
        before_spec = (existing or {}).get("spec")
        agents = self._require_agents()
        daemons = self.daemon_states({n: agents[n] for n in selected if n in agents})
        stale = [n for n in selected if daemons.get(n, {}).get("audit_mode") != enabled]
        config_changes = before_spec != desired_spec
        outcome.extra["node_config"] = {"name": config_name, "api_version": f"{CNC_GROUP}/{version}",
                                        "before": before_spec, "after": desired_spec}
        outcome.extra["selected_nodes"] = selected
        outcome.changed = config_changes or bool(stale and restart)
        outcome.nodes = {n: NodeRow(n, agents[n].name if n in agents else None) for n in selected}
        if check_mode:
            outcome.extra["restart_nodes"] = stale if restart else []
            return outcome
        if config_changes:
            body = {"apiVersion": f"{CNC_GROUP}/{version}", "kind": "CiliumNodeConfig",
                    "metadata": {"name": config_name, "namespace": self.cilium_namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "netpol.cilium"}},
                    "spec": desired_spec}
            if existing is None:
                try:  # retried like a read: a create that did happen answers 409 the next time
                    self.kube.call(f"create CiliumNodeConfig {self.cilium_namespace}/{config_name}",
                                   self.kube.custom.create_namespaced_custom_object, CNC_GROUP, version,
                                   self.cilium_namespace, CNC_PLURAL, body)
                except KubeError as exc:
                    if not exc.conflict:
                        raise
                    existing = {}  # it exists now (made meanwhile, or by an attempt whose answer was lost)
            if existing is not None:
                self.kube.call(f"update CiliumNodeConfig {self.cilium_namespace}/{config_name}",
                               self.kube.custom.patch_namespaced_custom_object, CNC_GROUP, version,
                               self.cilium_namespace, CNC_PLURAL, config_name, {"spec": desired_spec},
                               on_conflict=lambda: self._node_config_spec(version, config_name) != desired_spec)
        outcome.extra["restart_nodes"] = stale if restart else []
        if restart and stale:
            try:
                result = self.restarter.restart_nodes(stale)
            except (RolloutError, KubeError) as exc:
                state = exc.state if isinstance(exc, RolloutError) else {"error": str(exc)}
                raise ModuleFailure(f"CiliumNodeConfig {config_name} is written, but restarting the agents failed: "
                                    f"{exc}. Agents restarted so far: {state.get('restarted', [])}; a re-run "
                                    "restarts the agents that do not run with the new value yet",
                                    {**outcome.result(), "rollout": state}, outcome) from exc
            outcome.extra["rollout"] = {"restarted": result.restarted, "seconds": round(result.seconds, 2),
                                        "health": result.health}
        self._verify_daemons(outcome, selected if restart else [], enabled)
        return outcome

    def set_cluster(self, enabled: bool, *, check_mode: bool, force: bool = False, restart: bool = True,
                    write_config: bool = True) -> Outcome:
        """policy-audit-mode in cilium-config for clusters not managed by Helm, then a health-gated rolling restart.

        With ``write_config`` false (Helm has set the value already) the ConfigMap must hold the desired value; only
        the restart of the agents that run with another value, and their verification, are done."""
        outcome = Outcome()
        value, config = self.read_config_value()
        if config is None:
            raise ModuleFailure(f"ConfigMap {self.cilium_namespace}/cilium-config not found: is Cilium installed in "
                                "that namespace? (option cilium_namespace)")
        meta = config.get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        release = annotations.get("meta.helm.sh/release-name")
        if not write_config and bool(value) is not enabled:  # no key is Cilium's default: off
            shown = f"no {CONFIG_KEY} (off)" if value is None else f"{CONFIG_KEY}={str(value).lower()}"
            raise ModuleFailure(
                f"ConfigMap {self.cilium_namespace}/cilium-config has {shown}, not {CONFIG_KEY}="
                f"{str(enabled).lower()}: with write_config false the value must be set first (helm upgrade with "
                f"policyAuditMode={str(enabled).lower()}); nothing was restarted")
        if write_config and (labels.get("app.kubernetes.io/managed-by") == "Helm" or release) and not force:
            raise ModuleFailure(
                f"ConfigMap {self.cilium_namespace}/cilium-config is owned by the Helm release "
                f"{release or '(unknown)'}: the next helm upgrade would undo this change. Set policyAuditMode through "
                "Helm (role netpol.cilium.audit_mode_helm), or set force: true to patch the ConfigMap anyway")
        agents = self._require_agents()
        daemons = self.daemon_states(agents)
        stale = sorted(n for n in agents if daemons.get(n, {}).get("audit_mode") != enabled)
        config_changes = write_config and value is not enabled  # never written when Helm owns it
        outcome.extra["config"] = {"name": "cilium-config", "before": None if value is None else str(value).lower(),
                                   "after": str(enabled).lower()}
        outcome.changed = config_changes or bool(stale and restart)
        outcome.nodes = {n: NodeRow(n, a.name) for n, a in agents.items()}
        if check_mode:
            outcome.extra["restart_nodes"] = stale if restart else []
            return outcome
        if config_changes:
            patch = {"data": {CONFIG_KEY: "true" if enabled else "false"}}
            self.kube.call(f"patch ConfigMap {self.cilium_namespace}/cilium-config",
                           self.kube.core.patch_namespaced_config_map, "cilium-config", self.cilium_namespace, patch,
                           on_conflict=lambda: self.read_config_value()[0] is not enabled)
        outcome.extra["restart_nodes"] = stale if restart else []
        if restart and stale:
            try:
                result = self.restarter.rolling_restart()
            except (RolloutError, KubeError) as exc:
                said = "now has" if config_changes else "has"
                state = exc.state if isinstance(exc, RolloutError) else {"error": str(exc)}
                raise ModuleFailure(f"cilium-config {said} {CONFIG_KEY}={str(enabled).lower()}, but the rolling "
                                    f"restart of the agents failed: {exc}. A re-run restarts the agents that do not "
                                    "run with that value yet",
                                    {**outcome.result(), "rollout": state}, outcome) from exc
            outcome.extra["rollout"] = {"restarted": result.restarted, "seconds": round(result.seconds, 2),
                                        "health": result.health}
        self._verify_daemons(outcome, sorted(agents) if restart else [], enabled)
        return outcome

    def _verify_daemons(self, outcome: Outcome, nodes: list[str], enabled: bool) -> None:
        if not nodes:
            return
        agents = find_agents(self.kube, self.cilium_namespace)
        daemons = self.daemon_states({n: agents[n] for n in nodes if n in agents})
        wrong = {n: d for n, d in daemons.items() if d.get("audit_mode") != enabled}
        outcome.extra["verified"] = not wrong and len(daemons) == len(nodes)
        for node, daemon in daemons.items():
            if node in outcome.nodes:
                outcome.nodes[node].agent_pod = agents[node].name
                outcome.nodes[node].error = daemon.get("error")
        if wrong or len(daemons) != len(nodes):
            detail = ", ".join(f"{n}: {d.get('error') or audit_string(d.get('audit_mode'))}"
                               for n, d in sorted(wrong.items()))
            raise ModuleFailure(f"after the restart, these agents do not run with PolicyAuditMode="
                                f"{audit_string(enabled)}: {detail or 'agents missing'}", outcome.result(), outcome)


def _selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _isoformat(rfc3339: str | None) -> str | None:
    """``2026-11-27T04:11:37Z`` (as AgentPod keeps it) -> ``2026-11-27T04:11:37+00:00``."""
    moment = parse_time(rfc3339)
    return moment.isoformat() if moment else None
