"""The caller's client: ``aiaas.Client(url, api_key=...)`` for a function URL.

One ``httpx.Client`` (connection reuse), timeouts, and retries on 429/503 that honour
``Retry-After`` under one overall deadline, within a retry budget (:mod:`aiaas.retry`) every
client of the process calling the same URL shares: while the function fails every call,
retries stop after the first few. Each request says the client retries by itself
(``x-aiaas-caller-retries``), so the function does not retry for it too, and how long it
has left (``x-aiaas-timeout-ms``), so the function answers within the client's deadline.
Errors are the typed :mod:`aiaas.errors`.
"""

from __future__ import annotations

import random
import time
import uuid
from types import TracebackType
from typing import Any

import httpx
import orjson

from aiaas.errors import AiaasError, DeadlineExceeded, NotReady, error_from_body
from aiaas.retry import CALLER_RETRIES_HEADER, TIMEOUT_HEADER, RetryBudget, shared_budget

RETRY_STATUSES = frozenset({429, 503})


class Client:
    """Calls a deployed model through its function URL.

    Args:
        url: the function's base URL (``https://….lambda-url.….on.aws``).
        api_key: sent as ``Authorization: Bearer``; ``None`` when the platform authenticates.
        timeout: overall deadline per call in seconds, retries included.
        max_retries: most retries after a 429/503 (each waits ``Retry-After``); ``None``
            (the default): as many as the deadline and the retry budget allow.
        transport: an httpx transport (tests use ``httpx.ASGITransport`` or a mock).
        retry_budget: the :class:`~aiaas.retry.RetryBudget` retries draw on (default: the
            one this process's clients of ``url`` share).
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int | None = None,
        transport: httpx.BaseTransport | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> None:
        headers = {"content-type": "application/json", "user-agent": "aiaas-client"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.timeout = timeout
        self.max_retries = max_retries
        self.budget = retry_budget or shared_budget(url.rstrip("/"))

    def predict(self, inputs: list[Any], *, request_id: str | None = None) -> list[Any]:
        """Simple protocol: one result per input item, in order."""
        body = self._call("/predict", {"inputs": inputs}, request_id)
        outputs: list[Any] = body["outputs"]
        return outputs

    def infer(
        self, model: str, inputs: list[dict[str, Any]], *, request_id: str | None = None
    ) -> dict[str, Any]:
        """Open Inference Protocol v2: ``inputs`` are tensors ``{name, shape, datatype, data}``."""
        return self._call(f"/v2/models/{model}/infer", {"inputs": inputs}, request_id)

    def _call(self, path: str, payload: dict[str, Any], request_id: str | None) -> dict[str, Any]:
        content = orjson.dumps(payload)
        headers = {"x-request-id": request_id or uuid.uuid4().hex, CALLER_RETRIES_HEADER: "1"}
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"no answer within {self.timeout:g}s")
            headers[TIMEOUT_HEADER] = str(max(1, int(remaining * 1000)))
            try:
                response = self._http.post(
                    path, content=content, headers=headers, timeout=remaining
                )
            except httpx.TimeoutException:
                raise DeadlineExceeded(f"no answer within {self.timeout:g}s") from None
            except httpx.TransportError as exc:
                raise NotReady(f"cannot reach {self._http.base_url}: {exc}") from None
            retry = response.status_code in RETRY_STATUSES
            self.budget.record(ok=not retry)
            if response.status_code == 200:
                result: dict[str, Any] = orjson.loads(response.content)
                return result
            error = _error(response)
            if not retry or (self.max_retries is not None and attempt >= self.max_retries):
                raise error
            wait = _retry_after(response, attempt)
            if time.monotonic() + wait >= deadline or not self.budget.can_retry():
                raise error
            time.sleep(wait)
            attempt += 1

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """``Retry-After`` seconds when given (plus up to 10% jitter, so callers told the same
    second do not all come back in it), else exponential backoff with jitter."""
    header = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(header)) * (1 + random.random() / 10)
    except ValueError:
        return min(8.0, 0.25 * 2.0**attempt) * (0.5 + random.random() / 2)


def _error(response: httpx.Response) -> AiaasError:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    retry = response.headers.get("retry-after", "1")
    return error_from_body(response.status_code, body, float(retry) if retry.isdigit() else 1.0)
