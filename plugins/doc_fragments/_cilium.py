# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""Options shared by the modules that talk to Cilium agents (private to the collection)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  cilium_namespace:
    description:
      - Namespace of the Cilium installation (agent DaemonSet C(cilium), ConfigMap C(cilium-config)).
    type: str
    default: kube-system
  agent_binary:
    description:
      - The agent CLI to run in the C(cilium-agent) container.
      - V(auto) picks C(cilium-dbg) for agents 1.15 and newer and C(cilium) for older ones (from the agent image tag),
        and switches to the other name when the container does not have the one it tried.
    type: str
    choices: [auto, cilium-dbg, cilium]
    default: auto
  exec_timeout:
    description:
      - Seconds one exec in an agent pod may take before it is abandoned and reported as failed for that node.
    type: int
    default: 60
  api_timeout:
    description:
      - Seconds one Kubernetes API request may take before it is abandoned.
      - Reads, and writes that set fixed values, are retried (at most 4 times, with backoff and jitter, honouring the
        server's C(Retry-After)) after a timeout, HTTP 429 or 5xx or a transport error; a write that meets a
        409 Conflict reads the object again and is retried. The error after the last attempt names the call.
    type: int
    default: 30
  max_parallel_nodes:
    description:
      - How many nodes are worked on at the same time (one exec per node and step).
    type: int
    default: 10
"""

    SELECTION = r"""
options:
  endpoint_ids:
    description:
      - Cilium endpoint ids (whole numbers from 1 to 65535).
      - Endpoint ids are unique per node only; when an id exists on several nodes, name the node with O(nodes).
    type: list
    elements: raw
  nodes:
    description:
      - Node names that qualify O(endpoint_ids).
    type: list
    elements: str
  pods:
    description:
      - Pods as C(namespace/name); each pod's endpoint on its node is selected.
    type: list
    elements: str
  namespace:
    description:
      - Select the pods of this namespace (all of them, or those matching O(label_selector)).
    type: str
  label_selector:
    description:
      - A Kubernetes label selector (for example C(app=db,tier in (data))) applied in O(namespace).
    type: str
  policy:
    description:
      - A CiliumNetworkPolicy as C(namespace/name); every pod its endpoint selectors select.
    type: str
  allow_empty:
    description:
      - Do not fail when the selectors match no endpoint.
    type: bool
    default: false
"""
