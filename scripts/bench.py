"""`make bench`: how much faster one exec per node (nodes in parallel) is than one exec per endpoint.

Builds a simulated cluster with 1,000 endpoints on 50 nodes and 300 ms of latency on every exec (the price of an
API server round trip, the kubelet and a container runtime on a busy cluster), then measures in the same run:

* ``cilium_audit_mode``'s way (the product's own module_utils): enable audit mode for every endpoint, then the
  verify pass reads every endpoint back - one exec per node and step, ``max_parallel_nodes`` nodes at a time;
* the naive way: ``cilium-dbg endpoint config <id> PolicyAuditMode=Enabled``, one exec per endpoint, one after the
  other, and an ``endpoint get <id>`` per endpoint to verify.

Prints wall times and their ratio (absolute times on shared machines are noisy; the ratio is the result).
``--naive-sample N`` times only N endpoints of the naive way and scales the time to all endpoints (said so in the
output).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible_collections.netpol.cilium.plugins.module_utils._agents import AgentRunner, find_agents  # noqa: E402
from ansible_collections.netpol.cilium.plugins.module_utils._audit_mode import AuditModeService  # noqa: E402
from ansible_collections.netpol.cilium.plugins.module_utils._cilium_dbg import (  # noqa: E402
    endpoint_config_argv,
    parse_endpoints,
)
from ansible_collections.netpol.cilium.plugins.module_utils._endpoints import build_selection  # noqa: E402
from ansible_collections.netpol.cilium.plugins.module_utils._k8s import Kube  # noqa: E402


def start_cluster(state: Path, nodes: int, endpoints: int, latency: float) -> None:
    """The simulated cluster runs in its own process, so it does not share this one's interpreter lock."""
    command = [sys.executable, "-m", "simcluster", "serve", "--daemon", "--state-dir", str(state), "--scenario",
               "bench", "--name", "bench", "--agent-boot-seconds", "0.05", "--nodes", str(nodes), "--endpoints",
               str(endpoints), "--exec-latency", str(latency)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"))
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds added to every exec")
    parser.add_argument("--parallel", type=int, default=10, help="max_parallel_nodes")
    parser.add_argument("--naive-sample", type=int, default=0, help="time only N endpoints the naive way (0: all)")
    args = parser.parse_args()

    print(f"building a simulated cluster: {args.endpoints} endpoints on {args.nodes} nodes ...", flush=True)
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="netpol-bench-"))
    start_cluster(state, args.nodes, args.endpoints, args.latency)
    print(f"built in {time.monotonic() - started:.1f} s; measuring ...", flush=True)
    try:
        from kubernetes import config

        kube = Kube(config.new_client_from_config(str(state / "kubeconfig")))
        service = AuditModeService(kube, max_parallel_nodes=args.parallel)
        selection = build_selection({"namespace": "bench"})

        started = time.monotonic()
        outcome = service.set_endpoints(selection, True)
        product_seconds = time.monotonic() - started
        counts = outcome.counts()
        execs = service.runner.exec_count
        assert counts["changed"] == args.endpoints, counts
        assert all(row.verified for row in outcome.rows)

        # back to the start, outside the measurement, so the naive way does the same work
        service.set_endpoints(selection, False)
        records = sorted(((row.node, row.id) for row in outcome.rows), key=lambda r: (r[0], r[1]))
        agents = find_agents(kube)
        runner = AgentRunner(kube)
        sample = records[: args.naive_sample] if args.naive_sample else records
        started = time.monotonic()
        for node_name, endpoint_id in sample:
            agent = agents[node_name]
            changed = runner.run(agent, endpoint_config_argv("cilium-dbg", endpoint_id, True))
            assert changed.ok, changed.describe()
            read = runner.run(agent, ["cilium-dbg", "endpoint", "get", str(endpoint_id), "-o", "json"])
            assert parse_endpoints(read.stdout, "endpoint get")[0].audit_mode is True
        naive_seconds = (time.monotonic() - started) * (len(records) / len(sample))
    finally:
        subprocess.run([sys.executable, "-m", "simcluster", "stop", "--state-dir", str(state)],
                       env=dict(os.environ, PYTHONPATH=str(REPO / "tests")), check=False, timeout=60)

    scaled = f" (measured on {len(sample)} endpoints, scaled to {len(records)})" if len(sample) < len(records) else ""
    print(f"\nenable + verify {args.endpoints} endpoints on {args.nodes} nodes, {args.latency * 1000:.0f} ms per exec")
    print(f"  netpol.cilium (one exec per node and step, {args.parallel} nodes at a time): "
          f"{product_seconds:8.1f} s  ({execs} execs)")
    print(f"  naive (one exec per endpoint and step, sequential):                 {naive_seconds:8.1f} s  "
          f"({2 * len(records)} execs){scaled}")
    print(f"  ratio naive / netpol.cilium: {naive_seconds / product_seconds:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
