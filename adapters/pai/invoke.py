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
  ``AIAAS_PAI_EAS_URL``, else ``pai.endpoint``, else the region's OpenAPI endpoint;
  ``UNKNOWN`` without credentials.
- **Looked up when not given** (``aiaas invoke`` from a shell, or a function that keeps no
  token): with ``AIAAS_PAI_ENDPOINT`` or ``AIAAS_PAI_TOKEN`` unset and those credentials set,
  the first call to a deployment asks DescribeService once (within the call's deadline) and
  keeps the service's ``InternetEndpoint`` (``IntranetEndpoint`` when it has none: the
  internet one is the one reachable from a shell and the one the control plane's smoke test
  uses; a function in the VPC sets ``AIAAS_PAI_ENDPOINT`` to the intranet one) and its
  ``AccessToken``, per service. EAS gives its endpoints as ``http://`` URLs; the public
  gateway's is called over https (:func:`~adapters.pai.names.over_tls`: the token must not
  cross the internet in clear), and so is an ``AIAAS_PAI_ENDPOINT`` written so; a VPC's,
  another host's and one with an explicit port (``:80`` keeps plain HTTP) as written.
  A 401/403 from the service reads them again once (the
  service may have been created again, with a new token) and retries with the new token
  before ``AccessDenied``; a 404 forgets them. The token is never in a repr, a log line or
  an error message.
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

