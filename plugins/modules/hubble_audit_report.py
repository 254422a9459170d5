#!/usr/bin/python
# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: hubble_audit_report
short_description: Judge the would-be denies (Hubble AUDIT verdicts) of a window against the denies you expect
version_added: 0.1.0
description:
  - Collects the policy verdicts that Cilium audit mode reports instead of dropping (Hubble verdict C(AUDIT), event
    type 5, shown by C(hubble observe) as C(policy-verdict:none INGRESS AUDITED)) for a time window, groups them by
    direction, source, destination, port and protocol, and matches every group against O(expected) - the denies your
    team intends. Any group no rule covers is B(unexpected) - with O(fail_on_unexpected) the task fails and its message
    lists one line per group.
  - O(source=relay) (default) reads from Hubble Relay's Observer gRPC API with server-side filters, so only audited
    flows cross the wire. Without O(relay_address) the module port-forwards through the Kubernetes API to a pod of the
    C(hubble-relay) Service itself - no C(hubble) CLI and no manual port-forward are needed on the controller or in an
    execution environment.
  - O(source=file) reads C(hubble observe -o jsonpb) output or Hubble exporter files (globs and C(.gz) allowed),
    streamed with bounded memory.
  - Hubble keeps only a small ring buffer per node (4095 flows by default). A window given by O(duration) alone is
    followed live from now for that long; lost events and unavailable nodes are counted, and a lossy or empty window is
    reported as B(incomplete) and fails the task (O(fail_on_incomplete)) - an incomplete window never looks green.
  - With O(report_dir) it writes C(report.json), C(report.md) (with a Mermaid graph of the unexpected denies),
    C(junit.xml) (one failing test case per unexpected group) and C(suggested-policies.yaml) (CiliumNetworkPolicy allow
    rules that would admit the unexpected flows), atomically - all four are written to temporary files first and only
    then renamed over the old ones, so a failure or a crash leaves the previous reports whole.
author:
  - netpol.cilium maintainers (@netpol-cilium)
requirements:
  - grpcio and protobuf (Python) for O(source=relay)
  - kubernetes >= 24.2.0 (Python) for the port-forward to Hubble Relay
  - PyYAML (Python)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - netpol.cilium._attributes
  - netpol.cilium._attributes.ACTIONGROUP_CILIUM
attributes:
  check_mode:
    support: full
    details:
      - Runs the same in check mode - it only reads flows. The report files in O(report_dir) are written in check mode
        too, because they are the module's output, not cluster state.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Changes nothing in the cluster and always returns C(changed=false); the reports are rewritten each run.
