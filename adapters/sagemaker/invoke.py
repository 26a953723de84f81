"""The SageMaker invoke path: InvokeEndpoint, SigV4-signed, over httpx (no boto3).

What a function with ``provider: sagemaker`` loads on every cold start, so it stays small:
httpx (which the function tier has anyway), :mod:`adapters.transport` for the async calls,
and ``httpx-auth``'s ``AWS4Auth`` for the signature (a maintained, pure-Python SigV4 signer,
about 10 ms to import; boto3 with one client costs about 415 ms of cold start here).

- ``POST {runtime}/endpoints/{name}/invocations``, with one keep-alive pool per event loop
  (and one for the sync path), TLS verified (``AWS_CA_BUNDLE`` honoured, as boto3 does).
- Retries, with exponential backoff and full jitter, never past the caller's deadline:
  throttling, ``ModelNotReadyException``, SageMaker's own 5xx and connections that could not
  be made. Never a 4xx: the same request would fail the same way.
- Errors map once, here: ``ModelError`` (424) carries our container's status and JSON error
  body, which become the model server's own typed error (422 → ``InvalidInput`` with index
  and field, 503 → ``Overloaded``, ...); a missing endpoint is ``NotFound``; a body over
  6 MB is ``PayloadTooLarge`` before anything is sent.
- ``status`` is a signed DescribeEndpoint (the function's readiness route), also without boto3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_auth import AWS4Auth

from adapters.base import (
    DeploymentStatus,
    Invoker,
    InvokeResult,
    answer_version,
    model_server_error,
)
from adapters.sagemaker import SageMakerSection, aws, names
from adapters.transport import AsyncH11Transport
from aiaas.config import ProjectConfig
from aiaas.errors import (
    AiaasError,
    BadRequest,
    DeadlineExceeded,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ProviderError,
    Throttled,
)

MAX_BODY_BYTES = 6_291_456  # InvokeEndpoint's request (and response) limit: 6 MB
MAX_INFERENCE_ID = 64  # X-Amzn-SageMaker-Inference-Id
CONNECT_TIMEOUT_S = 2.0
MAX_ATTEMPTS = 4
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
_JSON = "application/json"


@dataclass
class _Retry:
    """An answer worth trying again; ``error`` is raised if no attempt is left."""

    error: AiaasError


def _error_fields(response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
    """AWS's error code, message and body (rest-json and json 1.1 both: the code is in
    ``x-amzn-ErrorType`` or the body's ``__type``/``code``, maybe with a ``:``/``#`` part)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = response.headers.get("x-amzn-errortype") or body.get("__type") or body.get("code")
    code = str(code or "").split(":", 1)[0].rsplit("#", 1)[-1]
    message = str(body.get("message") or body.get("Message") or "")
    return code, message, body


def _answer(name: str, response: httpx.Response) -> InvokeResult | _Retry:
    """The result of one InvokeEndpoint answer, an error worth retrying, or raise. The error
    code decides before the status: AWS throttles and refuses credentials with HTTP 400."""
    status = response.status_code
    if status == 200:
        return InvokeResult(response.content, answer_version(response.content))
    code, message, body = _error_fields(response)
    if status == 424 or code == "ModelError":
        # Our container answered non-2xx: SageMaker passes its status and body on.
        original = body.get("OriginalStatusCode")
        return_status = original if isinstance(original, int) else 500
        return_body = _container_body(body.get("OriginalMessage"), message)
        raise model_server_error(return_status, return_body, None)
    if code == "ModelNotReadyException":
        return _Retry(NotReady(f"SageMaker endpoint {name!r}: {message}", retry_after=1.0))
    if code in aws.THROTTLING_ERROR_CODES or status == 429:
        return _Retry(Throttled(f"SageMaker throttled {name!r}: {message}", retry_after=1.0))
    if code in aws.AUTH_ERROR_CODES or status in (401, 403):
        raise ProviderError(
            f"SageMaker refused the credentials for {name!r}: {code}: {message} (the function's "
            "role needs sagemaker:InvokeEndpoint on the endpoint)"
        )
    if status == 413:
        raise PayloadTooLarge(f"SageMaker refused the request body for {name!r}: over 6 MB")
    if code == "ValidationError" or status == 400:
        if "not found" in message.lower():
            raise NotFound(f"no SageMaker endpoint named {name!r}: {message}")
        raise BadRequest(f"SageMaker refused the request to {name!r}: {message or code}")
    if status >= 500:
        return _Retry(ProviderError(f"SageMaker failed for {name!r}: {code or status}: {message}"))
    raise ProviderError(f"SageMaker answered {status} for {name!r}: {code}: {message}")


