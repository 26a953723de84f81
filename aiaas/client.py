"""The caller's client: ``aiaas.Client(url, api_key=...)`` for a function URL.

One ``httpx.Client`` (connection reuse), timeouts, and retries on 429/503 that honour
``Retry-After`` under one overall deadline. Errors are the typed :mod:`aiaas.errors`.
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

RETRY_STATUSES = frozenset({429, 503})


class Client:
    """Calls a deployed model through its function URL.

    Args:
        url: the function's base URL (``https://….lambda-url.….on.aws``).
        api_key: sent as ``Authorization: Bearer``; ``None`` when the platform authenticates.
        timeout: overall deadline per call in seconds, retries included.
        max_retries: retries after a 429/503 (each waits ``Retry-After``, capped by the deadline).
        transport: an httpx transport (tests use ``httpx.ASGITransport`` or a mock).
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"content-type": "application/json", "user-agent": "aiaas-client"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.timeout = timeout
        self.max_retries = max_retries

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
        headers = {"x-request-id": request_id or uuid.uuid4().hex}
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"no answer within {self.timeout:g}s")
            try:
                response = self._http.post(
                    path, content=content, headers=headers, timeout=remaining
                )
            except httpx.TimeoutException:
                raise DeadlineExceeded(f"no answer within {self.timeout:g}s") from None
            except httpx.TransportError as exc:
                raise NotReady(f"cannot reach {self._http.base_url}: {exc}") from None
            if response.status_code == 200:
                result: dict[str, Any] = orjson.loads(response.content)
                return result
            error = _error(response)
            if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                raise error
            wait = _retry_after(response, attempt)
            if time.monotonic() + wait >= deadline:
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
    """``Retry-After`` seconds when given, else exponential backoff with jitter."""
    header = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(header))
    except ValueError:
        return min(8.0, 0.25 * 2.0**attempt) * (0.5 + random.random() / 2)


def _error(response: httpx.Response) -> AiaasError:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    retry = response.headers.get("retry-after", "1")
    return error_from_body(response.status_code, body, float(retry) if retry.isdigit() else 1.0)
