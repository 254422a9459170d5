"""docs/rbac/*.yaml are enough, and each permission in them is needed: every playbook runs as the ServiceAccount
netpol-cilium with a token that holds exactly the permissions of its manifest (the simulated API server authorizes
it from the Role/ClusterRole/RoleBinding/ClusterRoleBinding objects as Kubernetes does), succeeds and does its job;
with one permission it needs taken away, the run fails naming the verb, the resource and the namespace.

Every run gets a kubeconfig holding only the ServiceAccount's token, and KUBECONFIG points at it too, so nothing
(modules, kubernetes.core, the fake helm) can fall back to an admin credential. Between the runs that share a cluster
the previous grant is deleted before the next one is applied."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from simcluster.cluster import SimCluster
from simcluster.fixtures import REPO_ROOT
from simcluster.playbook import ansible_env, run_tasks
from simcluster.scenario import seed
from simcluster.store import ApiError

pytestmark = pytest.mark.integration

RBAC = REPO_ROOT / "docs" / "rbac"
EXAMPLES = REPO_ROOT / "playbooks" / "examples"
SA_NAMESPACE = SA_NAME = "netpol-cilium"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"
NS = "kube-system"
LEDGER = "netpol-cilium-audit-ledger"
RBAC_KINDS = ("ClusterRoleBinding", "RoleBinding", "ClusterRole")
ROLLOUT_WINDOWS = {"policy_rollout_observe_duration": "5s", "policy_rollout_watch_duration": "4s",
                   "policy_rollout_max_duration": "2h", "policy_rollout_reason": "CHG-7 least privilege"}
EXPECTED = EXAMPLES / "expected-denies-with-metrics.yml"
WORKER_1 = {"kubernetes.io/hostname": "rbac-worker-1"}


# --- the grant ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drop:
    """A permission taken away: ``verb`` on ``resource`` (``pods/exec``) in ``group``, from every rule that grants it
    (only for the object ``name`` when given: the other names of the rule keep it)."""

    verb: str
    resource: str
    group: str = ""
    name: str | None = None

    def apply(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        docs = copy.deepcopy(docs)
        removed = 0
        for doc in docs:
            if doc["kind"] != "ClusterRole":
                continue
            kept = []
            for rule in doc["rules"]:
                if (self.group in rule["apiGroups"] and self.resource in rule["resources"]
                        and self.verb in rule["verbs"]
                        and (self.name is None or self.name in rule.get("resourceNames", [self.name]))):
                    removed += 1
                    kept += _split(rule, self)
                else:
                    kept.append(rule)
            doc["rules"] = [rule for rule in kept if rule["verbs"] and rule["resources"]]
        assert removed, f"no rule grants {self}"
        return docs


def _split(rule: dict[str, Any], drop: Drop) -> list[dict[str, Any]]:
    """The rule without ``drop``: the other resources and verbs (and names) keep what they had."""
    parts = []
    others = [r for r in rule["resources"] if r != drop.resource]
    if others:
        parts.append({**rule, "resources": others})
    verbs = [v for v in rule["verbs"] if v != drop.verb]
    if verbs:
        parts.append({**rule, "resources": [drop.resource], "verbs": verbs})
    names = [n for n in rule.get("resourceNames", []) if n != drop.name]
    if drop.name is not None and names:
        parts.append({**rule, "resources": [drop.resource], "verbs": [drop.verb], "resourceNames": names})
    return parts


def manifests(*files: str) -> list[dict[str, Any]]:
    docs = []
    for name in ("serviceaccount.yaml", *files):
        docs += [doc for doc in yaml.safe_load_all((RBAC / name).read_text()) if doc]
    return docs


@dataclass
class Identity:
    """The ServiceAccount netpol-cilium in one simulated cluster, and how playbooks run as it."""

    cluster: SimCluster
    workdir: Path
    runs: int = 0
    kubeconfig: str = ""
    granted: list[str] = field(default_factory=list)

    def grant(self, *files: str, drop: Drop | None = None) -> Identity:
        """Replace whatever the ServiceAccount held by what ``files`` grant (less ``drop``), with a new token."""
        for kind in RBAC_KINDS:
            rtype = self.cluster.store.type_for_kind(kind, "rbac.authorization.k8s.io")
            for obj in self.cluster.store.list(rtype, None, "app.kubernetes.io/part-of=netpol-cilium"):
                self.cluster.store.delete(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        docs = manifests(*files)
        for doc in drop.apply(docs) if drop else docs:
            self.cluster.apply(doc)
        token = self.cluster.service_account_token(SA_NAMESPACE, SA_NAME)
        self.kubeconfig = self.cluster.write_kubeconfig(str(self.workdir / "sa-kubeconfig"), token=token)
        self.granted = list(files)
        return self

    def playbook(self, name: str, *args: str, **extra_vars: Any) -> subprocess.CompletedProcess[str]:
        self.runs += 1
        rundir = self.workdir / f"{self.runs:02d}-{name}"
        rundir.mkdir()
        inventory = {"all": {"hosts": {self.cluster.name: {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "k8s_kubeconfig": self.kubeconfig}}}}
        (rundir / "inventory.yml").write_text(yaml.safe_dump(inventory))
        command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(rundir / "inventory.yml"),
                   str(REPO_ROOT / "playbooks" / f"{name}.yml"), *args]
        if extra_vars:
            command += ["-e", json.dumps(extra_vars)]
        env = ansible_env(self.cluster, {"KUBECONFIG": self.kubeconfig})
        for variable in [variable for variable in env if variable.startswith("K8S_AUTH_")]:
            del env[variable]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False,
                                cwd=str(rundir))
        (rundir / "run.log").write_text(result.stdout + result.stderr)
        return result

    def denied(self) -> list[str]:
        """The requests the ServiceAccount was refused, as ``verb resource[/sub] [name] in namespace``."""
        return [f"{d.attrs.verb} {d.attrs.resource}{'/' + d.attrs.subresource if d.attrs.subresource else ''}"
                f"{' ' + d.attrs.name if d.attrs.name else ''} in {d.attrs.namespace or '(cluster)'}"
                for d in self.cluster.rbac.decisions if d.user == SA_USER and not d.allowed]


def forbidden(verb: str, resource: str, namespace: str | None, group: str = "") -> str:
    """The API server's own words for a refused request (the part every message about it carries)."""
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return f'User "{SA_USER}" cannot {verb} resource "{resource}" in API group "{group}" {where}'


