"""Benchmark: playbooks/fleet_rollout.yml over a simulated fleet of N clusters in one wave vs one cluster.

    python scripts/bench_fleet.py [--clusters 20] [--forks 20] [--observe 6s] [--watch 4s]

Starts N seed-scenario simulated clusters (each its own process: API server, agents, Hubble Relay), runs the whole
fleet rollout (preflight, apply, audit mode on, observation window and gate, enforcement and watch window, fleet
summary) first on one of them, then on all N in one wave with --forks, and prints both wall times and their ratio.
One after the other, N clusters would take about N times the single cluster; the ratio shows what running a wave's
clusters in parallel saves. Every cluster must pass: the benchmark checks the fleet summary, not only the exit code.
Run by ``make bench`` after ``make layout`` (ansible-playbook and the collections come from the development venv).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "playbooks" / "examples"


def start_clusters(base: Path, count: int, env: dict[str, str]) -> list[tuple[str, Path]]:
    clusters = []
    for index in range(count):
        name = f"bench-{index:02d}"
        state_dir = base / name
        subprocess.run([sys.executable, "-m", "simcluster", "serve", "--state-dir", str(state_dir), "--name", name,
                        "--scenario", "seed", "--relay-rate", "60", "--daemon"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        clusters.append((name, state_dir))
    return clusters


def stop_clusters(clusters: list[tuple[str, Path]], env: dict[str, str]) -> None:
    for _name, state_dir in clusters:
        subprocess.run([sys.executable, "-m", "simcluster", "stop", "--state-dir", str(state_dir)], check=False,
                       env=env, stdout=subprocess.DEVNULL)


def run_fleet(workdir: Path, clusters: list[tuple[str, Path]], forks: int, args: argparse.Namespace,
              env: dict[str, str]) -> tuple[float, dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    hosts = {name: {"k8s_kubeconfig": str(state_dir / "kubeconfig")} for name, state_dir in clusters}
    inventory = {"all": {"children": {"clusters": {"hosts": hosts, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}
    (workdir / "inventory.yml").write_text(yaml.safe_dump(inventory))
    variables = {"fleet_waves": "100%", "fleet_artifacts_dir": str(workdir / "artifacts"),
                 "policy_rollout_observe_duration": args.observe, "policy_rollout_watch_duration": args.watch,
                 "policy_rollout_max_duration": "1h", "policy_rollout_reason": "fleet benchmark"}
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(workdir / "inventory.yml"),
               "--forks", str(forks), str(ROOT / "playbooks" / "fleet_rollout.yml"),
               "-e", f"@{EXAMPLES / 'rollout-db.yml'}", "-e", f"@{EXAMPLES / 'expected-denies-with-metrics.yml'}",
               "-e", json.dumps(variables)]
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=str(workdir))
    elapsed = time.monotonic() - started
    (workdir / "run.log").write_text(result.stdout + result.stderr)
    summary_path = workdir / "artifacts" / "fleet-summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if result.returncode != 0 or summary.get("status") != "passed":
        raise SystemExit(f"fleet run on {len(clusters)} cluster(s) did not pass (exit {result.returncode}, status "
                         f"{summary.get('status')}); see {workdir / 'run.log'}\n{result.stdout[-3000:]}")
    return elapsed, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--forks", type=int, default=0, help="default: as many as clusters")
    parser.add_argument("--observe", default="6s", help="each cluster's observation window")
    parser.add_argument("--watch", default="4s", help="each cluster's watch window after enforcing")
    args = parser.parse_args()
    forks = args.forks or args.clusters
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "tests"), env.get("PYTHONPATH", "")] if p)
    env.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_LOCALHOST_WARNING": "False"})
    print(f"fleet rollout benchmark: {args.clusters} simulated clusters in one wave (--forks {forks}) vs one cluster; "
          f"windows: observe {args.observe}, watch {args.watch}", flush=True)
    with tempfile.TemporaryDirectory(prefix="netpol-bench-fleet-") as tmp:
        base = Path(tmp)
        started = time.monotonic()
        clusters = start_clusters(base / "clusters", args.clusters, env)
        print(f"  started {len(clusters)} clusters in {time.monotonic() - started:.1f} s", flush=True)
        try:
            one, _summary = run_fleet(base / "one", clusters[:1], 1, args, env)
            print(f"  1 cluster:   {one:7.1f} s wall", flush=True)
            # the single-cluster run left bench-00 enforcing with the policy applied; a fresh cluster keeps the
            # comparison fair, so the fleet run uses the others plus a new first cluster
            stop_clusters(clusters[:1], env)
            clusters[0:1] = start_clusters(base / "clusters-again", 1, env)
            many, summary = run_fleet(base / "many", clusters, forks, args, env)
            print(f"  {args.clusters} clusters: {many:7.1f} s wall "
                  f"({summary['counts']['passed']} passed, audit mode on in {len(summary['audit_mode_on'])})",
                  flush=True)
        finally:
            stop_clusters(clusters, env)
    print(f"  ratio: {many / one:.2f}x the wall time of one cluster for {args.clusters}x the clusters "
          f"(one after the other: about {args.clusters}x; {args.clusters * one / many:.1f}x faster than that)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
