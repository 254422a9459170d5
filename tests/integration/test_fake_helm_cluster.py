"""The fake helm (tests/bin/helm) against the simulated cluster, run as a subprocess like our roles and kubernetes.core
run it. The ``sim_cluster`` fixture seeds Cilium 1.15.1 in kube-system with the release ``cilium`` (user values
``cluster.name=sim`` and ``hubble.relay.enabled=true``, no ``policyAuditMode``)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from simcluster import fake_helm

pytestmark = pytest.mark.integration

NS = "kube-system"
TESTS_DIR = Path(__file__).resolve().parents[1]


def _env(cluster: Any, **extra: str) -> dict[str, str]:
    """The cluster's environment with the fake helm first and this interpreter's bin (the venv, which has the
    ``kubernetes`` package) right after it, so ``#!/usr/bin/env python3`` finds it."""
    env = dict(cluster.env())
    env["PATH"] = os.pathsep.join([str(TESTS_DIR / "bin"), os.path.dirname(sys.executable), env.get("PATH", "")])
    env.update(extra)
    return env


def helm(cluster: Any, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["helm", *args], env=_env(cluster, **extra), capture_output=True, text=True, timeout=120,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def _core(cluster: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(cluster.api_client())


def _apps(cluster: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(cluster.api_client())


def config_data(cluster: Any) -> dict[str, str]:
    return dict(_core(cluster).read_namespaced_config_map("cilium-config", NS).data or {})


def agent_image(cluster: Any) -> str:
    ds = _apps(cluster).read_namespaced_daemon_set("cilium", NS)
    return next(c.image for c in ds.spec.template.spec.containers if c.name == "cilium-agent")


def agent_template_annotations(cluster: Any) -> dict[str, str]:
    ds = _apps(cluster).read_namespaced_daemon_set("cilium", NS)
    return dict(ds.spec.template.metadata.annotations or {})


def operator_image(cluster: Any) -> str:
    deploy = _apps(cluster).read_namespaced_deployment("cilium-operator", NS)
    return deploy.spec.template.spec.containers[0].image


def history(cluster: Any) -> list[dict[str, Any]]:
    return json.loads(helm(cluster, "history", "cilium", "-n", NS, "-o", "json").stdout)


def user_values(cluster: Any) -> Any:
    return yaml.safe_load(helm(cluster, "get", "values", "cilium", "-n", NS, "-o", "yaml").stdout)


SEEDED_VALUES = {"cluster": {"name": "sim"}, "hubble": {"relay": {"enabled": True}}}


def test_list_and_get_values_show_the_seeded_release(sim_cluster: Any) -> None:
    (release,) = json.loads(helm(sim_cluster, "list", "-n", NS, "-o", "json").stdout)
    assert (release["name"], release["revision"], release["status"], release["chart"], release["app_version"]) == (
        "cilium", "1", "deployed", "cilium-1.15.1", "1.15.1")
    assert user_values(sim_cluster) == SEEDED_VALUES
    assert [r["name"] for r in json.loads(helm(sim_cluster, "list", "-A", "-o", "json").stdout)] == ["cilium"]
    assert json.loads(helm(sim_cluster, "list", "-n", "default", "-o", "json").stdout) == []


def test_pinned_reuse_values_upgrade_turns_audit_on_and_keeps_everything_else(
        sim_cluster: Any, tmp_path: Path) -> None:
    log = tmp_path / "helm.log"
    image_before = agent_image(sim_cluster)
    helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--set", "policyAuditMode=true",
         "--version", "1.15.1", FAKE_HELM_LOG=str(log))
    data = config_data(sim_cluster)
    assert data["policy-audit-mode"] == "true"
    assert data["cluster-name"] == "sim"
    assert data["enable-hubble"] == "true"
    assert agent_image(sim_cluster) == image_before == "quay.io/cilium/cilium:v1.15.1"
    assert _apps(sim_cluster).read_namespaced_deployment("hubble-relay", NS).metadata.name == "hubble-relay"
    assert user_values(sim_cluster) == dict(SEEDED_VALUES, policyAuditMode=True)
    assert [(h["revision"], h["status"], h["chart"]) for h in history(sim_cluster)] == [
        (1, "superseded", "cilium-1.15.1"), (2, "deployed", "cilium-1.15.1")]
    (argv,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert argv[argv.index("--version") + 1] == "1.15.1"


def test_reset_values_upgrade_drops_the_other_user_values(sim_cluster: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reset-values", "--set", "policyAuditMode=true",
         "--version", "1.15.1")
    data = config_data(sim_cluster)
    assert data["policy-audit-mode"] == "true"
    assert data["cluster-name"] == "default"  # the user's cluster.name is gone
    assert user_values(sim_cluster) == {"policyAuditMode": True}
    with pytest.raises(ApiException) as gone:  # hubble.relay.enabled fell back to the chart default (false)
        _apps(sim_cluster).read_namespaced_deployment("hubble-relay", NS)
    assert gone.value.status == 404


def test_unpinned_upgrade_silently_upgrades_cilium(sim_cluster: Any) -> None:
    helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--set", "policyAuditMode=true")
    assert agent_image(sim_cluster) == "quay.io/cilium/cilium:v1.16.5"
    assert operator_image(sim_cluster) == "quay.io/cilium/operator-generic:v1.16.5"
    (release,) = json.loads(helm(sim_cluster, "list", "-n", NS, "-o", "json").stdout)
    assert release["chart"] == "cilium-1.16.5"
    assert config_data(sim_cluster)["policy-audit-mode"] == "true"


def test_rollback_restores_the_previous_config(sim_cluster: Any) -> None:
    helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--set", "policyAuditMode=true",
         "--version", "1.15.1")
    assert config_data(sim_cluster)["policy-audit-mode"] == "true"
    result = helm(sim_cluster, "rollback", "cilium", "-n", NS, "--wait", "--timeout", "2m0s")
    assert result.stdout == "Rollback was a success! Happy Helming!\n"
    assert "policy-audit-mode" not in config_data(sim_cluster)
    assert [(h["revision"], h["status"], h["description"]) for h in history(sim_cluster)] == [
        (1, "superseded", "Install complete"), (2, "superseded", "Upgrade complete"), (3, "deployed", "Rollback to 1")]
    assert user_values(sim_cluster) == SEEDED_VALUES


def test_roll_out_cilium_pods_stamps_a_config_checksum_on_the_agents(sim_cluster: Any) -> None:
    assert fake_helm.CHECKSUM_ANNOTATION not in agent_template_annotations(sim_cluster)
    helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--version", "1.15.1",
         "--set", "rollOutCiliumPods=true", "--set", "policyAuditMode=true")
    first = agent_template_annotations(sim_cluster)[fake_helm.CHECKSUM_ANNOTATION]
    helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--version", "1.15.1",
         "--set", "policyAuditMode=false")
    second = agent_template_annotations(sim_cluster)[fake_helm.CHECKSUM_ANNOTATION]
    assert first != second
    assert config_data(sim_cluster)["policy-audit-mode"] == "false"