def shown(text: str) -> str:
    """Playbook output with the escaping of JSON-in-JSON undone, so that API messages can be searched."""
    return text.replace('\\\\\\"', '"').replace('\\\\"', '"').replace('\\"', '"')


# --- clusters and their state --------------------------------------------------------------------------------------

@pytest.fixture
def new_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SimCluster]]:
    """Start fresh seed clusters (named ``rbac``; Helm owns cilium-config unless ``helm=False``), stopped after the
    test."""
    started: list[SimCluster] = []

    def start(helm: bool = True) -> SimCluster:
        sim = SimCluster("rbac", state_dir=str(tmp_path_factory.mktemp("rbac")), agent_boot_seconds=0.1)
        started.append(sim)
        sim.start()
        seed(sim, helm_managed=helm)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()


@pytest.fixture
def cluster(new_cluster: Callable[..., SimCluster]) -> SimCluster:
    return new_cluster()


@pytest.fixture
def identity(cluster: SimCluster, tmp_path: Path) -> Identity:
    return Identity(cluster, tmp_path)


@pytest.fixture
def plain_cluster(new_cluster: Callable[..., SimCluster]) -> SimCluster:
    """Cilium installed without Helm: cilium-config may be patched directly (audit_scope=cluster)."""
    return new_cluster(helm=False)


def db(cluster: SimCluster):
    return next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))


def db_audit(cluster: SimCluster) -> bool:
    record = db(cluster)
    return cluster.agent(record.node).endpoint_audit_mode(record.id)


def ledger(cluster: SimCluster) -> dict[str, str]:
    try:
        data = cluster.get("ConfigMap", LEDGER, NS).get("data") or {}
    except ApiError:
        return {}
    return {key: value for key, value in data.items() if key != "README"}


def node_configs(cluster: SimCluster) -> list[str]:
    return [obj["metadata"]["name"] for obj in cluster.store.list(cluster.store.type_for_kind("CiliumNodeConfig"), NS)]


def agents_in_audit(cluster: SimCluster) -> dict[str, bool]:
    """Per node: does the running agent's global configuration say audit mode (as it read it at its last start)?"""
    return {node: cluster.agent_starts[node][-1].global_audit for node in sorted(cluster.agent_starts)}


