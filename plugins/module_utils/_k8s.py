# Copyright (c) netpol.cilium contributors
# Apache License 2.0 (see LICENSE)
"""The one adapter between netpol.cilium and kubernetes.core.

Note that this module util is PRIVATE to the collection. It can change at any time.

Everything we take from kubernetes.core (its auth argument spec, AnsibleK8SModule, get_api_client and CoreException)
is imported here and nowhere else, so the rest of the collection depends on a small surface we test and pin
(kubernetes.core >= 6.0.0, < 7.0.0). Auth options therefore keep kubernetes.core's names and K8S_AUTH_* environment
variables, and an AWX Kubernetes credential works as is.

On top of that this module adds what our cluster operations need: one error type that names the call that failed
(and how often it was tried), a timeout on every request, bounded retries with backoff and jitter for idempotent calls
(429, 5xx, timeouts, transport errors; a request that never reached the server is retried whatever it is), re-read and
retry on a 409 Conflict for writes that say how, and fresh ApiClient copies for threads (the ``kubernetes.stream``
exec helper swaps a method on the ApiClient it is given, so one client must not be shared by concurrent execs).
"""

from __future__ import annotations

import copy
import json
import os
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
    from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError

    HAS_KUBERNETES = True
except ImportError:  # pragma: no cover - reported by AnsibleK8SModule
    HAS_KUBERNETES = False

    class ApiException(Exception):  # type: ignore[no-redef]
        status = 0
        reason = ""
        body = ""

    class Urllib3Error(Exception):  # type: ignore[no-redef]
        pass

    class ConnectTimeoutError(Urllib3Error):  # type: ignore[no-redef]
        pass

    class ReadTimeoutError(Urllib3Error):  # type: ignore[no-redef]
        pass


T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
DEFAULT_REQUEST_TIMEOUT = 30.0  # seconds one API request may take (the API server's own limit is 60s)
TLS_OFF_WARNING = ("the Kubernetes API server's TLS certificate is not verified (validate_certs is false, "
                   "K8S_AUTH_VERIFY_SSL is false, or the kubeconfig sets insecure-skip-tls-verify): anyone on the "
                   "path can read the token and change what this task changes")


class KubeError(Exception):
    """A Kubernetes API call that failed, with the call named and the API's own message kept."""

    def __init__(self, call: str, message: str, status: int | None = None, reason: str | None = None,
                 attempts: int = 1) -> None:
        status_text = f"HTTP {status}, " if status else ""
        tried = f" ({status_text}gave up after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{call}: {message}{tried}")
        self.call = call
        self.api_message = message
        self.status = status
        self.reason = reason
        self.attempts = attempts

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
    """Seconds the API server asked us to wait: the Retry-After header, else the Status ``retryAfterSeconds``."""
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None and getattr(exc, "body", None):
        try:
            value = ((json.loads(exc.body) or {}).get("details") or {}).get("retryAfterSeconds")
        except (AttributeError, TypeError, ValueError):
            value = None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _one_attempt_per_request(api_client: Any) -> None:
    """urllib3 retries reads on its own (three times by default) inside each of our attempts, which multiplies the
    budget (and the request timeout) without saying so: leave the retries to ``Kube.call``."""
    manager = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
    if manager is None or not isinstance(getattr(manager, "connection_pool_kw", None), dict):
        return
    manager.connection_pool_kw["retries"] = False
    manager.clear()  # pools made before (discovery) keep the retries they were made with


class Kube:
    """The cluster as our operations see it: typed API groups, named calls, retries for reads."""

    def __init__(self, api_client: Any, *, retries: int = 4, backoff: float = 0.25, max_backoff: float = 4.0,
                 request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api_client = api_client
        _one_attempt_per_request(api_client)
        self.retries = retries
        self.request_timeout = request_timeout
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
        kubeconfig = module.params.get("kubeconfig")
        if isinstance(kubeconfig, str) and kubeconfig and not os.path.isfile(os.path.expanduser(kubeconfig)):
            raise KubeError("connect to the Kubernetes API",
                            "kubeconfig: the file given does not exist (expected the path of a kubeconfig file)")
        try:
            k8s_client = get_api_client(module=module)
        except CoreException as exc:
            raise KubeError("connect to the Kubernetes API", str(exc)) from exc
        api_client = k8s_client.client.client
        if getattr(api_client.configuration, "verify_ssl", True) is False:
            module.warn(TLS_OFF_WARNING)
        timeout = module.params.get("api_timeout")
        return cls(api_client, request_timeout=float(timeout or DEFAULT_REQUEST_TIMEOUT))

    def fresh_api_client(self) -> Any:
        """A new ApiClient with the same configuration and default headers, for use by one thread."""
        clone = ApiClient(self.api_client.configuration)
        for name, value in self.api_client.default_headers.items():
            clone.set_default_header(name, value)
        return clone

    def call(self, description: str, function: Callable[..., T], *args: Any, idempotent: bool = True,
             on_conflict: Callable[[], bool] | None = None, **kwargs: Any) -> T:
        """Run one API call within the request timeout; raise KubeError naming it (and the attempts it took).

        Idempotent calls (reads, and writes that set fixed values) are retried on 429/5xx, timeouts and transport
        errors, with backoff, jitter and the server's Retry-After; any call is retried when its request never reached
        the server. A write given ``on_conflict`` is retried after a 409 Conflict too: ``on_conflict()`` reads the
        object again and says whether the write is still needed (False: the object already has what the write sets,
        and None is returned). All of it within ``retries`` retries."""
        if self.request_timeout and "_request_timeout" not in kwargs:
            kwargs["_request_timeout"] = self.request_timeout
        attempt = 0
        while True:
            try:
                return function(*args, **kwargs)
            except ApiException as exc:
                message, status, reason = describe_api_exception(exc)
                if attempt < self.retries and idempotent and status in RETRYABLE_STATUS:
                    self._pause(attempt, _retry_after(exc))
                    attempt += 1
                    continue
                if attempt < self.retries and status == 409 and on_conflict is not None:
                    self._pause(attempt, None)
                    attempt += 1
                    if not on_conflict():
                        return None  # type: ignore[return-value]
                    continue
                raise KubeError(description, message, status, reason, attempt + 1) from exc
            except Urllib3Error as exc:
                # a connect error or connect timeout (NewConnectionError is one): the request was never sent
                if attempt < self.retries and (idempotent or isinstance(exc, ConnectTimeoutError)):
                    self._pause(attempt, None)
                    attempt += 1
                    continue
                if isinstance(exc, ReadTimeoutError):
                    message = f"no answer from the API server within {kwargs.get('_request_timeout'):g}s"
                else:
                    message = f"could not reach the API server: {exc}"
                raise KubeError(description, message, attempts=attempt + 1) from exc

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        delay = delay / 2 + self._random.uniform(0, delay / 2)  # jitter, so parallel callers do not retry in step
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        self.retried += 1
        self._sleep(delay)
