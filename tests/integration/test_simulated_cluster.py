"""The simulated cluster through the real kubernetes client: what the product relies on behaves like a real one."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream
from simcluster.cluster import SimCluster, shared_fixtures_dir

pytestmark = pytest.mark.integration

REAL = shared_fixtures_dir() / "cilium-dbg" / "real-1.15.1"


def real_output(name: str) -> tuple[str, int]:
    """A captured output file and the exit code recorded in its trailing ``exit=N`` line."""
    text = (REAL / name).read_text()
    body, _mark, code = text.rpartition("exit=")
    return body, int(code.strip())


def core(cluster: SimCluster, token: str | None = None) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client(token))


class ExecRun(NamedTuple):
    stdout: str
    stderr: str
    code: int | None
    status: dict


def run_exec(api: client.CoreV1Api, pod: str, argv: list[str], namespace: str = "kube-system",
             container: str = "cilium-agent") -> ExecRun:
    response = stream(api.connect_get_namespaced_pod_exec, pod, namespace, command=argv, container=container,
                      stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    response.run_forever(timeout=10)
    status = json.loads(response.read_channel(3))
    causes = (status.get("details") or {}).get("causes") or []
    code = 0 if status.get("status") == "Success" else (int(causes[0]["message"]) if causes else None)
    return ExecRun(response.read_stdout(), response.read_stderr(), code, status)


def agent_pod(cluster: SimCluster, node: str) -> str:
    pod = cluster.agent_pod_on(node)
    assert pod is not None
    return pod["metadata"]["name"]


def db_endpoint(cluster: SimCluster):
    return next(r for (ns, name), r in cluster.endpoints.items() if ns == "shop" and name.startswith("db-"))


def test_kubeconfig_loads_and_lists_the_seed_scenario(shared_cluster: SimCluster) -> None:
    api_client = config.new_client_from_config(shared_cluster.kubeconfig)
    api = client.CoreV1Api(api_client)
    nodes = [n.metadata.name for n in api.list_node().items]
    assert nodes == ["shared-worker-1", "shared-worker-2", "shared-worker-3"]
    agents = api.list_namespaced_pod("kube-system", label_selector="k8s-app=cilium").items
    assert sorted(p.spec.node_name for p in agents) == nodes
    assert all(p.spec.containers[0].name == "cilium-agent" for p in agents)
    shop = {p.metadata.labels["app"] for p in api.list_namespaced_pod("shop").items}
    assert shop == {"frontend", "backend", "db"}
    assert len({p.spec.node_name for p in api.list_namespaced_pod("shop").items}) == 3


def test_field_and_label_selectors_filter_like_the_api_server(shared_cluster: SimCluster) -> None:
    api = core(shared_cluster)
    node = "shared-worker-2"
    on_node = api.list_namespaced_pod("kube-system", label_selector="k8s-app=cilium",
                                      field_selector=f"spec.nodeName={node}").items
    assert [p.spec.node_name for p in on_node] == [node]
    not_db = api.list_namespaced_pod("shop", label_selector="app in (frontend,backend),app!=db").items
    assert {p.metadata.labels["app"] for p in not_db} == {"frontend", "backend"}
    with pytest.raises(ApiException) as error:
        api.list_namespaced_pod("shop", label_selector="app in (")
    assert error.value.status == 400


def test_errors_are_status_objects_like_the_real_api_server(shared_cluster: SimCluster) -> None:
    api = core(shared_cluster)
    with pytest.raises(ApiException) as error:
        api.read_namespaced_pod("nope", "shop")
    body = json.loads(error.value.body)
    assert error.value.status == 404
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'pods "nope" not found', "reason": "NotFound", "code": 404,
                    "details": {"name": "nope", "kind": "pods"}}
    with pytest.raises(ApiException) as error:
        api.create_namespace({"metadata": {"name": "shop"}})
    assert error.value.status == 409
    assert json.loads(error.value.body)["reason"] == "AlreadyExists"


def test_stale_resource_version_is_a_409_conflict(sim_cluster: SimCluster) -> None:
    api = core(sim_cluster)
    current = api.read_namespaced_config_map("cilium-config", "kube-system")
    api.patch_namespaced_config_map("cilium-config", "kube-system", {"data": {"debug": "false"}})
    with pytest.raises(ApiException) as error:
        api.patch_namespaced_config_map("cilium-config", "kube-system", {
            "metadata": {"resourceVersion": current.metadata.resource_version}, "data": {"debug": "true"}})
    assert error.value.status == 409
    assert json.loads(error.value.body)["reason"] == "Conflict"
    assert api.read_namespaced_config_map("cilium-config", "kube-system").data["debug"] == "false"


def test_patch_flavours_and_server_side_dry_run(sim_cluster: SimCluster) -> None:
    api = core(sim_cluster)
    apps = client.AppsV1Api(sim_cluster.api_client())
    dry = api.patch_namespaced_config_map("cilium-config", "kube-system", {"data": {"policy-audit-mode": "true"}},
                                          dry_run="All")
    assert dry.data["policy-audit-mode"] == "true"
    assert "policy-audit-mode" not in api.read_namespaced_config_map("cilium-config", "kube-system").data
    # strategic merge keeps the other containers' fields and merges containers by name
    apps.patch_namespaced_daemon_set("cilium", "kube-system", {"spec": {"template": {"spec": {"containers": [
        {"name": "cilium-agent", "env": [{"name": "GOMAXPROCS", "value": "2"}]}]}}}})
    container = apps.read_namespaced_daemon_set("cilium", "kube-system").spec.template.spec.containers[0]
    assert container.image == "quay.io/cilium/cilium:v1.15.1"
    assert container.env[0].name == "GOMAXPROCS"
    custom = client.CustomObjectsApi(sim_cluster.api_client())
    operations = [{"op": "replace", "path": "/spec/ingress/0/toPorts/0/ports/0/port", "value": "5433"}]
    with pytest.raises(ApiException) as error:  # a list is not a merge patch, as on a real API server
        custom.patch_namespaced_custom_object("cilium.io", "v2", "shop", "ciliumnetworkpolicies", "db-ingress",
                                              operations)
    assert error.value.status == 400
    policy = custom.patch_namespaced_custom_object("cilium.io", "v2", "shop", "ciliumnetworkpolicies", "db-ingress",
                                                   operations, _content_type="application/json-patch+json")
    assert policy["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"] == "5433"


def test_watch_streams_changes(sim_cluster: SimCluster) -> None:
    api = core(sim_cluster)
    version = api.list_namespaced_config_map("kube-system").metadata.resource_version
    api.patch_namespaced_config_map("cilium-config", "kube-system", {"data": {"debug": "true"}})
    events = list(watch.Watch().stream(api.list_namespaced_config_map, "kube-system",
                                       resource_version=version, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("MODIFIED", "cilium-config")]


def test_restricted_token_is_forbidden_with_a_real_message(shared_cluster: SimCluster) -> None:
    api = core(shared_cluster, shared_cluster.readonly_token)
    assert api.list_namespaced_pod("shop").items
    with pytest.raises(ApiException) as error:
        api.delete_namespaced_pod(agent_pod(shared_cluster, "shared-worker-1"), "kube-system")
    body = json.loads(error.value.body)
    assert error.value.status == 403
    assert body["message"].startswith('pods "cilium-')
    assert 'User "system:serviceaccount:netpol:readonly" cannot delete resource "pods" in API group ""' in (
        body["message"])


def test_crds_come_from_the_real_cilium_manifests(shared_cluster: SimCluster) -> None:
    ext = client.ApiextensionsV1Api(shared_cluster.api_client())
    names = sorted(c.metadata.name for c in ext.list_custom_resource_definition().items)
    assert names == ["ciliumendpoints.cilium.io", "ciliumnetworkpolicies.cilium.io", "ciliumnodeconfigs.cilium.io"]
    custom = client.CustomObjectsApi(shared_cluster.api_client())
    ceps = custom.list_namespaced_custom_object("cilium.io", "v2", "shop", "ciliumendpoints")["items"]
    db = next(c for c in ceps if c["metadata"]["name"].startswith("db-"))
    assert db["status"]["id"] == db_endpoint(shared_cluster).id
    assert db["status"]["external-identifiers"]["pod-name"] == f"shop/{db['metadata']['name']}"


def test_exec_returns_the_real_cilium_dbg_outputs_and_exit_codes(shared_cluster: SimCluster) -> None:
    api = core(shared_cluster)
    pod = agent_pod(shared_cluster, "shared-worker-1")
    run = run_exec(api, pod, ["cilium-dbg", "status", "--brief"])
    stdout, code = run.stdout, run.code
    expected, expected_code = real_output("status-brief.txt")
    assert (stdout, code) == (expected, expected_code)
    run = run_exec(api, pod, ["cilium-dbg", "endpoint", "get", "4000", "-o", "json"])
    stderr, code, status = run.stderr, run.code, run.status
    expected, expected_code = real_output("error-endpoint-get-unknown-id.txt")
    assert (stderr, code) == (expected, expected_code)
    assert status["reason"] == "NonZeroExitCode"
    run = run_exec(api, pod, ["cilium-dbg", "endpoint", "config", "99999", "PolicyAuditMode=Enabled"])
    stderr, code = run.stderr, run.code
    assert (stderr, code) == real_output("error-endpoint-config-id-too-large.txt")


def test_stream_returncode_property_reports_the_exit_code(shared_cluster: SimCluster) -> None:
    api = core(shared_cluster)
    pod = agent_pod(shared_cluster, "shared-worker-3")
    response = stream(api.connect_get_namespaced_pod_exec, pod, "kube-system",
                      command=["cilium-dbg", "endpoint", "config", "4000", "PolicyAuditMode=Enabled"],
                      container="cilium-agent", stderr=True, stdin=False, stdout=True, tty=False,
                      _preload_content=False)
    response.run_forever(timeout=10)
    expected, expected_code = real_output("error-endpoint-config-unknown-id.txt")
    assert response.read_stderr() == expected
    assert response.returncode == expected_code


def test_exec_of_a_missing_binary_fails_like_containerd(shared_cluster: SimCluster) -> None:
    api = core(shared_cluster)
    run = run_exec(api, agent_pod(shared_cluster, "shared-worker-1"), ["cilium", "status"])
    code, status = run.code, run.status
    assert code is None
    assert status["status"] == "Failure"
    assert 'exec: "cilium": executable file not found in $PATH' in status["message"]


def test_agent_restart_resets_endpoint_audit_mode_to_the_global_value(sim_cluster: SimCluster) -> None:
    api = core(sim_cluster)
    record = db_endpoint(sim_cluster)
    pod = agent_pod(sim_cluster, record.node)
    run = run_exec(api, pod, ["cilium-dbg", "endpoint", "config", str(record.id), "PolicyAuditMode=Enabled"])
    stdout, code = run.stdout, run.code
    assert (stdout, code) == (f"Endpoint {record.id} configuration updated successfully\n", 0)
    stdout = run_exec(api, pod, ["cilium-dbg", "endpoint", "get", str(record.id), "-o", "json"]).stdout
    model = json.loads(stdout)[0]
    assert model["spec"]["options"]["PolicyAuditMode"] == "Enabled"
    assert model["status"]["policy"]["realized"]["policy-enabled"] == "audit-ingress"
    api.delete_namespaced_pod(pod, "kube-system")
    sim_cluster.wait_for_agents()
    new_pod = agent_pod(sim_cluster, record.node)
    assert new_pod != pod
    stdout = run_exec(api, new_pod, ["cilium-dbg", "endpoint", "get", str(record.id), "-o", "json"]).stdout
    model = json.loads(stdout)[0]
    assert model["spec"]["options"]["PolicyAuditMode"] == "Disabled"
    assert model["status"]["policy"]["realized"]["policy-enabled"] == "ingress"


def test_global_config_applies_only_after_a_rolling_restart(sim_cluster: SimCluster) -> None:
    api = core(sim_cluster)
    apps = client.AppsV1Api(sim_cluster.api_client())
    api.patch_namespaced_config_map("cilium-config", "kube-system", {"data": {"policy-audit-mode": "true"}})
    node = db_endpoint(sim_cluster).node
    stdout = run_exec(api, agent_pod(sim_cluster, node), ["cilium-dbg", "config", "-o", "json"]).stdout
    assert json.loads(stdout)["PolicyAuditMode"] == "Disabled"  # not restarted yet
    generation = apps.patch_namespaced_daemon_set("cilium", "kube-system", {"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T00:00:00Z"}}}}}).metadata.generation
    seen_partial = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ds = apps.read_namespaced_daemon_set("cilium", "kube-system")
        status = ds.status
        if status.observed_generation == generation and 0 < (status.updated_number_scheduled or 0) < 3:
            seen_partial = True
        if (status.observed_generation == generation and status.updated_number_scheduled == 3
                and status.number_ready == 3):
            break
        time.sleep(0.02)
    assert seen_partial, "the rollout should replace agents node by node"
    assert status.number_available == 3
    for node_name in sim_cluster.node_names():
        stdout = run_exec(api, agent_pod(sim_cluster, node_name), ["cilium-dbg", "config", "-o", "json"]).stdout
        assert json.loads(stdout)["PolicyAuditMode"] == "Enabled"
    log = api.read_namespaced_pod_log(agent_pod(sim_cluster, node), "kube-system")
    assert "PolicyAuditMode is enabled. Network policy will not be enforced." in log


def test_ciliumnodeconfig_overrides_the_global_value_for_its_nodes(sim_cluster: SimCluster) -> None:
    custom = client.CustomObjectsApi(sim_cluster.api_client())
    custom.create_namespaced_custom_object("cilium.io", "v2alpha1", "kube-system", "ciliumnodeconfigs", {
        "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumNodeConfig", "metadata": {"name": "audit-worker-2"},
        "spec": {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "sim-worker-2"}},
                 "defaults": {"policy-audit-mode": "true"}}})
    api = core(sim_cluster)
    for node in ("sim-worker-1", "sim-worker-2"):
        api.delete_namespaced_pod(agent_pod(sim_cluster, node), "kube-system")
    sim_cluster.wait_for_agents()
    assert sim_cluster.agent("sim-worker-2").daemon_audit_mode() is True
    assert sim_cluster.agent("sim-worker-1").daemon_audit_mode() is False


def test_new_pods_take_the_agents_global_value(sim_cluster: SimCluster) -> None:
    api = core(sim_cluster)
    api.create_namespaced_pod("shop", {"metadata": {"name": "db-extra", "labels": {"app": "db"}},
                                       "spec": {"nodeName": "sim-worker-1",
                                                "containers": [{"name": "db", "image": "postgres:16"}]}})
    sim_cluster.wait_until(lambda: ("shop", "db-extra") in sim_cluster.endpoints, what="endpoint of db-extra")
    record = sim_cluster.endpoint("shop", "db-extra")
    assert sim_cluster.agent("sim-worker-1").endpoint_audit_mode(record.id) is False
    pod = api.read_namespaced_pod("db-extra", "shop")
    assert pod.status.phase == "Running" and pod.status.pod_ip == record.ipv4


def test_shell_in_the_agent_container_gets_its_arguments_as_argv(shared_cluster: SimCluster) -> None:
    api = core(shared_cluster)
    record = db_endpoint(shared_cluster)
    script = 'for id in "$@"; do cilium-dbg endpoint get "$id" -o jsonpath="{[*].id}"; echo; done'
    run = run_exec(api, agent_pod(shared_cluster, record.node),
                   ["sh", "-c", script, "sh", str(record.id), "$(touch /tmp/pwned)"])
    stdout, code = run.stdout, run.code
    assert code == 0
    assert stdout.splitlines()[0] == str(record.id)
    assert not Path("/tmp/pwned").exists()


def test_the_first_shells_of_a_fresh_cluster_all_reach_their_agents(sim_cluster: SimCluster) -> None:
    """Shells started at once in the agent containers of a fresh cluster (a batch on every node, as the product runs
    them) all run the agent binary as their agent has it: the binary is put in place once, whole, before any shell
    can run it. (Written while shells ran it, it could be read empty, and the command did nothing, with exit code 0.)"""
    nodes = sim_cluster.node_names() * 6
    start = threading.Barrier(len(nodes))

    def shell(node: str) -> tuple[str, str, int, str | None]:
        start.wait()
        return sim_cluster.run_in_container("kube-system", agent_pod(sim_cluster, node), "cilium-agent",
                                            ["sh", "-c", '"$0" endpoint list -o json', "cilium-dbg"])

    with ThreadPoolExecutor(len(nodes)) as pool:
        results = list(pool.map(shell, nodes))
    for node, (stdout, stderr, code, failure) in zip(nodes, results, strict=True):
        expected = sim_cluster.agent(node).exec(["cilium-dbg", "endpoint", "list", "-o", "json"])
        assert (code, failure, stderr) == (0, None, "")
        assert stdout == expected.stdout and json.loads(stdout)


def test_faults_can_be_switched_on_per_test(sim_cluster: SimCluster) -> None:
    api = core(sim_cluster)
    sim_cluster.faults.add_api_fault(503, verbs={"list"}, resources={"pods"}, count=1)
    with pytest.raises(ApiException) as error:
        api.list_namespaced_pod("shop")
    assert error.value.status == 503
    assert api.list_namespaced_pod("shop").items  # only one request failed
    from simcluster.faults import ExecFault

    node = db_endpoint(sim_cluster).node
    sim_cluster.faults.exec_by_node[node] = ExecFault("fail")
    run = run_exec(api, agent_pod(sim_cluster, node), ["cilium-dbg", "status", "--brief"])
    code, status = run.code, run.status
    assert code is None and "connection refused" in status["message"]
