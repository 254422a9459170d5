"""What docs/awx.md promises for AWX/AAP: the survey specs under docs/awx/surveys are valid for AWX and only ask for
variables the playbooks read, the job templates and workflow in docs/awx/controller.yml name playbooks that exist,
and the playbooks reach a cluster through the environment AWX's credentials inject - the built-in "OpenShift or
Kubernetes API Bearer Token" credential (K8S_AUTH_HOST, K8S_AUTH_API_KEY, K8S_AUTH_VERIFY_SSL, K8S_AUTH_SSL_CA_CERT)
and the multi-context kubeconfig credential type of docs/awx.md (K8S_AUTH_KUBECONFIG and KUBECONFIG, the context
from the inventory host's k8s_context) - with no kubeconfig anywhere else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from simcluster.cluster import SimCluster
from simcluster.fixtures import REPO_ROOT
from simcluster.playbook import ansible_env
from simcluster.tls import CertificateAuthority

pytestmark = pytest.mark.integration

AWX_DIR = REPO_ROOT / "docs" / "awx"
SURVEYS = sorted((AWX_DIR / "surveys").glob("*.json"))


class _ControllerLoader(yaml.SafeLoader):
    """Reads docs/awx/controller.yml: its !unsafe strings (AWX's own templates) are plain strings here."""


_ControllerLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
CONTROLLER = yaml.load((AWX_DIR / "controller.yml").read_text(), Loader=_ControllerLoader)
# AWX's survey question types and the Python type of their defaults (awx/api/views: JobTemplateSurveySpec)
QUESTION_TYPES = {
    "text": str,
    "textarea": str,
    "password": str,
    "multiplechoice": str,
    "multiselect": str,
    "integer": int,
    "float": (int, float),
}


def playbook_for(survey: Path) -> Path:
    return REPO_ROOT / "playbooks" / f"{survey.stem}.yml"


def variables_read(playbook: Path) -> set[str]:
    """Every word in the playbook, the task files it includes, and the argument specs and defaults of the roles."""
    texts = [playbook.read_text()]
    texts += [path.read_text() for path in (REPO_ROOT / "playbooks" / "tasks").glob("*.yml")]
    for role in (REPO_ROOT / "roles").iterdir():
        if f"netpol.cilium.{role.name}" in texts[0]:
            texts += [path.read_text() for path in role.rglob("*.yml")]
    words = set()
    for text in texts:
        words.update(token for token in "".join(c if c.isalnum() or c == "_" else " " for c in text).split())
    return words


def test_there_is_a_survey_for_every_playbook() -> None:
    playbooks = {path.stem for path in (REPO_ROOT / "playbooks").glob("*.yml")}
    assert {survey.stem for survey in SURVEYS} == playbooks


@pytest.mark.parametrize("survey", SURVEYS, ids=lambda path: path.stem)
def test_the_survey_is_a_valid_awx_survey_spec_of_variables_the_playbook_reads(survey: Path) -> None:
    spec = json.loads(survey.read_text())
    assert isinstance(spec["name"], str) and isinstance(spec["description"], str)
    assert isinstance(spec["spec"], list) and spec["spec"]
    assert playbook_for(survey).is_file()
    read = variables_read(playbook_for(survey))
    seen = set()
    for index, question in enumerate(spec["spec"]):
        where = f"{survey.name} question {index}"
        for key, kind in (("question_name", str), ("variable", str), ("type", str), ("required", bool)):
            assert isinstance(question.get(key), kind), f"{where}: {key} must be a {kind.__name__}"
        assert question["variable"] not in seen, f"{where}: variable {question['variable']} asked twice"
        seen.add(question["variable"])
        assert question["variable"] in read, (
            f"{where}: {survey.stem}.yml and its roles never read {question['variable']}"
        )
        assert question["type"] in QUESTION_TYPES, f"{where}: unknown type {question['type']}"
        if question.get("default", "") != "":
            assert isinstance(question["default"], QUESTION_TYPES[question["type"]]), f"{where}: default type"
        for key in ("min", "max"):
            assert question.get(key) is None or isinstance(question[key], int), f"{where}: {key} must be an integer"
        if question["type"] in ("multiplechoice", "multiselect"):
            choices = question["choices"]
            choices = choices.splitlines() if isinstance(choices, str) else choices
            assert choices and all(isinstance(choice, str) for choice in choices), where
            if "default" in question:
                assert question["default"] in choices, f"{where}: the default is not one of the choices"
        if question["type"] == "text" and "default" in question and "max" in question:
            assert len(question["default"]) <= question["max"], where


def test_the_controller_configuration_names_existing_playbooks_surveys_and_templates() -> None:
    templates = {template["name"]: template for template in CONTROLLER["controller_templates"]}
    for template in templates.values():
        assert (REPO_ROOT / template["playbook"]).is_file(), template["playbook"]
        survey = AWX_DIR / "surveys" / f"{Path(template['playbook']).stem}.json"
        assert survey.is_file() and template["survey_enabled"] is True
        assert survey.name in template["survey_spec"]
    assert {Path(template["playbook"]).stem for template in templates.values()} >= {s.stem for s in SURVEYS}
    [workflow] = CONTROLLER["controller_workflows"]
    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
    for node in nodes.values():
        if "unified_job_template" in node:
            assert node["unified_job_template"]["type"] == "job_template"
            assert node["unified_job_template"]["name"] in templates, node["unified_job_template"]["name"]
        else:
            assert node["approval_node"]["name"] and node["approval_node"]["timeout"] > 0
        for kind in ("success_nodes", "failure_nodes", "always_nodes"):
            for other in node.get("related", {}).get(kind, []):
                assert other["identifier"] in nodes
    gate, approval, enforce = (nodes["rollout-gate"], nodes["approve-enforcement"], nodes["rollout-enforce"])
    assert gate["job_tags"] == "apply,audit,gate" and enforce["job_tags"] == "enforce"
    assert templates[gate["unified_job_template"]["name"]]["ask_tags_on_launch"] is True
    assert "approval_node" in approval
    assert {"identifier": "approve-enforcement"} in gate["related"]["success_nodes"]
    assert {"identifier": "rollout-enforce"} in approval["related"]["success_nodes"]
    [schedule] = CONTROLLER["controller_schedules"]
    guard = templates[schedule["unified_job_template"]]
    assert guard["playbook"] == "playbooks/audit_guard.yml" and "FREQ=HOURLY" in schedule["rrule"]
    assert schedule["extra_data"]["audit_guard_revert"] == "false"
    assert guard["notification_templates_error"]
    [credential_type] = CONTROLLER["controller_credential_types"]
    assert credential_type["injectors"]["env"]["K8S_AUTH_KUBECONFIG"] == "{{ tower.filename.kubeconfig }}"
    assert credential_type["injectors"]["file"]["template.kubeconfig"] == "{{ kubeconfig }}"


# --- the credentials AWX injects -------------------------------------------------------------------------------


def run_status(
    cluster: SimCluster, workdir: Path, env: dict[str, str], host_vars: dict | None = None, *extra: str
) -> subprocess.CompletedProcess[str]:
    """playbooks/audit_status.yml as an AWX job runs it: one cluster host, no kubeconfig in the inventory, an empty
    home directory (no ~/.kube/config), no KUBECONFIG unless the credential sets one."""
    inventory = {
        "all": {
            "hosts": {
                "sim-cluster": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    **(host_vars or {}),
                }
            }
        }
    }
    (workdir / "inventory.yml").write_text(yaml.safe_dump(inventory))
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    base = ansible_env(None)
    for name in [name for name in base if name.startswith("K8S_AUTH_") or name == "KUBECONFIG"]:
        del base[name]
    base.update({"HOME": str(home), **env})
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(workdir / "inventory.yml"),
        str(REPO_ROOT / "playbooks" / "audit_status.yml"),
        *extra,
    ]
    return subprocess.run(command, env=base, capture_output=True, text=True, timeout=300, check=False, cwd=str(workdir))


