"""Kube.call call by call: request timeout, backoff and jitter, Retry-After, 409 re-read, the error at the end."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from ansible_collections.netpol.cilium.plugins.module_utils._k8s import Kube, KubeError


def api_error(status: int, message: str = "boom", headers: dict[str, str] | None = None,
              retry_after_seconds: int | None = None) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    details = {"retryAfterSeconds": retry_after_seconds} if retry_after_seconds is not None else {}
    exc.body = json.dumps({"kind": "Status", "message": message, "reason": "Reason", "details": details})
    exc.headers = headers or {}
    return exc


class Script:
    """A fake API method that raises the given errors in turn, then answers ``ok``; records its keyword args."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.fixture
def kube() -> Kube:
    slept: list[float] = []
    k = Kube(ApiClient(Configuration()), request_timeout=7, sleep=slept.append)
    k.slept = slept  # type: ignore[attr-defined]
    return k


def test_every_request_carries_the_timeout_and_urllib3_does_not_retry_under_us(kube: Kube) -> None:
    call = Script()
    assert kube.call("read x", call) == "ok"
    assert call.calls == [{"_request_timeout": 7}]
    assert kube.api_client.rest_client.pool_manager.connection_pool_kw["retries"] is False


def test_backoff_grows_with_jitter_and_honours_retry_after(kube: Kube) -> None:
    call = Script(api_error(503), api_error(503), api_error(429, headers={"Retry-After": "3"}),
                  api_error(503, retry_after_seconds=2))
    assert kube.call("read x", call) == "ok"
    first, second, third, fourth = kube.slept  # type: ignore[attr-defined]
    assert 0.125 <= first <= 0.25 and 0.25 <= second <= 0.5  # backoff * 2**attempt, jittered in its upper half
    assert third == 3 and fourth == 2  # the server's Retry-After (header, else the Status body) when longer
    assert kube.retried == 4


def test_a_read_timeout_is_retried_and_after_the_budget_the_call_is_named(kube: Kube) -> None:
    timeout = ReadTimeoutError(None, "/api", "Read timed out. (read timeout=7)")
    call = Script(*[timeout] * 5)
    with pytest.raises(KubeError) as error:
        kube.call("list pods in namespace shop", call)
    assert str(error.value) == ("list pods in namespace shop: no answer from the API server within 7s "
                                "(gave up after 5 attempts)")
    assert error.value.attempts == 5 and len(call.calls) == 5


def test_a_persistent_503_names_the_call_the_status_and_the_attempts(kube: Kube) -> None:
    with pytest.raises(KubeError) as error:
        kube.call("patch ConfigMap kube-system/cilium-config", Script(*[api_error(503, "unavailable")] * 5))
    assert str(error.value) == ("patch ConfigMap kube-system/cilium-config: unavailable "
                                "(HTTP 503, gave up after 5 attempts)")
    assert error.value.status == 503


def test_non_idempotent_calls_are_retried_only_when_the_request_never_left(kube: Kube) -> None:
    with pytest.raises(KubeError) as error:
        kube.call("create x", Script(api_error(503)), idempotent=False)
    assert error.value.attempts == 1 and str(error.value) == "create x: boom"
    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    assert kube.call("create x", Script(refused), idempotent=False) == "ok"


def test_a_409_is_re_read_and_retried_or_skipped_when_the_object_already_has_it(kube: Kube) -> None:
    reads: list[bool] = []

    def still_needed() -> bool:
        reads.append(True)
        return len(reads) < 2  # the first re-read: still needed; the second: someone else wrote it meanwhile

    assert kube.call("patch x", Script(api_error(409)), on_conflict=still_needed) == "ok"
    assert kube.call("patch x", Script(api_error(409)), on_conflict=still_needed) is None
    assert len(reads) == 2
    with pytest.raises(KubeError) as error:  # no way to re-read: a conflict is the caller's to handle
        kube.call("patch x", Script(api_error(409, "the object has been modified")))
    assert error.value.conflict and error.value.attempts == 1
