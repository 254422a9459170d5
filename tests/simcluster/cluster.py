"""One simulated Cilium cluster: the API server, the controllers that make it move, and one agent per node.

Cilium semantics kept here (facts from Cilium's source and a real 1.15.1 agent, see the shared research notes):

* an agent reads ``policy-audit-mode`` once, at start: from ``cilium-config``, overridden by the ``defaults`` of the
  CiliumNodeConfig objects that select its node (applied in name order);
* per-endpoint options are reset to that global value whenever the agent restarts, and new endpoints take it;
* ``policy-enabled`` shows ``audit-*`` only for endpoints that a policy selects in that direction;
* the agent DaemonSet rolls pod by pod when its pod template changes, with the status fields moving as in a real
  rollout; deleting an agent pod makes the DaemonSet controller recreate it on the same node.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .agent import CiliumAgent, EndpointSpec, ExecResult
from .faults import Faults
from .fixtures import REPO_ROOT, shared_fixtures_dir
from .rbac import RbacAuthorizer, service_account_groups, service_account_user
from .server import ApiServer, Principal, Rule
from .store import ResourceType, Store, now_rfc3339
from .tls import CertificateAuthority

CORE_TYPES = [
    ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",)),
    ResourceType("", "v1", "nodes", "Node", False, "node", ("no",)),
    ResourceType("", "v1", "pods", "Pod", True, "pod", ("po",), subresources=("exec", "log", "portforward", "status")),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, "secret"),
    ResourceType("", "v1", "services", "Service", True, "service", ("svc",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ("sa",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, "daemonset", ("ds",), subresources=("status",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, "deployment", ("deploy",),
                 subresources=("status", "scale")),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
                 "customresourcedefinition", ("crd", "crds")),
    ResourceType("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
                 "selfsubjectaccessreview", verbs=("create",)),
    # RBAC: what ServiceAccount tokens are authorized by (rbac.py)
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True, "role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, "rolebinding"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, "clusterrole"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False,
                 "clusterrolebinding"),
]

READ_ONLY_RULES = [Rule(frozenset({"get", "list", "watch"}), frozenset({"*"}))]
NOT_FOUND_IN_PATH = ('OCI runtime exec failed: exec failed: unable to start container process: exec: "{name}": '
                     "executable file not found in $PATH: unknown")


@dataclass
class EndpointRecord:
    """A workload endpoint as the datapath knows it; survives agent restarts with the same id."""

    namespace: str
    pod: str
    node: str
    id: int
    identity: int
    labels: list[str]
    ipv4: str
    container_id: str
    pod_labels: dict[str, str] = field(default_factory=dict)


@dataclass
class AgentStart:
    pod: str
    version: str
    global_audit: bool
    started_at: float


class SimCluster:
    """A running simulated cluster. Use as a context manager, or call start() and stop()."""

    def __init__(self, name: str = "sim", *, state_dir: str | None = None, cilium_namespace: str = "kube-system",
                 agent_boot_seconds: float = 0.2, seed: int = 0, ciliumendpoint_crd: bool = True) -> None:
        self.name = name
        self.cilium_namespace = cilium_namespace
        self.agent_boot_seconds = agent_boot_seconds
        self.store = Store()
        self.faults = Faults(seed)
        self.tokens: dict[str, Principal] = {}
        self.rbac = RbacAuthorizer(self.store)  # decides for ServiceAccount tokens (service_account_token)
        self.agents: dict[str, CiliumAgent] = {}
        self.agent_starts: dict[str, list[AgentStart]] = {}
        # every pod exec's argv, as the API server received it: (namespace, pod, container, argv)
        self.exec_log: list[tuple[str | None, str, str, list[str]]] = []
        self.endpoints: dict[tuple[str, str], EndpointRecord] = {}
        self.agent_version: str | None = None  # knob: run agents at this version whatever their image tag says
        self.traffic: list[dict[str, Any]] = []  # the scenario's traffic matrix: the seam for the Hubble simulation
        self.hubble_relay_address: str | None = None  # where the hubble-relay pod's port 4245 leads (start_hubble)
        self.hubble: Any = None  # the simulated Hubble Relay (simcluster.hubble.HubbleRelay), once started
        self.stopping = False
        self.port = 0
        self._rng = random.Random(seed)
        self._identities: dict[tuple[str, ...], int] = {}
        self._booting: dict[str, tuple[float, str, str]] = {}  # pod uid -> (ready at, node, pod name)
        self._logs: dict[tuple[str, str], list[str]] = {}
        self._agent_socket: socketserver.ThreadingUnixStreamServer | None = None
        self._shell_lock = threading.Lock()
        self._placements = 0  # round-robin placement of Deployment pods over the nodes
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="simcluster-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = str(self.state_dir / "kubeconfig")
        self._thread: threading.Thread | None = None
        self._controller: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        for rtype in CORE_TYPES:
            self.store.register(rtype)
        self._load_crds(ciliumendpoint_crd)
        self.store.listeners.append(self._on_change)
        self.admin_token = self.add_token("kubernetes-admin", None)
        self.readonly_token = self.add_token("system:serviceaccount:netpol:readonly", READ_ONLY_RULES)
        self.server = ApiServer(self)

    # --- set-up ---------------------------------------------------------------------------------------
    def _load_crds(self, ciliumendpoint_crd: bool) -> None:
        crd_type = self.store.types[("apiextensions.k8s.io", "customresourcedefinitions")]
        for path in sorted((shared_fixtures_dir() / "crds").glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            spec = crd["spec"]
            if spec["names"]["plural"] == "ciliumendpoints" and not ciliumendpoint_crd:
                continue
            version = next(v["name"] for v in spec["versions"] if v.get("storage"))
            self.store.register(ResourceType(spec["group"], version, spec["names"]["plural"], spec["names"]["kind"],
                                             spec["scope"] == "Namespaced", spec["names"].get("singular", ""),
                                             tuple(spec["names"].get("shortNames", ())), subresources=("status",)))
            crd.setdefault("status", {"conditions": [{"type": "Established", "status": "True"}]})
            self.store.create(crd_type, None, crd)

    def add_token(self, user: str, rules: list[Rule] | None) -> str:
        token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        self.tokens[token] = Principal(user, rules)
        return token

    def service_account_token(self, namespace: str, name: str) -> str:
        """A token for the ServiceAccount ``namespace/name`` (as ``kubectl create token`` gives): its user is
        ``system:serviceaccount:<namespace>:<name>``, its groups ``system:serviceaccounts[:<namespace>]`` and
        ``system:authenticated``, and the cluster's RBAC objects decide every request it makes. It stops working when
        the ServiceAccount is deleted."""
        self.store.get(self.rtype("serviceaccounts"), namespace, name)  # NotFound, like the TokenRequest API
        token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        self.tokens[token] = Principal(service_account_user(namespace, name), None,
                                       service_account_groups(namespace), self.rbac, (namespace, name))
        return token

    def rtype(self, plural: str, group: str = "") -> ResourceType:
        return self.store.types[(group, plural)]

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> SimCluster:
        ca = CertificateAuthority(f"{self.name}-ca")
        server_pair = ca.issue("kube-apiserver", ("localhost", "kubernetes"), ("127.0.0.1",))
        (self.state_dir / "ca.crt").write_bytes(ca.cert_pem)
        (self.state_dir / "apiserver.crt").write_bytes(server_pair.cert_pem)
        key_path = self.state_dir / "apiserver.key"
        key_path.write_bytes(server_pair.key_pem)
        key_path.chmod(0o600)
        self.ca = ca
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.state_dir / "apiserver.crt"), str(key_path))
        self._thread = threading.Thread(target=self._serve, args=(context,), name=f"{self.name}-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("simulated API server did not start")
        self.write_kubeconfig(self.kubeconfig)
        self._controller = threading.Thread(target=self._control_loop, name=f"{self.name}-controllers", daemon=True)
        self._controller.start()
        return self

    def _serve(self, context: ssl.SSLContext) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            self._runner = web.AppRunner(self.server.app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        loop.run_until_complete(boot())
        loop.run_forever()
        loop.close()

    def start_hubble(self, **kwargs: Any) -> Any:
        """Start the simulated Hubble Relay (options: simcluster.hubble.HubbleRelay); port-forwards to the
        hubble-relay pod's port 4245 reach it."""
        from .hubble import HubbleRelay

        if self.hubble is not None:
            self.hubble.stop()
        relay = HubbleRelay(self, **kwargs)
        self.hubble_relay_address = relay.start()
        self.hubble = relay
        return relay

    def stop(self) -> None:
        self.stopping = True
        if self.hubble is not None:
            self.hubble.stop()
        if self._loop is not None and self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):
                future.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if self._controller is not None:
            self._controller.join(5)
        if self._agent_socket is not None:
            self._agent_socket.shutdown()
            self._agent_socket.server_close()

    def __enter__(self) -> SimCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: str, token: str | None = None, context: str | None = None) -> str:
        """Write a kubeconfig with an admin context (current) and a read-only context; with ``token``, one with only
        that token (context ``<cluster>-<service account>`` for a ServiceAccount token, else ``<cluster>-token``)."""
        ca_data = base64.b64encode(self.ca.cert_pem).decode()
        users = [(f"{self.name}-admin", self.admin_token), (f"{self.name}-readonly", self.readonly_token)]
        if token is not None:
            principal = self.tokens.get(token)
            account = principal.service_account if principal is not None else None
            users = [(f"{self.name}-{account[1] if account else 'token'}", token)]
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": self.name,
                          "cluster": {"server": self.server_url, "certificate-authority-data": ca_data}}],
            "users": [{"name": user, "user": {"token": value}} for user, value in users],
            "contexts": [{"name": user, "context": {"cluster": self.name, "user": user}} for user, _token in users],
            "current-context": context or users[0][0],
        }
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
        os.chmod(path, 0o600)
        return path

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster (admin unless a token is given)."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.server_url
        configuration.ssl_ca_cert = str(self.state_dir / "ca.crt")
        configuration.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return client.ApiClient(configuration)

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (ansible-playbook, the fake helm) that should talk to this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["PATH"] = os.pathsep.join([str(REPO_ROOT / "tests" / "bin"), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT / "tests"), env.get("PYTHONPATH", "")] if p)
        return env

    # --- objects --------------------------------------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object from a manifest dict (by kind), replacing an existing one."""
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        rtype = self.store.type_for_kind(obj["kind"], group)
        namespace = obj["metadata"].get("namespace") if rtype.namespaced else None
        existing = self.store.try_get(rtype, namespace, obj["metadata"]["name"])
        if existing is None:
            return self.store.create(rtype, namespace, obj)
        return self.store.replace(rtype, namespace, obj["metadata"]["name"], obj, check_version=False)

    def get(self, kind: str, name: str, namespace: str | None = None, group: str | None = None) -> dict[str, Any]:
        rtype = self.store.type_for_kind(kind, group)
        return self.store.get(rtype, namespace if rtype.namespaced else None, name)

    def node_names(self) -> list[str]:
        return [node["metadata"]["name"] for node in self.store.list(self.rtype("nodes"))]

    def node_ip(self, node: str) -> str:
        obj = self.store.try_get(self.rtype("nodes"), None, node)
        for address in (obj or {}).get("status", {}).get("addresses", []):
            if address.get("type") == "InternalIP":
                return address["address"]
        return "0.0.0.0"

    def agent_pods(self) -> list[dict[str, Any]]:
        return self.store.list(self.rtype("pods"), self.cilium_namespace, "k8s-app=cilium")

    def agent_pod_on(self, node: str) -> dict[str, Any] | None:
        pods = self.store.list(self.rtype("pods"), self.cilium_namespace, "k8s-app=cilium", f"spec.nodeName={node}")
        return pods[0] if pods else None

    def agent(self, node: str) -> CiliumAgent:
        return self.agents[node]

    def endpoint(self, namespace: str, pod: str) -> EndpointRecord:
        return self.endpoints[(namespace, pod)]

    def pod_log(self, namespace: str | None, name: str) -> str:
        return "".join(line + "\n" for line in self._logs.get((namespace or "", name), []))

    # --- cilium configuration as an agent sees it at start ----------------------------------------------
    def global_audit_for(self, node: str) -> bool:
        config = self.store.try_get(self.rtype("configmaps"), self.cilium_namespace, "cilium-config") or {}
        value = (config.get("data") or {}).get("policy-audit-mode", "false")
        node_obj = self.store.try_get(self.rtype("nodes"), None, node) or {}
        node_labels = node_obj.get("metadata", {}).get("labels", {})
        from .selectors import match_label_selector_object

        with contextlib.suppress(KeyError):
            cnc_type = self.store.type_for_kind("CiliumNodeConfig")
            for cnc in self.store.list(cnc_type, self.cilium_namespace):
                spec = cnc.get("spec") or {}
                if match_label_selector_object(spec.get("nodeSelector"), node_labels):
                    value = (spec.get("defaults") or {}).get("policy-audit-mode", value)
        return str(value).strip().lower() == "true"

    def enable_policy_mode(self) -> str:
        config = self.store.try_get(self.rtype("configmaps"), self.cilium_namespace, "cilium-config") or {}
        return (config.get("data") or {}).get("enable-policy", "default")

    # --- endpoints and policy -------------------------------------------------------------------------
    def _identity_for(self, labels: list[str]) -> int:
        key = tuple(sorted(labels))
        if key not in self._identities:
            digest = int(hashlib.sha256("\n".join(key).encode()).hexdigest(), 16)
            identity = 10000 + digest % 50000
            while identity in self._identities.values():
                identity += 1
            self._identities[key] = identity
        return self._identities[key]

    def _identity_labels(self, namespace: str, pod_labels: dict[str, str]) -> list[str]:
        ignored = ("pod-template-hash", "controller-revision-hash", "pod-template-generation")
        labels = [f"k8s:{k}={v}" for k, v in sorted(pod_labels.items()) if k not in ignored]
        return labels + [
            f"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={namespace}",
            f"k8s:io.kubernetes.pod.namespace={namespace}",
            "k8s:io.cilium.k8s.policy.serviceaccount=default",
            f"k8s:io.cilium.k8s.policy.cluster={self.name}",
        ]

    def _new_endpoint_id(self, node: str) -> int:
        used = {record.id for record in self.endpoints.values() if record.node == node}
        used |= {self._host_endpoint_id(node)}
        while True:
            candidate = self._rng.randint(100, 4000)
            if candidate not in used:
                return candidate

    def _host_endpoint_id(self, node: str) -> int:
        return 100 + int(hashlib.sha256(node.encode()).hexdigest(), 16) % 400

    def policy_for(self, namespace: str, pod_labels: dict[str, str]) -> tuple[bool, bool]:
        """Whether any CiliumNetworkPolicy enforces (ingress, egress) on a pod with these labels."""
        mode = self.enable_policy_mode()
        if mode == "always":
            return True, True
        if mode == "never":
            return False, False
        from .selectors import match_label_selector_object

        ingress = egress = False
        with contextlib.suppress(KeyError):
            cnp_type = self.store.type_for_kind("CiliumNetworkPolicy")
            for cnp in self.store.list(cnp_type, namespace):
                specs = ([cnp["spec"]] if cnp.get("spec") else []) + list(cnp.get("specs") or [])
                for spec in specs:
                    selector = _strip_selector_prefixes(spec.get("endpointSelector"))
                    if selector is None or not match_label_selector_object(selector, pod_labels):
                        continue
                    ingress = ingress or "ingress" in spec or "ingressDeny" in spec
                    egress = egress or "egress" in spec or "egressDeny" in spec
        return ingress, egress

    def _endpoint_spec(self, record: EndpointRecord) -> EndpointSpec:
        ingress, egress = self.policy_for(record.namespace, record.pod_labels)
        return EndpointSpec(id=record.id, identity=record.identity, labels=list(record.labels),
                            namespace=record.namespace, pod_name=record.pod, ipv4=record.ipv4,
                            container_id=record.container_id, policy_ingress=ingress, policy_egress=egress)

    def _host_endpoint_spec(self, node: str) -> EndpointSpec:
        return EndpointSpec(id=self._host_endpoint_id(node), identity=1, labels=["reserved:host"])

    def _recompute_policies(self) -> None:
        for record in self.endpoints.values():
            agent = self.agents.get(record.node)
            if agent is not None and record.id in agent.endpoints():
                ingress, egress = self.policy_for(record.namespace, record.pod_labels)
                agent.set_policy(record.id, ingress, egress)

    def _attach_endpoint(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        node = pod["spec"]["nodeName"]
        key = (meta["namespace"], meta["name"])
        if key in self.endpoints:
            return
        node_index = sorted(self.node_names()).index(node) if node in self.node_names() else 0
        pod_labels = dict(meta.get("labels") or {})
        labels = self._identity_labels(meta["namespace"], pod_labels)
        record = EndpointRecord(meta["namespace"], meta["name"], node, self._new_endpoint_id(node),
                                self._identity_for(labels), labels,
                                f"10.0.{node_index + 1}.{10 + len(self.endpoints) % 240}",
                                hashlib.sha256(meta["uid"].encode()).hexdigest(), pod_labels)
        self.endpoints[key] = record

        def running(obj: dict[str, Any]) -> None:
            obj.setdefault("status", {}).update({
                "phase": "Running", "podIP": record.ipv4, "podIPs": [{"ip": record.ipv4}],
                "hostIP": self.node_ip(node), "startTime": now_rfc3339(),
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
                "containerStatuses": [{"name": c["name"], "ready": True, "restartCount": 0, "started": True,
                                       "image": c.get("image", ""), "imageID": _image_id(c.get("image", "")),
                                       "containerID": f"containerd://{record.container_id}",
                                       "state": {"running": {"startedAt": now_rfc3339()}}}
                                      for c in obj.get("spec", {}).get("containers", [])]})

        self.store.mutate(self.rtype("pods"), meta["namespace"], meta["name"], running)
        self._sync_cep(record)
        agent = self.agents.get(node)
        pod_agent = self.agent_pod_on(node)
        if agent is not None and pod_agent is not None and pod_agent.get("status", {}).get("phase") == "Running":
            agent.add_endpoint(self._endpoint_spec(record))

    def _sync_cep(self, record: EndpointRecord) -> None:
        try:
            cep_type = self.store.type_for_kind("CiliumEndpoint")
        except KeyError:
            return  # CRD disabled: the product must fall back to `cilium-dbg endpoint list`
        pod = self.store.try_get(self.rtype("pods"), record.namespace, record.pod)
        owner = [{"apiVersion": "v1", "kind": "Pod", "name": record.pod, "uid": pod["metadata"]["uid"]}] if pod else []
        cep = {"apiVersion": cep_type.group_version, "kind": "CiliumEndpoint",
               "metadata": {"name": record.pod, "namespace": record.namespace, "ownerReferences": owner,
                            "labels": dict(record.pod_labels)},
               "status": {"encryption": {}, "external-identifiers": {
                   "cni-attachment-id": f"{record.container_id}:eth0", "container-id": record.container_id,
                   "k8s-namespace": record.namespace, "k8s-pod-name": record.pod,
                   "pod-name": f"{record.namespace}/{record.pod}"},
                   "id": record.id, "identity": {"id": record.identity, "labels": list(record.labels)},
                   "networking": {"addressing": [{"ipv4": record.ipv4}], "node": self.node_ip(record.node)},
                   "state": "ready"}}
        if self.store.try_get(cep_type, record.namespace, record.pod) is None:
            self.store.create(cep_type, record.namespace, cep)

    def _detach_endpoint(self, namespace: str, name: str) -> None:
        record = self.endpoints.pop((namespace, name), None)
        if record is None:
            return
        agent = self.agents.get(record.node)
        if agent is not None and record.id in agent.endpoints():
            agent.remove_endpoint(record.id)
        with contextlib.suppress(Exception):
            self.store.delete(self.store.type_for_kind("CiliumEndpoint"), namespace, name)

    # --- change hooks (run inside the store lock) --------------------------------------------------------
    def _on_change(self, event: str, rtype: ResourceType, old: dict[str, Any] | None,
                   new: dict[str, Any] | None) -> None:
        if rtype.plural == "pods":
            obj = new or old or {}
            is_agent = (obj.get("metadata", {}).get("labels") or {}).get("k8s-app") == "cilium"
            host_network = obj.get("spec", {}).get("hostNetwork", False)
            if event == "ADDED" and not is_agent and not host_network and obj.get("spec", {}).get("nodeName"):
                self._attach_endpoint(obj)
            elif event == "DELETED" and not is_agent:
                self._detach_endpoint(obj["metadata"]["namespace"], obj["metadata"]["name"])
        elif rtype.plural == "ciliumnetworkpolicies":
            self._recompute_policies()

    # --- controllers ----------------------------------------------------------------------------------
    def _control_loop(self) -> None:
        while not self.stopping:
            try:
                with self.store.lock:
                    self._reconcile_agents()
                    self._reconcile_deployments()
                    self._finish_boots()
            except Exception as exc:  # noqa: BLE001 - a controller keeps running, like kube-controller-manager
                self._logs.setdefault(("", "controller"), []).append(repr(exc))
            time.sleep(0.03)

    @staticmethod
    def _template_hash(template: dict[str, Any]) -> str:
        """As Kubernetes' pod-template-hash: a 32-bit FNV-1a hash, its decimal digits through the generated-name
        alphabet (so only 4-9, b, c, d and f appear)."""
        value = 0x811C9DC5
        for byte in json.dumps(template, sort_keys=True).encode():
            value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        return "".join(alphabet[ord(digit) % len(alphabet)] for digit in str(value))

    def _reconcile_agents(self) -> None:
        ds_type = self.rtype("daemonsets", "apps")
        ds = self.store.try_get(ds_type, self.cilium_namespace, "cilium")
        if ds is None:
            return
        template = ds["spec"]["template"]
        current_hash = self._template_hash(template)
        nodes = sorted(self.node_names())
        pods = self.agent_pods()
        by_node: dict[str, dict[str, Any]] = {p["spec"]["nodeName"]: p for p in pods}
        for node in nodes:
            if node not in by_node:
                by_node[node] = self._create_agent_pod(ds, node, current_hash)
        strategy = (ds["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate")
        rolling = (ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
        max_unavailable = _resolve_int_or_percent(rolling.get("maxUnavailable", 1), len(nodes))
        unready = [p for p in by_node.values() if not _pod_ready(p)]
        if strategy == "RollingUpdate":
            outdated = [by_node[n] for n in nodes if by_node[n]["metadata"]["labels"].get(
                "controller-revision-hash") != current_hash]
            budget = max_unavailable - len(unready)
            for pod in outdated:
                if budget <= 0 and _pod_ready(pod):
                    break
                self.store.delete(self.rtype("pods"), self.cilium_namespace, pod["metadata"]["name"])
                if _pod_ready(pod):
                    budget -= 1
        pods = self.agent_pods()
        ready = sum(1 for p in pods if _pod_ready(p))
        updated = sum(1 for p in pods if p["metadata"]["labels"].get("controller-revision-hash") == current_hash)
        status = {"currentNumberScheduled": len(pods), "desiredNumberScheduled": len(nodes),
                  "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": ready,
                  "updatedNumberScheduled": updated, "observedGeneration": ds["metadata"].get("generation", 1)}
        if len(nodes) - ready:
            status["numberUnavailable"] = len(nodes) - ready
        if ds.get("status") != status:
            self.store.mutate(ds_type, self.cilium_namespace, "cilium", lambda obj: obj.update(status=status))

    def _create_agent_pod(self, ds: dict[str, Any], node: str, template_hash: str) -> dict[str, Any]:
        template = ds["spec"]["template"]
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels.update({"controller-revision-hash": template_hash,
                       "pod-template-generation": str(ds["metadata"].get("generation", 1))})
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"cilium-{_random_suffix(self._rng)}", "namespace": self.cilium_namespace,
                            "labels": labels,
                            "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "cilium",
                                                 "uid": ds["metadata"]["uid"], "controller": True}]},
               "spec": {**template.get("spec", {}), "nodeName": node},
               "status": {"phase": "Pending", "hostIP": self.node_ip(node), "podIP": self.node_ip(node),
                          "conditions": [{"type": "Ready", "status": "False"}]}}
        created = self.store.create(self.rtype("pods"), self.cilium_namespace, pod)
        self._booting[created["metadata"]["uid"]] = (time.monotonic() + self.agent_boot_seconds, node,
                                                     created["metadata"]["name"])
        return created

    def _finish_boots(self) -> None:
        now = time.monotonic()
        for uid, (ready_at, node, pod_name) in list(self._booting.items()):
            if now < ready_at:
                continue
            del self._booting[uid]
            pod = self.store.try_get(self.rtype("pods"), self.cilium_namespace, pod_name)
            if pod is None or pod["metadata"]["uid"] != uid:
                continue
            image = next((c.get("image", "") for c in pod["spec"].get("containers", [])
                          if c.get("name") == "cilium-agent"), "")
            version = self.agent_version or (image.rsplit(":", 1)[-1].lstrip("v").split("@")[0] if ":" in image
                                             else "1.15.1")
            agent = self.agents.get(node)
            if agent is None:
                agent = CiliumAgent(node, version=version, cluster_name=self.name)
                self.agents[node] = agent
            agent.version = version
            global_audit = self.global_audit_for(node)
            records = [r for r in self.endpoints.values() if r.node == node]
            agent.start(global_audit, [self._host_endpoint_spec(node)] + [self._endpoint_spec(r) for r in records])
            healthy = node not in self.faults.agents_never_ready
            agent.healthy = healthy
            self.agent_starts.setdefault(node, []).append(AgentStart(pod_name, version, global_audit, time.time()))
            log = self._logs.setdefault((self.cilium_namespace, pod_name), [])
            log.append(f'level=info msg="Cilium {version} starting" subsys=daemon')
            if global_audit:
                log.append('level=warning msg="PolicyAuditMode is enabled. Network policy will not be enforced." '
                           "subsys=daemon")
            ready = "True" if healthy else "False"

            def booted(obj: dict[str, Any], ready: str = ready, image: str = image) -> None:
                obj["status"].update({"phase": "Running", "startTime": now_rfc3339(),
                                      "conditions": [{"type": "Ready", "status": ready},
                                                     {"type": "ContainersReady", "status": ready}],
                                      "containerStatuses": [{"name": "cilium-agent", "ready": ready == "True",
                                                             "restartCount": 0, "started": True, "image": image,
                                                             "imageID": _image_id(image),
                                                             "state": {"running": {"startedAt": now_rfc3339()}}}]})

            self.store.mutate(self.rtype("pods"), self.cilium_namespace, pod_name, booted)

    def _reconcile_deployments(self) -> None:
        """Deployments roll all their pods to the current template (one at a time), e.g. cilium-operator."""
        deploy_type = self.rtype("deployments", "apps")
        for deploy in self.store.list(deploy_type):
            meta = deploy["metadata"]
            selector = deploy["spec"].get("selector", {}).get("matchLabels", {})
            if not selector:
                continue
            label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            current_hash = self._template_hash(deploy["spec"]["template"])
            pods = self.store.list(self.rtype("pods"), meta["namespace"], label_selector)
            replicas = int(deploy["spec"].get("replicas", 1))
            current = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == current_hash]
            outdated = [p for p in pods if p not in current]
            if len(current) < replicas:
                for index in range(replicas - len(current) if not outdated else 1):
                    self._create_deployment_pod(deploy, current_hash, len(pods) + index)
            elif outdated:
                self.store.delete(self.rtype("pods"), meta["namespace"], outdated[0]["metadata"]["name"])
            elif len(current) > replicas:
                self.store.delete(self.rtype("pods"), meta["namespace"], current[-1]["metadata"]["name"])
            pods = self.store.list(self.rtype("pods"), meta["namespace"], label_selector)
            ready = sum(1 for p in pods if _pod_ready(p))
            updated = sum(1 for p in pods if p["metadata"]["labels"].get("pod-template-hash") == current_hash)
            status = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods),
                      "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
                      "conditions": [{"type": "Available", "status": "True" if ready >= replicas else "False"},
                                     {"type": "Progressing", "status": "True",
                                      "reason": "NewReplicaSetAvailable" if updated == replicas == ready
                                      else "ReplicaSetUpdated"}]}
            if len(pods) - ready:
                status["unavailableReplicas"] = len(pods) - ready
            if deploy.get("status") != status:
                self.store.mutate(deploy_type, meta["namespace"], meta["name"],
                                  lambda obj, status=status: obj.update(status=status))

    def _create_deployment_pod(self, deploy: dict[str, Any], template_hash: str, index: int) -> None:
        template = deploy["spec"]["template"]
        nodes = sorted(self.node_names())
        self._placements += 1
        node = nodes[(self._placements - 1) % len(nodes)] if nodes else None
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels["pod-template-hash"] = template_hash
        meta = deploy["metadata"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{meta['name']}-{template_hash[:9]}-{_random_suffix(self._rng)}",
                            "namespace": meta["namespace"], "labels": labels,
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                 "name": f"{meta['name']}-{template_hash[:9]}", "controller": True,
                                                 "uid": _derived_uid(meta["uid"], template_hash)}]},
               "spec": {**template.get("spec", {}), **({"nodeName": node} if node else {})}}
        self.store.create(self.rtype("pods"), meta["namespace"], pod)
        if pod["spec"].get("hostNetwork"):
            def running(obj: dict[str, Any]) -> None:
                obj["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}

            self.store.mutate(self.rtype("pods"), meta["namespace"], pod["metadata"]["name"], running)

    # --- waiting (for tests and the demo) ---------------------------------------------------------------
    def wait_until(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.store.lock:
                if predicate():
                    return
            time.sleep(0.02)
        raise TimeoutError(f"simulated cluster {self.name}: timed out waiting for {what}")

    def agents_ready(self) -> bool:
        pods = self.agent_pods()
        ds = self.store.try_get(self.rtype("daemonsets", "apps"), self.cilium_namespace, "cilium")
        if ds is None:
            return False
        status = ds.get("status") or {}
        return (len(pods) == len(self.node_names()) and all(_pod_ready(p) for p in pods)
                and status.get("updatedNumberScheduled") == len(self.node_names())
                and status.get("observedGeneration") == ds["metadata"].get("generation"))

    def wait_for_agents(self, timeout: float = 20.0) -> None:
        self.wait_until(self.agents_ready, timeout, "all cilium agents ready on the current pod template")

    # --- exec target ----------------------------------------------------------------------------------
    def run_in_container(self, namespace: str | None, pod_name: str, container: str,
                         argv: list[str]) -> tuple[str, str, int, str | None]:
        """Run argv in a container: (stdout, stderr, exit code, API-level failure message or None).

        In the ``cilium-agent`` container, the agent binary is the emulated CLI, and ``sh`` is a real POSIX shell
        (the agent image has one) whose PATH holds only the agent binary, so a product that batches commands in a
        fixed shell script with its arguments passed as argv runs exactly as it would in a real agent pod.
        """
        self.exec_log.append((namespace, pod_name, container, list(argv)))
        pod = self.store.try_get(self.rtype("pods"), namespace, pod_name)
        if pod is None:
            return "", "", 1, f'pods "{pod_name}" not found'
        is_agent = (pod["metadata"].get("labels") or {}).get("k8s-app") == "cilium" and container == "cilium-agent"
        node = pod["spec"].get("nodeName", "")
        agent = self.agents.get(node) if is_agent else None
        if agent is None:
            return "", "", ExecResult.NOT_FOUND, _exec_failure(NOT_FOUND_IN_PATH.format(name=argv[0]))
        if os.path.basename(argv[0]) in ("sh", "bash") and len(argv) >= 3 and argv[1] == "-c":
            return self._run_shell(node, agent, argv)
        result = agent.exec(list(argv))
        if result.is_not_found:
            return "", "", result.exit_code, _exec_failure(result.stderr.strip())
        return result.stdout, result.stderr, result.exit_code, None

    def _run_shell(self, node: str, agent: CiliumAgent, argv: list[str]) -> tuple[str, str, int, str | None]:
        shim_dir = self._shim_dir(agent.binary)
        env = {"PATH": str(shim_dir), "SIMCLUSTER_AGENT_SOCKET": self._agent_socket_path(), "SIMCLUSTER_NODE": node,
               "HOME": "/root", "LANG": "C.UTF-8"}
        try:
            completed = subprocess.run(["/bin/sh", *argv[1:]], env=env, capture_output=True, timeout=120,
                                       check=False)
        except subprocess.TimeoutExpired:
            return "", "shell timed out\n", 124, None
        return (completed.stdout.decode("utf-8", "replace"), completed.stderr.decode("utf-8", "replace"),
                completed.returncode, None)

    def _shim_dir(self, binary: str) -> Path:
        """The directory of the agent binary that shells in agent containers run, made once per cluster. Shells of
        every node start at once (a batch per node), so it is made under a lock and renamed into place whole: a
        file written while another shell runs it fails with "Text file busy", or is read empty and does nothing."""
        shim_dir = self.state_dir / "agent-bin" / binary
        shim = shim_dir / binary
        with self._shell_lock:
            if not shim.exists():
                shim_dir.mkdir(parents=True, exist_ok=True)
                partial = shim_dir / f".{binary}.partial"
                partial.write_text(f"#!{sys.executable} -IS\n" + SHIM_SOURCE)
                partial.chmod(0o755)
                partial.replace(shim)
        return shim_dir

    def _agent_socket_path(self) -> str:
        with self._shell_lock:  # one server for the cluster, whichever shell asks first
            return self._agent_socket_path_locked()

    def _agent_socket_path_locked(self) -> str:
        if self._agent_socket is None:
            # A short path of its own: unix socket paths are limited to about 100 bytes.
            path = os.path.join(tempfile.mkdtemp(prefix="simsock-"), "agents.sock")
            cluster = self

            class Handler(socketserver.StreamRequestHandler):
                def handle(self) -> None:
                    request = json.loads(self.rfile.readline())
                    agent = cluster.agents.get(request["node"])
                    if agent is None:
                        reply = {"stdout": "", "stderr": "agent gone\n", "exit_code": 1}
                    else:
                        result = agent.exec(request["argv"])
                        reply = {"stdout": result.stdout, "stderr": result.stderr, "exit_code": result.exit_code}
                    self.wfile.write(json.dumps(reply).encode())

            server = socketserver.ThreadingUnixStreamServer(path, Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name=f"{self.name}-agent-socket", daemon=True).start()
            self._agent_socket = server
        return str(self._agent_socket.server_address)


# The agent binary inside a simulated agent pod's shell: forwards its argv to the emulated agent of its node.
SHIM_SOURCE = """import json, os, socket, sys
conn = socket.socket(socket.AF_UNIX)
conn.connect(os.environ["SIMCLUSTER_AGENT_SOCKET"])
argv = [os.path.basename(sys.argv[0])] + sys.argv[1:]
conn.sendall(json.dumps({"node": os.environ["SIMCLUSTER_NODE"], "argv": argv}).encode() + b"\\n")
chunks = []
while True:
    chunk = conn.recv(65536)
    if not chunk:
        break
    chunks.append(chunk)
reply = json.loads(b"".join(chunks))
sys.stdout.write(reply["stdout"])
sys.stderr.write(reply["stderr"])
sys.exit(reply["exit_code"])
"""


def _exec_failure(runtime_message: str) -> str:
    exec_id = hashlib.sha256(runtime_message.encode()).hexdigest()
    return ("Internal error occurred: error executing command in container: failed to exec in container: failed to "
            f'start exec "{exec_id}": {runtime_message}')


def _derived_uid(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _image_id(image: str) -> str:
    return f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod.get("status", {}).get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod["status"].get("conditions", []))


def _random_suffix(rng: random.Random, length: int = 5) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _index in range(length))


def _resolve_int_or_percent(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return max(1, total * int(value[:-1]) // 100)
    return max(1, int(value))


def _strip_selector_prefixes(selector: dict[str, Any] | None) -> dict[str, Any] | None:
    """Cilium selectors may prefix keys with a label source (``k8s:app``, ``any:app``); pods carry bare keys."""
    if selector is None:
        return None

    def bare(key: str) -> str:
        for prefix in ("k8s:", "any:"):
            if key.startswith(prefix):
                return key[len(prefix):]
        return key

    return {"matchLabels": {bare(k): v for k, v in (selector.get("matchLabels") or {}).items()},
            "matchExpressions": [{**e, "key": bare(e["key"])} for e in selector.get("matchExpressions") or []]}
