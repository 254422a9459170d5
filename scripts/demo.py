"""`make demo`: the lifecycle of netpol.cilium against a simulated Cilium cluster (the seed scenario).

It starts the simulated cluster in this process (a real HTTPS Kubernetes API on loopback with emulated Cilium
agents and a Hubble Relay), shows what is in it, then runs the collection's playbooks with ansible-playbook exactly
as a user would: status; policy_rollout.yml for shop/db-ingress (apply, audit mode on for the endpoints the policy
selects, a live observation window whose gate fails on the flow the policy forgot, a rollout summary); the same
rollout again once that deny is expected (gate passes, enforcement, a watch window for unexpected drops, audit mode
off and verified); and the audit-mode guard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from simcluster.cluster import SimCluster  # noqa: E402
from simcluster.playbook import ansible_env  # noqa: E402
from simcluster.scenario import seed  # noqa: E402


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 100 - len(text)), flush=True)


def show_cluster(cluster: SimCluster) -> None:
    banner(f"Simulated cluster '{cluster.name}' (seed scenario) at {cluster.server_url}")
    print(f"kubeconfig: {cluster.kubeconfig}")
    print(f"{'NODE':<16} {'CILIUM AGENT':<14} {'VERSION':<8} {'ENDPOINTS (namespace/pod = endpoint id)'}")
    for node in cluster.node_names():
        pod = cluster.agent_pod_on(node) or {"metadata": {"name": "-"}}
        agent = cluster.agents.get(node)
        endpoints = sorted(f"{r.namespace}/{r.pod}={r.id}" for r in cluster.endpoints.values()
                           if r.node == node and r.namespace in ("shop", "monitoring"))
        print(f"{node:<16} {pod['metadata']['name']:<14} {agent.version if agent else '-':<8} {', '.join(endpoints)}")
    print("\nCiliumNetworkPolicy shop/db-ingress: selects app=db, allows ingress only from app=backend on 5432/TCP")
    print("Traffic in the scenario (what the Hubble audit report will judge):")
    for flow in cluster.traffic:
        print(f"  {flow['from']:<26} -> {flow['to']:<10} {flow['port']}/{flow['protocol']:<4} {flow['note']}")


def playbook(name: str, inventory: Path, env: dict[str, str], *extra: str, expect_failure: bool = False) -> None:
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
               str(REPO / "playbooks" / name), *extra]
    banner("ansible-playbook playbooks/" + " ".join([name, *extra]))
    started = time.monotonic()
    completed = subprocess.run(command, env=env, cwd=str(REPO), check=False)
    print(f"({time.monotonic() - started:.1f}s, exit code {completed.returncode})")
    if expect_failure and completed.returncode == 0:
        raise SystemExit(f"demo step should have failed the gate: {name}")
    if not expect_failure and completed.returncode != 0:
        raise SystemExit(f"demo step failed: {name}")


def show_report(path: Path) -> None:
    banner(f"The report a person reads: {path.name} (also report.json, junit.xml, suggested-policies.yaml)")
    text = path.read_text()
    print(text if len(text) < 6000 else text[:6000] + "\n[...]")


def main() -> int:
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="netpol-demo-"))
    cluster = SimCluster("demo", state_dir=str(state), agent_boot_seconds=0.3)
    cluster.start()
    try:
        seed(cluster)
        # the scenario's traffic, 60x faster, so that a few seconds of window hold every kind of flow
        relay = cluster.start_hubble(rate_multiplier=60)
        show_cluster(cluster)
        print(f"Hubble Relay (simulated): {relay.address} - the playbooks reach it through the Kubernetes API "
              "(port-forward to the hubble-relay pod)")
        inventory = state / "inventory.yml"
        inventory.write_text(
            "all:\n  hosts:\n    demo-cluster:\n      ansible_connection: local\n"
            f"      ansible_python_interpreter: {sys.executable}\n      k8s_kubeconfig: {cluster.kubeconfig}\n")
        env = ansible_env(cluster, {"ANSIBLE_DISPLAY_SKIPPED_HOSTS": "False"})
        db = ["-e", "audit_policy=shop/db-ingress"]
        playbook("audit_status.yml", inventory, env, *db)
        artifacts = state / "artifacts"
        rollout = ["-e", f"@{REPO / 'playbooks' / 'examples' / 'rollout-db.yml'}", "-e", json.dumps({
            # the demo's windows are seconds long: the simulated traffic runs 60x faster
            "policy_rollout_observe_duration": "6s", "policy_rollout_watch_duration": "5s",
            "policy_rollout_max_duration": "2h", "policy_rollout_reason": "demo: roll out shop/db-ingress",
            "policy_rollout_artifacts_dir": str(artifacts / "{{ inventory_hostname }}")})]
        playbook("policy_rollout.yml", inventory, env, *rollout, "-e",
                 f"@{REPO / 'playbooks' / 'examples' / 'expected-denies.yml'}", expect_failure=True)
        verdict = json.loads((artifacts / "demo-cluster" / "gate" / "report.json").read_text())
        unexpected = [g["description"] for g in verdict["unexpected"]]
        if not verdict["summary"]["complete"] or not any("metrics-agent -> shop/db 9100/TCP" in u for u in unexpected):
            raise SystemExit(f"the gate failed for another reason than the forgotten flow: {verdict['summary']}")
        print(">>> the gate failed, as it should: the policy forgot the metrics-agent scrape of db on 9100;")
        print(">>> audit mode stays on for db (recorded in the ledger with its expiry) until the rollout passes")
        show_report(artifacts / "demo-cluster" / "gate" / "report.md")
        playbook("policy_rollout.yml", inventory, env, *rollout, "-e",
                 f"@{REPO / 'playbooks' / 'examples' / 'expected-denies-with-metrics.yml'}")
        show_report(artifacts / "demo-cluster" / "rollout-summary.md")
        playbook("audit_guard.yml", inventory, env)
        print(f"\nArtifacts (reports and rollout summaries): {artifacts}")
        banner("Done")
        record = next(r for r in cluster.endpoints.values() if r.namespace == "shop" and r.pod.startswith("db-"))
        mode = "Enabled" if cluster.agent(record.node).endpoint_audit_mode(record.id) else "Disabled"
        print(f"db endpoint {record.id} on {record.node}: PolicyAuditMode={mode} (enforcing again)")
        print(f"demo finished in {time.monotonic() - started:.1f}s")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