options:
  source:
    description:
      - Where the flows come from.
    type: str
    choices: [relay, file]
    default: relay
  paths:
    description:
      - With O(source=file), files of C(hubble observe -o jsonpb) output or Hubble exporter files; globs and C(.gz).
    type: list
    elements: path
  since:
    description:
      - Start of the window - RFC 3339 (C(2026-09-01T12:00:00Z)) or relative to now (C(15m), C(2h), C(1h30m), C(1d)).
    type: str
  until:
    description:
      - End of the window, in the same forms as O(since).
    type: str
  duration:
    description:
      - Length of the window. Alone with O(source=relay) - follow the live stream from now for that long.
    type: str
  namespaces:
    description:
      - Only flows from or to these namespaces (sent to the Relay as C(source_pod)/C(destination_pod) filters).
    type: list
    elements: str
  verdicts:
    description:
      - Verdicts to judge. V(AUDIT) while audit mode is on; V(DROPPED) to watch policy drops after enforcement.
    type: list
    elements: str
    choices: [AUDIT, DROPPED]
    default: [AUDIT]
  expected:
    description:
      - The denies that are intended. Each rule may have C(from) and C(to) peers (each with any of C(namespace),
        C(workload), C(pod), C(labels) (a dict), C(identity), C(entity) (world, host, remote-node, kube-apiserver,
        ...), C(fqdn) (a glob) and C(cidr)), C(ports) (C(5432), C(5432/TCP), C(8000-8080/UDP)), C(direction)
        (ingress or egress), C(name) and C(reason). Omitted fields match anything; unknown keys are errors.
    type: list
    elements: dict
    default: []
  expected_file:
    description:
      - A YAML file with more rules (a list, or a mapping with key C(expected)), added to O(expected).
    type: path
  workloads:
    description:
      - Pod (C(pod) or C(namespace/pod)) to workload name, where the app labels do not name the workload.
    type: dict
  fail_on_unexpected:
    description:
      - Fail the task when any audited flow is not covered by O(expected).
    type: bool
    default: true
  fail_on_incomplete:
    description:
      - Fail the task when the window is incomplete (lost events beyond O(max_lost_events), fewer flows than
        O(min_flows), malformed lines beyond O(max_malformed), unavailable nodes, stream gaps - also those resumed
        from the ring buffers, which cannot be proven complete - and flow files that could not be read to their end,
        such as truncated or corrupt C(.gz) files).
    type: bool
    default: true
  max_lost_events:
    description:
      - Lost events Hubble may report in the window before it counts as incomplete.
    type: int
    default: 0
  min_flows:
    description:
      - Flows the source must have seen. Default 1 when following a live Relay window for O(verdicts) that include
        V(AUDIT) (an empty audit window must not look green), else 0 (e.g. a watch for V(DROPPED) after enforcing,
        where no flow at all is the good outcome).
      - Left unset with O(source=file), a window whose files are all empty (no line at all) is incomplete - nothing
        was captured; V(0) accepts it. Empty files among others are listed in a warning.
    type: int
  max_malformed:
    description:
      - Malformed input lines that are tolerated (they are always counted and reported).
    type: int
    default: 0
  report_dir:
    description:
      - Directory to write the reports into (created if missing). It is checked for writing before any flow is
        read, so that a long window does not end with nowhere to write; the error names the directory.
    type: path
  report_formats:
    description:
      - Which reports to write into O(report_dir).
    type: list
    elements: str
    choices: [json, md, junit, policies]
    default: [json, md, junit, policies]
  report_title:
    description:
      - Title of the reports.
    type: str
  cluster_name:
    description:
      - Cluster name shown in the reports.
    type: str
  relay_address:
    description:
      - C(host:port) of Hubble Relay. Omit it to port-forward through the Kubernetes API to the Relay.
    type: str
  relay_namespace:
    description:
      - Namespace of the C(hubble-relay) Service for the port-forward.
    type: str
    default: kube-system
  relay_service:
    description:
      - Name of the Hubble Relay Service for the port-forward.
    type: str
    default: hubble-relay
  relay_tls:
    description:
      - Talk TLS to the Relay. Unset, TLS is used when any of O(relay_ca_cert), O(relay_client_cert),
        O(relay_client_key) or O(relay_server_name) is given; V(false) with one of them is an error.
    type: bool
  relay_ca_cert:
    description:
      - CA certificate (PEM file) that signed the Relay's server certificate.
    type: path
  relay_client_cert:
    description:
      - Client certificate (PEM file) for mutual TLS; needs O(relay_client_key).
    type: path
  relay_client_key:
    description:
      - Client key (PEM file) for mutual TLS.
    type: path
  relay_server_name:
    description:
      - Name to verify the Relay's certificate against (for example C(instance.hubble-relay.cilium.io)).
    type: str
  relay_validate_certs:
    description:
      - Verify the Relay's TLS certificate. Turning this off is insecure and the module warns.
    type: bool
    default: true
  relay_timeout:
    description:
      - Seconds to wait for the Relay to answer.
    type: int
    default: 12
notes:
  - Audit mode only reports L3/L4 policy decisions; endpoints that no policy selects produce no verdicts at all.
  - Replies are never findings; non-policy-verdict events are counted and skipped.
seealso:
  - module: netpol.cilium.cilium_audit_mode
  - name: Hubble flow API
    description: The Observer API of Hubble Relay.
    link: https://docs.cilium.io/en/stable/observability/hubble/
"""

EXAMPLES = r"""
- name: Follow the live audited flows for 15 minutes and gate on the denies we expect
  netpol.cilium.hubble_audit_report:
    duration: 15m
    namespaces: [shop]
    expected:
      - name: frontend must not reach the database
        from: {namespace: shop, workload: frontend}
        to: {namespace: shop, workload: db}
        ports: ["5432/TCP"]
        reason: only the backend talks to db
    report_dir: "{{ playbook_dir }}/reports/{{ inventory_hostname }}"
  register: audit_report

- name: Judge exported flow logs from the last hour, without failing the play
  netpol.cilium.hubble_audit_report:
    source: file
    paths: ["/var/log/hubble/events*.log.gz"]
    since: 1h
    expected_file: expected-denies.yml
    fail_on_unexpected: false

- name: Relay behind TLS
  netpol.cilium.hubble_audit_report:
    relay_address: hubble-relay.example.com:443
    relay_ca_cert: /etc/hubble/ca.crt
    relay_server_name: instance.hubble-relay.cilium.io
    since: 30m
"""

RETURN = r"""
summary:
  description: Counts and the verdict of the window.
  returned: always
  type: dict
  contains:
    result:
      description: V(pass), V(fail) (unexpected denies) or V(incomplete).
      type: str
    passed:
      description: Complete and no unexpected deny.
      type: bool
    flows_seen:
      description: Flows the source saw.
      type: int
    audited:
      description: Audited flows judged (replies excluded).
      type: int
    expected_groups:
      description: Groups covered by a rule.
      type: int
    unexpected_groups:
      description: Groups no rule covers.
      type: int
    lost_events:
      description: Events Hubble reported lost.
      type: int
    malformed_lines:
      description: Input lines that could not be read.
      type: int
    nodes_unavailable:
      description: Nodes the Relay reported unavailable.
      type: list
      elements: str
    complete:
      description: Whether the window can be trusted.
      type: bool
    incomplete_reasons:
      description: Why it cannot.
      type: list
      elements: str
    window:
      description: C(since), C(until) and C(duration) of the window.
      type: dict
    gaps:
      description: Stream gaps of the Relay (the same as RV(gaps)).
      type: list
      elements: dict
    empty_files:
      description: With O(source=file), the files that held no line at all.
      type: list
      elements: str
  sample: {"result": "fail", "passed": false, "flows_seen": 412, "audited": 34, "expected_groups": 1,
           "unexpected_groups": 1, "lost_events": 0, "malformed_lines": 0, "nodes_unavailable": [], "complete": true,
           "incomplete_reasons": [], "window": {"since": "2026-11-27T10:00:00Z", "until": "2026-11-27T10:15:00Z",
           "duration": "15m"}}