``AIAAS_PAI_EAS_URL`` (``http(s)://host[:port]``: an emulator, another region's endpoint)
overrides ``pai.endpoint`` and ``pai.protocol`` for DescribeService, as it does for the
control plane (:func:`endpoint_url` reads it, and ``AIAAS_PAI_OSS_URL``, for both).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
    attempts,
    never_sent,
    run_async,
    run_sync,
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
EAS_URL_VARIABLE = "AIAAS_PAI_EAS_URL"
"""EAS's OpenAPI endpoint as a URL (``http://127.0.0.1:8080``): overrides ``pai.endpoint``
and ``pai.protocol``."""
OSS_URL_VARIABLE = "AIAAS_PAI_OSS_URL"
"""The OSS endpoint as a URL: overrides ``pai.oss_endpoint`` (path-style addressing)."""
CREDENTIAL_VARIABLES = "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET"
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
_HOST_PORT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?")
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


def _answer_of(body: bytes, what: str) -> dict[str, Any]:
    """DescribeService's 200 answer as JSON. ProviderError naming what is malformed, never
    quoting the body (it carries the service's AccessToken)."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise ProviderError(
            f"{what} answered 200 with a body that is not JSON ({len(body)} bytes)"
        ) from None
    if not isinstance(answer, dict) or not isinstance(answer.get("Status"), str):
        raise ProviderError(f"{what} answered 200 without a Status")
    return answer


def _service_of(name: str, answer: dict[str, Any]) -> Service:
    """What DescribeService's answer says of the service (never its AccessToken)."""
    return Service(
        name,
        str(answer["Status"]),
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


def endpoint_url(env: Mapping[str, str], variable: str) -> str | None:
    """The ``http(s)://host[:port]`` URL in ``variable`` (``AIAAS_PAI_EAS_URL``,
    ``AIAAS_PAI_OSS_URL``), without a trailing slash; None when it is unset or blank.
    ConfigError naming the variable for anything else (a path, a query, credentials, no
    scheme)."""
    value = env.get(variable, "").strip()
    if not value:
        return None
    try:
        split = urlsplit(value)
        split.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        split = None
    if (
        split is None
        or split.scheme not in ("http", "https")
        or not _HOST_PORT.fullmatch(split.netloc)
        or split.path not in ("", "/")
        or split.query
        or split.fragment
    ):
        shown = value if "@" not in value else "(a URL with credentials in it: not shown)"
        raise ConfigError(
            f"{variable}={shown!r} is not an http(s)://host[:port] URL (e.g. "
            "http://127.0.0.1:8080, as `aiaas emulate alibaba` prints it)"
        )
    return f"{split.scheme}://{split.netloc}"


@dataclass(frozen=True)
class Access:
    """Where one service answers (its endpoint without the predict path) and its
    AccessToken, which no repr shows. ``looked_up``: the token came from DescribeService
    (and may be read again), not from ``AIAAS_PAI_TOKEN``."""

    base: str
    token: str = field(repr=False)
    looked_up: bool = False

    @property
    def auth(self) -> StaticHeader:
        """``Authorization: <token>``."""
        return StaticHeader("Authorization", self.token)


class _Predict(Call):
    """One POST to ``/api/predict/<service>``: the same request each attempt; only a request
    that never left is sent again after a transport error (one EAS may have run is not).
    ``looked_up``: the token is DescribeService's (said so when it is refused)."""

    def __init__(self, service: str, request: httpx.Request, *, looked_up: bool = False) -> None:
        self.service = service
        self.what = f"PAI-EAS service {service!r}"
        self.connect_timeout = CONNECT_TIMEOUT_S  # read at call time: tests shorten it
        self._request = request
        self._looked_up = looked_up

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
            why = (
                "the AccessToken DescribeService gives was refused, read again after the "
                "first refusal (the service's gateway may expect another token)"
                if self._looked_up
                else f"{TOKEN_VARIABLE} is not the service's AccessToken (DescribeService "
                "gives it; it changes when the service is created again)"
            )
            raise AccessDenied(
                f"PAI-EAS refused the call to {self.what} ({status}): {why}", cloud_text=said
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
        endpoint: str | None,
        token: str | None,
        credentials: Callable[[], AlibabaCredentials] | None = None,
        ca_bundle: str | None = None,
        env: Mapping[str, str] | None = None,
        control_url: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> None:
        """``settings``: the ``pai:`` settings (region, workspace id, prefix, endpoint,
        protocol); ``endpoint``: the service endpoint; ``token``: the service's AccessToken
        (either None: looked up with DescribeService, which then needs ``credentials``);
        ``credentials``: what signs DescribeService (None: :meth:`status` is ``UNKNOWN``);
        ``control_url``: EAS's OpenAPI URL (default: the settings')."""
        self.settings = settings
        self.endpoint = None if endpoint is None else service_base(endpoint)
        if self.endpoint is not None and not self.endpoint.lower().startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"{ENDPOINT_VARIABLE}={endpoint!r} is not an http(s) URL: use the service's "
                "InternetEndpoint or IntranetEndpoint from DescribeService"
            )
        self._token = token or None
        self.token_auth = StaticHeader("Authorization", token) if token else None
        self.signer = (
            Acs3Signer(credentials, version=API_VERSION, action=DESCRIBE_ACTION)
            if credentials is not None
            else None
        )
        if self.looks_up and self.signer is None:
            raise ConfigError(_nothing_to_reach_with(endpoint is None, token is None))
        self.control_url = (control_url or _control_url(settings)).rstrip("/")
        self.retry = RetryPolicy(
            max_attempts,
            backoff_base_s,
            backoff_cap_s,
            rng or random.Random(),
            retry_budget or RetryBudget(),
        )
        https = (
            self.endpoint is None  # a looked-up endpoint may be https: verified then
            or self.endpoint.lower().startswith("https:")
            or (self.signer is not None and self.control_url.lower().startswith("https:"))
        )
        self.clients = HttpClients(
            https=https, ca_bundle=ca_bundle, env=env, max_response_bytes=MAX_RESPONSE_BYTES
        )
        self._found: dict[str, Access] = {}
        self._found_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str] | None = None) -> PaiInvoker:
        """From the ``pai:`` settings (a function's light view, or the project's validated
        section) and the environment, read once: ``AIAAS_PAI_ENDPOINT``,
        ``AIAAS_PAI_TOKEN``, ``AIAAS_PAI_CA_BUNDLE``, ``AIAAS_PAI_EAS_URL`` and the
        ``ALIBABA_CLOUD_*`` credentials (for :meth:`status`, and to look up the endpoint
        and token when either variable is unset; ConfigError naming both ways when neither
        is there)."""
        env = dict(os.environ if env is None else env)
        settings: Any = FunctionConfig.of(config).settings
        # the console's http:// form of the public gateway too goes over https
        endpoint = names.over_tls(env.get(ENDPOINT_VARIABLE, "").strip()) or None
        token = env.get(TOKEN_VARIABLE, "").strip() or None
        found = AlibabaCredentials.from_env(env)
        if (endpoint is None or token is None) and found is None:
            raise ConfigError(_nothing_to_reach_with(endpoint is None, token is None))
        return cls(
            settings,
            endpoint=endpoint,
            token=token,
            credentials=(lambda: found) if found is not None else None,
            ca_bundle=env.get(CA_BUNDLE_VARIABLE) or None,
            env=env,
            control_url=endpoint_url(env, EAS_URL_VARIABLE),
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

    @property
    def looks_up(self) -> bool:
        """True when the endpoint or the token comes from DescribeService."""
        return self.endpoint is None or self._token is None

    def auth(self) -> httpx.Auth:
        if self.token_auth is None:  # looked up per service: see _access
            raise ConfigError("this invoke path looks the service's token up per service")
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
        base = self.endpoint or self._access_known(service).base
        return self._predict(service, base, body, request_id, looked_up=False)

    def _predict(
        self, service: str, base: str, body: bytes, request_id: str | None, *, looked_up: bool
    ) -> _Predict:
        headers = {"content-type": _JSON, "accept": _JSON}
        if request_id and request_id.isprintable() and request_id.isascii():
            headers["x-request-id"] = request_id
        url = f"{base}{PREDICT_PATH}{service}"
        request = httpx.Request("POST", url, content=body, headers=headers)
        return _Predict(service, request, looked_up=looked_up)

    # -- invoke, with the endpoint and token looked up -----------------------------------

    async def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        if not self.looks_up:
            return await super().invoke(name, body, request_id=request_id, timeout=timeout)
        service = self.service(name)
        deadline = time.monotonic() + timeout
        access = self._cached(service)
        if access is None:
            answer = await self._described_async(service, timeout)
            access = self._keep(service, self._access_of(service, answer))
        client = self.clients.async_client()
        try:
            steps = self._steps(service, access, body, request_id, deadline)
            return await run_async(steps, client, access.auth)
        except AccessDenied:
            if not access.looked_up:
                raise
            answer = await self._described_async(service, deadline - time.monotonic())
            again = self._renewed(service, access, answer)
            if again is None:
                raise
        except NotFound:
            self._forget(service, access)
            raise
        steps = self._steps(service, again, body, request_id, deadline)
        return await run_async(steps, client, again.auth)

    def invoke_sync(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        if not self.looks_up:
            return super().invoke_sync(name, body, request_id=request_id, timeout=timeout)
        service = self.service(name)
        deadline = time.monotonic() + timeout
        access = self._cached(service)
        if access is None:
            answer = self._described_sync(service, timeout)
            access = self._keep(service, self._access_of(service, answer))
        client = self.clients.sync_client()
        try:
            steps = self._steps(service, access, body, request_id, deadline)
            return run_sync(steps, client, access.auth)
        except AccessDenied:
            if not access.looked_up:
                raise
            answer = self._described_sync(service, deadline - time.monotonic())
            again = self._renewed(service, access, answer)
            if again is None:
                raise
        except NotFound:
            self._forget(service, access)
            raise
        steps = self._steps(service, again, body, request_id, deadline)
        return run_sync(steps, client, again.auth)

    def _steps(
        self, service: str, access: Access, body: bytes, request_id: str | None, deadline: float
    ) -> Generator[Any, Sent | None, InvokeResult]:
        call = self._predict(service, access.base, body, request_id, looked_up=access.looked_up)
        return attempts(call, self.retry, deadline - time.monotonic())

    def _access_of(self, service: str, answer: dict[str, Any]) -> Access:
        """The service's endpoint and token from DescribeService's answer (what the
        environment gave wins): ``InternetEndpoint`` (over https on EAS's
        public gateway, :func:`~adapters.pai.names.over_tls`), else ``IntranetEndpoint``."""
        endpoint = self.endpoint or names.over_tls(
            str(answer.get("InternetEndpoint") or answer.get("IntranetEndpoint") or "")
        )
        token = self._token or str(answer.get("AccessToken") or "")
        missing = [
            what for what, got in (("endpoint", endpoint), ("AccessToken", token)) if not got
        ]
        if missing:
            raise NotReady(
                f"PAI-EAS service {service!r} has no {' nor '.join(missing)} yet (status "
                f"{answer.get('Status')}): try again once it runs",
                retry_after=5.0,
            )
        base = service_base(endpoint)
        if not base.lower().startswith(("http://", "https://")):
            raise ProviderError(
                f"DescribeService of PAI-EAS service {service!r} gave an endpoint that is not "
                f"an http(s) URL ({base[:100]!r})"
            )
        return Access(base, token, looked_up=self._token is None)

    def _cached(self, service: str) -> Access | None:
        with self._found_lock:
            return self._found.get(service)

    def _access_known(self, service: str) -> Access:
        found = self._cached(service)
        if found is None:
            raise ProviderError(f"PAI-EAS service {service!r} was not looked up yet")
        return found

    def _keep(self, service: str, access: Access) -> Access:
        with self._found_lock:
            self._found[service] = access
        return access

    def _forget(self, service: str, access: Access) -> None:
        with self._found_lock:
            if self._found.get(service) == access:
                del self._found[service]

    def _renewed(self, service: str, refused: Access, answer: dict[str, Any]) -> Access | None:
        """After a 401/403 with ``refused`` (a looked-up token): the access DescribeService
        gives now, kept; None when it is the same (no second try)."""
        access = self._keep(service, self._access_of(service, answer))
        return None if access == refused else access

    # -- DescribeService -------------------------------------------------------------------

    def _describe_request(self, service: str, timeout: float) -> httpx.Request:
        url = f"{self.control_url}/api/v2/services/{self.settings.region}/{service}"
        request = httpx.Request(
            "GET", url, headers={"accept": _JSON, "x-acs-action": DESCRIBE_ACTION}
        )
        return with_timeout(request, timeout, cap_s=DESCRIBE_TIMEOUT_S, connect_s=CONNECT_TIMEOUT_S)

    def _describe_answer(self, service: str, sent: Sent) -> dict[str, Any]:
        """DescribeService's 200 answer as JSON, or its typed error. Never quotes the 200
        body (it carries the service's AccessToken)."""
        what = f"DescribeService of PAI-EAS service {service!r}"
        if isinstance(sent, httpx.TransportError):
            raise NotReady(
                f"{what} failed ({type(sent).__name__})", retry_after=1.0, cloud_text=repr(sent)
            )
        status = sent.status_code
        if status == 200:
            return _answer_of(sent.content, what)
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
                f"{what} was refused ({status} {code}): the credentials ({CREDENTIAL_VARIABLES}) "
                f"need {RAM_ACTION} on the service (a wrong or expired AccessKey or STS token is "
                "refused too)",
                cloud_text=said,
            )
        if status == 429 or code.startswith("Throttling"):
            raise Throttled(f"EAS throttled the {what}", retry_after=1.0, cloud_text=said)
        if status >= 500:
            raise Unavailable(f"{what} failed ({status})", retry_after=1.0, cloud_text=said)
        raise ProviderError(f"{what} answered {status} {code}".rstrip(), cloud_text=said)

    def _described_sync(self, service: str, timeout: float) -> dict[str, Any]:
        if self.signer is None:
            raise ConfigError("this invoke path has no Alibaba Cloud credentials")
        if timeout <= 0:
            raise DeadlineExceeded(f"no time left to look up PAI-EAS service {service!r}")
        try:
            sent: Sent = self.clients.sync_client().send(
                self._describe_request(service, timeout), auth=self.signer
            )
        except httpx.TransportError as exc:
            sent = exc
        return self._describe_answer(service, sent)

    async def _described_async(self, service: str, timeout: float) -> dict[str, Any]:
        if self.signer is None:
            raise ConfigError("this invoke path has no Alibaba Cloud credentials")
        if timeout <= 0:
            raise DeadlineExceeded(f"no time left to look up PAI-EAS service {service!r}")
        client = self.clients.async_client()
        try:
            sent: Sent = await client.send(
                self._describe_request(service, timeout), auth=self.signer
            )
        except httpx.TransportError as exc:
            sent = exc
        return self._describe_answer(service, sent)

    def describe_sync(self, name: str, timeout: float = DESCRIBE_TIMEOUT_S) -> Service:
        """DescribeService of deployment ``name``'s service (the sync client)."""
        service = self.service(name)
        return _service_of(service, self._described_sync(service, timeout))

    async def describe(self, name: str, timeout: float = DESCRIBE_TIMEOUT_S) -> Service:
        """DescribeService of deployment ``name``'s service (the event loop's client)."""
        service = self.service(name)
        return _service_of(service, await self._described_async(service, timeout))

    async def status(self, name: str) -> DeploymentStatus:
        """The service's state from DescribeService (NotFound when there is none);
        ``UNKNOWN`` without credentials, which cannot ask."""
        if self.signer is None:
            self.service(name)
            return DeploymentStatus.UNKNOWN
        return (await self.describe(name)).status


def _control_url(settings: Any) -> str:
    """EAS's OpenAPI base URL of ``settings`` (``pai.endpoint`` with ``pai.protocol``, else
    the region's)."""
    host = getattr(settings, "endpoint", None) or f"pai-eas.{settings.region}.aliyuncs.com"
    return f"{getattr(settings, 'protocol', 'https')}://{host}"


def _nothing_to_reach_with(no_endpoint: bool, no_token: bool) -> str:
    """Why the invoke path cannot reach a service: a variable unset and no credentials to
    look it up with; both ways named."""
    unset = [
        v for v, gone in ((ENDPOINT_VARIABLE, no_endpoint), (TOKEN_VARIABLE, no_token)) if gone
    ]
    verb = "is" if len(unset) == 1 else "are"
    return (
        f"{' and '.join(unset)} {verb} not set, and there are no Alibaba Cloud credentials to "
        f"look the service up with: set {ENDPOINT_VARIABLE} and {TOKEN_VARIABLE} (the "
        "service's InternetEndpoint or IntranetEndpoint and AccessToken, from DescribeService), "
        f"or {CREDENTIAL_VARIABLES} (with ALIBABA_CLOUD_SECURITY_TOKEN for STS credentials) "
        f"allowed {RAM_ACTION} on the service"
    )
