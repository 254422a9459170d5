"""Faults a test can switch on: API error rates, exec failures and hangs, agents that never get ready."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


@dataclass
class ApiFault:
    code: int  # HTTP status to return (429, 500, 503, 409, ...); 0 = hold the request for ``delay`` seconds
    rate: float = 1.0  # probability that a matching request fails
    verbs: frozenset[str] | None = None  # get, list, watch, create, update, patch, delete; None = any
    resources: frozenset[str] | None = None  # plural names, e.g. {"pods", "configmaps"}; None = any
    remaining: int | None = None  # fail at most this many requests, None = unlimited
    delay: float = 0.0
    hits: int = 0
    names: frozenset[str] | None = None  # object names, e.g. {"cilium-config"}; None = any (lists have no name)


@dataclass
class ExecFault:
    mode: str  # "fail" (API-level error), "hang", "garbage" (stdout noise, rc 0), "exit" (rc != 0), "latency"
    seconds: float = 0.0
    exit_code: int = 1
    after: int = 0  # let this many execs on the node pass first (e.g. 1: the read works, the change meets the fault)
    execs: int = 0  # execs on the node seen so far
    hits: int = 0  # execs the fault was applied to


@dataclass
class Faults:
    seed: int = 0
    api: list[ApiFault] = field(default_factory=list)
    exec_by_node: dict[str, ExecFault] = field(default_factory=dict)
    exec_latency: float = 0.0
    agents_never_ready: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def add_api_fault(self, code: int, rate: float = 1.0, verbs: set[str] | None = None,
                      resources: set[str] | None = None, count: int | None = None, delay: float = 0.0,
                      names: set[str] | None = None) -> ApiFault:
        fault = ApiFault(code, rate, frozenset(verbs) if verbs else None, frozenset(resources) if resources else None,
                         count, delay, names=frozenset(names) if names else None)
        with self.lock:
            self.api.append(fault)
        return fault

    def pick_api_fault(self, verb: str, resource: str, name: str | None = None) -> ApiFault | None:
        with self.lock:
            for fault in self.api:
                if fault.verbs is not None and verb not in fault.verbs:
                    continue
                if fault.resources is not None and resource not in fault.resources:
                    continue
                if fault.names is not None and name not in fault.names:
                    continue
                if fault.remaining is not None and fault.remaining <= 0:
                    continue
                if self._rng.random() >= fault.rate:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    def exec_fault(self, node: str) -> ExecFault | None:
        """The fault for this exec on ``node`` (None once cleared, or while its ``after`` execs still pass)."""
        with self.lock:
            fault = self.exec_by_node.get(node)
            if fault is None:
                return None
            fault.execs += 1
            if fault.execs <= fault.after:
                return None
            fault.hits += 1
            return fault

    def clear(self) -> None:
        with self.lock:
            self.api.clear()
            self.exec_by_node.clear()
            self.exec_latency = 0.0
            self.agents_never_ready.clear()