def _container_body(original: object, message: str) -> bytes:
    """The container's own error body from a ModelError, or, where SageMaker had none of
    ours to pass on (a container that timed out or closed the connection), its own words."""
    if isinstance(original, str):
        with contextlib.suppress(ValueError):
            if isinstance(json.loads(original), dict):
                return original.encode()
    said = f": {original}" if isinstance(original, str) and original else ""
    text = f"the model container failed: {message or 'no message'}{said}"
    return json.dumps({"error": {"message": text}}).encode()


class _Attempts:
    """The retry budget of one call: attempts left and the caller's deadline."""

    def __init__(self, timeout: float, invoker: SageMakerInvoker) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.invoker = invoker
        self.made = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (DeadlineExceeded when none are)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"SageMaker did not answer within {self.timeout:g}s")
        return left

    def http_timeout(self) -> httpx.Timeout:
        left = self.remaining()
        return httpx.Timeout(left, connect=min(CONNECT_TIMEOUT_S, left))

    def backoff(self, error: AiaasError) -> float:
        """How long to sleep before the next attempt; raises ``error`` when none is left."""
        self.made += 1
        ceiling = min(
            self.invoker.backoff_cap_s, self.invoker.backoff_base_s * 2 ** (self.made - 1)
        )
        delay = self.invoker.rng.uniform(0, ceiling)  # full jitter
        if self.made >= self.invoker.max_attempts or time.monotonic() + delay >= self.deadline:
            if isinstance(error, Throttled | NotReady):
                error.retry_after = max(error.retry_after or 0.0, ceiling, 0.1)
            raise error
        return delay


# Transport errors before the request left: a connection refused, or one not made (or not
# free in the pool) in time. SageMaker never saw such a request, so it is safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _transport_error(name: str, exc: httpx.TransportError) -> AiaasError:
    if isinstance(exc, _NOT_SENT):
        return NotReady(f"SageMaker runtime not reachable for {name!r}: {exc!r}", retry_after=1.0)
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"SageMaker endpoint {name!r} did not answer in time")
    return NotReady(f"SageMaker runtime connection failed for {name!r}: {exc!r}", retry_after=1.0)


def _outcome(name: str, sent: httpx.Response | httpx.TransportError) -> InvokeResult | _Retry:
    """One attempt's result, an error worth retrying, or raise. Only a request that never
    reached SageMaker is sent again after a transport error: one it may have run is not."""
    if isinstance(sent, httpx.Response):
        return _answer(name, sent)
    if isinstance(sent, _NOT_SENT):
        return _Retry(_transport_error(name, sent))
    raise _transport_error(name, sent) from None


