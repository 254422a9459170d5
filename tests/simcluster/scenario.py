"""Scenarios: the objects, workloads, policies and traffic a simulated cluster starts with.

The seed scenario (used by ``make demo`` and the tests): namespace ``shop`` with ``frontend``, ``backend`` and ``db``
spread over three nodes; the CiliumNetworkPolicy ``shop/db-ingress`` selects ``db`` and allows ingress only from
``backend`` on 5432/TCP. Traffic: frontend -> db (a deny the team expects), backend -> db (allowed) and one flow the
policy forgot: ``monitoring/metrics-agent`` scraping db on 9100 (an unexpected deny).
"""

from __future__ import annotations

from typing import Any

from .cluster import SimCluster

CILIUM_VERSION = "1.15.1"

CILIUM_CONFIG = {
    "cluster-name": "",  # filled with the cluster's name
    "cluster-id": "0",
    "enable-policy": "default",
    "enable-hubble": "true",
    "hubble-listen-address": ":4244",
    "hubble-event-buffer-capacity": "4095",
    "ipam": "cluster-pool",
    "kube-proxy-replacement": "false",
    "bpf-events-policy-verdict-enabled": "true",
    "monitor-aggregation": "medium",
    "routing-mode": "tunnel",
    "tunnel-protocol": "vxlan",
}

SEED_TRAFFIC = [
    {"from": "shop/frontend", "to": "shop/db", "port": 5432, "protocol": "TCP", "per_minute": 30,
     "note": "a deny the team expects"},
    {"from": "shop/backend", "to": "shop/db", "port": 5432, "protocol": "TCP", "per_minute": 120, "note": "allowed"},
    {"from": "shop/frontend", "to": "shop/backend", "port": 8080, "protocol": "TCP", "per_minute": 120,
     "note": "no policy selects backend: not audited"},
    {"from": "monitoring/metrics-agent", "to": "shop/db", "port": 9100, "protocol": "TCP", "per_minute": 4,
     "note": "the flow the policy forgot: an unexpected deny"},
]

DB_INGRESS_POLICY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "db-ingress", "namespace": "shop"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "backend"}}],
                     "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]}],
    },
}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def node(name: str, index: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "topology.kubernetes.io/zone": f"zone-{'abc'[index % 3]}"}},
            "spec": {"podCIDR": f"10.0.{index + 1}.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": f"172.18.0.{index + 2}"},
                                     {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                       "nodeInfo": {"architecture": "amd64", "bootID": f"boot-{index}", "machineID": f"machine-{index}",
                                    "systemUUID": f"uuid-{index}", "containerRuntimeVersion": "containerd://1.7.18",
                                    "kernelVersion": "6.1.0-25-amd64", "kubeProxyVersion": "",
                                    "kubeletVersion": "v1.30.4",
                                    "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)"}}}


def cilium_daemonset(ns: str, version: str) -> dict[str, Any]:
    labels = {"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent", "app.kubernetes.io/part-of": "cilium"}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "cilium", "namespace": ns, "labels": dict(labels)},
            "spec": {"selector": {"matchLabels": {"k8s-app": "cilium"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                     "template": {"metadata": {"labels": dict(labels), "annotations": {}},
                                  "spec": {"hostNetwork": True, "serviceAccountName": "cilium",
                                           "containers": [{"name": "cilium-agent",
                                                           "image": f"quay.io/cilium/cilium:v{version}",
                                                           "command": ["cilium-agent"],
                                                           "args": ["--config-dir=/tmp/cilium/config-map"]}],
                                           "initContainers": [{"name": "config",
                                                               "image": f"quay.io/cilium/cilium:v{version}",
                                                               "command": ["cilium-dbg", "build-config"]}]}}}}


def deployment(ns: str, name: str, labels: dict[str, str], image: str, replicas: int = 1,
               host_network: bool = False, container: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": container or name, "image": image}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "strategy": {"type": "RollingUpdate"},
                     "template": {"metadata": {"labels": dict(labels)}, "spec": spec}}}


