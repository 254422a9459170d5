"""Run Ansible tasks against a simulated cluster and get every registered result back as data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .cluster import SimCluster
from .fixtures import REPO_ROOT

COLLECTIONS_PATH = REPO_ROOT / ".cache" / "collections"


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    results: list[dict[str, Any]]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.results[index]


def ansible_env(cluster: SimCluster | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = cluster.env() if cluster else dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    env.update(extra or {})
    return env


def run_tasks(cluster: SimCluster, tasks: list[dict[str, Any]], workdir: Path, *, check: bool = False,
              diff: bool = False, verbosity: int = 0, module_defaults: dict[str, Any] | None = None,
              extra_env: dict[str, str] | None = None, timeout: float = 300) -> PlaybookRun:
    """Each task runs with ``ignore_errors`` and is registered; all results are written to JSON at the end."""
    registered = []
    for index, task in enumerate(tasks):
        task = dict(task)
        task.setdefault("name", f"task {index}")
        task["register"] = f"result_{index}"
        task["ignore_errors"] = True
        registered.append(task)
    out = workdir / "results.json"
    names = ", ".join(f"result_{i}" for i in range(len(tasks)))
    play = {
        "name": "netpol.cilium test play",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "module_defaults": module_defaults if module_defaults is not None else {
            "group/netpol.cilium.cilium": {"kubeconfig": cluster.kubeconfig}},
        "tasks": [{"block": registered, "always": [{
            "name": "write results",
            "ansible.builtin.copy": {"content": "{{ [" + names + "] | to_json }}", "dest": str(out), "mode": "0600"},
            "check_mode": False,
        }]}],
    }
    playbook = workdir / "play.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook)]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    if verbosity:
        command.append("-" + "v" * verbosity)
    completed = subprocess.run(command, env=ansible_env(cluster, extra_env), capture_output=True, text=True,
                               timeout=timeout, check=False, cwd=str(workdir))
    results = json.loads(out.read_text()) if out.exists() else []
    return PlaybookRun(completed.returncode, completed.stdout, completed.stderr, results)


@dataclass
class PlayOutcome:
    """How a play ended: the failed task and its result (None when the play passed) and the facts asked for."""

    rc: int
    stdout: str
    stderr: str
    failed_task: str | None
    failed_result: dict[str, Any] | None
    facts: dict[str, Any]

    @property
    def failed(self) -> bool:
        return self.rc != 0 or self.failed_result is not None

    @property
    def msg(self) -> str:
        return str((self.failed_result or {}).get("msg", ""))


def run_play(cluster: SimCluster, tasks: list[dict[str, Any]], workdir: Path, *, facts: tuple[str, ...] = (),
             play_vars: dict[str, Any] | None = None, check: bool = False,
             module_defaults: dict[str, Any] | None = None, extra_env: dict[str, str] | None = None,
             timeout: float = 300) -> PlayOutcome:
    """Run ``tasks`` (roles included with ``ansible.builtin.include_role``) as one play, as a user would: no
    ``ignore_errors``, so the first failure ends the play. The inventory host is named after the cluster
    (``connection: local``) and the playbook lives in ``workdir`` (``playbook_dir``). Returns the failed task's name
    and result, and the values of the variables named in ``facts`` (None when unset)."""
    out = workdir / "outcome.json"
    keep = "{" + ", ".join(f"{name!r}: {name} | default(None)" for name in facts) + "}"
    play = {
        "name": "netpol.cilium test play",
        "hosts": cluster.name,
        "gather_facts": False,
        "module_defaults": module_defaults if module_defaults is not None else {
            "group/netpol.cilium.cilium": {"kubeconfig": cluster.kubeconfig}},
        "vars": dict(play_vars or {}),
        "tasks": [{
            "name": "tasks under test",
            "block": list(tasks),
            "rescue": [
                {"name": "remember the failure", "ansible.builtin.set_fact": {
                    "sim_failed_task": "{{ ansible_failed_task.name | default('') }}",
                    "sim_failed_result": "{{ ansible_failed_result }}"}},
                {"name": "fail as the task did", "ansible.builtin.fail": {
                    "msg": "{{ ansible_failed_result.msg | default('failed') }}"}},
            ],
            "always": [{
                "name": "write the outcome",
                "ansible.builtin.copy": {
                    "content": "{{ {'failed_task': sim_failed_task | default(None), 'failed_result': "
                               "sim_failed_result | default(None), 'facts': " + keep + "} | to_json }}",
                    "dest": str(out), "mode": "0600"},
                "check_mode": False,
            }],
        }],
    }
    playbook = workdir / "play.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    inventory = workdir / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {cluster.name: {"ansible_connection": "local"}}}}))
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook)]
    if check:
        command.append("--check")
    completed = subprocess.run(command, env=ansible_env(cluster, extra_env), capture_output=True, text=True,
                               timeout=timeout, check=False, cwd=str(workdir))
    outcome = json.loads(out.read_text()) if out.exists() else {}
    return PlayOutcome(completed.returncode, completed.stdout, completed.stderr, outcome.get("failed_task"),
                       outcome.get("failed_result"), outcome.get("facts") or {})
