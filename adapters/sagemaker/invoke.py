"""The SageMaker invoke path: InvokeEndpoint, SigV4-signed, over httpx (no boto3).

What a function with ``provider: sagemaker`` loads on every cold start, so it stays small:
httpx (which the function tier has anyway), the shared invoke loop and clients
(:mod:`adapters.http_invoker`), and :class:`adapters.auth.SigV4` (httpx-auth's ``AWS4Auth``,
a maintained, pure-Python signer, about 10 ms to import; boto3 with one client costs about
415 ms of cold start here). This module adds only InvokeEndpoint's request and its errors.

- ``POST {runtime}/endpoints/{name}/invocations``, with one keep-alive pool per event loop
  (and one for the sync path), TLS verified (``AWS_CA_BUNDLE`` honoured, as boto3 does).
- The deadline travels to the container: each attempt carries its milliseconds left as
  ``aiaas-timeout-ms`` in ``X-Amzn-SageMaker-Custom-Attributes`` (the one header
  InvokeEndpoint forwards), beside the request id, and the model server drops work whose
  deadline has passed.
- Retries, with exponential backoff and full jitter, never past the caller's deadline nor
  beyond the invoker's retry budget (:class:`aiaas.retry.RetryBudget`): throttling,
  ``ModelNotReadyException``, SageMaker's own 5xx (``Unavailable``, a 503 with
  ``Retry-After`` for the caller) and connections that could not be made. Never a 4xx: the
  same request would fail the same way.
- AWS's own error text (it can name the account, the log group, signed material) goes into
  the error's ``cloud_text``, for the function's log; the message says what failed in our
  words and AWS's error code.
- Errors map once, here: ``ModelError`` (424) carries our container's status and JSON error
  body, which become the model server's own typed error (422 → ``InvalidInput`` with index
  and field, 503 → ``Overloaded``, ...); a missing endpoint is ``NotFound``; a body over
  6 MB is ``PayloadTooLarge`` before anything is sent; refused credentials (AWS's
  AccessDenied-family codes, HTTP 401/403) are ``AccessDenied`` naming the call.
- ``status`` is a signed DescribeEndpoint (the function's readiness route), also without boto3.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from adapters.auth import SigV4
from adapters.base import DeploymentStatus, InvokeResult, model_server_error
from adapters.http_invoker import (
    Call,
    HttpClients,
    HttpInvoker,
    Retry,
    RetryPolicy,
    Sent,
    never_sent,
    result_of,
)
from adapters.sagemaker import MAX_REQUEST_BYTES, SPEC, InvokeSettings, aws, names
from aiaas.custom_attributes import carrying
from aiaas.errors import (
    AccessDenied,
    AiaasError,
    BadRequest,
    DeadlineExceeded,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ProviderError,
    Throttled,
    Unavailable,
)
from aiaas.packaged import FunctionConfig
from aiaas.retry import RetryBudget

if TYPE_CHECKING:
    from aiaas.config import ProjectConfig

# Room for a ModelError's wrapping (the container's body is inside a JSON string) on top of
# the 6 MB answer: anything larger is not an answer SageMaker sends.
MAX_RESPONSE_BYTES = 4 * MAX_REQUEST_BYTES
MAX_INFERENCE_ID = 64  # X-Amzn-SageMaker-Inference-Id
MAX_CUSTOM_ATTRIBUTES = 1024  # X-Amzn-SageMaker-Custom-Attributes (InvokeEndpoint's reference)
CONNECT_TIMEOUT_S = 2.0
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
_JSON = "application/json"


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


def _retry_after(response: httpx.Response) -> float | None:
    """AWS's own back-off (a ``Retry-After`` in seconds), when it sent one."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def _answer(name: str, response: httpx.Response) -> InvokeResult | Retry:
    """The result of one InvokeEndpoint answer, an error worth retrying, or raise. The error
    code decides before the status: AWS throttles and refuses credentials with HTTP 400.
    AWS's text goes into ``cloud_text`` only (see the module's docstring)."""
    status = response.status_code
    if status == 200:
        return result_of(response)
    code, message, body = _error_fields(response)
    said = message or None
    if status == 424 or code == "ModelError":
        # Our container answered non-2xx: SageMaker passes its status and body on.
        original = body.get("OriginalStatusCode")
        if original == 0 and "timed out" in message:
            # No answer within SageMaker's 60 s: AWS's "Received server error (0) from
            # primary ... Your invocation timed out while waiting for a response from
            # container primary" (quoted in public reports; botocore models no code for it).
            raise DeadlineExceeded(
                f"SageMaker endpoint {name!r}: the model container did not answer within "
                "SageMaker's 60 s (set server.request_timeout_s below it to get the "
                "server's own 504)",
                cloud_text=said,
            )
        return_status = original if isinstance(original, int) else 500
        return_body = _container_body(body.get("OriginalMessage"))
        error = model_server_error(return_status, return_body, None)
        error.cloud_text = said
        raise error
    after = _retry_after(response)
    if code == "ModelNotReadyException":
        return Retry(
            NotReady(
                f"SageMaker endpoint {name!r} is not ready (ModelNotReadyException)",
                retry_after=after,
                cloud_text=said,
            ),
            after,
        )
    if code in aws.THROTTLING_ERROR_CODES or status == 429:
        throttled = Throttled(
            f"SageMaker throttled calls to {name!r} ({code or status})",
            retry_after=after or 0.0,
            cloud_text=said,
        )
        return Retry(throttled, after)
    if code in aws.AUTH_ERROR_CODES or status in (401, 403):
        # AccessDenied-family codes (AWS's "Common Errors" for every API: AccessDenied,
        # IncompleteSignature, InvalidClientTokenId, ...; runtime.sagemaker adds
        # AccessDeniedException).
        raise AccessDenied(_refused(name, code or str(status), message))
    if status == 413:
        raise PayloadTooLarge(f"SageMaker refused the request body for {name!r}: over 6 MB")
    if code == "ValidationError" or status == 400:
        if "not found" in message.lower():
            raise NotFound(f"no SageMaker endpoint named {name!r}", cloud_text=said)
        raise BadRequest(
            f"SageMaker refused the request to {name!r} ({code or status})", cloud_text=said
        )
    if status >= 500:  # SageMaker's own failure: transient, the same call may succeed
        failed = Unavailable(
            f"SageMaker failed for {name!r} ({code or status}); try again",
            retry_after=after or 0.0,
            cloud_text=said,
        )
        return Retry(failed, after)
    raise ProviderError(f"SageMaker answered {status} for {name!r} ({code})", cloud_text=said)