def bearer_token_env(cluster: SimCluster, ca_cert: str) -> dict[str, str]:
    """What AWX's kubernetes_bearer_token injector sets when "Verify SSL" is on and a CA is given."""
    return {
        "K8S_AUTH_HOST": cluster.server_url,
        "K8S_AUTH_API_KEY": cluster.admin_token,
        "K8S_AUTH_VERIFY_SSL": "True",
        "K8S_AUTH_SSL_CA_CERT": ca_cert,
    }


def test_the_bearer_token_credential_environment_reaches_the_cluster(
    shared_cluster: SimCluster, tmp_path: Path
) -> None:
    ca = str(shared_cluster.state_dir / "ca.crt")
    result = run_status(shared_cluster, tmp_path, bearer_token_env(shared_cluster, ca))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit mode active: False" in result.stdout


def test_without_the_credential_environment_the_same_job_cannot_reach_the_cluster(
    shared_cluster: SimCluster, tmp_path: Path
) -> None:
    result = run_status(shared_cluster, tmp_path, {})
    assert result.returncode != 0
    assert "audit mode active" not in result.stdout


def test_the_bearer_token_credential_verifies_the_api_servers_certificate(
    shared_cluster: SimCluster, tmp_path: Path
) -> None:
    wrong_ca = tmp_path / "other-ca.crt"
    wrong_ca.write_bytes(CertificateAuthority("not-the-cluster-ca").cert_pem)
    result = run_status(shared_cluster, tmp_path, bearer_token_env(shared_cluster, str(wrong_ca)))
    assert result.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.stdout + result.stderr


def test_the_multi_context_kubeconfig_credential_with_the_hosts_context_reaches_its_cluster(
    shared_cluster: SimCluster, tmp_path: Path
) -> None:
    """The custom credential type writes one kubeconfig with every context of the fleet; each inventory host picks
    its own with k8s_context. Here the kubeconfig's current context points at nothing, so only the host's context
    can work."""
    kubeconfig = yaml.safe_load(Path(shared_cluster.write_kubeconfig(str(tmp_path / "fleet.yaml"))).read_text())
    kubeconfig["clusters"].append({"name": "elsewhere", "cluster": {"server": "https://127.0.0.1:9"}})
    kubeconfig["contexts"].append(
        {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": f"{shared_cluster.name}-admin"}}
    )
    kubeconfig["current-context"] = "elsewhere"
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(kubeconfig))
    env = {"K8S_AUTH_KUBECONFIG": str(tmp_path / "fleet.yaml"), "KUBECONFIG": str(tmp_path / "fleet.yaml")}
    result = run_status(shared_cluster, tmp_path, env, {"k8s_context": f"{shared_cluster.name}-admin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit mode active: False" in result.stdout
    result = run_status(shared_cluster, tmp_path, env)  # no k8s_context: the current context, which goes nowhere
    assert result.returncode != 0


def test_unanswered_survey_questions_count_as_unset(shared_cluster: SimCluster, tmp_path: Path) -> None:
    """An AWX survey sends an empty string for a question left blank; the playbooks must treat it as not given."""
    env = {"K8S_AUTH_KUBECONFIG": shared_cluster.kubeconfig}
    blanks = {"audit_policy": "", "audit_namespace": "", "audit_label_selector": "", "k8s_context": ""}
    result = run_status(shared_cluster, tmp_path, env, None, "-e", json.dumps(blanks))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit mode active: False" in result.stdout
