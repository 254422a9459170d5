# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Cilium agents: find the agent pod of each node and run the agent CLI in it, one node per thread.

Note that this module util is PRIVATE to the collection. It can change at any time.

Exec goes through the Kubernetes API's pod exec (WebSocket) with an argv list: nothing here builds a shell string.
Each thread gets its own ApiClient, because ``kubernetes.stream`` temporarily replaces a method of the client it is
given.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from ._cilium_dbg import BINARIES, binary_for_version, version_from_image
from ._k8s import Kube, KubeError, describe_api_exception

try:
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream
except ImportError:  # pragma: no cover - reported when the module starts
    pass

T = TypeVar("T")

AGENT_LABEL_SELECTOR = "k8s-app=cilium"
AGENT_CONTAINER = "cilium-agent"
_HANDSHAKE = re.compile(r"Handshake status (\d{3})")
_NOT_FOUND_BINARY = re.compile(r'exec: "([^"]+)": executable file not found')
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def printable(text: str, limit: int = 200) -> str:
    """Agent output fit for a message: terminal escapes and control characters dropped, cut at ``limit``."""
    text = "".join(ch for ch in _ANSI_ESCAPE.sub("", text) if ch.isprintable())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class AgentPod:
    name: str
    namespace: str
    node: str
    phase: str
    ready: bool
    image: str
    started_at: str | None = None  # RFC 3339, from the pod status

    @property
    def version(self) -> str | None:
        return version_from_image(self.image)

    def as_dict(self) -> dict[str, Any]:
        return {"pod": self.name, "namespace": self.namespace, "node": self.node, "phase": self.phase,
                "ready": self.ready, "image": self.image, "version": self.version, "started_at": self.started_at}


@dataclass
class ExecOutcome:
    """What one exec returned. ``error`` is set when the command did not run to an exit code at all."""

    argv: list[str]
    stdout: str = ""
    stderr: str = ""
    rc: int | None = None
    error: str | None = None
    forbidden: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.rc == 0

    def describe(self) -> str:
        if self.error:
            return self.error
        detail = [line for line in (printable(t) for t in (self.stderr or self.stdout).splitlines()) if line.strip()]
        return f"exit code {self.rc}" + (f": {detail[0].strip()}" if detail else "")


def _pod_ready(pod: Any) -> bool:
    for condition in (pod.status.conditions or []) if pod.status else []:
        if condition.type == "Ready":
            return condition.status == "True"
    return False


def find_agents(kube: Kube, namespace: str = "kube-system",
                label_selector: str = AGENT_LABEL_SELECTOR) -> dict[str, AgentPod]:
    """The agent pod of every node, by node name. During a rollout a node may briefly have two pods: the one that
    runs (and, among those, is ready) wins."""
    pods = kube.call(f"list cilium agent pods ({label_selector}) in namespace {namespace}",
                     kube.core.list_namespaced_pod, namespace, label_selector=label_selector)
    agents: dict[str, AgentPod] = {}
    for pod in pods.items:
        node = pod.spec.node_name if pod.spec else None
        if not node or (pod.metadata and pod.metadata.deletion_timestamp):
            continue
        image = next((c.image for c in pod.spec.containers if c.name == AGENT_CONTAINER), "") or ""
        start = pod.status.start_time if pod.status else None
        candidate = AgentPod(pod.metadata.name, namespace, node, (pod.status.phase if pod.status else None) or "",
                             _pod_ready(pod), image, start.strftime("%Y-%m-%dT%H:%M:%SZ") if start else None)
        current = agents.get(node)
        if current is None or (candidate.phase == "Running", candidate.ready) > (current.phase == "Running",
                                                                                 current.ready):
            agents[node] = candidate
    return agents