def _refused(name: str, code: str, message: str) -> str:
    """What a refused InvokeEndpoint means, saying what to fix. AWS's own text is left out
    for signature and token failures: it may quote the canonical request, whose
    ``x-amz-security-token`` header is the caller's session token."""
    call = f"sagemaker:InvokeEndpoint on endpoint {name!r} was refused ({code})"
    lowered = message.lower()
    if "signature expired" in lowered:
        return (
            f"{call}: the request's signature is older than AWS accepts: this machine's "
            "clock is more than 5 minutes off (sync it with NTP)"
        )
    return f"{call}: " + aws.refused_credentials(
        code, f"sagemaker:InvokeEndpoint on endpoint {name!r}"
    )


def _container_body(original: object) -> bytes:
    """The container's own error body from a ModelError, or, where SageMaker had none of
    ours to pass on (a container that timed out or closed the connection), a neutral one
    (AWS's words, which name the account and the log group, go to ``cloud_text``)."""
    if isinstance(original, str):
        with contextlib.suppress(ValueError):
            if isinstance(json.loads(original), dict):
                return original.encode()
    text = "the model container failed without an answer (see the endpoint's logs)"
    return json.dumps({"error": {"message": text}}).encode()


def _transport_error(name: str, exc: httpx.TransportError) -> AiaasError:
    said = repr(exc)
    if never_sent(exc):
        return NotReady(
            f"SageMaker runtime not reachable for {name!r} ({type(exc).__name__})",
            retry_after=1.0,
            cloud_text=said,
        )
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"SageMaker endpoint {name!r} did not answer in time")
    return NotReady(
        f"SageMaker runtime connection failed for {name!r} ({type(exc).__name__})",
        retry_after=1.0,
        cloud_text=said,
    )


