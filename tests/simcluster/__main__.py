"""Command line: run a simulated cluster in the foreground or the background.

    python -m simcluster serve --state-dir DIR [--scenario seed] [--relay-rate N] [--daemon]
    python -m simcluster stop --state-dir DIR
    python -m simcluster kubeconfig --output FILE DIR [DIR ...]

``kubeconfig`` merges the kubeconfigs of running clusters (started with different ``--name``s) into one file with a
context per cluster (``<name>-admin`` and ``<name>-readonly``), as a fleet's multi-context kubeconfig.

``serve`` prints the kubeconfig path and the Hubble Relay address and writes ``DIR/sim.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .cluster import SimCluster
from .scenario import SCENARIOS


def _serve(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "sim.json").unlink(missing_ok=True)
    cluster = SimCluster(args.name, state_dir=str(state_dir), agent_boot_seconds=args.agent_boot_seconds)
    cluster.start()
    if args.scenario == "bench":
        SCENARIOS["bench"](cluster, nodes=args.nodes, endpoints=args.endpoints)
    else:
        SCENARIOS[args.scenario](cluster)
    cluster.faults.exec_latency = args.exec_latency
    relay = cluster.start_hubble(rate_multiplier=args.relay_rate) if args.scenario == "seed" else None
    info = {"pid": os.getpid(), "name": cluster.name, "server": cluster.server_url, "kubeconfig": cluster.kubeconfig,
            "context": f"{cluster.name}-admin", "readonly_context": f"{cluster.name}-readonly",
            "cilium_namespace": cluster.cilium_namespace, "hubble_relay": relay.address if relay else None,
            "scenario": args.scenario}
    (state_dir / "sim.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"kubeconfig: {cluster.kubeconfig}", flush=True)
    print(f"api server: {cluster.server_url}", flush=True)
    print(f"hubble relay: {relay.address if relay else 'not started (seed scenario only)'}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        stop.wait(0.5)
    cluster.stop()
    (state_dir / "sim.json").unlink(missing_ok=True)
    return 0


def _daemon(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "sim.json").unlink(missing_ok=True)
    command = [sys.executable, "-m", "simcluster", "serve", "--state-dir", str(state_dir), "--scenario",
               args.scenario, "--name", args.name, "--agent-boot-seconds", str(args.agent_boot_seconds),
               "--nodes", str(args.nodes), "--endpoints", str(args.endpoints), "--exec-latency", str(args.exec_latency),
               "--relay-rate", str(args.relay_rate)]
    log = open(state_dir / "sim.log", "ab")  # noqa: SIM115 - handed to the child process
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[1]),
                                                    env.get("PYTHONPATH", "")] if p)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (state_dir / "sim.json").exists():
            info = json.loads((state_dir / "sim.json").read_text())
            print(f"kubeconfig: {info['kubeconfig']}")
            print(f"api server: {info['server']}")
            print(f"hubble relay: {info.get('hubble_relay') or 'not started (seed scenario only)'}")
            return 0
        if process.poll() is not None:
            sys.stderr.write((state_dir / "sim.log").read_text())
            return 1
        time.sleep(0.1)
    process.terminate()
    sys.stderr.write("simulated cluster did not start within 60s\n")
    return 1


def _stop(args: argparse.Namespace) -> int:
    info_path = Path(args.state_dir) / "sim.json"
    if not info_path.exists():
        print("no simulated cluster running there")
        return 0
    pid = json.loads(info_path.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        info_path.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and info_path.exists():
        time.sleep(0.1)
    return 0


def _merge_kubeconfigs(args: argparse.Namespace) -> int:
    import yaml

    merged: dict = {"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "users": [],
                    "contexts": []}
    for state_dir in args.state_dirs:
        info_path = Path(state_dir) / "sim.json"
        if not info_path.exists():
            sys.stderr.write(f"no simulated cluster running in {state_dir}\n")
            return 1
        config = yaml.safe_load(Path(json.loads(info_path.read_text())["kubeconfig"]).read_text())
        for key in ("clusters", "users", "contexts"):
            taken = {item["name"] for item in merged[key]}
            clashes = [item["name"] for item in config.get(key) or [] if item["name"] in taken]
            if clashes:
                sys.stderr.write(f"{state_dir}: {key} {', '.join(clashes)} already taken (start clusters with "
                                 f"different --name)\n")
                return 1
            merged[key].extend(config.get(key) or [])
        merged.setdefault("current-context", config.get("current-context"))
    output = Path(args.output)
    output.write_text(yaml.safe_dump(merged, sort_keys=False))
    os.chmod(output, 0o600)
    print(f"kubeconfig: {output} (contexts: {', '.join(item['name'] for item in merged['contexts'])})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a simulated cluster")
    serve.add_argument("--state-dir", required=True)
    serve.add_argument("--scenario", choices=sorted(SCENARIOS), default="seed")
    serve.add_argument("--name", default="sim")
    serve.add_argument("--agent-boot-seconds", type=float, default=0.3)
    serve.add_argument("--daemon", action="store_true", help="start in the background and return once it serves")
    serve.add_argument("--nodes", type=int, default=50, help="bench scenario: number of nodes")
    serve.add_argument("--endpoints", type=int, default=1000, help="bench scenario: number of endpoints")
    serve.add_argument("--exec-latency", type=float, default=0.0, help="seconds added to every pod exec")
    serve.add_argument("--relay-rate", type=float, default=1.0,
                       help="seed scenario: the Hubble Relay's traffic runs this many times faster than real time")
    stop = sub.add_parser("stop", help="stop a background simulated cluster")
    stop.add_argument("--state-dir", required=True)
    merge = sub.add_parser("kubeconfig", help="merge the kubeconfigs of running clusters into one multi-context file")
    merge.add_argument("--output", required=True)
    merge.add_argument("state_dirs", nargs="+", metavar="DIR")
    args = parser.parse_args(argv)
    if args.command == "stop":
        return _stop(args)
    if args.command == "kubeconfig":
        return _merge_kubeconfigs(args)
    return _daemon(args) if args.daemon else _serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
