"""docs/getting-started.md, run as written against the simulated cluster (seed scenario, Hubble Relay running).

The convention of the page: shell commands are the ``$ `` lines of ```console blocks (a trailing backslash continues
a command on the next line); the lines after a command, up to the next command, are output lines that must appear in
what the command printed (whitespace runs count as one space, ``...`` stands for anything; a line that is only
``...`` says output was left out). A ```yaml block whose first line is ``# <file name>`` is a file the reader writes:
it is written into the working directory, the inventory with the simulated cluster's kubeconfig and context in place
of the reader's.

Every command is either run (``ansible-playbook``) or listed in SKIPPED with the reason it cannot run here; a command
that is neither fails the test, and so does a SKIPPED entry the page no longer has - nothing is silently unchecked.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from simcluster.cluster import SimCluster
from simcluster.fixtures import REPO_ROOT
from simcluster.playbook import ansible_env

pytestmark = pytest.mark.integration

PAGE = REPO_ROOT / "docs" / "getting-started.md"

# Commands of the page that do not run here, with the reason. Keys are the commands as the page writes them.
SKIPPED = {
    "python3 -m pip install 'kubernetes>=24.2.0' PyYAML jsonpatch 'grpcio>=1.85.1' 'protobuf>=7.35.1'":
        "installs from the package index (network); the test venv has these packages from requirements-dev.txt",
    "ansible-galaxy collection build":
        "writes a tarball into the checkout; the tests use the collection laid out by `make layout` instead",
    "ansible-galaxy collection install netpol-cilium-0.1.0.tar.gz":
        "needs Galaxy for the kubernetes.core dependency (network); `make layout` installs both offline",
    "kubectl apply -f db-ingress.yaml":
        "kubectl is not part of the test tools; the seed scenario has applied shop/db-ingress already",
}

# What each run command must end with, by the playbook it runs (in page order): 0 or "fail".
EXPECTED_RESULTS = ["ok", "ok", "ok", "ok", "fail", "ok", "ok"]


@dataclass
class Command:
    text: str
    line: int
    output: list[str] = field(default_factory=list)


def page_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    for block in re.finditer(r"^```console\n(.*?)^```", text, re.S | re.M):
        start = text[:block.start()].count("\n") + 2
        current: Command | None = None
        continuing = False
        for offset, line in enumerate(block.group(1).splitlines()):
            if continuing and current is not None:
                current.text += " " + line.strip().removesuffix("\\").strip()
                continuing = line.rstrip().endswith("\\")
            elif line.startswith("$ "):
                current = Command(line[2:].rstrip().removesuffix("\\").strip(), start + offset)
                commands.append(current)
                continuing = line.rstrip().endswith("\\")
            elif current is not None and line.strip() and line.strip() != "...":
                current.output.append(line)
    return commands


def page_files(text: str) -> dict[str, str]:
    files = {}
    for block in re.finditer(r"^```yaml\n# ([\w.-]+)\n(.*?)^```", text, re.S | re.M):
        files[block.group(1)] = block.group(2)
    return files


def output_pattern(line: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in " ".join(line.split()).split("...")]
    return re.compile(".*".join(parts))


def test_every_command_of_the_page_is_run_or_skipped_with_a_reason() -> None:
    commands = [c.text for c in page_commands(PAGE.read_text())]
    assert commands, "no ```console block with $ lines in docs/getting-started.md"
    unknown = [c for c in commands if c not in SKIPPED and not c.startswith("ansible-playbook ")]
    assert not unknown, f"commands neither run nor skipped (add them to SKIPPED with a reason): {unknown}"
    stale = [c for c in SKIPPED if c not in commands]
    assert not stale, f"SKIPPED lists commands the page no longer has: {stale}"
    assert len([c for c in commands if c.startswith("ansible-playbook ")]) == len(EXPECTED_RESULTS)


def test_getting_started_runs_as_written(sim_cluster: SimCluster, tmp_path: Path) -> None:
    sim_cluster.start_hubble(rate_multiplier=60)
    text = PAGE.read_text()
    files = page_files(text)
    assert {"inventory.yml", "expected-denies.yml"} <= set(files)
    inventory = yaml.safe_load(files["inventory.yml"])
    hosts = inventory["all"]["children"]["clusters"]["hosts"]
    for host in hosts.values():  # the reader's kubeconfig and context -> the simulated cluster's
        host["k8s_kubeconfig"] = sim_cluster.kubeconfig
        host["k8s_context"] = f"{sim_cluster.name}-admin"
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "expected-denies.yml").write_text(files["expected-denies.yml"])

    runs = [c for c in page_commands(text) if c.text.startswith("ansible-playbook ")]
    for command, expected in zip(runs, EXPECTED_RESULTS, strict=True):
        if "audit_report" in command.text:
            time.sleep(2)  # let the scenario's traffic produce audited flows after the switch
        completed = subprocess.run(["bash", "-c", command.text], cwd=tmp_path, env=ansible_env(sim_cluster),
                                   capture_output=True, text=True, timeout=300, check=False)
        printed = completed.stdout + completed.stderr
        where = f"docs/getting-started.md line {command.line}: {command.text}\n{printed[-3000:]}"
        assert (completed.returncode == 0) == (expected == "ok"), where
        lines = [" ".join(line.split()) for line in printed.splitlines()]
        for shown in command.output:
            pattern = output_pattern(shown)
            assert any(pattern.search(line) for line in lines), f"output line not printed: {shown!r}\n{where}"
    assert (tmp_path / "reports" / "prod-a" / "report.md").is_file()
    db = next(r for (ns, name), r in sim_cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))
    assert sim_cluster.agent(db.node).endpoint_audit_mode(db.id) is False  # the page ends enforcing


def test_output_lines_match_only_what_they_say() -> None:
    pattern = output_pattern('  INGRESS shop/frontend -> shop/db 5432/TCP x... (nodes: ...)')
    assert pattern.search("INGRESS shop/frontend -> shop/db 5432/TCP x197 (nodes: sim/sim-worker-1)")
    assert not pattern.search("INGRESS shop/frontend -> shop/db 5433/TCP x197 (nodes: sim/sim-worker-1)")