unexpected:
  description: Groups of audited flows that no rule covers.
  returned: always
  type: list
  elements: dict
expected:
  description: Groups of audited flows covered by a rule (with the rule).
  returned: always
  type: list
  elements: dict
source:
  description: What the source reported (Relay address and how it was reached, server status, stream counts; or
    files, lines, malformed samples).
  returned: always
  type: dict
gaps:
  description:
    - Where the Relay stream broke - C(start) (the time of the last flow counted, else the window's start), C(end)
      (when it was back; null when it never was), C(resumed) (the read went on from C(start) out of the ring buffers,
      flows already counted skipped) and C(reason).
  returned: always
  type: list
  elements: dict
  sample: [{"start": "2026-11-27T10:03:12.412Z", "end": "2026-11-27T10:03:13.020Z", "resumed": true,
            "reason": "stream broken (UNAVAILABLE: connection reset by peer)"}]
reports:
  description: Paths of the written reports, by format (empty when they could not be written; the task then fails).
  returned: when O(report_dir) is set
  type: dict
  sample: {"json": "reports/report.json", "md": "reports/report.md", "junit": "reports/junit.xml",
           "policies": "reports/suggested-policies.yaml"}
"""

import re

from ansible_collections.netpol.cilium.plugins.module_utils._audit_report import ReportFailure, make_report
from ansible_collections.netpol.cilium.plugins.module_utils._k8s import (
    Kube,
    KubeError,
    auth_argument_spec,
    build_module,
)

MODULE_SPEC = {
    "source": {"type": "str", "choices": ["relay", "file"], "default": "relay"},
    "paths": {"type": "list", "elements": "path"},
    "since": {"type": "str"},
    "until": {"type": "str"},
    "duration": {"type": "str"},
    "namespaces": {"type": "list", "elements": "str"},
    "verdicts": {"type": "list", "elements": "str", "choices": ["AUDIT", "DROPPED"], "default": ["AUDIT"]},
    "expected": {"type": "list", "elements": "dict", "default": []},
    "expected_file": {"type": "path"},
    "workloads": {"type": "dict"},
    "fail_on_unexpected": {"type": "bool", "default": True},
    "fail_on_incomplete": {"type": "bool", "default": True},
    "max_lost_events": {"type": "int", "default": 0},
    "min_flows": {"type": "int"},
    "max_malformed": {"type": "int", "default": 0},
    "report_dir": {"type": "path"},
    "report_formats": {"type": "list", "elements": "str", "choices": ["json", "md", "junit", "policies"],
                       "default": ["json", "md", "junit", "policies"]},
    "report_title": {"type": "str"},
    "cluster_name": {"type": "str"},
    "relay_address": {"type": "str"},
    "relay_namespace": {"type": "str", "default": "kube-system"},
    "relay_service": {"type": "str", "default": "hubble-relay"},
    "relay_tls": {"type": "bool"},
    "relay_ca_cert": {"type": "path"},
    "relay_client_cert": {"type": "path"},
    "relay_client_key": {"type": "path", "no_log": False},
    "relay_server_name": {"type": "str"},
    "relay_validate_certs": {"type": "bool", "default": True},
    "relay_timeout": {"type": "int", "default": 12},
}


RELAY_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})$")


def main() -> None:
    argument_spec = auth_argument_spec()
    argument_spec.update(MODULE_SPEC)
    module = build_module(argument_spec=argument_spec, supports_check_mode=True)
    params = dict(module.params)
    for name in ("max_lost_events", "max_malformed", "min_flows"):
        if params.get(name) is not None and params[name] < 0:
            module.fail_json(msg=f"{name}: expected a count of 0 or more, got {params[name]}")
    address = params.get("relay_address")
    if address:
        match = RELAY_ADDRESS.match(address)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            module.fail_json(msg=f"relay_address: expected host:port (a name or IPv4 address, or [IPv6], and a port "
                                 f"from 1 to 65535), got {address!r}")
    if not params["relay_validate_certs"]:
        module.warn("relay_validate_certs is false: the Hubble Relay's TLS certificate is not verified")
    kube = None
    try:
        if params["source"] == "relay" and not params.get("relay_address"):
            kube = Kube.from_module(module)
        result = make_report(params, kube)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except (ReportFailure, KubeError) as exc:
        module.fail_json(msg=str(exc))
    if result.pop("failed", False):
        module.fail_json(msg=result.pop("msg"), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