class AgentRunner:
    """Runs agent CLI commands in the ``cilium-agent`` container; remembers which binary each agent has."""

    def __init__(self, kube: Kube, *, container: str = AGENT_CONTAINER, timeout: float = 60.0,
                 binary: str | None = None) -> None:
        self.kube = kube
        self.container = container
        self.timeout = timeout
        self.forced_binary = binary
        self._binaries: dict[str, str] = {}
        self.exec_count = 0

    def binary(self, agent: AgentPod) -> str:
        if self.forced_binary:
            return self.forced_binary
        return self._binaries.get(agent.name) or binary_for_version(agent.version)

    def run(self, agent: AgentPod, argv: list[str]) -> ExecOutcome:
        """Run argv; if the agent's image lacks the binary we guessed, retry once with the other name."""
        outcome = self.exec(agent, argv)
        missing = _NOT_FOUND_BINARY.search(outcome.error or "")
        if missing and missing.group(1) in BINARIES and not self.forced_binary:
            other = next(b for b in BINARIES if b != missing.group(1))
            self._binaries[agent.name] = other
            swapped = [other if arg == missing.group(1) else arg for arg in argv]
            outcome = self.exec(agent, swapped)
        return outcome

    def exec(self, agent: AgentPod, argv: list[str]) -> ExecOutcome:
        """One pod exec, bounded by the timeout; never raises for the command's own failure."""
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a list of strings")
        self.exec_count += 1
        started = time.monotonic()
        outcome = ExecOutcome(list(argv))
        api_client = self.kube.fresh_api_client()
        try:
            api = CoreV1Api(api_client)
            try:
                response = stream(api.connect_get_namespaced_pod_exec, agent.name, agent.namespace, command=argv,
                                  container=self.container, stderr=True, stdin=False, stdout=True, tty=False,
                                  _preload_content=False, _request_timeout=self.timeout)
            except ApiException as exc:
                self._handshake_failure(agent, outcome, exc)
                return outcome
            stdout: list[str] = []
            stderr: list[str] = []
            deadline = started + self.timeout
            while response.is_open() and time.monotonic() < deadline:
                response.update(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
                stdout.append(response.read_stdout(timeout=0))
                stderr.append(response.read_stderr(timeout=0))
            timed_out = response.is_open()
            if timed_out:
                response.close()
            stdout.append(response.read_stdout(timeout=0))
            stderr.append(response.read_stderr(timeout=0))
            outcome.stdout, outcome.stderr = "".join(stdout), "".join(stderr)
            if timed_out:
                outcome.error = (f"exec in pod {agent.namespace}/{agent.name} on node {agent.node} did not finish "
                                 f"within {self.timeout:g}s")
                return outcome
            self._read_status(agent, outcome, response.read_channel(3))
            return outcome
        finally:
            outcome.seconds = time.monotonic() - started
            api_client.close()

    def _read_status(self, agent: AgentPod, outcome: ExecOutcome, raw: str) -> None:
        try:
            status = json.loads(raw) if raw else {}
        except ValueError:
            status = {}
        if status.get("status") == "Success":
            outcome.rc = 0
            return
        causes = (status.get("details") or {}).get("causes") or []
        exit_codes = [c.get("message") for c in causes if c.get("reason") == "ExitCode"]
        if exit_codes and str(exit_codes[0]).isdigit():
            outcome.rc = int(exit_codes[0])
            return
        message = status.get("message") or "the exec stream closed without a status"
        outcome.error = f"exec in pod {agent.namespace}/{agent.name} on node {agent.node} failed: {message}"

    def _handshake_failure(self, agent: AgentPod, outcome: ExecOutcome, exc: Any) -> None:
        """The kubernetes client reports a refused WebSocket upgrade as ApiException(status=0, reason=<text>)."""
        message, status, _reason = describe_api_exception(exc)
        text = str(getattr(exc, "reason", "") or message)
        match = _HANDSHAKE.search(text)
        code = int(match.group(1)) if match else status
        body = text.rsplit("-+-+-", 1)[-1].strip() if "-+-+-" in text else ""
        if body.startswith(("b'", 'b"')):
            body = body[2:-1]
        detail = message
        try:
            parsed = json.loads(body.encode().decode("unicode_escape")) if body else None
            if isinstance(parsed, dict) and parsed.get("message"):
                detail = parsed["message"]
        except ValueError:
            pass
        where = f"pod {agent.namespace}/{agent.name} on node {agent.node}"
        if code == 403:
            outcome.forbidden = True
            outcome.error = (f"exec into {where} is forbidden: the credentials need verb 'create' on resource "
                             f"'pods/exec' in namespace {agent.namespace} ({detail})")
        elif code == 404:
            outcome.error = f"{where} no longer exists (it may have been restarted): {detail}"
        else:
            outcome.error = f"exec into {where} failed" + (f" (HTTP {code})" if code else "") + f": {detail}"


def run_per_node(nodes: list[str], work: Callable[[str], T], max_workers: int = 8) -> dict[str, T | Exception]:
    """Run ``work(node)`` for every node, at most ``max_workers`` at once; exceptions are returned, not raised."""
    results: dict[str, T | Exception] = {}
    if not nodes:
        return results

    def guarded(node: str) -> tuple[str, T | Exception]:
        try:
            return node, work(node)
        except (KubeError, ValueError) as exc:
            return node, exc

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(nodes)))) as pool:
        for node, result in pool.map(guarded, nodes):
            results[node] = result
    return results
