"""The PAI-EAS invoke path: the service endpoint over httpx with the service token; no
Alibaba Cloud SDK.

What a function with ``provider: pai`` loads on every cold start, so it stays small: httpx
(which the function tier has anyway), the shared invoke loop and clients
(:mod:`adapters.http_invoker`), :mod:`adapters.auth` and the provider's names. Never
tea-openapi, alibabacloud-credentials nor eas-prediction (0.3-0.9 s of import each), nor
pydantic.

- **Where**: ``POST <service endpoint>/api/predict/<service>``, the service being
  ``names.service_name(<deployment>, settings)``; the endpoint from ``AIAAS_PAI_ENDPOINT``
  (DescribeService's ``InternetEndpoint`` or ``IntranetEndpoint``, with or without its
  ``/api/predict/<service>`` path). TLS is verified, with ``AIAAS_PAI_CA_BUNDLE`` when set.
- **Auth**: ``Authorization: <AccessToken>`` (raw, no scheme, as EAS documents it) from
  ``AIAAS_PAI_TOKEN``. ``status()`` asks EAS's DescribeService, signed by
  :class:`~adapters.auth.Acs3Signer` with the function role's credentials
  (``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``_SECRET`` / ``ALIBABA_CLOUD_SECURITY_TOKEN``), at
  ``pai.endpoint`` or the region's OpenAPI endpoint; ``UNKNOWN`` without credentials.
- **One request id and the deadline reach the container**: ``x-request-id`` and each
  attempt's milliseconds left in ``x-aiaas-timeout-ms`` (EAS passes a request's headers on to
  a custom container, as far as its docs show: an assumption).
- **Errors map once, here** (PAI's "Status codes" page): our container's own answer, which
  carries our JSON error body, is its typed error (retried when it says retry: a full queue,
  a draining server); otherwise 408 (past ``rpc.keepalive``, queueing included) is
  ``DeadlineExceeded``; 429 (``rpc.rate_limit`` or the shared gateway's 1,000 QPS per
  service) ``Throttled`` and 450 (EAS's queue full) ``Overloaded``, both retried within the
  deadline; 502/503/504 ``Unavailable``, retried; 401/403 ``AccessDenied``; 404 ``NotFound``
  (no such service at that endpoint); 400 without our body ``BadRequest`` (a request EAS's
  gateway refused); a connection never made is retried, then ``NotReady``. EAS's own text
  goes to the error's ``cloud_text`` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.auth import Acs3Signer, AlibabaCredentials, StaticHeader
from adapters.base import DeploymentStatus, InvokeResult, answer_version, model_server_error
from adapters.http_invoker import (
    Call,
    HttpClients,
    HttpInvoker,
    Retry,
    RetryPolicy,
    Sent,
    never_sent,
    with_timeout,
)
from adapters.pai import API_VERSION, names
from aiaas.errors import (
    AccessDenied,
    BadRequest,
    ConfigError,
    DeadlineExceeded,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ProviderError,
    RetryLater,
    Throttled,
    Unavailable,
)
from aiaas.packaged import FunctionConfig
from aiaas.retry import RetryBudget

ENDPOINT_VARIABLE = "AIAAS_PAI_ENDPOINT"
TOKEN_VARIABLE = "AIAAS_PAI_TOKEN"
CA_BUNDLE_VARIABLE = "AIAAS_PAI_CA_BUNDLE"
PREDICT_PATH = "/api/predict/"
DESCRIBE_ACTION = "DescribeService"
RAM_ACTION = "eas:DescribeService"
CONNECT_TIMEOUT_S = 2.0
DESCRIBE_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
"""EAS documents no payload limit; an answer past this is not one of ours."""
QUEUE_FULL = 450
"""EAS's answer when the instance's ``rpc.max_queue_size`` queue is full."""
_JSON = "application/json"
# DescribeService's Status (the SDK's Service model; the console's states).
_STATES = {
    "running": DeploymentStatus.READY,
    "creating": DeploymentStatus.CREATING,
    "waiting": DeploymentStatus.CREATING,
    "pending": DeploymentStatus.CREATING,
    "starting": DeploymentStatus.CREATING,
    "updating": DeploymentStatus.UPDATING,
    "hotupdate": DeploymentStatus.UPDATING,
    "failed": DeploymentStatus.FAILED,
    "stopped": DeploymentStatus.STOPPED,
    "stopping": DeploymentStatus.STOPPED,
    "deleting": DeploymentStatus.DELETING,
    "deleted": DeploymentStatus.DELETING,
}


@dataclass(frozen=True)
class Service:
    """What DescribeService says of a service (never its AccessToken): its state, versions,
    instances and EAS's message."""

    name: str
    state: str
    current_version: int | None
    latest_version: int | None
    running_instances: int | None
    total_instances: int | None
    message: str

    @property
    def status(self) -> DeploymentStatus:
        """The state in every provider's terms."""
        return _STATES.get(self.state.lower(), DeploymentStatus.UNKNOWN)