class SageMakerInvoker(Invoker):
    """Sends predictions to a SageMaker endpoint with SigV4-signed InvokeEndpoint calls."""

    name = "sagemaker"

    def __init__(
        self,
        region: str,
        credentials: aws.CredentialSource,
        *,
        runtime_url: str,
        api_url: str,
        ca_bundle: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
    ) -> None:
        self.region = region
        self.runtime_url = runtime_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.rng = rng or random.Random()
        self._credentials = credentials
        self._signed_with: aws.Credentials | None = None
        self._auth: AWS4Auth | None = None
        self._ca_bundle = ca_bundle
        self._ssl: ssl.SSLContext | None = None
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._transport: AsyncH11Transport | None = None

    @classmethod
    def from_config(
        cls, config: ProjectConfig, env: Mapping[str, str] | None = None
    ) -> SageMakerInvoker:
        """Region, credentials and URLs from the config and the environment (read once)."""
        env = dict(os.environ if env is None else env)
        settings = config.provider_settings("sagemaker", SageMakerSection)
        region = aws.region(settings.region, env)
        return cls(
            region,
            aws.credential_source(env),
            runtime_url=aws.endpoint_url("SAGEMAKER_RUNTIME", "runtime.sagemaker", region, env),
            api_url=aws.endpoint_url("SAGEMAKER", "api.sagemaker", region, env),
            ca_bundle=env.get("AWS_CA_BUNDLE") or None,
        )

    # -- clients -------------------------------------------------------------------------

    def _signer(self) -> AWS4Auth:
        """The SigV4 auth for the current credentials (rebuilt only when they change)."""
        credentials = self._credentials()
        if self._auth is None or credentials is not self._signed_with:
            self._auth = AWS4Auth(
                access_id=credentials.access_key_id,
                secret_key=credentials.secret_access_key,
                region=self.region,
                service="sagemaker",
                security_token=credentials.session_token,
            )
            self._signed_with = credentials
        return self._auth

    def _ssl_context(self) -> ssl.SSLContext:
        """TLS verification: ``AWS_CA_BUNDLE``, else the system's trust store (made on the
        first https call only: a plain-HTTP endpoint never loads a CA bundle)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self._ca_bundle)
        return self._ssl

    def _client(self) -> httpx.AsyncClient:
        """The async client of the running event loop (a client's connections belong to the
        loop that opened them)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            if self._transport is not None:  # the previous loop's connections: closed now
                self._transport.close_idle()
            https = self.runtime_url.startswith("https:") or self.api_url.startswith("https:")
            self._transport = AsyncH11Transport(self._ssl_context() if https else None)
            self._async = httpx.AsyncClient(transport=self._transport, trust_env=False)
            self._async_loop = loop
        return self._async

    def _sync_client(self) -> httpx.Client:
        if self._sync is None:
            https = self.runtime_url.startswith("https:") or self.api_url.startswith("https:")
            verify: ssl.SSLContext | bool = self._ssl_context() if https else False
            self._sync = httpx.Client(trust_env=False, verify=verify)
        return self._sync

    def _request(self, name: str, body: bytes, request_id: str | None) -> httpx.Request:
        problem = names.check_endpoint_name(name)  # the name goes into the URL's path
        if problem:
            raise BadRequest(problem)
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(
                f"request body of {len(body)} bytes is over SageMaker's limit of "
                f"{MAX_BODY_BYTES} (6 MB); not sent"
            )
        headers = {"content-type": _JSON, "accept": _JSON}
        if request_id and len(request_id) <= MAX_INFERENCE_ID and request_id.isprintable():
            headers["x-amzn-sagemaker-inference-id"] = request_id
        url = f"{self.runtime_url}/endpoints/{name}/invocations"
        return httpx.Request("POST", url, content=body, headers=headers)

    # -- invoke --------------------------------------------------------------------------

    async def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        request = self._request(name, body, request_id)
        client = self._client()
        attempts = _Attempts(timeout, self)
        while True:
            request.extensions["timeout"] = attempts.http_timeout().as_dict()
            try:
                response: httpx.Response | httpx.TransportError = await client.send(
                    request, auth=self._signer()
                )
            except httpx.TransportError as exc:
                response = exc
            outcome = _outcome(name, response)
            if isinstance(outcome, InvokeResult):
                return outcome
            await asyncio.sleep(attempts.backoff(outcome.error))

    def invoke_sync(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        request = self._request(name, body, request_id)
        client = self._sync_client()
        attempts = _Attempts(timeout, self)
        while True:
            request.extensions["timeout"] = attempts.http_timeout().as_dict()
            try:
                response: httpx.Response | httpx.TransportError = client.send(
                    request, auth=self._signer()
                )
            except httpx.TransportError as exc:
                response = exc
            outcome = _outcome(name, response)
            if isinstance(outcome, InvokeResult):
                return outcome
            time.sleep(attempts.backoff(outcome.error))

    async def status(self, name: str) -> DeploymentStatus:
        """DescribeEndpoint (JSON 1.1), signed, without boto3."""
        request = httpx.Request(
            "POST",
            self.api_url + "/",
            content=json.dumps({"EndpointName": name}).encode(),
            headers={
                "content-type": "application/x-amz-json-1.1",
                "x-amz-target": "SageMaker.DescribeEndpoint",
            },
        )
        request.extensions["timeout"] = httpx.Timeout(10.0, connect=CONNECT_TIMEOUT_S).as_dict()
        try:
            response = await self._client().send(request, auth=self._signer())
        except httpx.TransportError as exc:
            raise _transport_error(name, exc) from None
        if response.status_code == 200:
            try:
                found = json.loads(response.content).get("EndpointStatus", "")
            except (ValueError, AttributeError):
                raise ProviderError(
                    f"SageMaker DescribeEndpoint {name!r} answered 200 without a JSON object: "
                    f"{response.content[:200]!r}"
                ) from None
            return names.ENDPOINT_STATUS.get(found, DeploymentStatus.FAILED)
        code, message, _ = _error_fields(response)
        if code == "ValidationException" and "could not find" in message.lower():
            raise NotFound(f"no SageMaker endpoint named {name!r}")
        raise ProviderError(f"SageMaker DescribeEndpoint {name!r}: {code}: {message}")

    async def aclose(self) -> None:
        if self._async is not None and self._async_loop is asyncio.get_running_loop():
            await self._async.aclose()
        self._async = self._async_loop = None

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None