def test_release_secrets_are_stored_like_helms_secrets_driver(sim_cluster: Any) -> None:
    helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--set", "policyAuditMode=true",
         "--version", "1.15.1")
    secrets = _core(sim_cluster).list_namespaced_secret(NS, label_selector="owner=helm,name=cilium").items
    by_name = {s.metadata.name: s for s in secrets}
    assert sorted(by_name) == ["sh.helm.release.v1.cilium.v1", "sh.helm.release.v1.cilium.v2"]
    latest = by_name["sh.helm.release.v1.cilium.v2"]
    assert latest.type == "helm.sh/release.v1"
    assert {k: latest.metadata.labels[k] for k in ("owner", "name", "status", "version")} == {
        "owner": "helm", "name": "cilium", "status": "deployed", "version": "2"}
    assert by_name["sh.helm.release.v1.cilium.v1"].metadata.labels["status"] == "superseded"
    release = fake_helm.decode_release(base64.b64decode(latest.data["release"]))
    assert release["config"]["policyAuditMode"] is True
    assert release["chart"]["metadata"]["version"] == "1.15.1"
    assert fake_helm.read_release(sim_cluster.api_client(), NS, "cilium")["version"] == 2


def test_failed_upgrade_leaves_a_failed_revision_and_the_config_alone(sim_cluster: Any) -> None:
    result = helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--version", "1.15.1",
                  "--set", "policyAuditMode=true", check=False, FAKE_HELM_FAIL_UPGRADE="1")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: UPGRADE FAILED: ")
    assert "policy-audit-mode" not in config_data(sim_cluster)
    assert [(h["revision"], h["status"]) for h in history(sim_cluster)] == [(1, "deployed"), (2, "failed")]
    (release,) = json.loads(helm(sim_cluster, "list", "-n", NS, "-o", "json").stdout)
    assert (release["revision"], release["status"]) == ("2", "failed")


def test_upgrade_fails_when_the_agent_daemonset_is_missing(sim_cluster: Any) -> None:
    _apps(sim_cluster).delete_namespaced_daemon_set("cilium", NS)
    result = helm(sim_cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--reuse-values", "--version", "1.15.1",
                  check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: UPGRADE FAILED: ") and "not found" in result.stderr
    assert history(sim_cluster)[-1]["status"] == "failed"


def test_the_command_lines_kubernetes_core_runs(sim_cluster: Any, tmp_path: Path) -> None:
    """kubernetes.core passes the namespace in HELM_NAMESPACE, puts --version before the subcommand, writes values
    to a file passed as ``-f=<path>`` and always adds --reset-values (which beats --reuse-values=True)."""
    env = {"HELM_NAMESPACE": NS}
    chart = yaml.safe_load(helm(sim_cluster, "--version=1.15.1", "show", "chart", "cilium/cilium", **env).stdout)
    assert (chart["version"], chart["appVersion"]) == ("1.15.1", "1.15.1")
    (listed,) = yaml.safe_load(helm(sim_cluster, "list", "--output=yaml", "--filter", "cilium", **env).stdout)
    assert listed["chart"] == "cilium-1.15.1"
    computed = yaml.safe_load(helm(sim_cluster, "get", "values", "--output=yaml", "cilium", "-a", **env).stdout)
    assert computed["cluster"]["name"] == "sim" and "policyAuditMode" not in computed
    values_file = tmp_path / "values.yml"
    values_file.write_text("policyAuditMode: true\n")
    helm(sim_cluster, "--version=1.15.1", "upgrade", "-i", "--reset-values", "--reuse-values=True",
         f"-f={values_file}", "cilium", "cilium/cilium", **env)
    assert yaml.safe_load(helm(sim_cluster, "get", "values", "--output=yaml", "cilium", **env).stdout) == {
        "policyAuditMode": True}
    assert config_data(sim_cluster)["cluster-name"] == "default"
