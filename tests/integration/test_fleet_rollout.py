"""playbooks/fleet_rollout.yml against several simulated clusters: a failing cluster stops the fleet only after the
other clusters of its wave have finished, later waves never start, a cluster that cannot be read stops the fleet
before anything changes, and the fleet summary is written however the run ends. The one-cluster-per-wave path (with a
multi-context kubeconfig) is the molecule scenario extensions/molecule/fleet."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from simcluster.cluster import SimCluster
from simcluster.fixtures import REPO_ROOT
from simcluster.playbook import ansible_env
from simcluster.store import ApiError

from .conftest import seeded_cluster

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "playbooks" / "examples"
EXPECTED = yaml.safe_load((EXAMPLES / "expected-denies-with-metrics.yml").read_text())["audit_expected"]
EXPECTED_WITHOUT_METRICS = yaml.safe_load((EXAMPLES / "expected-denies.yml").read_text())["audit_expected"]


@pytest.fixture
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SimCluster]]:
    with ExitStack() as stack:
        clusters = {name: stack.enter_context(seeded_cluster(name, tmp_path_factory))
                    for name in ("fleet-a", "fleet-b", "fleet-c")}
        for cluster in clusters.values():
            cluster.start_hubble(rate_multiplier=60)
        yield clusters


def run_fleet(workdir: Path, hosts: dict[str, dict[str, Any]], waves: str) -> subprocess.CompletedProcess[str]:
    inventory = {"all": {"children": {"clusters": {"hosts": hosts, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "audit_expected": EXPECTED}}}}}
    (workdir / "inventory.yml").write_text(yaml.safe_dump(inventory))
    variables = {"fleet_waves": waves, "fleet_artifacts_dir": str(workdir / "artifacts"),
                 "policy_rollout_observe_duration": "6s", "policy_rollout_watch_duration": "4s",
                 "policy_rollout_max_duration": "2h"}
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(workdir / "inventory.yml"),
               "--forks", "5", str(REPO_ROOT / "playbooks" / "fleet_rollout.yml"),
               "-e", f"@{EXAMPLES / 'rollout-db.yml'}", "-e", json.dumps(variables)]
    result = subprocess.run(command, env=ansible_env(extra={"ANSIBLE_SHOW_CUSTOM_STATS": "1"}), capture_output=True,
                            text=True, timeout=900, check=False, cwd=str(workdir))
    (workdir / "run.log").write_text(result.stdout + result.stderr)
    return result


def db_audit_mode(cluster: SimCluster) -> bool:
    db = next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))
    return cluster.agent(db.node).endpoint_audit_mode(db.id)


def ledger_entries(cluster: SimCluster) -> int:
    try:
        config_map = cluster.get("ConfigMap", "netpol-cilium-audit-ledger", cluster.cilium_namespace)
    except ApiError:
        return 0
    return sum(1 for key in (config_map.get("data") or {}) if key != "README")


def test_a_failing_cluster_stops_the_fleet_after_the_rest_of_its_wave_finished(
        fleet: dict[str, SimCluster], tmp_path: Path) -> None:
    hosts = {name: {"k8s_kubeconfig": cluster.kubeconfig} for name, cluster in fleet.items()}
    hosts["fleet-b"]["audit_expected"] = EXPECTED_WITHOUT_METRICS  # fleet-b's gate fails on the metrics scrape
    result = run_fleet(tmp_path, hosts, "1,100%")
    assert result.returncode == 2, result.stdout[-4000:]
    assert "fleet-b: the rollout stopped at 'gate (" in result.stdout
    assert "1 unexpected deny group(s): INGRESS monitoring/metrics-agent -> shop/db 9100/TCP" in result.stdout
    assert "the fleet stops after wave 2 of 2" in result.stdout

    summary = json.loads((tmp_path / "artifacts" / "fleet-summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped_at_wave"] == 2
    assert [wave["clusters"] for wave in summary["waves"]] == [["fleet-a"], ["fleet-b", "fleet-c"]]
    states = {record["cluster"]: record["status"] for record in summary["clusters"]}
    assert states == {"fleet-a": "passed", "fleet-b": "failed", "fleet-c": "passed"}
    by_name = {record["cluster"]: record for record in summary["clusters"]}
    # fleet-c, in the same wave as the failing cluster, finished its whole rollout: it was not cut off
    assert by_name["fleet-c"]["steps_done"] == ["apply", "audit", "gate", "enforce"]
    assert by_name["fleet-c"]["enforce"]["enforced"] is True
    assert summary["audit_mode_on"] == ["fleet-b"]
    # the record matches the clusters themselves
    assert [db_audit_mode(fleet[name]) for name in ("fleet-a", "fleet-b", "fleet-c")] == [False, True, False]
    assert [ledger_entries(fleet[name]) for name in ("fleet-a", "fleet-b", "fleet-c")] == [0, 1, 0]

    junit = ET.parse(tmp_path / "artifacts" / "fleet-junit.xml").getroot()
    assert (junit.attrib["tests"], junit.attrib["failures"], junit.attrib["skipped"]) == ("3", "1", "0")
    markdown = (tmp_path / "artifacts" / "fleet-summary.md").read_text()
    assert "**STOPPED** at wave 2 of 2 - 2 passed, 1 failed, 0 not started of 3 cluster(s)." in markdown
    assert "```mermaid" in markdown
    # AWX gets the summary as a job artifact (set_stats)
    assert "CUSTOM STATS" in result.stdout and '"fleet_summary"' in result.stdout
    for name in ("fleet-a", "fleet-b", "fleet-c"):
        assert (tmp_path / "artifacts" / name / "rollout-summary.json").is_file()


def test_a_cluster_that_cannot_be_read_stops_the_fleet_before_anything_changes(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    with seeded_cluster("fleet-ok", tmp_path_factory) as cluster:
        hosts = {"fleet-ok": {"k8s_kubeconfig": cluster.kubeconfig},
                 "fleet-gone": {"k8s_kubeconfig": cluster.kubeconfig, "k8s_context": "no-such-context"}}
        result = run_fleet(tmp_path, hosts, "1,100%")
        assert result.returncode == 2, result.stdout[-4000:]
        assert "fleet-gone: the preflight failed (preflight (Read audit mode from every agent and endpoint))" \
            in result.stdout
        assert "no cluster was changed" in result.stdout
        summary = json.loads((tmp_path / "artifacts" / "fleet-summary.json").read_text())
        assert summary["status"] == "preflight_failed" and summary["stopped_at_wave"] is None
        states = {record["cluster"]: record["status"] for record in summary["clusters"]}
        assert states == {"fleet-ok": "planned", "fleet-gone": "preflight_failed"}
        gone = next(record for record in summary["clusters"] if record["cluster"] == "fleet-gone")
        assert "no-such-context" in gone["error"]
        assert not db_audit_mode(cluster) and ledger_entries(cluster) == 0
        assert not (tmp_path / "artifacts" / "fleet-ok").exists()  # no rollout ran anywhere