def _said(response: httpx.Response) -> str | None:
    """EAS's own words (its error body, cut short), for ``cloud_text`` only."""
    text = response.text[:500].strip()
    return text or None


def _retry_after(response: httpx.Response) -> float | None:
    """EAS's back-off (``Retry-After`` in seconds), when sent."""
    with contextlib.suppress(ValueError):
        seconds = float(response.headers.get("retry-after", "").strip())
        if 0 <= seconds <= 3600:
            return seconds
    return None


def ours(body: bytes) -> bool:
    """True when ``body`` is our model server's JSON error (``{"error": {"code", ...}}`` or
    the OIP shape ``{"error": "<message>", "code"}``), not EAS's own answer."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    if not isinstance(parsed, dict):
        return False
    error = parsed.get("error")
    if isinstance(error, dict):
        return isinstance(error.get("code"), str)
    return isinstance(error, str) and isinstance(parsed.get("code"), str)


def _int(value: object) -> int | None:
    if isinstance(value, int | str):
        with contextlib.suppress(ValueError):
            return int(value)
    return None


def _service_of(name: str, body: bytes, what: str) -> Service:
    """DescribeService's 200 answer. ProviderError naming what is malformed, never quoting
    the body (it carries the service's AccessToken)."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise ProviderError(
            f"{what} answered 200 with a body that is not JSON ({len(body)} bytes)"
        ) from None
    if not isinstance(answer, dict) or not isinstance(answer.get("Status"), str):
        raise ProviderError(f"{what} answered 200 without a Status")
    return Service(
        name,
        answer["Status"],
        _int(answer.get("CurrentVersion")),
        _int(answer.get("LatestVersion")),
        _int(answer.get("RunningInstance")),
        _int(answer.get("TotalInstance")),
        str(answer.get("Message") or ""),
    )


def service_base(endpoint: str) -> str:
    """The service endpoint without its ``/api/predict/<service>`` path, if it has one."""
    endpoint = endpoint.strip()
    cut = endpoint.find(PREDICT_PATH)
    return (endpoint[:cut] if cut >= 0 else endpoint).rstrip("/")


class _Predict(Call):
    """One POST to ``/api/predict/<service>``: the same request each attempt; only a request
    that never left is sent again after a transport error (one EAS may have run is not)."""

    def __init__(self, service: str, request: httpx.Request) -> None:
        self.service = service
        self.what = f"PAI-EAS service {service!r}"
        self.connect_timeout = CONNECT_TIMEOUT_S  # read at call time: tests shorten it
        self._request = request

    def request(self) -> httpx.Request:
        return self._request

    def judge(self, sent: Sent) -> InvokeResult | Retry:
        if isinstance(sent, httpx.Response):
            return self._answer(sent)
        said = repr(sent)
        if never_sent(sent):
            unreachable = f"{self.what} not reachable ({type(sent).__name__})"
            return Retry(NotReady(unreachable, retry_after=1.0, cloud_text=said))
        if isinstance(sent, httpx.TimeoutException):
            raise DeadlineExceeded(f"{self.what} did not answer in time") from None
        raise NotReady(
            f"{self.what}: the connection failed ({type(sent).__name__})",
            retry_after=1.0,
            cloud_text=said,
        ) from None

    def _answer(self, response: httpx.Response) -> InvokeResult | Retry:
        status = response.status_code
        if status == 200:
            return InvokeResult(response.content, answer_version(response.content))
        after = _retry_after(response)
        if ours(response.content):
            hint = response.headers.get("retry-after")
            error = model_server_error(status, response.content, hint)
            if isinstance(error, RetryLater):  # a full queue, a draining server: back soon
                return Retry(error, after)
            raise error
        said = _said(response)
        if status == 408:
            raise DeadlineExceeded(
                f"{self.what}: the model did not answer within the service's rpc.keepalive "
                "(queueing included; raise pai.rpc.keepalive_ms)",
                cloud_text=said,
            )
        if status == 429:
            throttled = Throttled(
                f"PAI-EAS throttled calls to {self.what} (429: the service's rpc.rate_limit, "
                "or the shared gateway's 1,000 QPS per service)",
                retry_after=after or 1.0,
                cloud_text=said,
            )
            return Retry(throttled, after)
        if status == QUEUE_FULL:
            full = Overloaded(
                f"{self.what}: EAS's request queue is full (450: rpc.max_queue_size)",
                retry_after=after or 1.0,
                cloud_text=said,
            )
            return Retry(full, after)
        if status in (502, 503, 504):
            failed = Unavailable(
                f"PAI-EAS could not reach {self.what} ({status}); try again",
                retry_after=after or 1.0,
                cloud_text=said,
            )
            return Retry(failed, after)
        if status in (401, 403):
            raise AccessDenied(
                f"PAI-EAS refused the call to {self.what} ({status}): {TOKEN_VARIABLE} is not "
                "the service's AccessToken (DescribeService gives it; it changes when the "
                "service is created again)",
                cloud_text=said,
            )
        if status == 404:
            raise NotFound(
                f"no {self.what} at this endpoint (404): not deployed, deleted, or "
                f"{ENDPOINT_VARIABLE} names another region or account",
                cloud_text=said,
            )
        if status == 413:
            raise PayloadTooLarge(f"PAI-EAS refused the request body for {self.what} (413)")
        if status == 400:
            raise BadRequest(f"PAI-EAS refused the request to {self.what} (400)", cloud_text=said)
        if status >= 500:  # EAS's own failure (500, 501): the request may have run
            raise Unavailable(
                f"PAI-EAS failed for {self.what} ({status})",
                retry_after=after or 1.0,
                cloud_text=said,
            )
        raise ProviderError(f"PAI-EAS answered {status} for {self.what}", cloud_text=said)