class _InvokeEndpoint(Call):
    """One InvokeEndpoint call: the same request each attempt; only a request that never
    reached SageMaker is sent again after a transport error (one it may have run is not)."""

    def __init__(self, name: str, request: httpx.Request, request_id: str | None) -> None:
        self.name = name
        self.what = f"SageMaker endpoint {name!r}"
        self.connect_timeout = CONNECT_TIMEOUT_S  # read at call time: tests shorten it
        self._request = request
        self._request_id = request_id  # carried in the custom attributes (None: not carried)

    def request(self) -> httpx.Request:
        return self._request

    def carry_deadline(self, request: httpx.Request, left_ms: int) -> None:
        # The one header InvokeEndpoint forwards to the container carries it, beside the id.
        request.headers[SPEC.request_id_header] = carrying(self._request_id, timeout_ms=left_ms)

    def judge(self, sent: Sent) -> InvokeResult | Retry:
        if isinstance(sent, httpx.Response):
            return _answer(self.name, sent)
        if never_sent(sent):
            return Retry(_transport_error(self.name, sent))
        raise _transport_error(self.name, sent) from None


class SageMakerInvoker(HttpInvoker):
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
        env: Mapping[str, str] | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        retry_budget: RetryBudget | None = None,
    ) -> None:
        self.region = region
        self.max_request_bytes = max_request_bytes
        self.runtime_url = runtime_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.retry = RetryPolicy(
            max_attempts,
            backoff_base_s,
            backoff_cap_s,
            rng or random.Random(),
            retry_budget or RetryBudget(),
        )
        self.signer = SigV4(credentials, region=region, service="sagemaker")
        https = self.runtime_url.startswith("https:") or self.api_url.startswith("https:")
        self.clients = HttpClients(
            https=https, ca_bundle=ca_bundle, env=env, max_response_bytes=MAX_RESPONSE_BYTES
        )

    @classmethod
    def from_config(
        cls, config: ProjectConfig | FunctionConfig, env: Mapping[str, str] | None = None
    ) -> SageMakerInvoker:
        """Region, credentials and URLs from the config (a function's light view of it, or
        the project's) and the environment (read once)."""
        env = dict(os.environ if env is None else env)
        settings: InvokeSettings = FunctionConfig.of(config).settings
        region = aws.region(settings.region, env)
        return cls(
            region,
            aws.credential_source(env),
            runtime_url=aws.endpoint_url("SAGEMAKER_RUNTIME", "runtime.sagemaker", region, env),
            api_url=aws.endpoint_url("SAGEMAKER", "api.sagemaker", region, env),
            ca_bundle=env.get("AWS_CA_BUNDLE") or None,
            env=env,
            max_request_bytes=SPEC.limits(settings).max_request_bytes or MAX_REQUEST_BYTES,
        )

    def auth(self) -> httpx.Auth:
        return self.signer

    def call(self, name: str, body: bytes, request_id: str | None) -> Call:
        problem = names.check_endpoint_name(name)  # the name goes into the URL's path
        if problem:
            raise BadRequest(problem)
        if len(body) > self.max_request_bytes:
            raise PayloadTooLarge(
                f"request body of {len(body)} bytes is over this SageMaker endpoint's limit "
                f"of {self.max_request_bytes} bytes; not sent"
            )
        headers = {"content-type": _JSON, "accept": _JSON}
        carried: str | None = None
        if request_id and len(request_id) <= MAX_INFERENCE_ID and request_id.isprintable():
            headers["x-amzn-sagemaker-inference-id"] = request_id  # AWS's own logs
            # The one header InvokeEndpoint forwards to the container: the model server reads
            # the id from it, so one id runs from the function to the GPU.
            fits = len(carrying(request_id, timeout_ms=10**12)) <= MAX_CUSTOM_ATTRIBUTES
            carried = request_id if fits and request_id.isascii() else None
        url = f"{self.runtime_url}/endpoints/{name}/invocations"
        request = httpx.Request("POST", url, content=body, headers=headers)
        return _InvokeEndpoint(name, request, carried)

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
            response = await self.clients.async_client().send(request, auth=self.signer)
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
        if code in aws.AUTH_ERROR_CODES or response.status_code in (401, 403):
            permission = f"sagemaker:DescribeEndpoint on endpoint {name!r}"
            raise AccessDenied(
                f"{permission} was refused ({code or response.status_code}): "
                + aws.refused_credentials(code, permission)
            )
        if code == "ValidationException" and "could not find" in message.lower():
            raise NotFound(f"no SageMaker endpoint named {name!r}", cloud_text=message or None)
        if code in aws.THROTTLING_ERROR_CODES or response.status_code == 429:
            raise Throttled(
                f"SageMaker throttled DescribeEndpoint {name!r} ({code or 429})",
                retry_after=_retry_after(response) or 1.0,
                cloud_text=message or None,
            )
        raise ProviderError(
            f"SageMaker DescribeEndpoint {name!r} failed ({code or response.status_code})",
            cloud_text=message or None,
        )
