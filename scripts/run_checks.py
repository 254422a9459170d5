"""Run the project's checks in order, keep going past failures, and end with a summary.

    python scripts/run_checks.py [STEP ...]      (default: every step, in this order)

Steps: ruff, ansible-lint, sanity, changelog, unit, integration, molecule. Run it with the development venv's
Python after scripts/bootstrap.py and scripts/layout_collections.py (``make test`` does all three).

Each step's full output is streamed and also kept in ``.cache/reports/<step>.log``. The summary gives each step's
counts and duration; its last line is ``N passed, N failed`` over the pytest tests, the ansible-test sanity tests,
the molecule scenarios and the lint steps (one check each). The exit code is 1 when anything failed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
REPORTS = CACHE / "reports"
COLLECTIONS = CACHE / "collections"
BIN = Path(sys.executable).parent
SANITY_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# A step that runs longer than this is stopped and counted as failed (CI has 90 minutes for everything).
STEP_TIMEOUT = float(os.environ.get("NETPOL_STEP_TIMEOUT", "3600"))
# pytest-xdist workers for the integration tests ("0" runs them in the pytest process).
INTEGRATION_WORKERS = os.environ.get("NETPOL_INTEGRATION_WORKERS", "0")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\]8;[^\x1b]*\x1b\\")


@dataclass
class Result:
    step: str
    ok: bool = True
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    summary: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAILED"
        return "empty" if self.warnings and self.passed == 0 and self.failed == 0 else "ok"


# --- running commands -------------------------------------------------------------------------------------------


def tool_env(**extra: str | None) -> dict[str, str]:
    """The environment for the tools: venv first on PATH, collections from .cache/collections, no colours."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS)
    env["NO_COLOR"] = "1"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PY_COLORS"] = "0"
    env.pop("FORCE_COLOR", None)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def kill_group(process: subprocess.Popen[str], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def run(step: str, command: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None,
        log_mode: str = "w") -> tuple[int, str]:
    """Run a command, streaming its output and keeping it in .cache/reports/<step>.log; return (rc, output)."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    print(f"\n$ {' '.join(command)}" + (f"    (in {cwd.relative_to(ROOT)})" if cwd != ROOT else ""), flush=True)
    lines: list[str] = []
    with (REPORTS / f"{step}.log").open(log_mode, encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        try:
            process = subprocess.Popen(command, cwd=cwd, env=env if env is not None else tool_env(),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       text=True, errors="replace", start_new_session=True)
        except OSError as exc:
            message = f"cannot run {command[0]}: {exc}"
            print(message, flush=True)
            log.write(message + "\n")
            return 127, message
        timed_out = threading.Event()

        def stop_on_timeout() -> None:
            timed_out.set()
            kill_group(process, signal.SIGKILL)

        watchdog = threading.Timer(STEP_TIMEOUT, stop_on_timeout)
        watchdog.start()
        assert process.stdout is not None
        try:
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
                lines.append(ANSI.sub("", line))
            rc = process.wait()
        except KeyboardInterrupt:
            kill_group(process, signal.SIGTERM)
            process.wait()
            raise
        finally:
            watchdog.cancel()
        if timed_out.is_set():
            message = f"stopped after {STEP_TIMEOUT:.0f}s (NETPOL_STEP_TIMEOUT)"
            print(message, flush=True)
            log.write(message + "\n")
            lines.append(message + "\n")
            rc = 124
    return rc, "".join(lines)


# --- steps ------------------------------------------------------------------------------------------------------


def step_ruff(result: Result) -> None:
    rc, output = run("ruff", ["ruff", "check", "--output-format", "concise", "."])
    listing = subprocess.run([str(BIN / "ruff"), "check", "--show-files", "."], cwd=ROOT, capture_output=True,
                             text=True, check=False)
    files = len(listing.stdout.split())
    found = re.search(r"Found (\d+) errors?", output)
    violations = int(found.group(1)) if found else 0
    result.ok = rc == 0
    result.summary = f"{violations} violations in {files} files" if (rc in (0, 1)) else f"ruff exited {rc}"
    lint_counts(result)


def step_ansible_lint(result: Result) -> None:
    rc, output = run("ansible-lint", ["ansible-lint"])
    found = re.search(r"(?:Passed|Failed): (\d+) failure\(s\), (\d+) warning\(s\) in (\d+) files processed", output)
    result.ok = rc == 0
    if found:
        failures, warnings, files = (int(group) for group in found.groups())
        result.summary = f"{failures} violations, {warnings} warnings in {files} files"
    else:
        result.summary = f"ansible-lint exited {rc}"
    lint_counts(result)


def step_changelog(result: Result) -> None:
    rc, output = run("changelog", ["antsibull-changelog", "lint"])
    fragments = len([p for p in (ROOT / "changelogs" / "fragments").glob("*") if p.suffix in (".yml", ".yaml")])
    problems = len([line for line in output.splitlines() if line.strip() and not line.startswith("$")])
    result.ok = rc == 0
    result.summary = f"{fragments} fragments, " + ("no problems" if rc == 0 else f"{problems} problems")
    lint_counts(result)


def lint_counts(result: Result) -> None:
    """A lint step counts as one check in the totals."""
    result.passed, result.failed = (1, 0) if result.ok else (0, 1)


def step_sanity(result: Result) -> None:
    rc, output = run("sanity", [sys.executable, str(ROOT / "scripts" / "layout_collections.py"), "sanity-tree"])
    if rc != 0:
        result.ok, result.failed, result.summary = False, 1, "could not lay out the ansible-test tree"
        return
    tree = Path(output.strip().splitlines()[-1])
    command = ["ansible-test", "sanity", "--venv", "--python", SANITY_PYTHON, "--color", "no", "--junit"]
    # ansible-test must find this collection and kubernetes.core in its own tree, not through these variables.
    env = tool_env(ANSIBLE_COLLECTIONS_PATH=None, PYTHONPATH=None)
    rc, output = run("sanity", command, cwd=tree, env=env, log_mode="a")
    outcomes = junit_outcomes(sorted((tree / "tests" / "output" / "junit").glob("*.xml")))
    passed, failed = outcomes.count("passed"), outcomes.count("failed")
    skipped = sorted(name.split("::")[-1].removesuffix(f"-python-{SANITY_PYTHON}")
                     for name, outcome in outcomes.items() if outcome == "skipped")
    result.ok = rc == 0
    if rc != 0 and failed == 0:
        failed = 1  # ansible-test itself failed: count it
    result.passed, result.failed, result.skipped = passed, failed, len(skipped)
    result.summary = f"{passed} tests passed, {failed} failed"
    if skipped:
        result.summary += f", {len(skipped)} skipped for want of files to check ({', '.join(skipped)})"
    if "All targets skipped" in output:
        result.warnings.append("ansible-test found no file to check")


class Outcomes(dict):
    """Test case name -> "passed", "failed" or "skipped"."""

    def count(self, outcome: str) -> int:
        return sum(1 for value in self.values() if value == outcome)


def junit_outcomes(paths: list[Path]) -> Outcomes:
    """The outcome of each test case in JUnit XML files; errors count as failures."""
    outcomes = Outcomes()
    for path in paths:
        for case in ET.parse(path).getroot().iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
            if case.find("failure") is not None or case.find("error") is not None:
                outcomes[name] = "failed"
            elif case.find("skipped") is not None:
                outcomes[name] = "skipped"
            else:
                outcomes.setdefault(name, "passed")
    return outcomes


def pytest_step(result: Result, paths: list[str], extra: list[str]) -> None:
    existing = [path for path in paths if (ROOT / path).exists()]
    if not existing:
        result.summary = "0 passed"
        result.warnings.append(f"no test folder yet ({', '.join(paths)})")
        return
    junit = REPORTS / f"{result.step}.xml"
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", *extra, f"--junitxml={junit}", *existing]
    pythonpath = os.pathsep.join(filter(None, [str(COLLECTIONS), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    rc, output = run(result.step, command, env=tool_env(PYTHONPATH=pythonpath))
    outcomes = junit_outcomes([junit]) if junit.exists() else Outcomes()
    passed, failed, skipped = outcomes.count("passed"), outcomes.count("failed"), outcomes.count("skipped")
    deselected = re.findall(r"(\d+) deselected", output)
    result.passed, result.failed, result.skipped = passed, failed, skipped
    result.summary = f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
    if deselected:
        count = int(deselected[-1])
        result.summary += f", {count} deselected"
        result.warnings.append(f"{count} tests in {', '.join(existing)} were deselected by the marker filter")
    if rc == 5:
        result.summary = "0 passed"
        result.warnings.append(f"pytest collected no test in {', '.join(existing)} (exit code 5)")
    elif rc != 0:
        result.ok = False
        if failed == 0:
            result.failed = 1
            result.summary += f" (pytest exited {rc})"


def step_unit(result: Result) -> None:
    pytest_step(result, ["tests/unit", "tests/harness"], [])


def step_integration(result: Result) -> None:
    extra = ["-m", "integration"]
    if INTEGRATION_WORKERS not in ("", "0"):
        extra += ["-n", INTEGRATION_WORKERS]
    pytest_step(result, ["tests/integration"], extra)


def step_molecule(result: Result) -> None:
    scenarios = sorted((ROOT / "extensions" / "molecule").glob("**/molecule.yml"))
    if not scenarios:
        result.summary = "0 scenarios"
        result.warnings.append("no molecule scenario in extensions/molecule")
        return
    rc, output = run("molecule", ["molecule", "test", "--all"])
    summary = re.search(r"Molecule executed (\d+) scenarios? \(([^)]*)\)", output)
    total = int(summary.group(1)) if summary else len(scenarios)
    counts = {label: int(count) for count, label in re.findall(r"(\d+) ([a-z]+)", summary.group(2))} if summary else {}
    passed = counts.get("successful", 0)
    failed = total - passed if rc != 0 or counts.get("failed") else 0
    result.ok = rc == 0
    result.passed, result.failed = passed, max(failed, 0 if rc == 0 else 1)
    word = "scenario" if total == 1 else "scenarios"
    result.summary = f"{passed} {word} passed" + (f", {result.failed} failed" if result.failed else "")


STEPS: dict[str, Callable[[Result], None]] = {
    "ruff": step_ruff,
    "ansible-lint": step_ansible_lint,
    "sanity": step_sanity,
    "changelog": step_changelog,
    "unit": step_unit,
    "integration": step_integration,
    "molecule": step_molecule,
}


# --- summary ----------------------------------------------------------------------------------------------------


def print_summary(results: list[Result], total_seconds: float) -> None:
    width = max(len(result.step) for result in results)
    print("\n" + "=" * 100)
    print(f"{'step':<{width}}  {'status':<6}  {'time':>7}  result")
    for result in results:
        print(f"{result.step:<{width}}  {result.status:<6}  {result.seconds:>6.1f}s  {result.step}: {result.summary}")
        for warning in result.warnings:
            print(f"{'':<{width}}  {'':<6}  {'':>7}  WARNING: {warning}")
    print(f"{'total':<{width}}  {'':<6}  {total_seconds:>6.1f}s")
    print("=" * 100)
    failed_steps = [result.step for result in results if not result.ok]
    if failed_steps:
        print(f"failed steps: {', '.join(failed_steps)} (full output in .cache/reports/<step>.log)")
    print(f"{sum(r.passed for r in results)} passed, {sum(r.failed for r in results)} failed", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="*", metavar="STEP", help=f"default: all of {', '.join(STEPS)}")
    args = parser.parse_args()
    unknown = [step for step in args.steps if step not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    steps = args.steps or list(STEPS)

    results: list[Result] = []
    started = time.monotonic()
    try:
        for name in steps:
            print(f"\n{'#' * 20} {name} {'#' * (78 - len(name))}", flush=True)
            result = Result(name)
            step_started = time.monotonic()
            STEPS[name](result)
            result.seconds = time.monotonic() - step_started
            results.append(result)
            print(f"--> {name}: {result.status}, {result.summary} ({result.seconds:.1f}s)", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        if results:
            print_summary(results, time.monotonic() - started)
        return 130
    print_summary(results, time.monotonic() - started)
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
