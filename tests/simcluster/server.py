"""The Kubernetes REST API of a simulated cluster, over HTTPS, as aiohttp handlers.

It serves discovery, CRUD with selectors, watch, the three patch types, server-side dry-run, Status error bodies,
bearer-token authentication with rule-based authorization, SelfSubjectAccessReview, pod logs and pod exec over the
WebSocket channel protocol (``v5.channel.k8s.io`` / ``v4.channel.k8s.io``), and pod port-forward over the same
protocol: to the simulated Hubble Relay for the hubble-relay pod.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import yaml
from aiohttp import WSMsgType, web

from .patching import PatchError, apply_patch
from .rbac import BASIC_USER_RULES, Attributes, RbacAuthorizer, rule_allows
from .selectors import SelectorError
from .store import ApiError, ResourceType, conflict

if TYPE_CHECKING:
    from .cluster import SimCluster

KUBERNETES_VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.4", "gitCommit": "simulated",
                      "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.5",
                      "compiler": "gc", "platform": "linux/amd64"}

STDOUT, STDERR, ERROR = 1, 2, 3


@dataclass(frozen=True)
class Rule:
    """An RBAC PolicyRule: verbs on resources (``pods``, ``pods/exec``) in API groups, optionally in namespaces."""

    verbs: frozenset[str]
    resources: frozenset[str]
    api_groups: frozenset[str] = frozenset({"*"})
    namespaces: frozenset[str] | None = None  # None: cluster-wide (ClusterRoleBinding)

    def allows(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" not in self.api_groups and group not in self.api_groups:
            return False
        if "*" not in self.resources and resource not in self.resources:
            return False
        return self.namespaces is None or (namespace is not None and namespace in self.namespaces)


@dataclass
class Principal:
    """An authenticated user. Without ``rbac`` it holds ``rules`` (None = cluster-admin); with ``rbac`` (a
    ServiceAccount token) the cluster's Role/ClusterRole/RoleBinding/ClusterRoleBinding objects decide."""

    user: str
    rules: list[Rule] | None = None  # None = cluster-admin
    groups: list[str] = field(default_factory=lambda: ["system:authenticated"])
    rbac: RbacAuthorizer | None = None
    service_account: tuple[str, str] | None = None  # (namespace, name) of the ServiceAccount the token was made for

    def allows(self, verb: str, group: str, resource: str, namespace: str | None, name: str | None = None) -> bool:
        return self.authorize(verb, group, resource, namespace, name)[0]

    def authorize(self, verb: str, group: str, resource: str, namespace: str | None,
                  name: str | None = None) -> tuple[bool, str]:
        """(allowed, reason) for a resource request; ``resource`` may carry its subresource (``pods/exec``)."""
        plural, _sep, sub = resource.partition("/")
        attrs = Attributes(verb, group, plural, sub, namespace or "", name or "")
        if self.rbac is not None:
            return self.rbac.authorize(self.user, self.groups, attrs)
        if self.rules is None or any(rule_allows(basic, attrs) for basic in BASIC_USER_RULES):
            return True, ""
        return any(rule.allows(verb, group, resource, namespace) for rule in self.rules), ""


def _status_response(error: ApiError) -> web.Response:
    return web.json_response(error.status(), status=error.code, headers=error.headers)


def _field_selector_name(selector: str | None) -> str | None:
    """The name a ``metadata.name=<name>`` (or ``==``) field selector asks for, as RequestInfo finds it."""
    for term in (selector or "").split(","):
        key, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if sep and not key.endswith("!") and key.strip() == "metadata.name":
            return value.strip()
    return None


def _strip_list_item(obj: dict[str, Any]) -> dict[str, Any]:
    item = dict(obj)
    item.pop("apiVersion", None)
    item.pop("kind", None)
    return item


