# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Which Cilium endpoints a task means, on which node, and what their agents say about them now.

Note that this module util is PRIVATE to the collection. It can change at any time.

Selectors (any combination, the union is taken): endpoint ids, pods (``namespace/name``), a namespace with a label
selector, or a CiliumNetworkPolicy (``namespace/name``: every pod its endpoint selectors pick). Pods give their node
(``spec.nodeName``); CiliumEndpoint objects give the endpoint id, and when that CRD is disabled the agent's own
``endpoint list`` is matched on ``external-identifiers``. Every answer is then checked against the agent, which is the
only authority on endpoint state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ._agents import AgentPod, AgentRunner, ExecOutcome, find_agents, run_per_node
from ._cilium_dbg import CiliumDbgError, EndpointState, endpoint_list_argv, parse_endpoints, validate_endpoint_id
from ._k8s import Kube, KubeError

CEP_GROUP, CEP_VERSION, CEP_PLURAL = "cilium.io", "v2", "ciliumendpoints"
CNP_GROUP, CNP_VERSION, CNP_PLURAL = "cilium.io", "v2", "ciliumnetworkpolicies"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class SelectionError(Exception):
    """The selection cannot be resolved: a named pod or policy is missing, or nothing matched."""


@dataclass
class Selection:
    endpoint_ids: list[int] = field(default_factory=list)
    pods: list[tuple[str, str]] = field(default_factory=list)
    namespace: str | None = None
    label_selector: str | None = None
    policy: tuple[str, str] | None = None
    nodes: list[str] = field(default_factory=list)  # restricts endpoint_ids (ids are unique per node only)
    all_endpoints: bool = False  # every endpoint of the selected nodes (info module without selectors)

    @property
    def empty(self) -> bool:
        return not (self.endpoint_ids or self.pods or self.namespace or self.policy or self.all_endpoints)

    def describe(self) -> str:
        parts = []
        if self.endpoint_ids:
            parts.append("endpoint_ids=" + ",".join(str(i) for i in self.endpoint_ids))
        if self.pods:
            parts.append("pods=" + ",".join(f"{ns}/{name}" for ns, name in self.pods))
        if self.namespace:
            parts.append(f"namespace={self.namespace}" + (f" label_selector={self.label_selector}"
                                                          if self.label_selector else ""))
        if self.policy:
            parts.append(f"policy={self.policy[0]}/{self.policy[1]}")
        if self.nodes:
            parts.append("nodes=" + ",".join(self.nodes))
        return " ".join(parts) or "all endpoints"


def parse_namespaced_name(value: Any, option: str) -> tuple[str, str]:
    if not isinstance(value, str) or value.count("/") != 1:
        raise ValueError(f"{option}: expected 'namespace/name', got {value!r}")
    namespace, name = value.split("/")
    for part in (namespace, name):
        if not _NAME.match(part) or len(part) > 253:
            raise ValueError(f"{option}: {value!r} is not a valid 'namespace/name' (lower-case DNS names)")
    return namespace, name


def build_selection(params: dict[str, Any]) -> Selection:
    """Validate the selector options of our modules into a Selection (ValueError names the option)."""
    selection = Selection()
    for value in params.get("endpoint_ids") or []:
        selection.endpoint_ids.append(validate_endpoint_id(value))
    selection.pods = [parse_namespaced_name(p, "pods") for p in params.get("pods") or []]
    selection.namespace = params.get("namespace")
    selection.label_selector = params.get("label_selector")
    if selection.label_selector and not selection.namespace:
        raise ValueError("label_selector: needs namespace (a label selector is applied in one namespace)")
    if selection.namespace is not None and not _NAME.match(selection.namespace):
        raise ValueError(f"namespace: {selection.namespace!r} is not a valid namespace name")
    if params.get("policy"):
        selection.policy = parse_namespaced_name(params["policy"], "policy")
    selection.nodes = list(params.get("nodes") or [])
    return selection