def enable_db_on_the_agent(cluster: SimCluster) -> None:
    """Audit mode on the db endpoint, as ``cilium-dbg endpoint config`` run by hand does it (no ledger entry)."""
    record = db(cluster)
    cluster.agent(record.node).exec(["cilium-dbg", "endpoint", "config", str(record.id), "PolicyAuditMode=Enabled"])


def admin_tasks(cluster: SimCluster, workdir: Path, *modules: dict[str, Any]) -> None:
    """Set-up as an administrator (the cluster's admin kubeconfig), through the collection's own module."""
    rundir = workdir / f"admin-{time.monotonic_ns()}"
    rundir.mkdir()
    run = run_tasks(cluster, [{"netpol.cilium.cilium_audit_mode": module} for module in modules], rundir)
    assert run.rc == 0 and not any(result.get("failed") for result in run.results), run.stdout


def helm_as_admin(cluster: SimCluster, *args: str) -> None:
    env = dict(cluster.env())
    env["PATH"] = str(Path(sys.executable).parent) + ":" + env["PATH"]
    done = subprocess.run(["helm", *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


# --- every playbook succeeds with its manifest and does its job ------------------------------------------------------

def test_status_enable_and_disable_for_endpoints_with_their_manifests(identity: Identity, cluster: SimCluster) -> None:
    status = identity.grant("audit-status.yaml").playbook("audit_status")
    assert status.returncode == 0, status.stdout
    assert "audit mode active: False" in status.stdout

    enabled = identity.grant("audit-enable-endpoints.yaml").playbook(
        "audit_enable", audit_policy="shop/db-ingress", audit_max_duration="1h", audit_reason="CHG-7")
    assert enabled.returncode == 0, enabled.stdout
    assert db_audit(cluster) is True
    [entry] = ledger(cluster).values()  # the ledger ConfigMap was created by the ServiceAccount
    assert json.loads(entry)["reason"] == "CHG-7"

    status = identity.grant("audit-status.yaml").playbook("audit_status", audit_policy="shop/db-ingress")
    assert status.returncode == 0, status.stdout
    assert "audit mode active: True" in status.stdout and f"endpoints: {db(cluster).pod}" in status.stdout
    assert "recorded since: 20" in status.stdout  # the ledger was readable

    disabled = identity.grant("audit-disable-endpoints.yaml").playbook("audit_disable", audit_policy="shop/db-ingress")
    assert disabled.returncode == 0, disabled.stdout
    assert "enforcement is back for 1 endpoint(s)" in disabled.stdout
    assert db_audit(cluster) is False and ledger(cluster) == {}
    assert identity.denied() == []


def test_enable_and_disable_for_nodes_with_their_manifests(identity: Identity, cluster: SimCluster) -> None:
    enabled = identity.grant("audit-enable-nodes.yaml").playbook(
        "audit_enable", audit_scope="nodes", audit_node_selector=WORKER_1, audit_max_duration="1h")
    assert enabled.returncode == 0, enabled.stdout
    assert node_configs(cluster) == ["netpol-cilium-audit"]
    assert agents_in_audit(cluster) == {"rbac-worker-1": True, "rbac-worker-2": False, "rbac-worker-3": False}
    assert len(ledger(cluster)) == 1

    disabled = identity.grant("audit-disable-nodes.yaml").playbook(
        "audit_disable", audit_scope="nodes", audit_node_selector=WORKER_1)
    assert disabled.returncode == 0, disabled.stdout
    assert set(agents_in_audit(cluster).values()) == {False}
    assert ledger(cluster) == {}
    assert identity.denied() == []


def test_enable_and_disable_for_the_cluster_with_their_manifests(plain_cluster: SimCluster, tmp_path: Path) -> None:
    cluster = plain_cluster
    identity = Identity(cluster, tmp_path)
    enabled = identity.grant("audit-enable-cluster.yaml").playbook(
        "audit_enable", audit_scope="cluster", audit_max_duration="1h", audit_reason="CHG-7 cluster-wide")
    assert enabled.returncode == 0, enabled.stdout
    assert cluster.get("ConfigMap", "cilium-config", NS)["data"]["policy-audit-mode"] == "true"
    assert set(agents_in_audit(cluster).values()) == {True}  # every agent restarted with it
    assert len(ledger(cluster)) == 1

    disabled = identity.grant("audit-disable-cluster.yaml").playbook("audit_disable", audit_scope="cluster")
    assert disabled.returncode == 0, disabled.stdout
    assert cluster.get("ConfigMap", "cilium-config", NS)["data"]["policy-audit-mode"] == "false"
    assert set(agents_in_audit(cluster).values()) == {False}
    assert ledger(cluster) == {}
    assert identity.denied() == []


def test_guard_reports_with_its_manifest_and_reverts_with_the_revert_manifest(plain_cluster: SimCluster,
                                                                              tmp_path: Path) -> None:
    """Expired audit mode on an endpoint, on a node and on the whole cluster (cilium-config, not Helm)."""
    cluster = plain_cluster
    identity = Identity(cluster, tmp_path)
    other = next(node for node in sorted(cluster.node_names()) if node != db(cluster).node)
    admin_tasks(cluster, tmp_path,
                {"state": "enabled", "policy": "shop/db-ingress", "max_duration": "1s"},
                {"state": "enabled", "scope": "nodes", "node_selector": {"kubernetes.io/hostname": other},
                 "max_duration": "1s"})
    time.sleep(1.5)  # past both expiries
    assert len(ledger(cluster)) == 2

    report = identity.grant("audit-guard.yaml").playbook("audit_guard")
    assert report.returncode != 0
    assert "Re-run with -e audit_guard_revert=true to switch it off." in report.stdout
    assert f"shop/{db(cluster).pod}: audit mode on since " in report.stdout
    assert f"node {other}: audit mode on since " in report.stdout
    assert len(ledger(cluster)) == 2 and db_audit(cluster) is True  # reporting changes nothing

    reverted = identity.grant("audit-guard-revert.yaml").playbook("audit_guard", audit_guard_revert=True)
    assert reverted.returncode != 0  # the schedule still notifies
    assert "Reverted: everything is back to enforcement" in reverted.stdout, reverted.stdout
    assert set(agents_in_audit(cluster).values()) == {False}
    assert db_audit(cluster) is False and ledger(cluster) == {}

    # cluster-wide through cilium-config (Cilium not installed by Helm); the revert left the node's
    # CiliumNodeConfig saying false, which would override it
    cluster.store.delete(cluster.store.type_for_kind("CiliumNodeConfig"), NS, "netpol-cilium-audit")
    admin_tasks(cluster, tmp_path, {"state": "enabled", "scope": "cluster", "max_duration": "1s", "reason": "CHG-7"})
    time.sleep(1.5)
    assert set(agents_in_audit(cluster).values()) == {True}
    reverted = identity.grant("audit-guard-revert.yaml").playbook(
        "audit_guard", audit_guard_revert=True, audit_guard_fail_after_revert=False)
    assert reverted.returncode == 0, reverted.stdout
    assert "every expired or unledgered place is back to enforcement" in reverted.stdout
    assert cluster.get("ConfigMap", "cilium-config", NS)["data"]["policy-audit-mode"] == "false"
    assert set(agents_in_audit(cluster).values()) == {False}
    assert ledger(cluster) == {}
    assert identity.denied() == []


def test_guard_reverts_helm_owned_cluster_audit_mode_with_the_helm_manifest(
        identity: Identity, cluster: SimCluster) -> None:
    """Audit mode set through the Cilium release with no ledger entry: the guard switches it back through helm."""
    helm_as_admin(cluster, "upgrade", "cilium", "cilium/cilium", "-n", NS, "--version", "1.15.1", "--reuse-values",
                  "--set", "policyAuditMode=true")

    def restart(ds: dict[str, Any]) -> None:
        annotations = ds["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})
        annotations["kubectl.kubernetes.io/restartedAt"] = "now"

    cluster.store.mutate(cluster.rtype("daemonsets", "apps"), NS, "cilium", restart)
    cluster.wait_until(lambda: set(agents_in_audit(cluster).values()) == {True} and cluster.agents_ready(),
                       what="agents restarted in audit mode")

    reverted = identity.grant("audit-guard-revert.yaml", "helm-release.yaml").playbook(
        "audit_guard", audit_guard_revert=True, audit_guard_fail_after_revert=False)
    assert reverted.returncode == 0, reverted.stdout
    assert cluster.get("ConfigMap", "cilium-config", NS)["data"].get("policy-audit-mode") in (None, "false")
    assert set(agents_in_audit(cluster).values()) == {False}
    assert identity.denied() == []


def test_audit_report_through_the_relay_with_its_manifest(
        identity: Identity, cluster: SimCluster, tmp_path: Path) -> None:
    cluster.start_hubble(rate_multiplier=60)
    enable_db_on_the_agent(cluster)
    report = identity.grant("audit-report.yaml").playbook(
        "audit_report", "-e", f"@{EXPECTED}", audit_report_duration="4s",
        audit_report_namespaces=["shop", "monitoring"], audit_report_dir=str(tmp_path / "reports"))
    assert report.returncode == 0, report.stdout
    assert "PASS:" in report.stdout and "window complete: True" in report.stdout
    result = json.loads(next((tmp_path / "reports" / cluster.name).glob("*.json")).read_text())
    assert result["summary"]["audited"] > 0 and result["summary"]["unexpected_groups"] == 0
    assert identity.denied() == []


def test_policy_rollout_with_its_manifest(identity: Identity, cluster: SimCluster, tmp_path: Path) -> None:
    cluster.start_hubble(rate_multiplier=60)
    cnp = cluster.store.type_for_kind("CiliumNetworkPolicy")
    cluster.store.delete(cnp, "shop", "db-ingress")  # the rollout creates it
    result = identity.grant("policy-rollout.yaml").playbook(
        "policy_rollout", "-e", f"@{EXAMPLES / 'rollout-db.yml'}", "-e", f"@{EXPECTED}",
        policy_rollout_artifacts_dir=str(tmp_path / "artifacts"), **ROLLOUT_WINDOWS)
    assert result.returncode == 0, result.stdout
    summary = json.loads((tmp_path / "artifacts" / "rollout-summary.json").read_text())
    assert summary["passed"] is True and summary["steps_done"] == ["apply", "audit", "gate", "enforce"]
    assert summary["enforce"]["enforced"] is True
    assert cluster.store.try_get(cnp, "shop", "db-ingress") is not None
    assert db_audit(cluster) is False and ledger(cluster) == {}
    assert identity.denied() == []


def test_fleet_rollout_on_one_cluster_with_its_manifest(
        identity: Identity, cluster: SimCluster, tmp_path: Path) -> None:
    cluster.start_hubble(rate_multiplier=60)
    result = identity.grant("fleet-rollout.yaml").playbook(
        "fleet_rollout", "-e", f"@{EXAMPLES / 'rollout-db.yml'}", "-e", f"@{EXPECTED}",
        fleet_waves="100%", fleet_artifacts_dir=str(tmp_path / "artifacts"), **ROLLOUT_WINDOWS)
    assert result.returncode == 0, result.stdout
    summary = json.loads((tmp_path / "artifacts" / "fleet-summary.json").read_text())
    assert summary["status"] == "passed", summary
    [record] = summary["clusters"]
    assert record["status"] == "passed" and record["enforce"]["enforced"] is True
    assert db_audit(cluster) is False and ledger(cluster) == {}
    assert identity.denied() == []


# --- one permission fewer and the run fails, naming it ---------------------------------------------------------------

@dataclass(frozen=True)
class Missing:
    playbook: str
    files: tuple[str, ...]
    drop: Drop
    namespace: str | None  # where the refused request was made (None: cluster scope)
    extra_vars: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[SimCluster, Path], None] | None = None
    helm: bool = True
    args: tuple[str, ...] = ()
    warns: bool = False  # the run does its main job and warns, naming the permission (the ledger is best-effort)


def _expired_endpoint(cluster: SimCluster, workdir: Path) -> None:
    admin_tasks(cluster, workdir, {"state": "enabled", "policy": "shop/db-ingress", "max_duration": "1s"})
    time.sleep(1.2)


def _node_config(cluster: SimCluster, workdir: Path) -> None:
    admin_tasks(cluster, workdir, {"state": "enabled", "scope": "nodes", "node_selector": WORKER_1,
                                   "max_duration": "1h"})


def _cluster_wide(cluster: SimCluster, workdir: Path) -> None:
    admin_tasks(cluster, workdir, {"state": "enabled", "scope": "cluster", "max_duration": "1h", "reason": "CHG-7"})


def _relay(cluster: SimCluster, workdir: Path) -> None:
    cluster.start_hubble(rate_multiplier=60)


ROLLOUT_ARGS = ("-e", f"@{EXAMPLES / 'rollout-db.yml'}", "-e", f"@{EXPECTED}")
MISSING = {
    "audit_status-pods/exec-create": Missing(
        "audit_status", ("audit-status.yaml",), Drop("create", "pods/exec"), NS),
    "audit_enable-endpoints-ciliumendpoints-list": Missing(
        "audit_enable", ("audit-enable-endpoints.yaml",), Drop("list", "ciliumendpoints", "cilium.io"), "shop",
        {"audit_policy": "shop/db-ingress", "audit_max_duration": "1h"}),
    "audit_disable-endpoints-ciliumnetworkpolicies-get": Missing(
        "audit_disable", ("audit-disable-endpoints.yaml",), Drop("get", "ciliumnetworkpolicies", "cilium.io"), "shop",
        {"audit_policy": "shop/db-ingress"}, _expired_endpoint),
    "audit_disable-endpoints-ledger-patch-warns": Missing(
        "audit_disable", ("audit-disable-endpoints.yaml",), Drop("patch", "configmaps", name=LEDGER), NS,
        {"audit_policy": "shop/db-ingress"}, _expired_endpoint, warns=True),
    "audit_enable-nodes-ciliumnodeconfigs-create": Missing(
        "audit_enable", ("audit-enable-nodes.yaml",), Drop("create", "ciliumnodeconfigs", "cilium.io"), NS,
        {"audit_scope": "nodes", "audit_node_selector": WORKER_1, "audit_max_duration": "1h"}),
    "audit_disable-nodes-pods-delete": Missing(
        "audit_disable", ("audit-disable-nodes.yaml",), Drop("delete", "pods"), NS,
        {"audit_scope": "nodes", "audit_node_selector": WORKER_1}, _node_config),
    "audit_enable-cluster-cilium-config-patch": Missing(
        "audit_enable", ("audit-enable-cluster.yaml",), Drop("patch", "configmaps", name="cilium-config"), NS,
        {"audit_scope": "cluster", "audit_max_duration": "1h", "audit_reason": "CHG-7"}, helm=False),
    "audit_disable-cluster-daemonsets-patch": Missing(
        "audit_disable", ("audit-disable-cluster.yaml",), Drop("patch", "daemonsets", "apps", "cilium"), NS,
        {"audit_scope": "cluster"}, _cluster_wide, helm=False),
    "audit_guard-pods/exec-create": Missing(
        "audit_guard", ("audit-guard.yaml",), Drop("create", "pods/exec"), NS),
    "audit_guard_revert-ledger-patch": Missing(
        "audit_guard", ("audit-guard-revert.yaml",), Drop("patch", "configmaps", name=LEDGER), NS,
        {"audit_guard_revert": True}, _expired_endpoint),
    "audit_report-pods/portforward-create": Missing(
        "audit_report", ("audit-report.yaml",), Drop("create", "pods/portforward"), NS,
        {"audit_report_duration": "4s"}, _relay),
    "policy_rollout-ciliumnetworkpolicies-patch": Missing(
        "policy_rollout", ("policy-rollout.yaml",), Drop("patch", "ciliumnetworkpolicies", "cilium.io"), "shop",
        ROLLOUT_WINDOWS, _relay, args=ROLLOUT_ARGS),
    "fleet_rollout-nodes-list": Missing(
        "fleet_rollout", ("fleet-rollout.yaml",), Drop("list", "nodes"), None,
        {**ROLLOUT_WINDOWS, "fleet_waves": "100%"}, _relay, args=ROLLOUT_ARGS),
}


@pytest.mark.parametrize("case", list(MISSING.values()), ids=list(MISSING))
def test_one_permission_missing_fails_the_run_naming_it(case: Missing, new_cluster: Callable[..., SimCluster],
                                                        tmp_path: Path) -> None:
    sim = new_cluster(helm=case.helm)
    if case.setup is not None:
        case.setup(sim, tmp_path)
    extra = dict(case.extra_vars)
    artifacts = {"policy_rollout": "policy_rollout_artifacts_dir", "fleet_rollout": "fleet_artifacts_dir",
                 "audit_report": "audit_report_dir"}.get(case.playbook)
    if artifacts:
        extra[artifacts] = str(tmp_path / "artifacts")
    identity = Identity(sim, tmp_path).grant(*case.files, drop=case.drop)
    result = identity.playbook(case.playbook, *case.args, **extra)
    output = shown(result.stdout + result.stderr)
    if case.warns:
        assert result.returncode == 0, result.stdout
        assert "[WARNING]: audit mode is set, but the ledger ConfigMap could not be written" in output
    else:
        assert result.returncode != 0, result.stdout
    assert forbidden(case.drop.verb, case.drop.resource, case.namespace, case.drop.group) in output, (
        identity.denied(), result.stdout[-6000:])
