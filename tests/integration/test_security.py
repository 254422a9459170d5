"""Security: no input reaches a shell, secrets never reach the output (not even at -vvv), and TLS verification of the
Kubernetes API is on unless switched off explicitly, which warns.

The bad-input table (test_bad_input.py) tries injection strings in every option that names something; here the
commands the agents actually received are checked, and a real token is planted where users put it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from simcluster.cluster import SimCluster
from simcluster.playbook import run_tasks
from simcluster.tls import CertificateAuthority

from ansible_collections.netpol.cilium.plugins.module_utils._cilium_dbg import BATCH_SCRIPT

pytestmark = pytest.mark.integration

AUDIT = "netpol.cilium.cilium_audit_mode"
INFO = "netpol.cilium.cilium_audit_mode_info"
REPORT = "netpol.cilium.hubble_audit_report"


def test_agent_commands_are_argv_with_a_fixed_script_and_validated_ids(sim_cluster: SimCluster,
                                                                       tmp_path: Path) -> None:
    run = run_tasks(sim_cluster, [
        {AUDIT: {"state": "enabled", "namespace": "shop", "max_duration": "1h", "reason": "argv test"}},
        {AUDIT: {"state": "disabled", "namespace": "shop"}},
        {INFO: {"all_endpoints": True}},
    ], tmp_path)
    assert [result.get("failed", False) for result in run.results] == [False, False, False], run.stdout[-2000:]
    assert sim_cluster.exec_log, "no exec reached the agents"
    for namespace, _pod, container, argv in sim_cluster.exec_log:
        assert (namespace, container) == (sim_cluster.cilium_namespace, "cilium-agent")
        if argv[:2] == ["sh", "-c"]:
            # the script is the collection's constant; everything variable is a separate argv element
            assert argv[2] == BATCH_SCRIPT and argv[3] == "sh"
            assert argv[4] in ("cilium-dbg", "cilium") and argv[5] in ("Enabled", "Disabled")
            assert argv[6:] and all(value.isdigit() for value in argv[6:]), argv
        else:
            assert argv[0] in ("cilium-dbg", "cilium"), argv
            assert all(shlex.quote(value) == value for value in argv), argv  # nothing a shell would treat specially


def planted_token_tasks(cluster: SimCluster) -> list[dict]:
    return [
        {"name": "read", INFO: {"all_endpoints": True}},
        {"name": "switch on", AUDIT: {"state": "enabled", "namespace": "shop", "label_selector": "app=db",
                                      "max_duration": "1h", "reason": "token test"}},
        {"name": "report", REPORT: {"duration": "3s", "namespaces": ["shop"], "fail_on_incomplete": False,
                                    "fail_on_unexpected": False}},
        {"name": "switch off", AUDIT: {"state": "disabled", "namespace": "shop", "label_selector": "app=db"}},
        {"name": "fail on purpose", AUDIT: {"state": "enabled", "namespace": "no-such-namespace",
                                            "max_duration": "1h"}},
    ]


@pytest.mark.parametrize("where", ["api_key option", "K8S_AUTH_API_KEY", "kubeconfig file"])
def test_a_planted_token_never_appears_in_the_output_even_at_vvv(sim_cluster: SimCluster, tmp_path: Path,
                                                                 where: str) -> None:
    sim_cluster.start_hubble(rate_multiplier=60)
    token = sim_cluster.admin_token
    ca = str(sim_cluster.state_dir / "ca.crt")
    env: dict[str, str] = {"KUBECONFIG": str(tmp_path / "absent")}
    if where == "api_key option":
        defaults = {"host": sim_cluster.server_url, "api_key": token, "ca_cert": ca}
    elif where == "K8S_AUTH_API_KEY":
        defaults = {}
        env.update({"K8S_AUTH_HOST": sim_cluster.server_url, "K8S_AUTH_API_KEY": token, "K8S_AUTH_SSL_CA_CERT": ca})
    else:
        kubeconfig = yaml.safe_load(Path(sim_cluster.kubeconfig).read_text())
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        defaults = {"kubeconfig": str(tmp_path / "kubeconfig")}
    run = run_tasks(sim_cluster, planted_token_tasks(sim_cluster), tmp_path, verbosity=3,
                    module_defaults={"group/netpol.cilium.cilium": defaults}, extra_env=env)
    outcome = [bool(result.get("failed")) for result in run.results]
    assert outcome == [False, False, False, False, True], run.stdout[-3000:]
    assert "no-such-namespace" in run.results[-1]["msg"]
    output = run.stdout + run.stderr + (tmp_path / "results.json").read_text()
    assert len(output) > 10_000  # -vvv really was verbose
    assert token not in output
    assert token[:16] not in output


def test_tls_verification_is_on_by_default_and_switching_it_off_warns(sim_cluster: SimCluster,
                                                                      tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(CertificateAuthority("someone-else").cert_pem)
    base = {"host": sim_cluster.server_url, "api_key": sim_cluster.admin_token}
    run = run_tasks(sim_cluster, [
        {"name": "right CA", INFO: {"ca_cert": str(sim_cluster.state_dir / "ca.crt")}},
        {"name": "wrong CA", INFO: {"ca_cert": str(other_ca)}},
        {"name": "verification off", INFO: {"ca_cert": str(other_ca), "validate_certs": False}},
    ], tmp_path, module_defaults={"group/netpol.cilium.cilium": base},
        extra_env={"KUBECONFIG": str(tmp_path / "absent")})
    right, wrong, off = run.results
    assert not right.get("failed") and not right.get("warnings")
    assert wrong.get("failed") and "CERTIFICATE_VERIFY_FAILED" in wrong["msg"]
    assert not off.get("failed")
    assert any("TLS certificate is not verified" in warning for warning in off.get("warnings", []))
