"""docs/rbac/*.yaml: valid RBAC objects bound to the netpol-cilium ServiceAccount, no wildcards, Secrets only where Helm
needs them, a reason above every rule, one file set per playbook, and the names they grant on still the names the
code uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.netpol.cilium.plugins.module_utils import _agents, _ledger

ROOT = Path(__file__).resolve().parents[3]
RBAC = ROOT / "docs" / "rbac"
FILES = sorted(RBAC.glob("*.yaml"))
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "escalate", "bind"}
# Every playbook and the files that grant what it needs (fleet_rollout.yml is being written: it runs policy_rollout).
PLAYBOOK_FILES = {
    "audit_status": ["audit-status.yaml"],
    "audit_enable": ["audit-enable-endpoints.yaml", "audit-enable-nodes.yaml", "audit-enable-cluster.yaml"],
    "audit_disable": ["audit-disable-endpoints.yaml", "audit-disable-nodes.yaml", "audit-disable-cluster.yaml"],
    "audit_report": ["audit-report.yaml"],
    "audit_guard": ["audit-guard.yaml", "audit-guard-revert.yaml"],
    "policy_rollout": ["policy-rollout.yaml"],
    "fleet_rollout": ["fleet-rollout.yaml"],
}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def rules(path: Path) -> set[tuple]:
    found = set()
    for doc in documents(path):
        for rule in doc.get("rules", []):
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    found.add((tuple(rule["apiGroups"]), resource, verb, tuple(rule.get("resourceNames", ()))))
    return found


def test_there_is_a_file_for_every_playbook() -> None:
    playbooks = {path.stem for path in (ROOT / "playbooks").glob("*.yml")}
    assert playbooks <= set(PLAYBOOK_FILES), f"playbooks without RBAC in docs/rbac: {playbooks - set(PLAYBOOK_FILES)}"
    for files in PLAYBOOK_FILES.values():
        for name in files:
            assert (RBAC / name).is_file(), name


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_object_is_valid_rbac_bound_to_the_service_account(path: Path) -> None:
    docs = documents(path)
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
    bound = set()
    for doc in docs:
        kind = doc["kind"]
        assert kind in {"ClusterRole", "ClusterRoleBinding", "RoleBinding", "Namespace", "ServiceAccount"}, kind
        assert doc["apiVersion"] == ("v1" if kind in ("Namespace", "ServiceAccount")
                                     else "rbac.authorization.k8s.io/v1")
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        if kind == "ClusterRole":
            assert doc["rules"], doc["metadata"]["name"]
            for rule in doc["rules"]:
                assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}
                assert rule["apiGroups"] and rule["resources"] and rule["verbs"]
                assert set(rule["verbs"]) <= VERBS, rule
                for value in rule["verbs"] + rule["resources"] + rule["apiGroups"] + rule.get("resourceNames", []):
                    assert "*" not in value, f"{path.name}: wildcard in {rule}"
                if rule.get("resourceNames"):
                    assert not {"create", "list", "watch"} & set(rule["verbs"]), (
                        f"{path.name}: resourceNames cannot limit create, list or watch: {rule}")
        if kind in ("ClusterRoleBinding", "RoleBinding"):
            assert doc["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": doc["metadata"]["name"]}
            assert doc["subjects"] == [{"kind": "ServiceAccount", "name": "netpol-cilium",
                                        "namespace": "netpol-cilium"}]
            assert (kind == "RoleBinding") == ("namespace" in doc["metadata"])
            bound.add(doc["roleRef"]["name"])
    assert roles == bound, f"{path.name}: roles without a binding or bindings without a role"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_rule_says_which_code_needs_it(path: Path) -> None:
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            assert lines[index - 1].strip().startswith("#"), f"{path.name}:{index + 1}: a rule without its reason"


def test_secrets_only_where_helm_needs_them() -> None:
    for path in FILES:
        text = path.read_text()
        for match in re.finditer(r"((?:  #.*\n)+)  - apiGroups: \[\"\"\]\n    resources: \[([^\]]*)\]", text):
            if "secrets" in match.group(2):
                assert path.name == "helm-release.yaml", f"{path.name} grants secrets"
                assert "Helm" in match.group(1) and "release" in match.group(1)
        if path.name != "helm-release.yaml":
            assert "secrets" not in text, path.name


def test_composite_playbooks_hold_what_their_steps_need() -> None:
    rollout = rules(RBAC / "policy-rollout.yaml")
    assert rules(RBAC / "fleet-rollout.yaml") == rollout
    steps = rules(RBAC / "audit-enable-endpoints.yaml") | rules(RBAC / "audit-report.yaml") | rules(
        RBAC / "audit-status.yaml")
    assert steps <= rollout, steps - rollout
    assert rules(RBAC / "audit-guard.yaml") <= rules(RBAC / "audit-guard-revert.yaml")
    writes = {"create", "update", "patch", "delete", "escalate", "bind"}
    for name in ("audit-status.yaml", "audit-guard.yaml", "audit-report.yaml"):
        assert not {verb for _g, resource, verb, _n in rules(RBAC / name)
                    if resource not in ("pods/exec", "pods/portforward")} & writes, name


def test_names_granted_are_the_names_the_code_uses() -> None:
    granted = {name for path in FILES for *_rest, names in rules(path) for name in names}
    assert _ledger.LEDGER_CONFIGMAP in granted
    assert {"cilium-config", "cilium", "hubble-relay", "netpol-cilium-audit"} <= granted
    assert _agents.AGENT_CONTAINER == "cilium-agent" and _agents.AGENT_LABEL_SELECTOR == "k8s-app=cilium"