class PaiInvoker(HttpInvoker):
    """Invoke deployments on PAI-EAS over httpx (see the module's docstring)."""

    name = "pai"

    def __init__(
        self,
        settings: Any,
        *,
        endpoint: str,
        token: str,
        credentials: Callable[[], AlibabaCredentials] | None = None,
        ca_bundle: str | None = None,
        env: Mapping[str, str] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> None:
        """``settings``: the ``pai:`` settings (region, workspace id, prefix, endpoint,
        protocol); ``endpoint``: the service endpoint; ``token``: the service's AccessToken;
        ``credentials``: what signs DescribeService (None: :meth:`status` is ``UNKNOWN``)."""
        self.settings = settings
        self.endpoint = service_base(endpoint)
        if not self.endpoint.lower().startswith(("http://", "https://")):
            raise ConfigError(
                f"{ENDPOINT_VARIABLE}={endpoint!r} is not an http(s) URL: use the service's "
                "InternetEndpoint or IntranetEndpoint from DescribeService"
            )
        self.token_auth = StaticHeader("Authorization", token)
        self.signer = (
            Acs3Signer(credentials, version=API_VERSION, action=DESCRIBE_ACTION)
            if credentials is not None
            else None
        )
        self.control_url = (
            f"{settings.protocol}://"
            f"{settings.endpoint or f'pai-eas.{settings.region}.aliyuncs.com'}"
        )
        self.retry = RetryPolicy(
            max_attempts,
            backoff_base_s,
            backoff_cap_s,
            rng or random.Random(),
            retry_budget or RetryBudget(),
        )
        https = self.endpoint.lower().startswith("https:") or (
            self.signer is not None and self.control_url.lower().startswith("https:")
        )
        self.clients = HttpClients(
            https=https, ca_bundle=ca_bundle, env=env, max_response_bytes=MAX_RESPONSE_BYTES
        )

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str] | None = None) -> PaiInvoker:
        """From the ``pai:`` settings (a function's light view, or the project's validated
        section) and the environment, read once: ``AIAAS_PAI_ENDPOINT``,
        ``AIAAS_PAI_TOKEN``, ``AIAAS_PAI_CA_BUNDLE`` and the ``ALIBABA_CLOUD_*``
        credentials (optional: for :meth:`status`)."""
        env = dict(os.environ if env is None else env)
        settings: Any = FunctionConfig.of(config).settings
        endpoint = env.get(ENDPOINT_VARIABLE, "").strip()
        if not endpoint:
            raise ConfigError(
                f"{ENDPOINT_VARIABLE} is not set: the invoke path needs the service endpoint "
                "(DescribeService's InternetEndpoint or IntranetEndpoint)"
            )
        token = env.get(TOKEN_VARIABLE, "").strip()
        if not token:
            raise ConfigError(
                f"{TOKEN_VARIABLE} is not set: the invoke path needs the service's AccessToken"
            )
        found = AlibabaCredentials.from_env(env)
        return cls(
            settings,
            endpoint=endpoint,
            token=token,
            credentials=(lambda: found) if found is not None else None,
            ca_bundle=env.get(CA_BUNDLE_VARIABLE) or None,
            env=env,
        )

    @classmethod
    def for_control_plane(
        cls,
        settings: Any,
        *,
        endpoint: str,
        token: str,
        credentials: Callable[[], AlibabaCredentials] | None = None,
        ca_bundle: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> PaiInvoker:
        """The invoke path the control plane smoke-tests with: the endpoint and token its
        DescribeService gave, and its own credentials for :meth:`status`."""
        return cls(
            settings,
            endpoint=endpoint,
            token=token,
            credentials=credentials,
            ca_bundle=ca_bundle,
            env=env,
        )

    def auth(self) -> httpx.Auth:
        return self.token_auth

    def service(self, name: str) -> str:
        """The EAS service of deployment ``name`` (BadRequest for a name no service can
        have: it goes into the URL)."""
        try:
            return names.service_name(name, self.settings)
        except ConfigError as exc:
            raise BadRequest(exc.message) from None

    def call(self, name: str, body: bytes, request_id: str | None) -> Call:
        service = self.service(name)
        headers = {"content-type": _JSON, "accept": _JSON}
        if request_id and request_id.isprintable() and request_id.isascii():
            headers["x-request-id"] = request_id
        url = f"{self.endpoint}{PREDICT_PATH}{service}"
        return _Predict(service, httpx.Request("POST", url, content=body, headers=headers))

    # -- DescribeService -------------------------------------------------------------------

    def _describe_request(self, service: str, timeout: float) -> httpx.Request:
        url = f"{self.control_url}/api/v2/services/{self.settings.region}/{service}"
        request = httpx.Request(
            "GET", url, headers={"accept": _JSON, "x-acs-action": DESCRIBE_ACTION}
        )
        return with_timeout(request, timeout, cap_s=DESCRIBE_TIMEOUT_S, connect_s=CONNECT_TIMEOUT_S)

    def _describe_answer(self, service: str, sent: Sent) -> Service:
        what = f"DescribeService of PAI-EAS service {service!r}"
        if isinstance(sent, httpx.TransportError):
            raise NotReady(
                f"{what} failed ({type(sent).__name__})", retry_after=1.0, cloud_text=repr(sent)
            )
        status = sent.status_code
        if status == 200:
            return _service_of(service, sent.content, what)
        said = _said(sent)
        code = ""
        with contextlib.suppress(ValueError, AttributeError):
            code = str(json.loads(sent.content).get("Code") or "")
        if status == 404 or code.startswith("InvalidService.NotFound"):
            raise NotFound(
                f"no PAI-EAS service {service!r} in region {self.settings.region!r}",
                cloud_text=said,
            )
        if status in (401, 403) or code in ("SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound"):
            raise AccessDenied(
                f"{what} was refused ({status} {code}): the function's credentials need "
                f"{RAM_ACTION} on the service (a wrong or expired AccessKey or STS token is "
                "refused too)",
                cloud_text=said,
            )
        if status == 429 or code.startswith("Throttling"):
            raise Throttled(f"EAS throttled the {what}", retry_after=1.0, cloud_text=said)
        if status >= 500:
            raise Unavailable(f"{what} failed ({status})", retry_after=1.0, cloud_text=said)
        raise ProviderError(f"{what} answered {status} {code}".rstrip(), cloud_text=said)

    def describe_sync(self, name: str, timeout: float = DESCRIBE_TIMEOUT_S) -> Service:
        """DescribeService of deployment ``name``'s service (the sync client)."""
        if self.signer is None:
            raise ConfigError("this invoke path has no Alibaba Cloud credentials")
        service = self.service(name)
        try:
            sent: Sent = self.clients.sync_client().send(
                self._describe_request(service, timeout), auth=self.signer
            )
        except httpx.TransportError as exc:
            sent = exc
        return self._describe_answer(service, sent)

    async def describe(self, name: str, timeout: float = DESCRIBE_TIMEOUT_S) -> Service:
        """DescribeService of deployment ``name``'s service (the event loop's client)."""
        if self.signer is None:
            raise ConfigError("this invoke path has no Alibaba Cloud credentials")
        service = self.service(name)
        client = self.clients.async_client()
        try:
            sent: Sent = await client.send(
                self._describe_request(service, timeout), auth=self.signer
            )
        except httpx.TransportError as exc:
            sent = exc
        return self._describe_answer(service, sent)

    async def status(self, name: str) -> DeploymentStatus:
        """The service's state from DescribeService (NotFound when there is none);
        ``UNKNOWN`` without credentials, which cannot ask."""
        if self.signer is None:
            self.service(name)
            return DeploymentStatus.UNKNOWN
        return (await self.describe(name)).status
