"""Parsing the agent CLI's answers (against real captured output) and building its argv."""

from __future__ import annotations

import pytest

from simcluster.fixtures import shared_fixtures_dir

from ansible_collections.netpol.cilium.plugins.module_utils import _cilium_dbg as dbg

REAL = shared_fixtures_dir() / "cilium-dbg" / "real-1.15.1"


def real(name: str) -> str:
    return (REAL / name).read_text()


def test_reads_audit_mode_and_policy_enabled_from_a_real_pod_endpoint() -> None:
    [audited] = dbg.parse_endpoints(real("endpoint-get-pod-audit.json"), "endpoint get")
    [enforced] = dbg.parse_endpoints(real("endpoint-get-pod-enforced.json"), "endpoint get")
    assert (audited.id, audited.namespace, audited.pod) == (1742, "shop", "db-real")
    assert (audited.audit_mode, audited.policy_enabled) == (True, "audit-ingress")
    assert (enforced.audit_mode, enforced.policy_enabled) == (False, "ingress")
    assert audited.identity == 60273 and audited.ipv4 == "10.200.1.201"
    assert audited.enforced and not audited.is_host


def test_host_endpoint_without_policy_shows_none_even_in_audit_mode() -> None:
    [host] = dbg.parse_endpoints(real("endpoint-get-host-audit.json"), "endpoint get")
    assert host.is_host and host.audit_mode is True
    assert host.policy_enabled == "none" and not host.enforced
    assert (host.namespace, host.pod) == (None, None)


def test_endpoint_list_json_is_an_array() -> None:
    endpoints = dbg.parse_endpoints(real("endpoint-list.json"))
    assert [e.id for e in endpoints] == [167]


def test_daemon_config_audit_mode() -> None:
    assert dbg.parse_daemon_config(real("config.json"))["audit_mode"] is False
    assert dbg.parse_daemon_config(real("config-global-audit.json"))["audit_mode"] is True


@pytest.mark.parametrize("garbage", ["", "panic: runtime error", "{\"trunc", "[1, 2]"])
def test_garbage_output_is_refused_with_a_snippet(garbage: str) -> None:
    with pytest.raises(dbg.CiliumDbgError) as error:
        dbg.parse_endpoints(garbage)
    assert "endpoint list -o json" in str(error.value)


@pytest.mark.parametrize("value", [True, "12; rm -rf /", "$(id)", "1 2", -1, 0, 65536, "0x10", 1.5, None, "١٢"])
def test_endpoint_ids_must_be_whole_numbers_in_range(value: object) -> None:
    with pytest.raises(ValueError) as error:
        dbg.validate_endpoint_id(value)
    assert "endpoint_ids" in str(error.value)


def test_batch_argv_passes_ids_as_arguments_never_inside_the_script() -> None:
    argv = dbg.batch_argv("cilium-dbg", [1742, "17"], enabled=True)
    assert argv[:3] == ["sh", "-c", dbg.BATCH_SCRIPT]
    assert argv[3:] == ["sh", "cilium-dbg", "Enabled", "1742", "17"]
    assert "1742" not in dbg.BATCH_SCRIPT
    with pytest.raises(ValueError):
        dbg.batch_argv("rm", [1], enabled=True)


def test_batch_output_is_split_per_endpoint_with_exit_codes() -> None:
    output = (
        "@@netpol-begin 1742\n" + real("endpoint-config-set-enabled.txt").split("exit=")[0].replace("167", "1742")
        + "\n@@netpol-end 1742 0\n"
        "@@netpol-begin 4000\n" + real("error-endpoint-config-unknown-id.txt").split("exit=")[0]
        + "\n@@netpol-end 4000 1\n"
        "@@netpol-begin 17\nEndpoint 17 conf"
    )
    items = dbg.parse_batch_output(output)
    assert items["1742"].rc == 0 and items["1742"].output == "Endpoint 1742 configuration updated successfully"
    assert items["4000"].rc == 1 and "getEndpointIdConfigNotFound" in items["4000"].output
    assert items["17"].rc is None


@pytest.mark.parametrize(("image", "version", "binary"), [
    ("quay.io/cilium/cilium:v1.15.1", "1.15.1", "cilium-dbg"),
    ("quay.io/cilium/cilium:v1.14.19@sha256:abc", "1.14.19", "cilium"),
    ("registry.local/cilium/cilium:v1.16.5-20240101", "1.16.5-20240101", "cilium-dbg"),
    ("quay.io/cilium/cilium@sha256:abc", None, "cilium-dbg"),
])
def test_binary_follows_the_agent_version(image: str, version: str | None, binary: str) -> None:
    assert dbg.version_from_image(image) == version
    assert dbg.binary_for_version(version) == binary


def test_batch_readback_is_split_from_the_per_endpoint_part() -> None:
    listed = real("endpoint-list.json")
    output = "@@netpol-begin 167\nEndpoint 167 configuration updated successfully\n\n@@netpol-end 167 0\n" \
             f"@@netpol-readback\n{listed}"
    head, tail = dbg.split_readback(output)
    assert tail == listed and "@@netpol-readback" not in head
    assert dbg.parse_batch_output(output)["167"].rc == 0
    assert [e.id for e in dbg.parse_endpoints(tail)] == [167]
    assert dbg.split_readback("@@netpol-begin 1\n") == ("@@netpol-begin 1\n", None)
