"""The fake helm without a cluster: value rules, --set parsing, release encoding, chart resolution, rendering, the
release actions over in-memory storage, and the command line (flags, output formats, what kubernetes.core parses)."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from simcluster import fake_helm
from simcluster.fake_helm import (
    DeployOptions,
    HelmError,
    MemoryReleaseStorage,
    RecordingApplier,
    UpgradeRequest,
    build_chart,
    chart_default_values,
    coalesce_tables,
    coalesce_values,
    compute_upgrade_values,
    decode_release,
    encode_release,
    new_release,
    parse_set,
    release_history,
    render_configmap_data,
    render_objects,
    resolve_chart_ref,
    run_rollback,
    run_upgrade,
    secret_for_release,
    select_chart_version,
)

VERSIONS = ["1.14.19", "1.15.1", "1.15.6", "1.16.5"]
USER_CONFIG = {"cluster": {"name": "prod"}, "hubble": {"relay": {"enabled": True}}, "ipam": {"mode": "kubernetes"}}


# --------------------------------------------------------------------------------------------------------------
# --set parsing
# --------------------------------------------------------------------------------------------------------------


def test_set_types_scalars_like_helm() -> None:
    values = parse_set("a.b=true,c=1,d=null,e=007,f=1.5,g=,h=FALSE,i=-3,j=0")
    assert values == {"a": {"b": True}, "c": 1, "d": None, "e": "007", "f": "1.5", "g": "", "h": False, "i": -3,
                      "j": 0}


def test_set_string_keeps_strings() -> None:
    assert parse_set("policyAuditMode=true,replicas=2", mode="string") == {"policyAuditMode": "true",
                                                                           "replicas": "2"}


def test_set_parses_lists_indexes_and_escapes() -> None:
    assert parse_set("xs={a,b,1}") == {"xs": ["a", "b", 1]}
    assert parse_set("l[1].name=x") == {"l": [None, {"name": "x"}]}
    assert parse_set(r"nodeSelector.kubernetes\.io/os=linux") == {"nodeSelector": {"kubernetes.io/os": "linux"}}
    assert parse_set(r"msg=a\,b") == {"msg": "a,b"}


def test_set_merges_into_existing_values() -> None:
    values = {"hubble": {"enabled": True, "relay": {"enabled": False}}}
    parse_set("hubble.relay.enabled=true", values)
    assert values == {"hubble": {"enabled": True, "relay": {"enabled": True}}}


def test_set_literal_and_json() -> None:
    assert parse_set("k=a,b=c", mode="literal") == {"k": "a,b=c"}
    assert parse_set('a={"b":[1,2],"c":null}', mode="json") == {"a": {"b": [1, 2], "c": None}}


@pytest.mark.parametrize("text", ["noval", "a.b", "a=1,b"])
def test_set_without_value_is_an_error(text: str) -> None:
    with pytest.raises(HelmError, match="has no value"):
        parse_set(text)


def test_value_flags_apply_in_helms_order(tmp_path: Any) -> None:
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text("hubble:\n  relay:\n    enabled: true\n  ui:\n    enabled: true\npolicyAuditMode: false\n")
    second.write_text("hubble:\n  ui:\n    enabled: false\n")
    options = fake_helm.ValueOptions(value_files=[str(first), str(second)], values=["policyAuditMode=true"],
                                     string_values=["cluster.id=7"])
    assert fake_helm.merge_value_options(options) == {
        "hubble": {"relay": {"enabled": True}, "ui": {"enabled": False}}, "policyAuditMode": True,
        "cluster": {"id": "7"}}


def test_values_file_that_is_not_a_map_is_rejected(tmp_path: Any) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n")
    with pytest.raises(HelmError, match="cannot unmarshal"):
        fake_helm.merge_value_options(fake_helm.ValueOptions(value_files=[str(path)]))


# --------------------------------------------------------------------------------------------------------------
# Coalescing and the upgrade value rules
# --------------------------------------------------------------------------------------------------------------


def test_coalesce_values_user_wins_and_null_deletes_a_default() -> None:
    chart = {"a": 1, "nested": {"x": 1, "y": 2}, "gone": "default"}
    user = {"a": 5, "nested": {"y": None, "z": 3}, "gone": None}
    assert coalesce_values(chart, user) == {"a": 5, "nested": {"x": 1, "z": 3}}


def test_coalesce_tables_does_not_mutate_its_inputs() -> None:
    dst, src = {"a": {"b": 1}}, {"a": {"c": 2}}
    assert coalesce_tables(dst, src) == {"a": {"b": 1, "c": 2}}
    assert dst == {"a": {"b": 1}} and src == {"a": {"c": 2}}


def _upgrade(new_values: dict[str, Any], **flags: bool) -> fake_helm.UpgradeValues:
    return compute_upgrade_values(new_chart_defaults=chart_default_values("1.16.5"),
                                  current_chart_values=chart_default_values("1.15.1"),
                                  current_config=USER_CONFIG, new_values=new_values, **flags)


AUDIT_ON = {"policyAuditMode": True}
MERGED = dict(USER_CONFIG, policyAuditMode=True)


@pytest.mark.parametrize(("flags", "config", "image_tag", "mode"), [
    ({"reset_values": True}, AUDIT_ON, "v1.16.5", "reset"),
    ({"reuse_values": True}, MERGED, "v1.15.1", "reuse"),
    ({"reset_then_reuse_values": True}, MERGED, "v1.16.5", "reset-then-reuse"),
    ({}, AUDIT_ON, "v1.16.5", "supplied"),
    # --reset-values wins over the two reuse flags; --reuse-values wins over --reset-then-reuse-values
    ({"reset_values": True, "reuse_values": True}, AUDIT_ON, "v1.16.5", "reset"),
    ({"reset_values": True, "reset_then_reuse_values": True}, AUDIT_ON, "v1.16.5", "reset"),
    ({"reuse_values": True, "reset_then_reuse_values": True}, MERGED, "v1.15.1", "reuse"),
])
def test_upgrade_value_matrix(flags: dict[str, bool], config: dict[str, Any], image_tag: str, mode: str) -> None:
    result = _upgrade(AUDIT_ON, **flags)
    assert result.config == config
    assert result.mode == mode
    # --reuse-values keeps the old chart's computed values as chart values: new chart defaults are NOT picked up
    assert result.chart_values["image"]["tag"] == image_tag


def test_upgrade_without_values_or_flags_copies_the_previous_config() -> None:
    result = _upgrade({})
    assert result.config == USER_CONFIG
    assert result.mode == "copied"


def test_reset_values_without_new_values_goes_back_to_chart_defaults() -> None:
    result = _upgrade({}, reset_values=True)
    assert result.config == {}
    assert coalesce_values(result.chart_values, result.config)["cluster"]["name"] == "default"


def test_reuse_values_computes_old_chart_values_with_old_config() -> None:
    result = _upgrade(AUDIT_ON, reuse_values=True)
    assert result.chart_values["cluster"]["name"] == "prod"
    assert result.chart_values["hubble"]["relay"]["enabled"] is True


def test_reuse_values_with_null_removes_a_previous_user_value() -> None:
    result = _upgrade({"hubble": {"relay": {"enabled": None}}}, reuse_values=True)
    assert result.config == {"cluster": {"name": "prod"}, "hubble": {"relay": {}}, "ipam": {"mode": "kubernetes"}}


def test_null_for_a_key_nobody_set_survives_coalescing() -> None:
    """Helm deletes a null only where the other side has the key; ``policyAuditMode`` is in neither the previous
    config nor the chart, so ``--set policyAuditMode=null`` keeps the key and ``hasKey`` renders it empty."""
    result = _upgrade({"policyAuditMode": None}, reuse_values=True)
    assert result.config["policyAuditMode"] is None
    assert render_configmap_data(coalesce_values(result.chart_values, result.config))["policy-audit-mode"] == ""


# --------------------------------------------------------------------------------------------------------------
# Release encoding
# --------------------------------------------------------------------------------------------------------------


def _release(version: int = 1, config: dict[str, Any] | None = None, chart_version: str = "1.15.1",
             status: str = "deployed", namespace: str = "kube-system") -> dict[str, Any]:
    return new_release(name="cilium", namespace=namespace, version=version, chart=build_chart(chart_version),
                       config=config if config is not None else USER_CONFIG, status=status,
                       description="Install complete")


def test_release_round_trips_through_helms_storage_encoding() -> None:
    release = _release()
    encoded = encode_release(release)
    assert base64.b64decode(encoded)[:3] == b"\x1f\x8b\x08"
    assert decode_release(encoded) == release


def test_release_json_has_helm_3_fields() -> None:
    release = _release()
    assert list(release) == ["name", "info", "chart", "config", "manifest", "version", "namespace"]
    assert set(release["info"]) == {"first_deployed", "last_deployed", "deleted", "description", "status", "notes"}
    assert release["info"]["deleted"] == ""
    assert release["chart"]["metadata"]["appVersion"] == "1.15.1"
    assert "policyAuditMode" not in release["chart"]["values"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", release["info"]["last_deployed"])


def test_release_without_user_values_omits_config() -> None:
    assert "config" not in _release(config={})


def test_secret_layout_matches_the_secrets_driver() -> None:
    secret = secret_for_release(_release(version=3), created=True, unix_time=1700000000)
    assert secret["metadata"]["name"] == "sh.helm.release.v1.cilium.v3"
    assert secret["type"] == "helm.sh/release.v1"
    assert secret["metadata"]["labels"] == {"name": "cilium", "owner": "helm", "status": "deployed", "version": "3",
                                            "createdAt": "1700000000"}
    helm_string = base64.b64decode(secret["data"]["release"])  # what the API base64-encodes once more
    payload = json.loads(gzip.decompress(base64.b64decode(helm_string)))
    assert payload["version"] == 3 and payload["config"] == USER_CONFIG
    updated = secret_for_release(_release(version=3), created=False, unix_time=1700000001)
    assert "createdAt" not in updated["metadata"]["labels"]
    assert updated["metadata"]["labels"]["modifiedAt"] == "1700000001"


# --------------------------------------------------------------------------------------------------------------
# Chart references and versions
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "pinned"), [
    ("cilium/cilium", None), ("my-mirror/cilium", None), ("oci://quay.io/cilium/charts/cilium", None),
    ("oci://quay.io/cilium/charts/cilium:1.15.6", "1.15.6"), ("./charts/cilium", None), ("/opt/charts/cilium/", None),
    ("cilium", None), ("charts/cilium-1.14.19.tgz", "1.14.19"),
    ("https://example.invalid/cilium-1.15.1.tgz", "1.15.1"),
])
def test_chart_references_that_resolve_to_cilium(ref: str, pinned: str | None) -> None:
    chart = resolve_chart_ref(ref)
    assert chart.name == "cilium"
    assert chart.pinned_version == pinned


@pytest.mark.parametrize("ref", ["bitnami/redis", "oci://registry/charts/tetragon", "./charts/hubble", "x-1.0.0.tgz"])
def test_other_charts_are_unknown(ref: str) -> None:
    with pytest.raises(HelmError):
        resolve_chart_ref(ref)


def test_repo_flag_with_bare_chart_name() -> None:
    assert resolve_chart_ref("cilium", "https://helm.cilium.io/").repo == "https://helm.cilium.io/"


@pytest.mark.parametrize(("constraint", "chosen"), [
    (None, "1.16.5"), ("", "1.16.5"), ("1.15.1", "1.15.1"), ("v1.15.1", "1.15.1"), ("~1.15", "1.15.6"),
    ("1.15.x", "1.15.6"), ("1.14", "1.14.19"), ("^1.14.0", "1.16.5"), (">=1.14 <1.15", "1.14.19"),
    (">=1.14.0, <1.16.0", "1.15.6"), ("<1.15 || 1.16.x", "1.16.5"), ("9.9.9", None), ("!=1.16.5", "1.15.6"),
])
def test_version_selection(constraint: str | None, chosen: str | None) -> None:
    assert select_chart_version(VERSIONS, constraint) == chosen


def test_no_version_means_the_newest_chart() -> None:
    """The danger the product must avoid: an unpinned upgrade takes the newest Cilium."""
    chart = resolve_chart_ref("cilium/cilium")
    assert fake_helm.chart_version_for(chart, None, env={}) == "1.16.5"


def test_unknown_version_fails_like_helm() -> None:
    with pytest.raises(HelmError, match=r'chart "cilium" matching 9\.9\.9 not found'):
        fake_helm.chart_version_for(resolve_chart_ref("cilium/cilium"), "9.9.9", env={})


def test_repository_versions_can_be_overridden() -> None:
    env = {"FAKE_HELM_CHART_VERSIONS": "1.15.1,1.17.0"}
    assert fake_helm.chart_version_for(resolve_chart_ref("cilium/cilium"), None, env=env) == "1.17.0"


# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------


def _computed(config: dict[str, Any], version: str = "1.15.1") -> dict[str, Any]:
    return coalesce_values(chart_default_values(version), config)


@pytest.mark.parametrize(("config", "expected"), [
    ({}, None), ({"policyAuditMode": True}, "true"), ({"policyAuditMode": False}, "false"),
    ({"policyAuditMode": "true"}, "true"), ({"policyAuditMode": 1}, "1"),
])
def test_policy_audit_mode_key_exists_only_when_the_value_is_set(config: dict[str, Any], expected: str | None) -> None:
    data = render_configmap_data(_computed(config))
    assert data.get("policy-audit-mode") == expected
    assert data["enable-hubble"] == "true"
    assert data["ipam"] == "cluster-pool"


def test_rendering_keeps_user_values() -> None:
    data = render_configmap_data(_computed(USER_CONFIG))
    assert data["cluster-name"] == "prod"
    assert data["ipam"] == "kubernetes"


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def test_images_follow_the_chart_version() -> None:
    objects = _by_kind(render_objects("cilium", "kube-system", "1.16.5", _computed({}, "1.16.5")))
    agent = objects["DaemonSet/cilium"]["spec"]["template"]["spec"]["containers"][0]
    operator = objects["Deployment/cilium-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert agent == {"name": "cilium-agent", "image": "quay.io/cilium/cilium:v1.16.5"}
    assert operator["image"] == "quay.io/cilium/operator-generic:v1.16.5"


def test_rendered_objects_carry_helm_ownership() -> None:
    for obj in render_objects("cilium", "kube-system", "1.15.1", _computed({})):
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert obj["metadata"]["annotations"] == {"meta.helm.sh/release-name": "cilium",
                                                  "meta.helm.sh/release-namespace": "kube-system"}


def _checksum(config: dict[str, Any]) -> str | None:
    objects = _by_kind(render_objects("cilium", "kube-system", "1.15.1", _computed(config)))
    annotations = objects["DaemonSet/cilium"]["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations.get(fake_helm.CHECKSUM_ANNOTATION)


def test_config_checksum_annotation_only_with_roll_out_cilium_pods() -> None:
    assert _checksum({"policyAuditMode": True}) is None
    on = _checksum({"rollOutCiliumPods": True, "policyAuditMode": True})
    off = _checksum({"rollOutCiliumPods": True, "policyAuditMode": False})
    assert on and off and on != off and re.fullmatch(r"[0-9a-f]{64}", on)
    # Go template truth: the *string* "false" is true
    assert _checksum({"rollOutCiliumPods": "false"}) is not None


def test_hubble_relay_is_rendered_only_when_enabled() -> None:
    assert "Deployment/hubble-relay" not in _by_kind(render_objects("cilium", "ns", "1.15.1", _computed({})))
    relay = _by_kind(render_objects("cilium", "ns", "1.15.1", _computed(USER_CONFIG)))["Deployment/hubble-relay"]
    assert relay["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/cilium/hubble-relay:v1.15.1"


def test_manifest_parses_back_to_the_objects() -> None:
    release = _release()
    assert fake_helm.objects_from_manifest(release["manifest"]) == fake_helm.release_objects(release)
    assert "# Source: cilium/templates/cilium-configmap.yaml" in release["manifest"]


def test_patch_removes_only_keys_the_previous_release_rendered() -> None:
    """Helm's three-way merge: a key the old manifest had and the new one lacks is deleted; a key only the live
    object has (say, from ``kubectl patch``) is left alone."""
    with_audit = _by_kind(render_objects("cilium", "ns", "1.15.1", _computed({"policyAuditMode": True})))
    without = _by_kind(render_objects("cilium", "ns", "1.15.1", _computed({})))
    live = {"data": {"policy-audit-mode": "true"}}
    patch = fake_helm.KubeClusterApplier._patch_for(without["ConfigMap/cilium-config"],
                                                    with_audit["ConfigMap/cilium-config"], live)
    assert patch["data"]["policy-audit-mode"] is None
    patch = fake_helm.KubeClusterApplier._patch_for(without["ConfigMap/cilium-config"],
                                                    without["ConfigMap/cilium-config"], live)
    assert "policy-audit-mode" not in patch["data"]


def test_daemonset_patch_touches_the_pod_template_annotation_only_when_the_chart_does() -> None:
    plain = _by_kind(render_objects("cilium", "ns", "1.15.1", _computed({})))["DaemonSet/cilium"]
    rolled = _by_kind(render_objects("cilium", "ns", "1.15.1", _computed({"rollOutCiliumPods": True})))[
        "DaemonSet/cilium"]
    live_plain: dict[str, Any] = {"spec": {"template": {"metadata": {"annotations": {}}}}}
    patch = fake_helm.KubeClusterApplier._patch_for(plain, plain, live_plain)
    assert "metadata" not in patch["spec"]["template"]
    assert patch["spec"]["template"]["spec"]["containers"] == [{"name": "cilium-agent",
                                                                "image": "quay.io/cilium/cilium:v1.15.1"}]
    patch = fake_helm.KubeClusterApplier._patch_for(rolled, plain, live_plain)
    assert fake_helm.CHECKSUM_ANNOTATION in patch["spec"]["template"]["metadata"]["annotations"]
    live_rolled = {"spec": {"template": {"metadata": {"annotations": {fake_helm.CHECKSUM_ANNOTATION: "x"}}}}}
    patch = fake_helm.KubeClusterApplier._patch_for(plain, rolled, live_rolled)
    assert patch["spec"]["template"]["metadata"]["annotations"] == {fake_helm.CHECKSUM_ANNOTATION: None}


@pytest.mark.parametrize(("obj", "ready"), [
    ({"kind": "DaemonSet", "metadata": {"generation": 2}, "spec": {},
      "status": {"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                 "numberReady": 2}}, True),
    ({"kind": "DaemonSet", "metadata": {"generation": 2}, "spec": {},
      "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                 "numberReady": 3}}, False),
    ({"kind": "DaemonSet", "metadata": {"generation": 1}, "spec": {},
      "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 2,
                 "numberReady": 3}}, False),
    ({"kind": "Deployment", "metadata": {"generation": 1}, "spec": {"replicas": 2},
      "status": {"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2}}, True),
    ({"kind": "Deployment", "metadata": {"generation": 1}, "spec": {"replicas": 2},
      "status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 2}}, False),
])
def test_wait_readiness(obj: dict[str, Any], ready: bool) -> None:
    assert fake_helm.workload_ready(obj) is ready


# --------------------------------------------------------------------------------------------------------------
# Release actions over in-memory storage
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def storage() -> MemoryReleaseStorage:
    store = MemoryReleaseStorage("kube-system")
    store.create(_release())
    return store


def _request(chart_version: str = "1.15.1", values: dict[str, Any] | None = None, **flags: bool) -> UpgradeRequest:
    values = AUDIT_ON if values is None else values
    return UpgradeRequest(name="cilium", namespace="kube-system", chart_version=chart_version, values=dict(values),
                          values_given=bool(values), **flags)


def _statuses(store: MemoryReleaseStorage) -> list[tuple[int, str]]:
    return [(r["version"], r["info"]["status"]) for r in release_history(store, "cilium")]


def test_upgrade_supersedes_the_previous_revision(storage: MemoryReleaseStorage) -> None:
    applier = RecordingApplier()
    release = run_upgrade(storage, applier, _request(reuse_values=True), DeployOptions(), env={})
    assert _statuses(storage) == [(1, "superseded"), (2, "deployed")]
    assert release["info"]["description"] == "Upgrade complete"
    assert release["config"] == MERGED
    assert applier.calls == [("apply", 2)]


def test_failed_upgrade_records_a_failed_revision(storage: MemoryReleaseStorage) -> None:
    with pytest.raises(HelmError, match="^UPGRADE FAILED: "):
        run_upgrade(storage, RecordingApplier(fail_on="apply"), _request(), DeployOptions(), env={})
    assert _statuses(storage) == [(1, "deployed"), (2, "failed")]
    failed = release_history(storage, "cilium")[-1]
    assert failed["info"]["description"].startswith('Upgrade "cilium" failed: ')


def test_fail_upgrade_knob_fails_before_touching_objects(storage: MemoryReleaseStorage) -> None:
    applier = RecordingApplier()
    with pytest.raises(HelmError, match="FAKE_HELM_FAIL_UPGRADE"):
        run_upgrade(storage, applier, _request(), DeployOptions(), env={"FAKE_HELM_FAIL_UPGRADE": "1"})
    assert applier.calls == []
    assert _statuses(storage) == [(1, "deployed"), (2, "failed")]


def test_atomic_upgrade_rolls_back_to_the_last_good_revision(storage: MemoryReleaseStorage) -> None:
    applier = RecordingApplier()
    with pytest.raises(HelmError, match="rolled back due to atomic being set: context deadline exceeded"):
        run_upgrade(storage, applier, _request(), DeployOptions(atomic=True), env={"FAKE_HELM_FAIL_UPGRADE": "after"})
    assert _statuses(storage) == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    rollback = release_history(storage, "cilium")[-1]
    assert rollback["info"]["description"] == "Rollback to 1"
    assert rollback["config"] == USER_CONFIG


def test_upgrade_after_a_failure_starts_from_the_deployed_revision(storage: MemoryReleaseStorage) -> None:
    with pytest.raises(HelmError):
        run_upgrade(storage, RecordingApplier(), _request(values={"debug": {"enabled": True}}), DeployOptions(),
                    env={"FAKE_HELM_FAIL_UPGRADE": "1"})
    release = run_upgrade(storage, RecordingApplier(), _request(reuse_values=True), DeployOptions(), env={})
    assert release["version"] == 3
    assert release["config"] == MERGED
    assert _statuses(storage) == [(1, "superseded"), (2, "failed"), (3, "deployed")]


def test_upgrade_of_a_missing_release(storage: MemoryReleaseStorage) -> None:
    request = dataclasses.replace(_request(), name="nope")
    with pytest.raises(HelmError, match='UPGRADE FAILED: "nope" has no deployed releases'):
        run_upgrade(storage, RecordingApplier(), request, DeployOptions(), env={})


def test_rollback_creates_a_new_revision_from_the_old_one(storage: MemoryReleaseStorage) -> None:
    run_upgrade(storage, RecordingApplier(), _request("1.16.5", reset_values=True), DeployOptions(), env={})
    release = run_rollback(storage, RecordingApplier(), "cilium", 0, DeployOptions(), env={})
    assert release["version"] == 3
    assert release["info"]["description"] == "Rollback to 1"
    assert release["chart"]["metadata"]["version"] == "1.15.1"
    assert release["config"] == USER_CONFIG
    assert _statuses(storage) == [(1, "superseded"), (2, "superseded"), (3, "deployed")]


def test_rollback_to_a_missing_revision(storage: MemoryReleaseStorage) -> None:
    with pytest.raises(HelmError, match="release has no 7 version"):
        run_rollback(storage, RecordingApplier(), "cilium", 7, DeployOptions(), env={})


def test_fail_rollback_knob(storage: MemoryReleaseStorage) -> None:
    run_upgrade(storage, RecordingApplier(), _request(), DeployOptions(), env={})
    with pytest.raises(HelmError, match="FAKE_HELM_FAIL_ROLLBACK"):
        run_rollback(storage, RecordingApplier(), "cilium", 1, DeployOptions(), env={"FAKE_HELM_FAIL_ROLLBACK": "1"})
    assert _statuses(storage) == [(1, "superseded"), (2, "superseded"), (3, "failed")]
    assert release_history(storage, "cilium")[-1]["info"]["description"].startswith('Rollback "cilium" failed: ')


def test_history_is_pruned_to_history_max(storage: MemoryReleaseStorage) -> None:
    for _attempt in range(5):
        run_upgrade(storage, RecordingApplier(), _request(), DeployOptions(history_max=3), env={})
    assert [version for version, _status in _statuses(storage)] == [4, 5, 6]


def test_list_shows_the_latest_revision_in_default_states() -> None:
    releases = [_release(1, status="superseded"), _release(2, status="failed"),
                _release(1, status="deployed", namespace="other")]
    listed = fake_helm.list_releases(releases)
    assert [(r["namespace"], r["version"], r["info"]["status"]) for r in listed] == [
        ("kube-system", 2, "failed"), ("other", 1, "deployed")]
    assert fake_helm.list_releases(releases, states=["deployed"]) == [releases[2]]
    assert fake_helm.list_releases(releases, states=["superseded"]) == [releases[0]]
    assert fake_helm.list_releases(releases, filter_regex="^hubble") == []


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = fake_helm.main(argv, env=env or {}, stdout=out, stderr=err, stdin=io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


def test_version_output_is_what_kubernetes_core_parses() -> None:
    code, out, _err = run(["version"])
    assert code == 0
    match = re.match(r'version.BuildInfo{Version:"v(.*?)",', out)
    assert match and match.group(1) == fake_helm.HELM_VERSION[1:]
    assert run(["version", "--short"])[1].startswith(fake_helm.HELM_VERSION + "+g")
    assert run(["version", "--template", "{{ .Version }}"])[1] == fake_helm.HELM_VERSION + "\n"


def test_unknown_command_and_flags_fail_like_cobra() -> None:
    assert run(["frobnicate"]) == (1, "", "Error: unknown command \"frobnicate\" for \"helm\"\n"
                                          "Run 'helm --help' for usage.\n")
    code, _out, err = run(["list", "--nope"])
    assert code == 1 and err == "Error: unknown flag: --nope\n"
    code, _out, err = run(["upgrade", "cilium"])
    assert code == 1 and err.startswith('Error: "helm upgrade" requires 2 arguments')
    code, _out, err = run(["install", "--reuse-values", "x", "cilium/cilium"])
    assert code == 1 and "unknown flag: --reuse-values" in err


def test_flags_are_parsed_like_pflag() -> None:
    parsed = fake_helm.parse_command_line(["--version=1.15.1", "upgrade", "-i", "--reset-values",
                                           "--reuse-values=True", "-f=v.yml", "--values", "a.yml,b.yml",
                                           "--set", "a=1,b=2", "--timeout", "5m0s", "-nkube-system", "cilium",
                                           "cilium/cilium"])
    assert parsed.command == "upgrade"
    assert parsed.args == ["cilium", "cilium/cilium"]
    assert parsed["version"] == "1.15.1" and parsed["install"] and parsed["reset-values"] and parsed["reuse-values"]
    assert parsed["values"] == ["v.yml", "a.yml", "b.yml"]
    assert parsed["set"] == ["a=1,b=2"]
    assert parsed["namespace"] == "kube-system"
    assert fake_helm.parse_command_line(["upgrade", "--reuse-values=false", "a", "b"])["reuse-values"] is False
    with pytest.raises(HelmError, match='invalid argument "maybe" for "--wait" flag'):
        fake_helm.parse_command_line(["upgrade", "--wait=maybe", "a", "b"])
    with pytest.raises(HelmError, match='missing unit in duration "300"'):
        fake_helm.parse_command_line(["upgrade", "--timeout", "300", "a", "b"])


@pytest.mark.parametrize(("text", "seconds"), [("5m0s", 300), ("1h30m", 5400), ("500ms", 0.5), ("0", 0),
                                               ("1.5s", 1.5)])
def test_go_durations(text: str, seconds: float) -> None:
    assert fake_helm.parse_duration(text) == seconds


def test_show_chart_with_flags_before_the_command() -> None:
    code, out, _err = run(["--version=1.15.1", "show", "chart", "cilium/cilium"])
    assert code == 0
    chart = yaml.safe_load(out)
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("cilium", "1.15.1", "1.15.1")
    assert yaml.safe_load(run(["show", "chart", "cilium/cilium"])[1])["version"] == "1.16.5"
    assert "policyAuditMode" not in yaml.safe_load(run(["show", "values", "cilium/cilium"])[1])
    code, _out, err = run(["show", "chart", "cilium/cilium", "--version", "1.2.3"])
    assert code == 1 and err.startswith('Error: chart "cilium" matching 1.2.3 not found')


def test_plugin_list_parses_with_kubernetes_cores_parser() -> None:
    def parse(output: str) -> list[tuple[str, str, str]]:  # the shape of module_utils/helm.py's parser
        rows = []
        for line in output.splitlines():
            if line.startswith("NAME"):
                continue
            name, version, description = line.split("\t", 3)
            rows.append((name.strip(), version.strip(), description.strip()))
        return rows

    assert run(["plugin", "list"]) == (0, "NAME\tVERSION\tDESCRIPTION\n", "")
    listed = parse(run(["plugin", "list"], env={"FAKE_HELM_PLUGINS": "diff"})[1])
    assert listed[0][:2] == ("diff", fake_helm.HELM_DIFF_VERSION)
    assert run(["diff", "upgrade", "cilium", "cilium/cilium"])[2].startswith('Error: unknown command "diff"')


def test_every_invocation_is_logged(tmp_path: Any) -> None:
    log = tmp_path / "helm.log"
    run(["version", "--short"], env={"FAKE_HELM_LOG": str(log)})
    run(["nope"], env={"FAKE_HELM_LOG": str(log)})
    assert [json.loads(line) for line in log.read_text().splitlines()] == [["version", "--short"], ["nope"]]


def test_template_renders_without_a_cluster() -> None:
    code, out, _err = run(["template", "cilium", "cilium/cilium", "--version", "1.15.1", "-n", "kube-system",
                           "--set", "policyAuditMode=true"])
    assert code == 0
    docs = {d["kind"]: d for d in yaml.safe_load_all(out)}
    assert docs["ConfigMap"]["data"]["policy-audit-mode"] == "true"


# --- commands over in-memory storage (the cluster parts replaced) ---------------------------------------------


@pytest.fixture
def memory_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryReleaseStorage]:
    backing = MemoryReleaseStorage()
    backing.scoped("kube-system").create(_release())
    applier = RecordingApplier()

    def storage(self: fake_helm.Invocation, all_namespaces: bool = False) -> MemoryReleaseStorage:
        return backing.scoped(None if all_namespaces else self.namespace)

    monkeypatch.setattr(fake_helm.Invocation, "storage", storage)
    monkeypatch.setattr(fake_helm.Invocation, "applier", lambda self: applier)
    monkeypatch.setattr(fake_helm.HelmSettings, "kubeconfig_path", lambda self, env: None)
    yield backing


def test_cli_list_outputs(memory_cli: MemoryReleaseStorage) -> None:
    code, out, _err = run(["list", "--output=yaml", "--filter", "cilium"], env={"HELM_NAMESPACE": "kube-system"})
    assert code == 0
    (element,) = yaml.safe_load(out)
    assert element["name"] == "cilium" and element["revision"] == "1" and element["chart"] == "cilium-1.15.1"
    assert element["app_version"] == "1.15.1" and element["status"] == "deployed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC", element["updated"])
    assert json.loads(run(["list", "-o", "json"])[1]) == []  # namespace "default" holds nothing
    assert len(json.loads(run(["list", "-A", "-o", "json"])[1])) == 1
    table = run(["ls", "-A"])[1].splitlines()
    assert table[0].split() == ["NAME", "NAMESPACE", "REVISION", "UPDATED", "STATUS", "CHART", "APP", "VERSION"]


def test_cli_get_values_outputs(memory_cli: MemoryReleaseStorage) -> None:
    env = {"HELM_NAMESPACE": "kube-system"}
    assert yaml.safe_load(run(["get", "values", "--output=yaml", "cilium"], env=env)[1]) == USER_CONFIG
    assert run(["get", "values", "cilium", "-n", "kube-system"])[1].startswith("USER-SUPPLIED VALUES:\n")
    computed = json.loads(run(["get", "values", "cilium", "-a", "-o", "json"], env=env)[1])
    assert computed["cluster"]["name"] == "prod" and computed["image"]["tag"] == "v1.15.1"
    assert run(["get", "values", "nope", "-n", "kube-system"]) == (1, "", "Error: release: not found\n")


def test_cli_upgrade_without_user_values_prints_null(memory_cli: MemoryReleaseStorage) -> None:
    env = {"HELM_NAMESPACE": "kube-system"}
    code, out, _err = run(["upgrade", "cilium", "cilium/cilium", "--version", "1.15.1", "--reset-values"], env=env)
    assert code == 0 and out.startswith('Release "cilium" has been upgraded. Happy Helming!\nNAME: cilium\n')
    assert run(["get", "values", "cilium", "-o", "yaml"], env=env)[1] == "null\n"


def test_cli_history_and_status(memory_cli: MemoryReleaseStorage) -> None:
    env = {"HELM_NAMESPACE": "kube-system"}
    run(["upgrade", "cilium", "cilium/cilium", "--reuse-values", "--set", "policyAuditMode=true"], env=env)
    history = json.loads(run(["history", "cilium", "-o", "json"], env=env)[1])
    assert [(h["revision"], h["status"], h["chart"], h["app_version"], h["description"]) for h in history] == [
        (1, "superseded", "cilium-1.15.1", "1.15.1", "Install complete"),
        (2, "deployed", "cilium-1.16.5", "1.16.5", "Upgrade complete")]
    status = json.loads(run(["status", "cilium", "-o", "json"], env=env)[1])
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    assert status["config"]["policyAuditMode"] is True
    text = run(["status", "cilium"], env=env)[1]
    assert "STATUS: deployed\nREVISION: 2\n" in text
    meta = json.loads(run(["get", "metadata", "cilium", "-o", "json"], env=env)[1])
    assert (meta["chart"], meta["version"], meta["revision"]) == ("cilium", "1.16.5", 2)


def test_cli_upgrade_install_of_a_new_release(memory_cli: MemoryReleaseStorage) -> None:
    code, out, _err = run(["upgrade", "--install", "cilium", "cilium/cilium", "-n", "other", "--version", "1.14.19"])
    assert code == 0 and out.startswith('Release "cilium" does not exist. Installing it now.\n')
    (element,) = json.loads(run(["list", "-n", "other", "-o", "json"])[1])
    assert element["chart"] == "cilium-1.14.19"


def test_cli_diff_plugin(memory_cli: MemoryReleaseStorage) -> None:
    env = {"HELM_NAMESPACE": "kube-system", "FAKE_HELM_PLUGINS": "diff"}
    code, out, _err = run(["diff", "upgrade", "cilium", "cilium/cilium", "--version=1.15.1",
                           "--reset-values=False", "--reuse-values", "--set", "policyAuditMode=true"], env=env)
    assert code == 0
    assert "kube-system, cilium-config, ConfigMap (v1) has changed:" in out
    assert "+   policy-audit-mode: 'true'" in out
    code, out, _err = run(["diff", "upgrade", "cilium", "cilium/cilium", "--version=1.15.1", "--reuse-values"], env=env)
    assert (code, out) == (0, "")
