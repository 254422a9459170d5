"""Soak: a long live follow window through the whole report path, memory sampled, counts checked exactly.

    python scripts/bench_soak.py [--rate 10000] [--seconds 180] [--capacity 4095]

(after ``make layout``). A child process runs a simulated cluster (seed scenario, db in audit mode) and its simulated
Hubble Relay; on "go" it emits ``--rate`` audited connections a second for ``--seconds`` from three workloads on two
ports (plus the allowed backend connections, which the Relay's filter drops), and counts every AUDIT policy verdict it
wrote. This process runs the product's report path as the module does (``_audit_report.make_report``: gRPC follow
with server-side filters, conversion, judging against expected denies, grouping, and the four report files) over a
window that covers the emission, and samples its own resident memory every half second.

It prints the flows, the rate, memory at 10%, 50% and 100% of the window and the peak, and checks three things:
memory stays flat (the growth from 10% of the window to its end is printed, and must stay under ``--max-growth-mb``),
no flow was lost because the client fell behind (``lost_events`` 0, window complete), and the report counts exactly the
flows the Relay wrote (``audited`` equals the child's count). The default run carries 1.8 million audited flows: what a
30-minute window holds at 1,000 audited flows a second, compressed into 3 minutes at 10,000 a second. ``--seconds 1800``
runs a real 30 minutes. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / ".cache" / "collections")]

# (source, destination, port, share of the rate); all three are audited while db is in audit mode
AUDITED_TRAFFIC = (("shop/frontend", "shop/db", 5432, 0.6), ("monitoring/metrics-agent", "shop/db", 9100, 0.3),
                   ("shop/frontend", "shop/db", 8080, 0.1))


def serve(args: argparse.Namespace) -> int:
    """The child: cluster + relay; on "go" emits for --seconds, then prints the counts (JSON) and waits."""
    from simcluster.cluster import SimCluster
    from simcluster.scenario import seed

    state = tempfile.mkdtemp(prefix="bench-soak-")
    cluster = SimCluster("soak", state_dir=state, agent_boot_seconds=0.05)
    cluster.start()
    try:
        seed(cluster)
        db = next(r for r in cluster.endpoints.values() if r.namespace == "shop" and r.pod_labels.get("app") == "db")
        cluster.agent(db.node).exec(["cilium-dbg", "endpoint", "config", str(db.id), "PolicyAuditMode=Enabled"])
        relay = cluster.start_hubble(generate=False, noise=False, transport="h2", capacity=args.capacity)
        print(json.dumps({"address": relay.address}), flush=True)
        if sys.stdin.readline().strip() != "go":
            return 0
        counts: dict[str, int] = {}
        tick = 0.05
        carry = [0.0] * (len(AUDITED_TRAFFIC) + 1)
        started = time.monotonic()
        next_tick = started
        while time.monotonic() - started < args.seconds:
            entries = [*AUDITED_TRAFFIC, ("shop/backend", "shop/db", 5432, 0.05)]
            for index, (source, destination, port, share) in enumerate(entries):
                wanted = carry[index] + args.rate * share * tick
                count = int(wanted)
                carry[index] = wanted - count
                if count:
                    for key, value in relay.emit(source, destination, port, "TCP", count=count).items():
                        counts[key] = counts.get(key, 0) + value
            next_tick += tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        print(json.dumps({"counts": counts, "seconds": time.monotonic() - started, "lost": relay.perf_lost}),
              flush=True)
        sys.stdin.readline()
        relay.stop()
    finally:
        cluster.stop()
    return 0


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10000, help="audited connections a second")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the relay emits")
    parser.add_argument("--capacity", type=int, default=4095, help="ring buffer per node (Hubble's default 4095)")
    parser.add_argument("--max-growth-mb", type=float, default=25.0,
                        help="largest allowed memory growth from 10%% of the window to its end")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)

    from ansible_collections.netpol.cilium.plugins.module_utils._audit_report import make_report
    from ansible_collections.netpol.cilium.plugins.modules.hubble_audit_report import MODULE_SPEC

    child = subprocess.Popen([sys.executable, __file__, "--serve", "--rate", str(args.rate), "--seconds",
                              str(args.seconds), "--capacity", str(args.capacity)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdin is not None and child.stdout is not None
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    window = args.seconds + 8

    def sample() -> None:
        began = time.monotonic()
        while not done.wait(0.5):
            samples.append((time.monotonic() - began, rss_mb()))

    result: dict[str, Any] = {}
    try:
        address = json.loads(child.stdout.readline())["address"]
        params: dict[str, Any] = {name: spec.get("default") for name, spec in MODULE_SPEC.items()}
        report_dir = tempfile.mkdtemp(prefix="bench-soak-report-")
        params.update(source="relay", relay_address=address, duration=f"{int(window)}s", namespaces=["shop"],
                      expected=[{"name": "frontend never talks to db", "from": {"namespace": "shop",
                                                                                "workload": "frontend"},
                                 "to": {"namespace": "shop", "workload": "db"}, "ports": ["5432/TCP"]}],
                      fail_on_unexpected=False, report_dir=report_dir, cluster_name="soak")

        def run() -> None:
            result.update(make_report(params))

        print(f"soak: {args.rate:,} audited connections/s for {args.seconds:.0f} s through the report path "
              f"(window {window:.0f} s, ring buffer {args.capacity} per node)", flush=True)
        baseline = rss_mb()
        sampler = threading.Thread(target=sample, daemon=True)
        worker = threading.Thread(target=run, daemon=True)
        sampler.start()
        worker.start()
        time.sleep(2)  # the follow is open before the first flow
        child.stdin.write("go\n")
        child.stdin.flush()
        produced = json.loads(child.stdout.readline())
        worker.join(window + 120)
        done.set()
        child.stdin.write("stop\n")
        child.stdin.flush()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
        child.wait(30)
    summary = result.get("summary") or {}
    written = produced["counts"].get("policy-verdict:AUDIT", 0)
    audited = summary.get("audited")

    def at(fraction: float) -> float:
        moment = fraction * window
        return next((mb for seconds, mb in samples if seconds >= moment), samples[-1][1] if samples else 0.0)

    growth = at(1.0) - at(0.1)
    peak = max((mb for _seconds, mb in samples), default=0.0)
    others = sum(produced["counts"].values()) - written
    groups = summary.get("unexpected_groups", 0) + summary.get("expected_groups", 0)
    rate = written / max(produced["seconds"], 1e-9)
    print(f"  relay wrote        {written:,} AUDIT policy verdicts in {produced['seconds']:.1f} s ({rate:,.0f}/s), "
          f"other flows {others:,}")
    print(f"  report counted     {audited:,} audited flows in {groups} groups; lost_events "
          f"{summary.get('lost_events')}, complete {summary.get('complete')}")
    print(f"  memory (RSS)       before {baseline:.1f} MB; at 10% {at(0.1):.1f} MB, 50% {at(0.5):.1f} MB, "
          f"end {at(1.0):.1f} MB; peak {peak:.1f} MB; growth 10%->end {growth:+.1f} MB")
    checks = {
        "exact count": audited == written,
        "no client-caused loss": summary.get("lost_events") == 0 and summary.get("complete") is True,
        f"memory flat (growth < {args.max_growth_mb:.0f} MB)": growth < args.max_growth_mb,
    }
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
