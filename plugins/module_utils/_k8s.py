# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""The one adapter between netpol.cilium and kubernetes.core.

Note that this module util is PRIVATE to the collection. It can change at any time.

Everything we take from kubernetes.core (its auth argument spec, AnsibleK8SModule, get_api_client and CoreException)
is imported here and nowhere else, so the rest of the collection depends on a small surface we test and pin
(kubernetes.core >= 6.0.0, < 7.0.0). Auth options therefore keep kubernetes.core's names and K8S_AUTH_* environment
variables, and an AWX Kubernetes credential works as is.

On top of that this module adds what our cluster operations need: one error type that names the call that failed,
bounded retries with backoff and jitter for idempotent reads, and fresh ApiClient copies for threads (the
``kubernetes.stream`` exec helper swaps a method on the ApiClient it is given, so one client must not be shared by
concurrent execs).
"""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any, Callable, TypeVar

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException

    HAS_KUBERNETES_CORE = True
except ImportError:  # pragma: no cover - reported by build_module()
    AUTH_ARG_SPEC = {}
    HAS_KUBERNETES_CORE = False

    class CoreException(Exception):  # type: ignore[no-redef]
        pass

try:
    from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    HAS_KUBERNETES = True
except ImportError:  # pragma: no cover - reported by AnsibleK8SModule
    HAS_KUBERNETES = False

    class ApiException(Exception):  # type: ignore[no-redef]
        status = 0
        reason = ""
        body = ""

    class Urllib3Error(Exception):  # type: ignore[no-redef]
        pass


T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class KubeError(Exception):
    """A Kubernetes API call that failed, with the call named and the API's own message kept."""

    def __init__(self, call: str, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(f"{call}: {message}")
        self.call = call
        self.api_message = message
        self.status = status
        self.reason = reason

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def auth_argument_spec() -> dict[str, Any]:
    """kubernetes.core's auth options (kubeconfig, context, host, api_key, ...), copied so callers may extend."""
    return copy.deepcopy(AUTH_ARG_SPEC)


def build_module(argument_spec: dict[str, Any], **kwargs: Any) -> Any:
    """An AnsibleK8SModule: checks the kubernetes and PyYAML libraries and redacts kubeconfig secrets."""
    if not HAS_KUBERNETES_CORE:
        from ansible.module_utils.basic import AnsibleModule

        module = AnsibleModule(argument_spec=argument_spec, **kwargs)
        module.fail_json(msg="netpol.cilium requires the kubernetes.core collection (>= 6.0.0, < 7.0.0): install it "
                         "with `ansible-galaxy collection install kubernetes.core`")
    return AnsibleK8SModule(argument_spec=argument_spec, **kwargs)


def describe_api_exception(exc: Any) -> tuple[str, int | None, str | None]:
    """(message, status, reason) from an ApiException, preferring the Status body the API server sent."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    message = reason or str(exc)
    body = getattr(exc, "body", None)
    if body:
        try:
            parsed = json.loads(body)
        except (TypeError, ValueError):
            parsed = None
        if isinstance(parsed, dict):
            message = parsed.get("message") or message
            reason = parsed.get("reason") or reason
    return message, status, reason


def _retry_after(exc: Any) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Kube:
    """The cluster as our operations see it: typed API groups, named calls, retries for reads."""

    def __init__(self, api_client: Any, *, retries: int = 4, backoff: float = 0.25, max_backoff: float = 4.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api_client = api_client
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._random = random.Random()
        self.core = CoreV1Api(api_client)
        self.apps = AppsV1Api(api_client)
        self.custom = CustomObjectsApi(api_client)
        self.retried = 0

    @classmethod
    def from_module(cls, module: Any) -> Kube:
        """Connect with kubernetes.core's client factory (module params, K8S_AUTH_* env, kubeconfig, in-cluster)."""
        try:
            k8s_client = get_api_client(module=module)
        except CoreException as exc:
            raise KubeError("connect to the Kubernetes API", str(exc)) from exc
        return cls(k8s_client.client.client)

    def fresh_api_client(self) -> Any:
        """A new ApiClient with the same configuration and default headers, for use by one thread."""
        clone = ApiClient(self.api_client.configuration)
        for name, value in self.api_client.default_headers.items():
            clone.set_default_header(name, value)
        return clone

    def call(self, description: str, function: Callable[..., T], *args: Any, idempotent: bool = True,
             **kwargs: Any) -> T:
        """Run one API call; retry idempotent ones on 429/5xx and transport errors; raise KubeError."""
        attempt = 0
        while True:
            try:
                return function(*args, **kwargs)
            except ApiException as exc:
                message, status, reason = describe_api_exception(exc)
                if idempotent and status in RETRYABLE_STATUS and attempt < self.retries:
                    self._pause(attempt, _retry_after(exc))
                    attempt += 1
                    continue
                raise KubeError(description, message, status, reason) from exc
            except Urllib3Error as exc:
                if idempotent and attempt < self.retries:
                    self._pause(attempt, None)
                    attempt += 1
                    continue
                raise KubeError(description, f"could not reach the API server: {exc}") from exc

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        delay = delay / 2 + self._random.uniform(0, delay / 2)  # jitter, so parallel callers do not retry in step
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        self.retried += 1
        self._sleep(delay)