class ApiServer:
    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)
        self.request_log: list[tuple[str, str, int]] = []

    # --- entry point ----------------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            response = await self._dispatch(request)
        except ApiError as error:
            response = _status_response(error)
        except (SelectorError, PatchError) as error:
            response = _status_response(ApiError(400, "BadRequest", str(error)))
        self.request_log.append((request.method, request.path_qs, response.status))
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/version":
            return web.json_response(KUBERNETES_VERSION)
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        principal = self._authenticate(request)
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.cluster.port}"}]})
        if path == "/apis":
            return web.json_response(self._group_list())
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[0] == "apis" and len(parts) == 2:
            return web.json_response(self._group(parts[1]))
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not rest:
            return web.json_response(self._resource_list(group, version))
        return await self._resource_request(request, principal, group, version, rest)

    # --- authentication and authorization ---------------------------------------------------------------
    def _authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        principal = self.cluster.tokens.get(token) if token else None
        if principal is not None and principal.service_account is not None:
            # a ServiceAccount token is only valid while its ServiceAccount exists (as for bound tokens)
            sa_namespace, sa_name = principal.service_account
            if self.store.try_get(self.store.types[("", "serviceaccounts")], sa_namespace, sa_name) is None:
                principal = None
        if principal is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return principal

    @staticmethod
    def _forbidden(principal: Principal, verb: str, rtype: ResourceType, resource: str, namespace: str | None,
                   name: str | None, reason: str = "") -> ApiError:
        """The API server's Forbidden: ``<resource>[.<group>] ["<name>"] is forbidden: User "<user>" cannot <verb>
        resource "<resource>[/<subresource>]" in API group "<group>" in the namespace "<ns>"`` (or ``at the
        cluster scope``), then ``: <reason>`` when the authorizer gave one."""
        plural = resource.partition("/")[0]
        kind = plural if not rtype.group else f"{plural}.{rtype.group}"
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        named = f' "{name}"' if name else ""
        message = (f'{kind}{named} is forbidden: User "{principal.user}" cannot {verb} resource "{resource}" '
                   f'in API group "{rtype.group}"{where}' + (f": {reason}" if reason else ""))
        details: dict[str, Any] = {"kind": plural}
        if name:
            details["name"] = name
        if rtype.group:
            details["group"] = rtype.group
        return ApiError(403, "Forbidden", message, details)

    # --- discovery ------------------------------------------------------------------------------------
    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rtype in self.store.types.values():
            if rtype.group:
                versions = groups.setdefault(rtype.group, [])
                if rtype.version not in versions:
                    versions.append(rtype.version)
        return groups

    def _group(self, name: str) -> dict[str, Any]:
        versions = self._group_versions().get(name)
        if not versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in sorted(versions, reverse=True)]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": entries,
                "preferredVersion": entries[0]}

    def _group_list(self) -> dict[str, Any]:
        groups = [self._group(name) for name in sorted(self._group_versions())]
        for group in groups:
            group.pop("kind")
            group.pop("apiVersion")
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for rtype in sorted(self.store.types.values(), key=lambda t: t.plural):
            if rtype.group != group or rtype.version != version:
                continue
            entry: dict[str, Any] = {"name": rtype.plural, "singularName": rtype.singular or rtype.kind.lower(),
                                     "namespaced": rtype.namespaced, "kind": rtype.kind, "verbs": list(rtype.verbs)}
            if rtype.short_names:
                entry["shortNames"] = list(rtype.short_names)
            resources.append(entry)
            for sub in rtype.subresources:
                sub_kind = {"exec": "PodExecOptions", "log": "Pod", "portforward": "PodPortForwardOptions",
                            "scale": "Scale"}.get(sub, rtype.kind)
                sub_verbs = {"exec": ["create", "get"], "log": ["get"], "portforward": ["create", "get"]}.get(
                    sub, ["get", "patch", "update"])
                resources.append({"name": f"{rtype.plural}/{sub}", "singularName": "", "namespaced": rtype.namespaced,
                                  "kind": sub_kind, "verbs": sub_verbs})
        if not resources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    # --- resources ------------------------------------------------------------------------------------
    async def _resource_request(self, request: web.Request, principal: Principal, group: str, version: str,
                                rest: list[str]) -> web.StreamResponse:
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        rtype = self.store.find_type(group, version, plural)
        if rtype is None or (namespace is not None and not rtype.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if sub is not None and sub not in rtype.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        query = dict(parse_qsl(request.query_string, keep_blank_values=True))
        verb = self._verb(request.method, name, query, sub)
        resource = f"{plural}/{sub}" if sub else plural
        # RequestInfo: a list or watch for one object (fieldSelector metadata.name=<name>) is authorized with that
        # name, so that rules with resourceNames can allow it; a create on a collection never has a name
        authz_name = name or (_field_selector_name(query.get("fieldSelector")) if verb in ("list", "watch") else None)
        allowed, reason = principal.authorize(verb, group, resource, namespace if rtype.namespaced else None,
                                              authz_name)
        if not allowed:
            raise self._forbidden(principal, verb, rtype, resource, namespace, authz_name, reason)
        fault = self.cluster.faults.pick_api_fault(verb, plural, name)
        if fault is not None:
            await self._apply_fault(fault, rtype, name)
        dry_run = query.get("dryRun") == "All"
        if sub == "exec":
            return await self._exec(request, namespace, name or "", query)
        if sub == "portforward":
            return await self._portforward(request, namespace, name or "", query)
        if sub == "log":
            return web.Response(text=self.cluster.pod_log(namespace, name or ""), content_type="text/plain")
        if verb == "watch":
            return await self._watch(request, rtype, namespace, name, query)
        if verb == "list":
            items = self.store.list(rtype, namespace, query.get("labelSelector"), query.get("fieldSelector"))
            return web.json_response({"kind": f"{rtype.kind}List", "apiVersion": rtype.group_version,
                                      "metadata": {"resourceVersion": str(self.store.resource_version)},
                                      "items": [_strip_list_item(item) for item in items]})
        if verb == "get":
            return web.json_response(self._read(rtype, namespace, name or "", sub))
        if verb == "create":
            body = await self._body(request)
            if rtype.plural == "selfsubjectaccessreviews":
                return web.json_response(self._access_review(principal, body), status=201)
            created = self.store.create(rtype, namespace, body, dry_run=dry_run)
            return web.json_response(created, status=201)
        if verb == "update":
            body = await self._body(request)
            if sub == "status":
                current = self.store.get(rtype, namespace, name or "")
                current["status"] = body.get("status", {})
                body = current
            return web.json_response(self.store.replace(rtype, namespace, name or "", body, dry_run=dry_run))
        if verb == "patch":
            return web.json_response(await self._patch(request, rtype, namespace, name or "", dry_run))
        if verb == "delete":
            return web.json_response(self.store.delete(rtype, namespace, name or "", dry_run=dry_run))
        if verb == "deletecollection":
            items = self.store.list(rtype, namespace, query.get("labelSelector"), query.get("fieldSelector"))
            for item in items:
                self.store.delete(rtype, namespace or item["metadata"].get("namespace"), item["metadata"]["name"],
                                  dry_run=dry_run)
            return web.json_response({"kind": f"{rtype.kind}List", "apiVersion": rtype.group_version,
                                      "metadata": {"resourceVersion": str(self.store.resource_version)},
                                      "items": [_strip_list_item(item) for item in items]})
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @staticmethod
    def _verb(method: str, name: str | None, query: dict[str, str], sub: str | None) -> str:
        if sub in ("exec", "portforward"):
            # the client's WebSocket GET upgrade is authorized as `create`, as by a Kubernetes 1.30+ API server
            # (AuthorizePodWebsocketUpgradeCreatePermission); older servers ask for `get`
            return "create"
        watching = query.get("watch") in ("true", "1")
        if method == "GET":
            if watching:
                return "watch"
            return "get" if name else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())

    async def _apply_fault(self, fault: Any, rtype: ResourceType, name: str | None) -> None:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.code == 0:
            return
        if fault.code == 409:
            raise conflict(rtype, name or "")
        if fault.code == 429:
            raise ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                           {"retryAfterSeconds": 1}, headers={"Retry-After": "1"})
        if fault.code == 503:
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request",
                           {"retryAfterSeconds": 1})
        if fault.code == 504:
            raise ApiError(504, "Timeout", "Timeout: request did not complete within the allotted timeout",
                           {"retryAfterSeconds": 1})
        raise ApiError(fault.code, "InternalError", "Internal error occurred: simulated fault",
                       {"causes": [{"message": "simulated fault"}]})

    def _read(self, rtype: ResourceType, namespace: str | None, name: str, sub: str | None) -> dict[str, Any]:
        obj = self.store.get(rtype, namespace, name)
        if sub == "scale":
            return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": obj["metadata"],
                    "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
                    "status": {"replicas": obj.get("status", {}).get("replicas", 0)}}
        return obj

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise ApiError(400, "BadRequest", "the body of the request was empty")
        try:
            return json.loads(raw)
        except ValueError:
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {exc}") from exc

    async def _patch(self, request: web.Request, rtype: ResourceType, namespace: str | None, name: str,
                     dry_run: bool) -> dict[str, Any]:
        content_type = request.headers.get("Content-Type", "")
        patch = await self._body(request)
        with self.store.lock:
            current = self.store.get(rtype, namespace, name)
            if isinstance(patch, dict):
                wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
                if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                    raise conflict(rtype, name)
            patched = apply_patch(content_type, current, patch)
            patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.store.replace(rtype, namespace, name, patched, dry_run=dry_run)

    def _access_review(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource = f"{resource}/{attrs['subresource']}"
        allowed, reason = principal.authorize(attrs.get("verb", ""), attrs.get("group", ""), resource,
                                              attrs.get("namespace"), attrs.get("name"))
        review = dict(body)
        review["status"] = {"allowed": allowed}
        if not allowed:
            review["status"]["reason"] = reason
        return review

    # --- watch ----------------------------------------------------------------------------------------
    async def _watch(self, request: web.Request, rtype: ResourceType, namespace: str | None, name: str | None,
                     query: dict[str, str]) -> web.StreamResponse:
        from .selectors import match_fields, match_labels, parse_field_selector, parse_label_selector

        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
        if name:
            fields.append(("metadata.name", "=", name))
        timeout = float(query.get("timeoutSeconds") or 300)
        start_rv = query.get("resourceVersion") or "0"
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if start_rv == "0":
            initial = self.store.list(rtype, namespace)
            last_rv = self.store.resource_version
            for obj in initial:
                if match_labels(labels, obj["metadata"].get("labels")) and match_fields(fields, obj):
                    await response.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
        else:
            last_rv = int(start_rv)
            if last_rv < self.store.oldest_history_version() - 1:
                gone = ApiError(410, "Expired", f"too old resource version: {last_rv} "
                                f"({self.store.oldest_history_version()})").status()
                await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                return response
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.cluster.stopping:
            for event in self.store.events_since(last_rv):
                last_rv = event.resource_version
                if event.key != rtype.key or (namespace and event.namespace != namespace):
                    continue
                if not match_labels(labels, event.object["metadata"].get("labels")):
                    continue
                if not match_fields(fields, event.object):
                    continue
                try:
                    await response.write(json.dumps({"type": event.type, "object": event.object}).encode() + b"\n")
                except (ConnectionResetError, RuntimeError):
                    return response
            await asyncio.sleep(0.05)
        return response

    # --- exec -----------------------------------------------------------------------------------------
    async def _exec(self, request: web.Request, namespace: str | None, name: str,
                    query: dict[str, str]) -> web.StreamResponse:
        pods = self.store.type_for_kind("Pod", "")
        pod = self.store.get(pods, namespace, name)
        commands = [value for key, value in parse_qsl(request.query_string) if key == "command"]
        containers = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
        container = query.get("container") or (containers[0] if containers else "")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(400, "BadRequest", "Upgrade request required")
        if not commands:
            raise ApiError(400, "BadRequest", "you must specify at least 1 command")
        if container not in containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if pod.get("status", {}).get("phase") != "Running":
            raise ApiError(400, "BadRequest", f"pod {name} does not have a host assigned"
                           if not pod.get("spec", {}).get("nodeName") else
                           f"unable to upgrade connection: container not found (\"{container}\")")
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"))
        await ws.prepare(request)
        node = pod["spec"].get("nodeName", "")
        fault = self.cluster.faults.exec_fault(node)
        latency = self.cluster.faults.exec_latency + (fault.seconds if fault and fault.mode == "latency" else 0)
        if latency:
            await asyncio.sleep(latency)
        if fault is not None and fault.mode == "hang":
            await self._wait_for_close(ws, fault.seconds or 600)
            return ws
        if fault is not None and fault.mode == "fail":
            status = {"metadata": {}, "status": "Failure", "message": "error dialing backend: dial tcp "
                      f"{self.cluster.node_ip(node)}:10250: connect: connection refused", "reason": "InternalError",
                      "code": 500}
            await self._send(ws, ERROR, json.dumps(status).encode())
            await ws.close()
            return ws
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, self.cluster.run_in_container, namespace, name, container, commands)
        stdout, stderr, exit_code, failure = result
        if fault is not None and fault.mode == "garbage":
            stdout, exit_code = "\x00\x1b[2Jpanic: runtime error: invalid memory address\n{\"trunc", 0
        if fault is not None and fault.mode == "exit":
            stdout, stderr, exit_code = "", "Error: Cannot get endpoint: connection refused\n", fault.exit_code
        if stdout:
            await self._send(ws, STDOUT, stdout.encode())
        if stderr:
            await self._send(ws, STDERR, stderr.encode())
        if failure is not None:
            status = {"metadata": {}, "status": "Failure", "message": failure, "reason": "InternalError", "code": 500}
        elif exit_code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {"metadata": {}, "status": "Failure",
                      "message": f"command terminated with non-zero exit code: error executing command "
                      f"[{' '.join(commands)}], exit code {exit_code}", "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}
        await self._send(ws, ERROR, json.dumps(status).encode())
        await ws.close()
        return ws

    @staticmethod
    async def _send(ws: web.WebSocketResponse, channel: int, data: bytes) -> None:
        chunk = 32 * 1024
        for offset in range(0, len(data), chunk):
            await ws.send_bytes(bytes([channel]) + data[offset:offset + chunk])

    @staticmethod
    async def _wait_for_close(ws: web.WebSocketResponse, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                async for message in ws:
                    if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
        except TimeoutError:
            pass
        await ws.close()

    # --- port-forward ---------------------------------------------------------------------------------------------
    async def _portforward(self, request: web.Request, namespace: str | None, name: str,
                           query: dict[str, str]) -> web.StreamResponse:
        """Port-forward over WebSocket (v4.channel.k8s.io): per port, channel 2i carries data and 2i+1 errors, and the
        first frame on each channel is the port number (2 bytes, little endian). Port 4245 of the hubble-relay pod
        leads to the simulated Relay; any other port is refused, as by a pod that does not listen there."""
        pods = self.store.type_for_kind("Pod", "")
        pod = self.store.get(pods, namespace, name)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(400, "BadRequest", "Upgrade request required")
        try:
            ports = [int(port) for port in query.get("ports", "").split(",") if port]
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid port number: {query.get('ports')}") from None
        if not ports:
            raise ApiError(400, "BadRequest", "at least one port must be specified")
        if pod.get("status", {}).get("phase") != "Running":
            raise ApiError(400, "BadRequest", f"pod {name} is not running and cannot be port-forwarded")
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request)
        for index, port in enumerate(ports):
            await ws.send_bytes(bytes([2 * index]) + port.to_bytes(2, "little"))
            await ws.send_bytes(bytes([2 * index + 1]) + port.to_bytes(2, "little"))
        is_relay = ((pod["metadata"].get("labels") or {}).get("k8s-app") == "hubble-relay"
                    and namespace == self.cluster.cilium_namespace)
        address = self.cluster.hubble_relay_address if is_relay else None
        if len(ports) != 1 or ports[0] != 4245 or address is None:
            uid = pod["metadata"].get("uid", "")
            message = (f"error forwarding port {ports[0]} to pod {uid}, uid : failed to execute portforward in "
                       f"network namespace: failed to connect to localhost:{ports[0]} inside namespace: "
                       "connect: connection refused")
            await ws.send_bytes(bytes([1]) + message.encode())
            await ws.close()
            return ws
        host, _sep, port = address.rpartition(":")
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            await ws.send_bytes(bytes([1]) + f"error forwarding port 4245: {exc}".encode())
            await ws.close()
            return ws

        async def upstream_to_client() -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    await ws.send_bytes(b"\x00" + data)
            except (ConnectionError, RuntimeError):
                pass
            finally:
                await ws.close()

        pump = asyncio.ensure_future(upstream_to_client())
        try:
            async for message in ws:
                if message.type == WSMsgType.BINARY and message.data[:1] == b"\x00" and len(message.data) > 1:
                    writer.write(message.data[1:])
                    await writer.drain()
                elif message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        except (ConnectionError, RuntimeError):
            pass
        finally:
            writer.close()
            pump.cancel()
        return ws
