"""Benchmark the ``file`` flow source and the judge against the PyPI tool hubble-audit2policy (not a test).

In one run:

1. generate Hubble flow files with the shared generator (``bench/gen_hubble_flows.py`` beside the repository):
   N lines (default 1,000,000, ~1.5 KB each, 5 % audited) and a 100,000-line file with the same mix; both are cached
   under ``.cache/bench/``;
2. install hubble-audit2policy into its own venv (``.cache/bench/venv``, with pip from the package index) and read
   its real command line from ``--help``;
3. run each tool in a child process of its own, taking turns; CPU time comes from ``os.wait4``, peak RSS from the
   child's own ``VmHWM`` (``/proc/self/status``, read at exit: ``ru_maxrss`` would include the parent's RSS
   inherited at fork):
   * ours: ``read_flow_files`` + ``judge_flows`` (all of the file source's work: prefilter, parse, normalise, group);
   * hubble-audit2policy ``--verdict AUDIT --no-enrich --dry-run <file>`` (its policies go to /dev/null), called
     through its ``main()`` exactly as its console script does, with an exit hook that reports ``VmHWM``;
4. print lines per CPU second and per wall second for each, the ratio, and the peak RSS of each, plus our peak RSS on
   the 100k file next to the 1M file (flat memory).

CPU time (user + sys of the child) is the stable number on a shared machine; wall time is printed too. Every tool
reads the same file, after a warm-up read, so both start from the page cache. Both run with their bytecode cached, as
an installed tool runs (pip compiles the peer's at install; ours goes to a pycache prefix under ``.cache/bench``, made
by an untimed run of each tool on the small file first): without it, a shell that sets PYTHONDONTWRITEBYTECODE would
charge ours about 25 ms of compiling per run and the peer nothing. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
PEER = "hubble-audit2policy"
PEER_VERSION = "0.18.5"


def generator() -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from simcluster.fixtures import shared_fixtures_dir  # the test helper knows where shared/ is

    path = shared_fixtures_dir().parent / "bench" / "gen_hubble_flows.py"
    if not path.is_file():
        raise SystemExit(f"the shared flow generator is missing: {path}")
    return path


def flow_file(lines: int, seed: int, audit_pct: float) -> Path:
    """The cached generated file; made (atomically) when missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"flows-{lines}-seed{seed}-audit{audit_pct:g}.jsonl"
    if path.is_file() and path.stat().st_size > 0:
        return path
    print(f"generating {lines:,} flows into {path.relative_to(REPO)} ...", flush=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        subprocess.run([sys.executable, str(generator()), str(lines), "--seed", str(seed), "--audit-pct",
                        str(audit_pct)], stdout=out, check=True)
    partial.replace(path)
    return path


# Runs the tool's main() as its console script does, then reports this process's peak RSS at exit.
PEER_WRAPPER = """
import atexit, sys
def _report_peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write("\\n@@VmHWM " + line.split()[1] + "\\n")
atexit.register(_report_peak)
from hubble_audit2policy import main
sys.argv = ["hubble-audit2policy"] + sys.argv[1:]
sys.exit(main())
"""


def peer_command() -> tuple[list[str], list[str]] | None:
    """(command to measure, the equivalent command line as a user types it) for hubble-audit2policy in its own venv,
    installed on first use; None when it cannot be installed."""
    venv = CACHE / "venv"
    tool = venv / "bin" / PEER
    if not tool.exists():
        print(f"installing {PEER}=={PEER_VERSION} into {venv.relative_to(REPO)} ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            f"{PEER}=={PEER_VERSION}"], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"could not install {PEER}: {exc}; it is left out")
            return None
    usage = subprocess.run([str(tool), "--help"], capture_output=True, text=True, check=False).stdout
    flags: list[str] = []
    # the flags that make it do the same work as ours: AUDIT flows only, no cluster access, policies to stdout
    for flag, value in (("--verdict", "AUDIT"), ("--no-enrich", None), ("--dry-run", None)):
        if flag in usage:
            flags += [flag] + ([value] if value else [])
        else:
            print(f"note: {PEER} --help does not list {flag}; running without it")
    return [str(venv / "bin" / "python"), "-c", PEER_WRAPPER, *flags], [PEER, *flags]


def child_env() -> dict[str, str]:
    """The environment of the measured tools: bytecode cached under .cache/bench (see the module's docstring)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    return env


def measure(command: list[str]) -> dict[str, float | str]:
    """Run a command; its own CPU time, wall time and peak RSS (the child is reaped with wait4, so its rusage is its
    alone)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    out_path, err_path = process.stdout, process.stderr
    out = out_path.read() if out_path else b""
    err = err_path.read() if err_path else b""
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    for stream in (out_path, err_path):
        if stream:
            stream.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err.decode(errors='replace')[-2000:]}")
    stderr = err.decode(errors="replace")
    peaks = [line.split()[1] for line in stderr.splitlines() if line.startswith("@@VmHWM ")]
    if not peaks:
        raise SystemExit(f"{' '.join(command[:2])} did not report its peak RSS")
    return {"cpu": usage.ru_utime + usage.ru_stime, "wall": wall, "rss_mb": int(peaks[-1]) / 1024,
            "stdout": out.decode(errors="replace"), "stderr": stderr}


# The measured work of ours, run like the peer's: a small program that imports only what it measures (the file
# source and the judge: read, prefilter, parse, normalise, group), then reports its counts and its peak RSS.
OURS_WRAPPER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.netpol.cilium.plugins.module_utils._flow_files import FileStats, read_flow_files
from ansible_collections.netpol.cilium.plugins.module_utils._judge import judge_flows
stats = FileStats()
judgement = judge_flows(read_flow_files([sys.argv[2]], stats=stats), [])
summary = judgement.summary(flows_seen=stats.flows, malformed_lines=stats.malformed)
print(json.dumps({"lines": stats.lines, "parsed": stats.parsed, "matched": stats.matched,
                  "audited": summary["audited"], "groups": len(judgement.groups), "malformed": stats.malformed}))
with open("/proc/self/status", encoding="ascii") as status:
    sys.stderr.write("@@VmHWM " + next(line.split()[1] for line in status if line.startswith("VmHWM:")) + "\\n")
"""


def ours_command(path: Path) -> list[str]:
    return [sys.executable, "-c", OURS_WRAPPER, str(REPO / ".cache" / "collections"), str(path)]


def warm(path: Path) -> None:
    with path.open("rb") as stream:
        while stream.read(1 << 24):
            pass


def cpu_seconds(runs: list[dict[str, float | str]]) -> list[float]:
    return [float(run["cpu"]) for run in runs]


def best(runs: list[dict[str, float | str]]) -> dict[str, float | str]:
    return min(runs, key=lambda run: float(run["cpu"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000, help="lines of the file for the flat-memory check")
    parser.add_argument("--audit-pct", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the one with the least CPU is shown")
    parser.add_argument("--no-peer", action="store_true", help=f"do not run {PEER}")
    args = parser.parse_args()
    if not (REPO / ".cache" / "collections" / "ansible_collections" / "netpol").exists():
        raise SystemExit("run `make layout` first (.cache/collections is missing)")

    big = flow_file(args.lines, args.seed, args.audit_pct)
    small = flow_file(args.small, args.seed, args.audit_pct)
    size = big.stat().st_size
    print(f"\ninput: {args.lines:,} lines, {size / 1e9:.2f} GB ({size / args.lines:,.0f} bytes/line), "
          f"~{args.audit_pct:g} % audited; generator seed {args.seed}")
    peer_commands = None if args.no_peer else peer_command()
    warm(big)
    measure(ours_command(small))  # untimed: writes the bytecode of both tools
    if peer_commands:
        measure([*peer_commands[0], str(small)])

    # the tools take turns, so that a slower spell of a shared machine does not fall on one tool's runs only
    our_runs, peer_runs = [], []
    for _run in range(args.repeat):
        our_runs.append(measure(ours_command(big)))
        if peer_commands:
            peer_runs.append(measure([*peer_commands[0], str(big)]))
    ours = best(our_runs)
    counts = json.loads(str(ours["stdout"]))
    ours_small = best([measure(ours_command(small)) for _run in range(args.repeat)])
    rows = [("netpol.cilium file source + judge", ours, f"{counts['audited']:,} audited flows in "
             f"{counts['groups']} groups; {counts['parsed']:,} of {counts['lines']:,} lines parsed")]
    if peer_commands:
        peer = best(peer_runs)
        said = [line for line in str(peer["stderr"]).strip().splitlines() if line and not line.startswith("@@")]
        rows.append((f"{PEER} {PEER_VERSION}", peer, said[-1] if said else ""))

    print(f"\nran: read_flow_files + judge_flows on {big.name}   (a small program, dev venv)")
    if peer_commands:
        print(f"ran: {' '.join([*peer_commands[1], big.name])} > /dev/null   (its main(), in its own venv)")
    print(f"best of {args.repeat} runs each (least CPU):\n")
    print(f"{'tool':<38} {'CPU s':>7} {'wall s':>7} {'lines/CPU s':>13} {'lines/wall s':>13} {'peak RSS':>9}")
    for name, run, _note in rows:
        cpu, wall = float(run["cpu"]), float(run["wall"])
        print(f"{name:<38} {cpu:>7.2f} {wall:>7.2f} {args.lines / cpu:>13,.0f} {args.lines / wall:>13,.0f} "
              f"{float(run['rss_mb']):>6.1f} MB")
    for name, _run, note in rows:
        print(f"  {name}: {note}")
    if peer_commands:
        ratio_cpu = float(rows[1][1]["cpu"]) / float(ours["cpu"])
        ratio_wall = float(rows[1][1]["wall"]) / float(ours["wall"])
        print(f"\nthroughput ratio (ours / {PEER}): {ratio_cpu:.1f}x by CPU time, {ratio_wall:.1f}x by wall time")
        # a one-second run meets a slow spell of a shared machine more often than the best of it shows: the medians
        ours_cpu, peer_cpu = cpu_seconds(our_runs), cpu_seconds(peer_runs)
        print(f"  ratio of the median CPU times: {statistics.median(peer_cpu) / statistics.median(ours_cpu):.1f}x; "
              f"CPU seconds of every run: ours {' '.join(f'{cpu:.2f}' for cpu in ours_cpu)}, "
              f"{PEER} {' '.join(f'{cpu:.2f}' for cpu in peer_cpu)}")
    print(f"our peak RSS: {float(ours_small['rss_mb']):.1f} MB at {args.small:,} lines, "
          f"{float(ours['rss_mb']):.1f} MB at {args.lines:,} lines")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