def install_cilium(cluster: SimCluster, version: str = CILIUM_VERSION, audit: bool | None = None,
                   helm_managed: bool = True) -> None:
    """Cilium as the Helm chart lays it out: config, agent DaemonSet, operator, Hubble Relay (and the release)."""
    ns = cluster.cilium_namespace
    data = dict(CILIUM_CONFIG, **{"cluster-name": cluster.name})
    if audit is not None:
        data["policy-audit-mode"] = "true" if audit else "false"
    config: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "cilium-config", "namespace": ns}, "data": data}
    objects = [
        config,
        cilium_daemonset(ns, version),
        deployment(ns, "cilium-operator", {"io.cilium/app": "operator", "name": "cilium-operator",
                                           "app.kubernetes.io/name": "cilium-operator"},
                   f"quay.io/cilium/operator-generic:v{version}", replicas=2, host_network=True),
        deployment(ns, "hubble-relay", {"k8s-app": "hubble-relay", "app.kubernetes.io/name": "hubble-relay"},
                   f"quay.io/cilium/hubble-relay:v{version}"),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hubble-relay", "namespace": ns,
                                                             "labels": {"k8s-app": "hubble-relay"}},
         "spec": {"type": "ClusterIP", "selector": {"k8s-app": "hubble-relay"},
                  "ports": [{"name": "grpc", "port": 80, "protocol": "TCP", "targetPort": 4245}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cilium", "namespace": ns}},
    ]
    if helm_managed:
        for obj in objects:
            meta = obj["metadata"]
            meta.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
            meta["annotations"] = {"meta.helm.sh/release-name": "cilium", "meta.helm.sh/release-namespace": ns}
    for obj in objects:
        cluster.apply(obj)
    if helm_managed:
        from . import fake_helm

        values: dict[str, Any] = {"cluster": {"name": cluster.name}, "hubble": {"relay": {"enabled": True}}}
        if audit is not None:
            values["policyAuditMode"] = audit
        client = cluster.api_client()
        try:
            fake_helm.seed_release(client, namespace=ns, release="cilium", chart_version=version, values=values)
        finally:
            client.close()


def seed(cluster: SimCluster, *, nodes: int = 3, helm_managed: bool = True, version: str = CILIUM_VERSION,
         wait: bool = True) -> SimCluster:
    for ns in ("default", "kube-system", "shop", "monitoring"):
        if cluster.store.try_get(cluster.rtype("namespaces"), None, ns) is None:
            cluster.apply(namespace(ns))
    for index in range(nodes):
        cluster.apply(node(f"{cluster.name}-worker-{index + 1}", index))
    install_cilium(cluster, version=version, helm_managed=helm_managed)
    cluster.wait_for_agents()
    workloads = [
        ("shop", "frontend", 2, "ghcr.io/example/frontend:1.4.2"),
        ("shop", "backend", 2, "ghcr.io/example/backend:2.0.1"),
        ("shop", "db", 1, "docker.io/library/postgres:16"),
        ("monitoring", "metrics-agent", 1, "ghcr.io/example/metrics-agent:0.9.0"),
    ]
    for ns, name, replicas, image in workloads:
        cluster.apply(deployment(ns, name, {"app": name}, image, replicas=replicas))
    cluster.apply(DB_INGRESS_POLICY)
    cluster.traffic = [dict(flow) for flow in SEED_TRAFFIC]
    if wait:
        expected = sum(w[2] for w in workloads)
        cluster.wait_until(lambda: sum(1 for key in cluster.endpoints if key[0] in ("shop", "monitoring")) == expected,
                           what="workload endpoints")
    return cluster


def bench(cluster: SimCluster, *, nodes: int = 50, endpoints: int = 1000, **_: object) -> SimCluster:
    """Many endpoints on many nodes, no Helm release: for `make bench`."""
    for ns in ("kube-system", "bench"):
        cluster.apply(namespace(ns))
    for index in range(nodes):
        cluster.apply(node(f"{cluster.name}-{index:02d}", index))
    install_cilium(cluster, helm_managed=False)
    cluster.wait_for_agents(120)
    cluster.apply(deployment("bench", "app", {"app": "bench"}, "registry.example/app:1", replicas=endpoints))
    cluster.wait_until(lambda: sum(1 for key in cluster.endpoints if key[0] == "bench") == endpoints, 300,
                       "bench endpoints")
    return cluster


SCENARIOS = {"seed": seed, "bench": bench, "empty": lambda cluster, **_: cluster}