@dataclass
class Target:
    """One endpoint to act on."""

    node: str
    id: int | None
    namespace: str | None = None
    pod: str | None = None
    source: str = ""  # which selector picked it
    state: EndpointState | None = None
    error: str | None = None  # why this endpoint cannot be read or changed


@dataclass
class Resolution:
    agents: dict[str, AgentPod]
    targets: list[Target]
    node_states: dict[str, list[EndpointState]]
    node_errors: dict[str, str]
    used_ciliumendpoints: bool


def _selector_to_string(selector: dict[str, Any] | None) -> str | None:
    """A Cilium endpointSelector as a Kubernetes label selector string (label source prefixes removed)."""
    if selector is None:
        return None

    def bare(key: str) -> str:
        for prefix in ("k8s:", "any:"):
            if key.startswith(prefix):
                return key[len(prefix):]
        return key

    parts = sorted(f"{bare(k)}={v}" for k, v in (selector.get("matchLabels") or {}).items())
    operators = {"In": "in", "NotIn": "notin"}
    for expression in selector.get("matchExpressions") or []:
        key, operator = bare(expression["key"]), expression.get("operator")
        if operator in operators:
            parts.append(f"{key} {operators[operator]} ({','.join(expression.get('values') or [])})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


class EndpointResolver:
    def __init__(self, kube: Kube, runner: AgentRunner, cilium_namespace: str = "kube-system",
                 max_parallel_nodes: int = 10) -> None:
        self.kube = kube
        self.runner = runner
        self.cilium_namespace = cilium_namespace
        self.max_parallel_nodes = max_parallel_nodes
        self._cep_available: bool | None = None
        self.last_agents: dict[str, AgentPod] = {}

    # --- pods -----------------------------------------------------------------------------------------
    def _selected_pods(self, selection: Selection) -> list[tuple[str, str, str | None, str]]:
        """(namespace, pod, node, source) for the pod-based selectors."""
        found: dict[tuple[str, str], tuple[str | None, str]] = {}
        for namespace, name in selection.pods:
            try:
                pod = self.kube.call(f"read pod {namespace}/{name}", self.kube.core.read_namespaced_pod, name,
                                     namespace)
            except KubeError as exc:
                if exc.not_found:
                    raise SelectionError(f"pods: pod {namespace}/{name} not found") from exc
                raise
            found[(namespace, name)] = (pod.spec.node_name, f"pod {namespace}/{name}")
        if selection.namespace:
            selector = selection.label_selector or ""
            pods = self.kube.call(f"list pods in namespace {selection.namespace} with selector '{selector}'",
                                  self.kube.core.list_namespaced_pod, selection.namespace,
                                  label_selector=selector or None)
            for pod in pods.items:
                found.setdefault((pod.metadata.namespace, pod.metadata.name),
                                 (pod.spec.node_name, f"namespace {selection.namespace}"
                                  + (f" selector {selector}" if selector else "")))
        if selection.policy:
            for pod, source in self._policy_pods(*selection.policy):
                found.setdefault((pod.metadata.namespace, pod.metadata.name), (pod.spec.node_name, source))
        return [(ns, name, node, source) for (ns, name), (node, source) in sorted(found.items())]

    def _policy_pods(self, namespace: str, name: str) -> list[tuple[Any, str]]:
        try:
            policy = self.kube.call(f"read CiliumNetworkPolicy {namespace}/{name}",
                                    self.kube.custom.get_namespaced_custom_object, CNP_GROUP, CNP_VERSION, namespace,
                                    CNP_PLURAL, name)
        except KubeError as exc:
            if exc.not_found:
                raise SelectionError(f"policy: CiliumNetworkPolicy {namespace}/{name} not found") from exc
            raise
        specs = ([policy["spec"]] if policy.get("spec") else []) + list(policy.get("specs") or [])
        pods: list[tuple[Any, str]] = []
        seen: set[str] = set()
        for spec in specs:
            selector = _selector_to_string(spec.get("endpointSelector"))
            if selector is None:
                continue  # a nodeSelector (host policy) selects nodes, not pod endpoints
            result = self.kube.call(f"list pods selected by CiliumNetworkPolicy {namespace}/{name}",
                                    self.kube.core.list_namespaced_pod, namespace, label_selector=selector or None)
            for pod in result.items:
                if pod.metadata.name not in seen:
                    seen.add(pod.metadata.name)
                    pods.append((pod, f"policy {namespace}/{name}"))
        return pods

    # --- CiliumEndpoints ------------------------------------------------------------------------------
    def _ciliumendpoints(self, namespaces: set[str] | None) -> dict[tuple[str, str], dict[str, Any]] | None:
        """CiliumEndpoint objects by (namespace, name), or None when the CRD is not served."""
        if self._cep_available is False:
            return None
        result: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            if namespaces is None:
                items = self.kube.call("list CiliumEndpoints in all namespaces",
                                       self.kube.custom.list_cluster_custom_object, CEP_GROUP, CEP_VERSION,
                                       CEP_PLURAL)["items"]
            else:
                items = []
                for namespace in sorted(namespaces):
                    items += self.kube.call(f"list CiliumEndpoints in namespace {namespace}",
                                            self.kube.custom.list_namespaced_custom_object, CEP_GROUP, CEP_VERSION,
                                            namespace, CEP_PLURAL)["items"]
        except KubeError as exc:
            if exc.not_found:
                self._cep_available = False
                return None
            raise
        self._cep_available = True
        for item in items:
            meta = item.get("metadata") or {}
            result[(meta.get("namespace", ""), meta.get("name", ""))] = item
        return result

    def _node_by_ip(self) -> dict[str, str]:
        nodes = self.kube.call("list nodes", self.kube.core.list_node)
        mapping: dict[str, str] = {}
        for node in nodes.items:
            for address in (node.status.addresses or []) if node.status else []:
                mapping[address.address] = node.metadata.name
        return mapping

    # --- agents ---------------------------------------------------------------------------------------
    def read_nodes(self, agents: dict[str, AgentPod],
                   nodes: list[str]) -> tuple[dict[str, list[EndpointState]], dict[str, str]]:
        """``endpoint list -o json`` on each node, in parallel: the agents' view of every endpoint."""
        states: dict[str, list[EndpointState]] = {}
        errors: dict[str, str] = {}

        def read(node: str) -> list[EndpointState] | str:
            agent = agents.get(node)
            if agent is None:
                return f"no cilium agent pod (k8s-app=cilium) runs on node {node}"
            outcome: ExecOutcome = self.runner.run(agent, endpoint_list_argv(self.runner.binary(agent)))
            if not outcome.ok:
                return f"reading endpoints from agent {agent.name} failed: {outcome.describe()}"
            try:
                return parse_endpoints(outcome.stdout)
            except CiliumDbgError as exc:
                return f"agent {agent.name}: {exc}"

        for node, result in run_per_node(sorted(set(nodes)), read, self.max_parallel_nodes).items():
            if isinstance(result, Exception):
                errors[node] = str(result)
            elif isinstance(result, str):
                errors[node] = result
            else:
                states[node] = result
        return states, errors

    def resolve(self, selection: Selection) -> Resolution:
        agents = find_agents(self.kube, self.cilium_namespace)
        self.last_agents = agents
        if not agents:
            raise SelectionError(f"no cilium agent pods (k8s-app=cilium) found in namespace {self.cilium_namespace}: "
                                 "is Cilium installed there? (option cilium_namespace)")
        for node in selection.nodes:
            if node not in agents:
                raise SelectionError(f"nodes: no cilium agent runs on node {node}")
        pods = self._selected_pods(selection)
        pending: list[Target] = []
        unscheduled = [f"{pod[0]}/{pod[1]}" for pod in pods if not pod[2]]
        if unscheduled:
            raise SelectionError("pods not scheduled on a node yet (no endpoint): " + ", ".join(unscheduled))
        ceps = self._ciliumendpoints({pod[0] for pod in pods}) if pods else None
        for namespace, name, node, source in pods:
            cep = (ceps or {}).get((namespace, name))
            endpoint_id = (cep or {}).get("status", {}).get("id")
            pending.append(Target(node or "", endpoint_id if isinstance(endpoint_id, int) else None, namespace, name,
                                  source))
        if selection.endpoint_ids:
            pending += self._targets_for_ids(selection, agents)
        every = set(selection.nodes or agents) if selection.all_endpoints else set()
        nodes = sorted({t.node for t in pending} | every)
        states, errors = self.read_nodes(agents, nodes)
        targets = self._match(pending, states, errors)
        if selection.all_endpoints:
            known = {(t.node, t.id) for t in targets}
            for node in nodes:
                for state in states.get(node, []):
                    if (node, state.id) not in known:
                        targets.append(Target(node, state.id, state.namespace, state.pod, "all endpoints", state))
        targets.sort(key=lambda t: (t.node, t.id or 0))
        return Resolution(agents, targets, states, errors, self._cep_available is True)

    def _targets_for_ids(self, selection: Selection, agents: dict[str, AgentPod]) -> list[Target]:
        if selection.nodes:
            return [Target(node, i, source=f"endpoint id {i}") for node in selection.nodes
                    for i in selection.endpoint_ids]
        ceps = self._ciliumendpoints(None)
        wanted = set(selection.endpoint_ids)
        targets: list[Target] = []
        if ceps is not None:
            by_ip = self._node_by_ip()
            for (namespace, name), cep in sorted(ceps.items()):
                status = cep.get("status") or {}
                if status.get("id") in wanted:
                    node = by_ip.get((status.get("networking") or {}).get("node", ""), "")
                    targets.append(Target(node, status["id"], namespace, name, f"endpoint id {status['id']}"))
        found = {t.id for t in targets}
        missing = sorted(wanted - found)
        if missing:  # host/health endpoints have no CiliumEndpoint, and the CRD may be off: ask every agent
            states = self.read_nodes(agents, sorted(agents))[0]
            for node, endpoints in sorted(states.items()):
                for state in endpoints:
                    if state.id in missing:
                        targets.append(Target(node, state.id, state.namespace, state.pod, f"endpoint id {state.id}"))
        by_id: dict[int, list[str]] = {}
        for target in targets:
            by_id.setdefault(target.id or 0, []).append(target.node)
        ambiguous = {i: nodes for i, nodes in by_id.items() if len(set(nodes)) > 1}
        if ambiguous:
            detail = "; ".join(f"{i} on {', '.join(sorted(set(n)))}" for i, n in sorted(ambiguous.items()))
            raise SelectionError(f"endpoint_ids: endpoint ids are unique per node only and these exist on several "
                                 f"nodes ({detail}): name the node with the nodes option")
        unknown = sorted(wanted - {t.id for t in targets})
        if unknown:
            raise SelectionError("endpoint_ids: no agent knows endpoint id " + ", ".join(str(i) for i in unknown))
        return targets

    @staticmethod
    def _match(pending: list[Target], states: dict[str, list[EndpointState]],
               errors: dict[str, str]) -> list[Target]:
        """Attach the agent's state to every target; fill ids the agent knows better than a stale CiliumEndpoint."""
        for target in pending:
            endpoints = states.get(target.node)
            if endpoints is None:
                target.error = errors.get(target.node, f"node {target.node}: not read")
                continue
            by_id = {e.id: e for e in endpoints}
            by_pod = {(e.namespace, e.pod): e for e in endpoints if e.pod}
            state = by_pod.get((target.namespace, target.pod)) if target.pod else None
            if state is None and target.id is not None and not target.pod:
                state = by_id.get(target.id)
            if state is not None:
                target.id = state.id
                target.state = state
            else:
                what = f"pod {target.namespace}/{target.pod}" if target.pod else f"endpoint id {target.id}"
                target.error = f"{what}: the cilium agent on node {target.node} has no such endpoint"
        return pending
