"""The agent emulation against output captured from a real Cilium 1.15.1 agent, and its audit-mode behaviour."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simcluster.agent import CiliumAgent, EndpointSpec, ExecResult, l4_policy_rule

# <repo>/tests/harness/this_file -> <repo>/../shared/fixtures
FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "cilium-dbg" / "real-1.15.1"

HOST_ID = 167
FE_ID = 1473
DB_ID = 1742
DB_LABELS_AUDIT_ORDER = [
    "k8s:app=db",
    "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
    "k8s:io.kubernetes.pod.namespace=shop",
    "k8s:io.cilium.k8s.policy.serviceaccount=default",
    "k8s:io.cilium.k8s.policy.cluster=prod-a",
]
# Go map order: the real agent printed the same labels in another order a few seconds later.
DB_LABELS_ENFORCED_ORDER = [
    "k8s:io.cilium.k8s.policy.cluster=prod-a",
    "k8s:app=db",
    "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
    "k8s:io.kubernetes.pod.namespace=shop",
    "k8s:io.cilium.k8s.policy.serviceaccount=default",
]
FE_LABELS = [
    "k8s:app=frontend",
    "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
    "k8s:io.kubernetes.pod.namespace=shop",
    "k8s:io.cilium.k8s.policy.serviceaccount=default",
    "k8s:io.cilium.k8s.policy.cluster=prod-a",
]


def fixture(name: str) -> tuple[str, int]:
    """A fixture's text without the appended ``exit=N`` line, and N (0 when the file records none)."""
    text = (FIXTURES / name).read_text()
    lines = text.split("\n")
    if len(lines) >= 2 and lines[-1] == "" and lines[-2].startswith("exit="):
        return "\n".join(lines[:-2]) + "\n", int(lines[-2][len("exit="):])
    return text, 0


