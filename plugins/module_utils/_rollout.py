# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Health-gated restarts of Cilium agents: the whole DaemonSet (rolling) or the agent pods of some nodes.

Note that this module util is PRIVATE to the collection. It can change at any time.

An agent reads ``policy-audit-mode`` only when it starts, so every global or per-node change ends with a restart,
and a restart is only done when it is: every agent ready on the new pod template, ``status --brief`` OK on each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ._agents import AgentPod, AgentRunner, find_agents, run_per_node
from ._cilium_dbg import status_argv
from ._k8s import Kube, KubeError
from ._ledger import utc_now

RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


class RolloutError(Exception):
    """A restart that did not become healthy in time; ``state`` says where it stopped."""

    def __init__(self, message: str, state: dict[str, Any]) -> None:
        super().__init__(message)
        self.state = state


@dataclass
class RolloutResult:
    restarted: list[str] = field(default_factory=list)  # nodes whose agent pod was replaced
    seconds: float = 0.0
    health: dict[str, str] = field(default_factory=dict)


def daemonset_rolled_out(ds: Any) -> tuple[bool, str]:
    """The contract of ``kubectl rollout status ds``: observed generation current, every pod updated and ready."""
    status = ds.status
    generation = ds.metadata.generation
    desired = status.desired_number_scheduled or 0
    if (status.observed_generation or 0) < (generation or 0):
        return False, f"waiting for the DaemonSet controller to observe generation {generation}"
    updated = status.updated_number_scheduled or 0
    if updated < desired:
        return False, f"{updated} of {desired} agent pods updated"
    available = status.number_available or 0
    if available < desired:
        return False, f"{available} of {desired} updated agent pods available"
    return True, f"{desired} agent pods updated and available"


class AgentRestarter:
    def __init__(self, kube: Kube, runner: AgentRunner, namespace: str = "kube-system", daemonset: str = "cilium",
                 timeout: float = 600.0, poll: float = 1.0, max_parallel_nodes: int = 10,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.kube = kube
        self.runner = runner
        self.namespace = namespace
        self.daemonset = daemonset
        self.timeout = timeout
        self.poll = poll
        self.max_parallel_nodes = max_parallel_nodes
        self._sleep = sleep

    def _read_daemonset(self) -> Any:
        return self.kube.call(f"read DaemonSet {self.namespace}/{self.daemonset}",
                              self.kube.apps.read_namespaced_daemon_set, self.daemonset, self.namespace)

    def rolling_restart(self) -> RolloutResult:
        """Patch the pod-template restartedAt annotation and wait for the rollout, then the health gate."""
        started = time.monotonic()
        before = find_agents(self.kube, self.namespace)
        ds = self._read_daemonset()
        strategy = ds.spec.update_strategy.type if ds.spec.update_strategy else "RollingUpdate"
        if strategy == "OnDelete":
            raise RolloutError(f"DaemonSet {self.namespace}/{self.daemonset} uses updateStrategy OnDelete: a "
                               "pod-template change does not restart its pods; restart the agents per node instead",
                               {"restarted": False})
        stamp = utc_now()
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: stamp}}}}}

        def not_stamped_yet() -> bool:  # after a 409: the write is needed unless the template has our stamp
            template = self._read_daemonset().spec.template
            return ((template.metadata and template.metadata.annotations) or {}).get(RESTART_ANNOTATION) != stamp

        # the same stamp again changes nothing: retried like a read, and re-read and retried after a 409 Conflict
        self.kube.call(f"patch DaemonSet {self.namespace}/{self.daemonset} (rolling restart)",
                       self.kube.apps.patch_namespaced_daemon_set, self.daemonset, self.namespace, patch,
                       on_conflict=not_stamped_yet)
        self._wait(lambda: daemonset_rolled_out(self._read_daemonset()), "the cilium agent rollout")
        after = find_agents(self.kube, self.namespace)
        result = RolloutResult(restarted=sorted(n for n in after if before.get(n) is None
                                                or before[n].name != after[n].name))
        result.health = self.health_gate(after)
        result.seconds = time.monotonic() - started
        return result

    def restart_nodes(self, nodes: list[str]) -> RolloutResult:
        """Delete the agent pod of each node, one node at a time; wait for its replacement to be ready and healthy."""
        started = time.monotonic()
        result = RolloutResult()
        for node in nodes:
            agents = find_agents(self.kube, self.namespace)
            old = agents.get(node)
            if old is None:
                raise RolloutError(f"no cilium agent pod runs on node {node}", {"restarted": result.restarted})
            try:
                self.kube.call(f"delete agent pod {self.namespace}/{old.name} on node {node}",
                               self.kube.core.delete_namespaced_pod, old.name, self.namespace)
            except KubeError as exc:
                if not exc.not_found:  # gone already (an earlier attempt whose answer was lost): what we wanted
                    raise

            def replaced(node: str = node, old_name: str = old.name) -> tuple[bool, str]:
                agent = find_agents(self.kube, self.namespace).get(node)
                if agent is None or agent.name == old_name:
                    return False, f"waiting for a new agent pod on node {node}"
                if not agent.ready:
                    return False, f"agent pod {agent.name} on node {node} is not ready"
                return True, "ready"

            try:
                self._wait(replaced, f"the new agent pod on node {node}")
            except RolloutError as exc:
                exc.state["restarted"] = result.restarted
                raise
            result.restarted.append(node)
            new = find_agents(self.kube, self.namespace)[node]
            result.health.update(self.health_gate({node: new}))
        result.seconds = time.monotonic() - started
        return result

    def health_gate(self, agents: dict[str, AgentPod]) -> dict[str, str]:
        """``status --brief`` must say OK on every agent (in parallel); raise with each node's answer if not."""
        def check(node: str) -> str:
            agent = agents[node]
            outcome = self.runner.run(agent, status_argv(self.runner.binary(agent)))
            return "OK" if outcome.ok and outcome.stdout.strip() == "OK" else outcome.describe()

        answers = run_per_node(sorted(agents), check, self.max_parallel_nodes)
        health = {node: str(value) for node, value in answers.items()}
        bad = {node: value for node, value in health.items() if value != "OK"}
        if bad:
            detail = "; ".join(f"{node}: {value}" for node, value in sorted(bad.items()))
            raise RolloutError(f"cilium agents are not healthy after the restart ({detail})",
                               {"health": health})
        return health

    def _wait(self, done: Callable[[], tuple[bool, str]], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        last = ""
        while True:
            try:
                ok, last = done()
            except KubeError as exc:
                ok, last = False, str(exc)
            if ok:
                return
            if time.monotonic() >= deadline:
                raise RolloutError(f"timed out after {self.timeout:g}s waiting for {what}: {last}", {"last": last})
            self._sleep(self.poll)