def at(clock_text: str) -> datetime:
    return datetime.fromisoformat(clock_text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def set(self, text: str) -> None:
        self.now = at(text)


def host_spec() -> EndpointSpec:
    return EndpointSpec(id=HOST_ID, identity=1, labels=["reserved:host"])


def fe_spec() -> EndpointSpec:
    return EndpointSpec(id=FE_ID, identity=53414, labels=list(FE_LABELS), namespace="shop", pod_name="fe-real",
                        ipv4="10.200.1.197", container_id="cid-fe2")


def db_spec() -> EndpointSpec:
    rule = l4_policy_rule("ingress", 5432, "TCP", {"any.app": "backend", "k8s.io.kubernetes.pod.namespace": "shop"},
                          policy_name="db-ingress", policy_namespace="shop",
                          policy_uid="70fb990b-8215-45ad-b9cc-ed9ef81a47bb")
    return EndpointSpec(id=DB_ID, identity=60273, labels=list(DB_LABELS_AUDIT_ORDER), namespace="shop",
                        pod_name="db-real", ipv4="10.200.1.201", container_id="cid-db2", policy_ingress=True,
                        policy_rules=[rule])


def adopt_host_capture(agent: CiliumAgent) -> None:
    """The values the real agent generated for its host endpoint (uuids, one controller time, MAC)."""
    rt = agent.runtime(HOST_ID)
    uuids = {
        "endpoint-167-regeneration-recovery": "b861cea3-c786-4f5c-8d87-f228a81e0039",
        "resolve-identity-167": "9794b197-4cd1-4185-87d8-31f03902bc6c",
        "sync-policymap-167": "1e21cf08-a072-4813-8865-b50044782712",
    }
    for name, value in uuids.items():
        rt.controller(name).uuid = value
    rt.controller("sync-policymap-167").last_success = at("2026-11-27T01:48:26.721Z")
    rt.mac = rt.host_mac = "96:a8:f6:01:c3:2f"


def adopt_db_capture(agent: CiliumAgent) -> None:
    rt = agent.runtime(DB_ID)
    uuids = {
        "endpoint-1742-regeneration-recovery": "0243b5cd-4594-4f85-bdf5-38fe448f5c6f",
        "resolve-identity-1742": "5579f543-0b60-49ae-b912-95a5d33d507f",
        "resolve-labels-shop/db-real": "6d96ec48-5c43-4bc3-98df-71cc86207640",
        "sync-policymap-1742": "f7277f2f-18b9-4e84-b99b-b0046b0ed537",
        "sync-to-k8s-ciliumendpoint (1742)": "6fee6c3d-e3fd-4ff9-b53f-8c90d479ccc2",
    }
    for name, value in uuids.items():
        rt.controller(name).uuid = value
    sync = rt.controller("sync-to-k8s-ciliumendpoint (1742)")
    sync.last_success, sync.success_count = at("2026-11-27T01:52:06.147Z"), 1
    rt.mac, rt.host_mac = "1e:1c:c8:91:f9:ad", "62:fe:26:ba:ea:60"
    rt.interface_name, rt.interface_index = "lxcf4be3245ce94", 23


def run(agent: CiliumAgent, *args: str) -> ExecResult:
    return agent.exec([agent.binary, *args])


def assert_stdout(result: ExecResult, name: str) -> None:
    expected, code = fixture(name)
    assert (result.stdout, result.stderr, result.exit_code) == (expected, "", code)


def assert_stderr(result: ExecResult, name: str) -> None:
    expected, code = fixture(name)
    assert (result.stdout, result.stderr, result.exit_code) == ("", expected, code)


@pytest.fixture
def host_agent() -> tuple[CiliumAgent, FakeClock]:
    """The captured host-only agent, its endpoint last regenerated via the API at 01:50:15."""
    clock = FakeClock(at("2026-11-27T01:48:26.355Z"))
    agent = CiliumAgent("kind-worker", clock=clock, seed=1)
    agent.start(False, [host_spec()])
    adopt_host_capture(agent)
    clock.set("2026-11-27T01:50:10Z")
    assert run(agent, "endpoint", "config", "167", "PolicyAuditMode=Enabled").exit_code == 0
    clock.set("2026-11-27T01:50:15Z")
    assert run(agent, "endpoint", "config", "167", "PolicyAuditMode=Disabled").exit_code == 0
    return agent, clock


@pytest.fixture
def pod_agent() -> tuple[CiliumAgent, FakeClock]:
    clock = FakeClock(at("2026-11-27T01:52:16.138Z"))
    agent = CiliumAgent("kind-worker", cluster_name="prod-a", clock=clock, seed=2)
    agent.start(False, [host_spec(), fe_spec(), db_spec()])
    adopt_host_capture(agent)
    adopt_db_capture(agent)
    return agent, clock


# --- byte-exact against the captures --------------------------------------------------------------------------------


def test_endpoint_list_json_host_only(host_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = host_agent[0]
    assert_stdout(run(agent, "endpoint", "list", "-o", "json"), "endpoint-list.json")


def test_endpoint_get_host_before_and_after_audit(host_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent, clock = host_agent
    assert_stdout(run(agent, "endpoint", "get", "167", "-o", "json"), "endpoint-get-host.json")
    assert_stdout(run(agent, "endpoint", "get", "167"), "endpoint-get-host.json")  # JSON is forced
    clock.set("2026-11-27T01:50:27Z")
    assert_stdout(run(agent, "endpoint", "config", "167", "PolicyAuditMode=Enabled"),
                  "endpoint-config-set-enabled.txt")
    assert_stdout(run(agent, "endpoint", "get", "167", "-o", "json"), "endpoint-get-host-audit.json")
    assert_stdout(run(agent, "endpoint", "list"), "endpoint-list-audit.txt")
    assert_stdout(run(agent, "endpoint", "config", "167", "PolicyAuditMode=Disabled"),
                  "endpoint-config-set-disabled.txt")


def test_endpoint_config_show(host_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = host_agent[0]
    assert_stdout(run(agent, "endpoint", "config", "167"), "endpoint-config-show.txt")
    assert_stdout(run(agent, "endpoint", "config", "167", "-o", "json"), "endpoint-config-show.json")


@pytest.mark.parametrize(("args", "name"), [
    (("endpoint", "config", "167", "Foo=bar"), "error-endpoint-config-bad-option.txt"),
    (("endpoint", "config", "167", "PolicyAuditMode=maybe"), "error-endpoint-config-bad-value.txt"),
    (("endpoint", "config", "99999", "PolicyAuditMode=Enabled"), "error-endpoint-config-id-too-large.txt"),
    (("endpoint", "config", "4000", "PolicyAuditMode=Enabled"), "error-endpoint-config-unknown-id.txt"),
    (("endpoint", "get", "4000", "-o", "json"), "error-endpoint-get-unknown-id.txt"),
])
def test_error_outputs(host_agent: tuple[CiliumAgent, FakeClock], args: tuple[str, ...], name: str) -> None:
    agent = host_agent[0]
    assert_stderr(run(agent, *args), name)
    assert not agent.endpoint_audit_mode(HOST_ID)


def test_config_and_status(host_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = host_agent[0]
    assert_stdout(run(agent, "config", "-o", "json"), "config.json")
    assert_stdout(run(agent, "config"), "config.txt")
    assert_stdout(run(agent, "status", "--brief"), "status-brief.txt")
    agent.start(True, [host_spec()])
    assert_stdout(run(agent, "config", "-o", "json"), "config-global-audit.json")
    assert_stdout(run(agent, "config"), "config-global-audit.txt")


def test_endpoint_get_pod_audit_then_enforced(pod_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent, clock = pod_agent
    clock.set("2026-11-27T01:52:31Z")
    assert run(agent, "endpoint", "config", "1742", "PolicyAuditMode=Enabled").exit_code == 0
    clock.set("2026-11-27T01:52:40Z")
    assert_stdout(run(agent, "endpoint", "get", "1742", "-o", "json"), "endpoint-get-pod-audit.json")
    clock.set("2026-11-27T01:52:42Z")
    assert run(agent, "endpoint", "config", "1742", "PolicyAuditMode=Disabled").exit_code == 0
    clock.set("2026-11-27T01:52:50Z")
    agent.runtime(DB_ID).identity_labels = list(DB_LABELS_ENFORCED_ORDER)
    assert_stdout(run(agent, "endpoint", "get", "1742", "-o", "json"), "endpoint-get-pod-enforced.json")


def test_endpoint_list_tables_pods_and_global_audit(pod_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = pod_agent[0]
    assert_stdout(run(agent, "endpoint", "list"), "endpoint-list-pods.txt")
    agent.start(True, [host_spec(), fe_spec(), db_spec()])
    assert_stdout(run(agent, "endpoint", "list"), "endpoint-list-global-audit.txt")
    assert_stdout(run(agent, "config"), "config-global-audit.txt")


# --- behaviour ---------------------------------------------------------------------------------------------------


def audit_option(agent: CiliumAgent, endpoint_id: int) -> str:
    result = run(agent, "endpoint", "get", str(endpoint_id), "-o", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)[0]["spec"]["options"]["PolicyAuditMode"]


def policy_enabled(agent: CiliumAgent, endpoint_id: int) -> str:
    data = json.loads(run(agent, "endpoint", "get", str(endpoint_id), "-o", "json").stdout)[0]
    assert data["status"]["policy"]["spec"]["policy-enabled"] == data["status"]["policy"]["realized"]["policy-enabled"]
    return data["status"]["policy"]["realized"]["policy-enabled"]


def test_restart_resets_per_endpoint_mode_to_global() -> None:
    agent = CiliumAgent("n1")
    agent.start(False, [host_spec(), db_spec()])
    assert run(agent, "endpoint", "config", "1742", "PolicyAuditMode=Enabled").exit_code == 0
    assert agent.endpoint_audit_mode(DB_ID) and not agent.endpoint_audit_mode(HOST_ID)
    assert audit_option(agent, DB_ID) == "Enabled"
    agent.start(False, [host_spec(), db_spec()])
    assert not agent.endpoint_audit_mode(DB_ID)
    agent.start(True, [host_spec(), db_spec()])
    assert agent.endpoint_audit_mode(DB_ID) and agent.endpoint_audit_mode(HOST_ID)
    assert run(agent, "endpoint", "config", "1742", "PolicyAuditMode=Disabled").exit_code == 0
    assert not agent.endpoint_audit_mode(DB_ID) and agent.daemon_audit_mode()
    agent.start(True, [host_spec(), db_spec()])
    assert agent.endpoint_audit_mode(DB_ID)


def test_new_endpoint_takes_daemon_value() -> None:
    agent = CiliumAgent("n1")
    agent.start(True, [host_spec()])
    agent.add_endpoint(db_spec())
    assert agent.endpoint_audit_mode(DB_ID) and audit_option(agent, DB_ID) == "Enabled"
    assert run(agent, "config", "PolicyAuditMode=Disabled") == ExecResult("", "", 0)
    agent.remove_endpoint(DB_ID)
    assert agent.endpoints() == [HOST_ID]
    agent.add_endpoint(db_spec())
    assert not agent.endpoint_audit_mode(DB_ID) and not agent.daemon_audit_mode()
    with pytest.raises(ValueError):
        agent.add_endpoint(db_spec())


def test_policy_enabled_transitions() -> None:
    agent = CiliumAgent("n1")
    spec = db_spec()
    spec.policy_ingress = False
    agent.start(True, [host_spec(), spec])
    assert policy_enabled(agent, DB_ID) == "none"  # audit on, but nothing enforces
    assert policy_enabled(agent, HOST_ID) == "none"
    agent.set_policy(DB_ID, True, False)
    assert policy_enabled(agent, DB_ID) == "audit-ingress"
    agent.set_policy(DB_ID, True, True)
    assert policy_enabled(agent, DB_ID) == "audit-both"
    row = next(line for line in run(agent, "endpoint", "list").stdout.splitlines() if line.startswith("1742 "))
    assert row.split()[1:5] == ["Disabled", "(Audit)", "Disabled", "(Audit)"]
    assert run(agent, "endpoint", "config", "1742", "PolicyAuditMode=false").exit_code == 0
    assert policy_enabled(agent, DB_ID) == "both"
    agent.set_policy(DB_ID, False, True)
    assert policy_enabled(agent, DB_ID) == "egress"
    row = next(line for line in run(agent, "endpoint", "list").stdout.splitlines() if line.startswith("1742 "))
    assert row.split()[1:3] == ["Disabled", "Enabled"]


def test_runtime_daemon_toggle_reaches_endpoints_only_from_1_14() -> None:
    new = CiliumAgent("n1", version="1.15.1")
    new.start(False, [host_spec(), db_spec()])
    assert run(new, "config", "PolicyAuditMode=Enabled").exit_code == 0
    assert new.daemon_audit_mode() and new.endpoint_audit_mode(DB_ID) and new.endpoint_audit_mode(HOST_ID)
    old = CiliumAgent("n2", version="1.13.4")
    old.start(False, [host_spec(), db_spec()])
    assert run(old, "config", "PolicyAuditMode=Enabled").exit_code == 0
    assert old.daemon_audit_mode() and not old.endpoint_audit_mode(DB_ID)
    assert run(new, "config", "Foo=1") == ExecResult('unknown option "Foo"\n', "", 1)
    assert run(new, "config", "PolicyAuditMode").stderr == "Error: Improper configuration format provided\n"


def test_only_the_versions_binary_exists() -> None:
    agent = CiliumAgent("n1", version="1.14.6")
    agent.start(False, [host_spec()])
    assert agent.binary == "cilium"
    missing = agent.exec(["cilium-dbg", "endpoint", "list", "-o", "json"])
    assert missing.is_not_found and missing.exit_code == ExecResult.NOT_FOUND and missing.stdout == ""
    assert missing.stderr == ExecResult.NOT_FOUND_MESSAGE.format(name="cilium-dbg")
    assert agent.exec(["cilium", "endpoint", "list", "-o", "json"]).exit_code == 0
    assert agent.exec(["/usr/bin/cilium", "status", "--brief"]).stdout == "OK\n"
    unknown = agent.exec(["cilium", "frobnicate"])
    assert unknown.stderr == 'Error: unknown command "frobnicate" for "cilium"\nRun \'cilium --help\' for usage.\n'
    agent.version = "1.15.1"
    assert agent.exec(["cilium", "version"]).is_not_found
    assert agent.exec(["/usr/bin/cilium-dbg", "status", "--brief"]).stdout == "OK\n"


def test_no_shell_in_the_container() -> None:
    agent = CiliumAgent("n1")
    for argv in (["sh", "-c", "cilium-dbg endpoint list"], ["bash", "-c", "true"], ["/bin/sh", "-c", "true"], []):
        result = agent.exec(argv)
        assert result.exit_code == ExecResult.NOT_FOUND and result.stdout == "", argv
    assert agent.exec(["sh", "-c", "x"]).stderr == (
        'OCI runtime exec failed: exec failed: unable to start container process: exec: "sh": executable file not '
        "found in $PATH: unknown")


def test_option_spellings_and_parse_errors(pod_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = pod_agent[0]
    for value, expected in (("true", True), ("OFF", False), ("Enable", True), ("disabled", False), ("1", True),
                            ("0", False), ("on", True), ("False", False), ("ENABLED", True), ("disable", False)):
        assert run(agent, "endpoint", "config", "1742", f"policyauditmode={value}").exit_code == 0
        assert agent.endpoint_audit_mode(DB_ID) is expected, value
    both = run(agent, "endpoint", "config", "1473", "PolicyAuditMode=on", "Debug=true", "MonitorAggregationLevel=low")
    assert both.stdout == "Endpoint 1473 configuration updated successfully\n"
    shown = run(agent, "endpoint", "config", "1473").stdout
    assert "PolicyAuditMode                   : Enabled\n" in shown
    assert "Debug                             : Enabled\n" in shown
    assert "MonitorAggregationLevel           : Low\n" in shown
    # Cilium 1.15 rejects a bare "!Name" (ParseOption needs "=") and "!Name=value".
    assert run(agent, "endpoint", "config", "1742", "!PolicyAuditMode").stderr == (
        "Error: Cannot parse option !PolicyAuditMode: invalid option format\n")
    assert run(agent, "endpoint", "config", "1742", "!PolicyAuditMode=true").stderr == (
        "Error: Cannot parse option !PolicyAuditMode=true: invalid boolean format\n")
    # A parse error leaves every option unchanged.
    before = agent.endpoint_audit_mode(FE_ID)
    assert run(agent, "endpoint", "config", "1473", "PolicyAuditMode=off", "Nope=1").exit_code == 1
    assert agent.endpoint_audit_mode(FE_ID) == before


def test_endpoint_identifiers(pod_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = pod_agent[0]
    for ident in ("pod-name:shop/db-real", "cep-name:shop/db-real", "cilium-local:1742", "0x6ce",
                  "ipv4:10.200.1.201", "container-id:cid-db2"):
        result = run(agent, "endpoint", "get", ident)
        assert result.exit_code == 0, ident
        assert json.loads(result.stdout)[0]["id"] == DB_ID
    assert run(agent, "endpoint", "get", "pod-name:shop/nope").stderr == (
        "Error: Cannot get endpoint pod-name:shop/nope: [GET /endpoint/{id}][404] getEndpointIdNotFound \n\n")
    assert run(agent, "endpoint", "get", "99999").stderr == (
        "Error: Cannot get endpoint 99999: [GET /endpoint/{id}][400] getEndpointIdInvalid  "
        "endpoint id too large: 99999\n\n")
    assert run(agent, "endpoint", "get", "abc").exit_code == 1
    # endpoint config drops the prefix, and the rest is no numeric id: an undeclared 400.
    garbage = run(agent, "endpoint", "config", "pod-name:shop/db-real", "PolicyAuditMode=Enabled")
    assert garbage.stderr == (
        "Error: Cannot get configuration of endpoint shop/db-real: response status code does not match any "
        "response statuses defined for this endpoint in the swagger spec (status 400): {}\n\n")
    assert run(agent, "endpoint", "config", "cilium-local:1742", "PolicyAuditMode=Enabled").stdout == (
        "Endpoint 1742 configuration updated successfully\n")
    assert run(agent, "endpoint", "get", "bogus:1").stderr == (
        'Error: Cannot parse endpoint id "bogus:1": unknown endpoint ID prefix "bogus"\n')


def test_json_list_is_sorted_and_complete(pod_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = pod_agent[0]
    agent.add_endpoint(EndpointSpec(id=5, identity=4242, labels=["k8s:app=x"], namespace="a", pod_name="x"))
    data = json.loads(run(agent, "endpoint", "list", "-o", "json").stdout)
    assert [item["id"] for item in data] == [5, HOST_ID, FE_ID, DB_ID]
    fresh = data[0]["status"]
    assert fresh["networking"]["interface-name"].startswith("lxc") and len(fresh["networking"]["interface-name"]) == 15
    assert fresh["networking"]["addressing"] == [{}]
    assert fresh["external-identifiers"]["pod-name"] == "a/x"
    path = run(agent, "endpoint", "get", "1742", "-o", "jsonpath={[*].spec.options.PolicyAuditMode}")
    assert path.stdout == "Disabled\n"


def test_cli_errors_and_health(pod_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = pod_agent[0]
    assert run(agent, "endpoint", "lst").exit_code == 1
    assert run(agent, "endpoint", "list", "--bogus").stderr == "Error: unknown flag: --bogus\n"
    assert run(agent, "endpoint", "get").stderr == "Error: Missing endpoint id argument\n\n"
    assert run(agent, "version").stdout.startswith("Client: 1.15.1 ")
    agent.healthy = False
    unhealthy = run(agent, "status", "--brief")
    assert unhealthy.exit_code == 1 and unhealthy.stdout == "" and unhealthy.stderr


def test_exec_from_many_threads(pod_agent: tuple[CiliumAgent, FakeClock]) -> None:
    agent = pod_agent[0]
    failures: list[str] = []

    def worker(value: str) -> None:
        for _round in range(20):
            for argv in (("endpoint", "config", "1742", f"PolicyAuditMode={value}"), ("endpoint", "list", "-o", "json"),
                         ("config", f"PolicyAuditMode={value}")):
                result = run(agent, *argv)
                if result.exit_code != 0:
                    failures.append(result.stderr)

    threads = [threading.Thread(target=worker, args=(value,)) for value in ("Enabled", "Disabled", "Enabled")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
