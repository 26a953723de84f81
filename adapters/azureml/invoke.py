"""The Azure ML invoke path: the endpoint's scoring URI over httpx, no Azure SDK.

What a function with ``provider: azureml`` loads on every cold start, so it stays small:
httpx (which the function tier has anyway), the shared invoke loop and clients
(:mod:`adapters.http_invoker`), :mod:`adapters.auth` and the provider's names. Never
``azure.ai.ml`` (1.3-3.7 s of import), ``azure.identity`` (0.25-0.45 s) nor pydantic.

- **Where**: ``POST`` to the endpoint's ``scoringUri``, read, never built: from
  ``AIAAS_AZUREML_SCORING_URI``, else from the endpoint itself (ARM ``GET .../onlineEndpoints/
  <endpoint>?api-version=2023-04-01-preview``, at ``AIAAS_AZURE_ARM_URL`` or Azure's public
  ARM, with a managed-identity token for ARM), once per endpoint. The endpoint is
  ``names.endpoint_name(<deployment>, settings)``. TLS is verified, with
  ``AIAAS_AZURE_CA_BUNDLE`` when set (else the system's trust store).
- **Auth**: ``auth_mode: aad_token`` (the default): an Entra token for ``https://ml.azure.com``
  from the function's managed identity (:class:`~adapters.auth.ManagedIdentityBearer`:
  ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``, or ``MSI_ENDPOINT``/``MSI_SECRET``), fetched
  again once when the endpoint answers 401; ``auth_mode: key``: ``Authorization: Bearer
  $AIAAS_AZUREML_KEY`` with ``AIAAS_AZUREML_SCORING_URI`` (a key-only function has no ARM
  access: its :meth:`~AzureMLInvoker.status` is ``UNKNOWN``). The control plane builds one
  with :meth:`AzureMLInvoker.for_control_plane` from the scoring URI and its own credential.
- **Pinning**: ``deployment=`` on :meth:`~AzureMLInvoker.invoke` / ``invoke_sync`` sends
  ``azureml-model-deployment: <deployment>``: Azure routes the call to that deployment
  whatever its traffic share (the control plane's smoke test before any traffic).
- **One request id and the deadline reach the container**: ``x-request-id`` (what the model
  server reads) and ``x-ms-client-request-id`` (what Azure's own logs record; whether the
  front end passes ``x-request-id`` through unchanged is not documented), and each attempt's
  milliseconds left in ``x-aiaas-timeout-ms``.
- **Errors map once, here** (Azure ML's "Troubleshoot online endpoints", HTTP status codes):
  408 (past ``request_timeout_ms``) is ``DeadlineExceeded``; 424 is our container's own
  answer, its status in ``ms-azureml-model-error-statuscode`` and its JSON error body where
  Azure passed it on (so a 422 stays ``InvalidInput`` with index and field); 429 (too many
  requests in flight, or the endpoint's rate limit) is ``Throttled``, retried within the
  deadline; 404 (no deployment takes traffic) is ``NotReady``, unless ARM says the endpoint
  is gone (``NotFound``); 401/403 are ``AccessDenied`` naming what the identity or key
  lacks; Azure's own 5xx are ``Unavailable`` (500, 503, retried) or ``ModelError`` (502: the
  container crashed). A connection that cannot be made (a deleted endpoint's host stops
  resolving) is settled by asking ARM with ``aad_token`` (gone: ``NotFound``; moved: sent
  again to the new scoring URI; else retried, then ``NotReady``) and is ``NotReady`` with
  ``key``. Azure's own text goes to the error's ``cloud_text`` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from adapters.auth import CredentialBearer, ManagedIdentityBearer, StaticHeader, TokenSource
from adapters.azureml import ARM_URL, SCORING_RESOURCE, AuthMode, names
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
from aiaas.errors import (
    AccessDenied,
    AiaasError,
    BadRequest,
    ConfigError,
    DeadlineExceeded,
    ModelError,
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

ARM_API_VERSION = "2023-04-01-preview"
"""The online endpoints api-version of ARM's GET (what azure-ai-ml 1.35 sends for it)."""
SCORING_URI_VARIABLE = "AIAAS_AZUREML_SCORING_URI"
KEY_VARIABLE = "AIAAS_AZUREML_KEY"
ARM_URL_VARIABLE = "AIAAS_AZURE_ARM_URL"
CA_BUNDLE_VARIABLE = "AIAAS_AZURE_CA_BUNDLE"
CLIENT_ID_VARIABLE = "AZURE_CLIENT_ID"
"""A user-assigned managed identity's client id (azure-identity's variable for it)."""
PIN_HEADER = "azureml-model-deployment"
MODEL_STATUS_HEADER = "ms-azureml-model-error-statuscode"
SCORE_ACTION = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action"
READ_ACTION = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/read"
CONNECT_TIMEOUT_S = 2.0
ARM_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
NO_TRAFFIC_RETRY_S = 5.0
"""When to come back after a 404 (no deployment takes traffic yet: a rollout takes minutes)."""
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
"""Azure documents no payload limit for managed online endpoints; an answer past this is
not one of ours."""
_JSON = "application/json"
# ARM's provisioningState of an online endpoint (Creating, Updating, Deleting, Succeeded,
# Failed, Canceled), with a traffic share on a deployment or not.
_STATES = {
    "creating": DeploymentStatus.CREATING,
    "updating": DeploymentStatus.UPDATING,
    "deleting": DeploymentStatus.DELETING,
    "failed": DeploymentStatus.FAILED,
}


@dataclass(frozen=True)
class Endpoint:
    """What ARM says of an online endpoint: its scoring URI (``None`` until Azure has one),
    provisioning state, live traffic shares and auth mode."""

    name: str
    scoring_uri: str | None
    state: str
    traffic: dict[str, int]
    auth_mode: str

    @property
    def status(self) -> DeploymentStatus:
        """The state in every provider's terms: ready once it succeeded and a deployment
        takes traffic (an update that was cancelled leaves the endpoint serving)."""
        state = self.state.lower()
        if state in _STATES:
            return _STATES[state]
        serving = any(share > 0 for share in self.traffic.values())
        if state == "succeeded":
            return DeploymentStatus.READY if serving else DeploymentStatus.CREATING
        if state == "canceled":
            return DeploymentStatus.READY if serving else DeploymentStatus.FAILED
        return DeploymentStatus.UNKNOWN


def _said(response: httpx.Response) -> str | None:
    """Azure's own words (its error body, cut short), for ``cloud_text`` only."""
    text = response.text[:500].strip()
    return text or None


def _retry_after(response: httpx.Response) -> float | None:
    """Azure's back-off (``Retry-After`` in seconds, or ``retry-after-ms``), when sent."""
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header, "").strip()
        with contextlib.suppress(ValueError):
            seconds = float(value) * scale
            if 0 <= seconds <= 3600:
                return seconds
    return None


def _container_body(response: httpx.Response) -> bytes:
    """Our container's JSON error body where Azure passed it on with a 424, else a neutral
    one (Azure's own words go to ``cloud_text``)."""
    with contextlib.suppress(ValueError):
        if isinstance(json.loads(response.content), dict):
            return response.content
    text = "the model container failed without an answer (see the deployment's logs)"
    return json.dumps({"error": {"message": text}}).encode()


def _endpoint_of(name: str, body: bytes, what: str) -> Endpoint:
    """ARM's 200 answer about online endpoint ``name``. ProviderError naming what is missing
    or malformed (by key and type), never quoting the body: a 200 is never echoed."""

    def malformed(problem: str) -> ProviderError:
        return ProviderError(f"{what} answered 200 {problem}")

    try:
        answer = json.loads(body)
    except ValueError:
        raise malformed(f"with a body that is not JSON ({len(body)} bytes)") from None
    properties = answer.get("properties") if isinstance(answer, dict) else None
    if not isinstance(properties, dict):
        kind = "missing" if properties is None else f"a {type(properties).__name__}"
        raise malformed(f"without a properties object ({kind})")
    traffic = properties.get("traffic") or {}
    try:
        shares = {str(k): int(v) for k, v in traffic.items()}
    except (AttributeError, TypeError, ValueError):
        raise malformed(
            f"with a traffic that is not a map of shares (a {type(traffic).__name__})"
        ) from None
    return Endpoint(
        name,
        str(properties.get("scoringUri") or "") or None,
        str(properties.get("provisioningState") or ""),
        shares,
        str(properties.get("authMode") or ""),
    )


class _Unsettled(NotReady):
    """The scoring URI could not be reached, or answered 404: only ARM can tell whether the
    endpoint is gone. Raised out of the attempts loop to the invoker, which asks."""

    def __init__(
        self, message: str, *, why: str, retry_after: float | None, cloud_text: str | None
    ) -> None:
        super().__init__(message, retry_after=retry_after, cloud_text=cloud_text)
        self.why = why  # "unreachable" or "no traffic"


class _Score(Call):
    """One POST to the scoring URI: the same request each attempt; only a request that never
    left is sent again after a transport error (one Azure may have run is not)."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        request: httpx.Request,
        *,
        auth_mode: AuthMode,
        pinned: str | None,
        settle: bool,
    ) -> None:
        self.name, self.endpoint = name, endpoint
        self.what = f"Azure ML endpoint {endpoint!r}" + (
            f" (deployment {pinned!r})" if pinned else ""
        )
        self.connect_timeout = CONNECT_TIMEOUT_S  # read at call time: tests shorten it
        self.auth_mode = auth_mode
        self.pinned = pinned
        self.settle = settle  # ask ARM (raise _Unsettled) before concluding NotReady
        self._request = request

    def request(self) -> httpx.Request:
        return self._request

    def judge(self, sent: Sent) -> InvokeResult | Retry:
        if isinstance(sent, httpx.Response):
            return self._answer(sent)
        said = repr(sent)
        if never_sent(sent):
            unreachable = f"{self.what} not reachable ({type(sent).__name__})"
            if self.settle:
                raise _Unsettled(unreachable, why="unreachable", retry_after=1.0, cloud_text=said)
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
            body = response.content
            answered_by = response.headers.get(PIN_HEADER, "")
            return InvokeResult(body, answer_version(body) or names.version_of(answered_by))
        said = _said(response)
        after = _retry_after(response)
        if status == 424:
            # Our container answered non-2xx: Azure gives its status in a header (and, as far
            # as is known, its body); the model server's own typed error follows from both.
            original = response.headers.get(MODEL_STATUS_HEADER, "").strip()
            code = int(original) if original.isdigit() else 500
            error = model_server_error(
                code, _container_body(response), response.headers.get("retry-after")
            )
            error.cloud_text = said
            raise error
        if status == 408:
            raise DeadlineExceeded(
                f"{self.what}: the model did not answer within the deployment's "
                "request_timeout_ms (raise azureml.request_timeout_ms, at most 180000)",
                cloud_text=said,
            )
        if status == 429:
            throttled = Throttled(
                f"Azure ML throttled calls to {self.what} (429: too many requests in flight "
                "or over the endpoint's rate limit)",
                retry_after=after or 1.0,
                cloud_text=said,
            )
            return Retry(throttled, after)
        if status == 404:
            if self.pinned:
                raise NotReady(
                    f"{self.what}: Azure ML answered 404 for the pinned deployment (not "
                    "there, or not ready)",
                    retry_after=NO_TRAFFIC_RETRY_S,
                    cloud_text=said,
                )
            message = f"{self.what} has no deployment taking traffic yet (404)"
            if self.settle:
                raise _Unsettled(
                    message, why="no traffic", retry_after=NO_TRAFFIC_RETRY_S, cloud_text=said
                )
            raise NotReady(message, retry_after=NO_TRAFFIC_RETRY_S, cloud_text=said)
        if status in (401, 403):
            raise AccessDenied(self._refused(status), cloud_text=said)
        if status == 413:
            raise PayloadTooLarge(f"Azure ML refused the request body for {self.what} (413)")
        if status == 400:
            raise BadRequest(f"Azure ML refused the request to {self.what} (400)", cloud_text=said)
        if status == 502:
            # Azure's "the model container crashed or threw" (not our server's answer,
            # which would be a 424): the request may have run, so it is not sent again.
            raise ModelError(f"{self.what}: the model container failed (502)", cloud_text=said)
        if status == 504:
            raise DeadlineExceeded(f"{self.what} did not answer in time (504)", cloud_text=said)
        if status >= 500:  # Azure's own failure (500, 503): the same call may succeed
            failed = Unavailable(
                f"Azure ML failed for {self.what} ({status}); try again",
                retry_after=after or 1.0,
                cloud_text=said,
            )
            return Retry(failed, after)
        raise ProviderError(f"Azure ML answered {status} for {self.what}", cloud_text=said)

    def _refused(self, status: int) -> str:
        refused = f"Azure ML refused the call to {self.what} ({status})"
        if self.auth_mode == "key":
            return (
                f"{refused}: the endpoint key in {KEY_VARIABLE} is not one of the endpoint's "
                "keys (regenerated?), or the endpoint takes Entra tokens (auth_mode aad_token)"
            )
        again = " (asking the identity for a new Entra token did not help)" if status == 401 else ""
        return (
            f"{refused}{again}: the function's managed identity needs {SCORE_ACTION} on the "
            "endpoint (e.g. the 'AzureML Data Scientist' role, or a custom role with that "
            "action), and the endpoint must take Entra tokens (auth_mode aad_token, not key)"
        )


class AzureMLInvoker(HttpInvoker):
    """Sends predictions to an Azure ML managed online endpoint's scoring URI."""

    name = "azureml"

    def __init__(
        self,
        workspace: names.Workspace,
        *,
        auth_mode: AuthMode,
        scoring_auth: httpx.Auth,
        arm_auth: httpx.Auth | None = None,
        arm_url: str = ARM_URL,
        scoring_uri: str | None = None,
        ca_bundle: str | None = None,
        env: Mapping[str, str] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> None:
        """``workspace``: the ``azureml:`` settings the endpoint names come from;
        ``scoring_auth``: what signs each scoring call (the managed identity's bearer, a key
        header); ``arm_auth``: what signs ARM's endpoint GET (``None``: no ARM access, so
        ``scoring_uri`` is required, :meth:`status` is ``UNKNOWN`` and an unreachable
        endpoint stays ``NotReady``); ``scoring_uri``: the one endpoint's scoring URI, used
        for every name (else read from ARM per endpoint)."""
        if arm_auth is None and scoring_uri is None:
            raise ConfigError(
                f"{SCORING_URI_VARIABLE} is not set: without ARM access (auth_mode key) the "
                "invoke path needs the endpoint's scoring URI"
            )
        self.workspace = workspace
        self.auth_mode: AuthMode = auth_mode
        self.scoring_auth = scoring_auth
        self.arm_auth = arm_auth
        self.arm_url = arm_url.rstrip("/")
        self.scoring_uri = scoring_uri
        self.retry = RetryPolicy(
            max_attempts,
            backoff_base_s,
            backoff_cap_s,
            rng or random.Random(),
            retry_budget or RetryBudget(),
        )
        # TLS unless every URL this invoker calls is known now and plain HTTP (a test's):
        # the scoring URIs ARM gives are https.
        known = [scoring_uri] if scoring_uri else []
        if arm_auth is not None:
            known.append(self.arm_url)
        https = scoring_uri is None or any(u.lower().startswith("https:") for u in known)
        self.clients = HttpClients(
            https=https, ca_bundle=ca_bundle, env=env, max_response_bytes=MAX_RESPONSE_BYTES
        )
        self._scoring: dict[str, str] = {}  # endpoint -> scoring URI, as ARM gave it

    @classmethod
    def from_config(
        cls, config: ProjectConfig | FunctionConfig, env: Mapping[str, str] | None = None
    ) -> AzureMLInvoker:
        """From the ``azureml:`` settings (a function's light view, or the project's
        validated section) and the environment, read once: ``AIAAS_AZURE_ARM_URL``,
        ``AIAAS_AZURE_CA_BUNDLE``, ``AIAAS_AZUREML_SCORING_URI``; ``IDENTITY_ENDPOINT`` /
        ``IDENTITY_HEADER`` (or ``MSI_ENDPOINT`` / ``MSI_SECRET``) and ``AZURE_CLIENT_ID``
        with ``aad_token``; ``AIAAS_AZUREML_KEY`` with ``key``."""
        env = dict(os.environ if env is None else env)
        settings: Any = FunctionConfig.of(config).settings
        auth_mode: AuthMode = settings.auth_mode
        arm_url = (env.get(ARM_URL_VARIABLE) or ARM_URL).rstrip("/")
        ca_bundle = env.get(CA_BUNDLE_VARIABLE) or None
        scoring_uri = env.get(SCORING_URI_VARIABLE, "").strip() or None
        if auth_mode == "key":
            key_auth = StaticHeader.from_env("Authorization", KEY_VARIABLE, env, prefix="Bearer ")
            return cls(
                settings, auth_mode="key", scoring_auth=key_auth, scoring_uri=scoring_uri,
                arm_url=arm_url, ca_bundle=ca_bundle, env=env,
            )  # fmt: skip
        client_id = env.get(CLIENT_ID_VARIABLE) or None
        bearer = ManagedIdentityBearer.from_env(
            SCORING_RESOURCE, env, client_id=client_id, ca_bundle=ca_bundle
        )
        arm = ManagedIdentityBearer.from_env(arm_url, env, client_id=client_id, ca_bundle=ca_bundle)
        return cls(
            settings, auth_mode="aad_token", scoring_auth=bearer, arm_auth=arm, arm_url=arm_url,
            scoring_uri=scoring_uri, ca_bundle=ca_bundle, env=env,
        )  # fmt: skip

    @classmethod
    def for_control_plane(
        cls,
        workspace: names.Workspace,
        credential: TokenSource,
        *,
        scoring_uri: str | None = None,
        key: str | None = None,
        arm_url: str = ARM_URL,
        ca_bundle: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> AzureMLInvoker:
        """The invoke path the control plane smoke-tests with: its own credential (an
        azure-identity one) signs ARM's GET and, unless ``key`` is given (an endpoint with
        auth mode ``key``), the scoring calls; ``scoring_uri`` when already known."""
        arm_url = arm_url.rstrip("/")
        scoring: httpx.Auth = (
            StaticHeader("Authorization", f"Bearer {key}")
            if key
            else CredentialBearer(credential, SCORING_RESOURCE + "/.default")
        )
        return cls(
            workspace, auth_mode="key" if key else "aad_token", scoring_auth=scoring,
            arm_auth=CredentialBearer(credential, arm_url + "/.default"), arm_url=arm_url,
            scoring_uri=scoring_uri, ca_bundle=ca_bundle, env=env,
        )  # fmt: skip

    def auth(self) -> httpx.Auth:
        return self.scoring_auth

    # -- names and ARM ---------------------------------------------------------------------

    def endpoint(self, name: str) -> str:
        """The online endpoint that serves deployment ``name`` (BadRequest for a name no
        endpoint can have: it goes into ARM's URL)."""
        try:
            return names.endpoint_name(name, self.workspace)
        except ConfigError as exc:
            raise BadRequest(exc.message) from None

    def _arm_request(self, endpoint: str, timeout: float) -> httpx.Request:
        w = self.workspace
        url = (
            f"{self.arm_url}/subscriptions/{w.subscription_id}/resourceGroups/"
            f"{w.resource_group}/providers/Microsoft.MachineLearningServices/workspaces/"
            f"{w.workspace}/onlineEndpoints/{endpoint}"
        )
        request = httpx.Request(
            "GET", url, params={"api-version": ARM_API_VERSION}, headers={"accept": _JSON}
        )
        return with_timeout(request, timeout, cap_s=ARM_TIMEOUT_S, connect_s=CONNECT_TIMEOUT_S)

    def _arm_answer(self, endpoint: str, sent: Sent) -> Endpoint:
        """ARM's answer about ``endpoint``, or the typed error (NotFound when there is none)."""
        what = f"ARM GET of Azure ML endpoint {endpoint!r}"
        if isinstance(sent, httpx.TransportError):
            raise NotReady(
                f"{what} failed ({type(sent).__name__})", retry_after=1.0, cloud_text=repr(sent)
            )
        status = sent.status_code
        if status == 200:
            found = _endpoint_of(endpoint, sent.content, what)
            if found.scoring_uri:
                self._scoring[endpoint] = found.scoring_uri
            return found
        said = _said(sent)
        if status == 404:
            self._scoring.pop(endpoint, None)
            raise NotFound(
                f"no Azure ML endpoint named {endpoint!r} in workspace "
                f"{self.workspace.workspace!r}",
                cloud_text=said,
            )
        if status in (401, 403):
            raise AccessDenied(
                f"{what} was refused ({status}): the identity needs {READ_ACTION} on the "
                f"endpoint (e.g. the 'Reader' role on it), or set {SCORING_URI_VARIABLE}",
                cloud_text=said,
            )
        if status == 429:
            raise Throttled(
                f"ARM throttled the {what}", retry_after=_retry_after(sent) or 1.0, cloud_text=said
            )
        if status >= 500:
            raise Unavailable(
                f"{what} failed ({status})", retry_after=_retry_after(sent) or 1.0, cloud_text=said
            )
        raise ProviderError(f"{what} answered {status}", cloud_text=said)

    def describe_sync(self, endpoint: str, timeout: float = ARM_TIMEOUT_S) -> Endpoint:
        """ARM's GET of ``endpoint`` (the sync client)."""
        if self.arm_auth is None:
            raise ConfigError("this invoke path has no ARM access (auth_mode key)")
        try:
            sent: Sent = self.clients.sync_client().send(
                self._arm_request(endpoint, timeout), auth=self.arm_auth
            )
        except httpx.TransportError as exc:
            sent = exc
        return self._arm_answer(endpoint, sent)

    async def describe(self, endpoint: str, timeout: float = ARM_TIMEOUT_S) -> Endpoint:
        """ARM's GET of ``endpoint`` (the event loop's client)."""
        if self.arm_auth is None:
            raise ConfigError("this invoke path has no ARM access (auth_mode key)")
        client = self.clients.async_client()
        try:
            sent: Sent = await client.send(self._arm_request(endpoint, timeout), auth=self.arm_auth)
        except httpx.TransportError as exc:
            sent = exc
        return self._arm_answer(endpoint, sent)

    def _known_uri(self, endpoint: str) -> str | None:
        return self.scoring_uri or self._scoring.get(endpoint)

    @staticmethod
    def _uri_of(found: Endpoint) -> str:
        if not found.scoring_uri:
            raise NotReady(
                f"Azure ML endpoint {found.name!r} has no scoring URI yet "
                f"({found.state or 'no state'})",
                retry_after=NO_TRAFFIC_RETRY_S,
            )
        return found.scoring_uri

    @staticmethod
    def _send_again(unsettled: _Unsettled, used: str, fresh: str) -> bool:
        """Whether to send again once ARM said the endpoint exists: to a scoring URI that
        moved, or (a connection not made) to the same one, retried as usual; a 404 from
        the URI ARM still gives stands (no deployment takes traffic)."""
        return fresh != used or unsettled.why == "unreachable"

    @staticmethod
    def _not_ready(unsettled: _Unsettled, unanswered: AiaasError | None = None) -> NotReady:
        """What the call found, as NotReady (with why ARM could not settle it, if it could
        not: refused, throttled, failed; the identity may lack the endpoint's read action)."""
        message = unsettled.message
        if unanswered is not None:
            message += f" (and ARM could not tell whether it still exists: {unanswered.message})"
        return NotReady(message, retry_after=unsettled.retry_after, cloud_text=unsettled.cloud_text)

    # -- calls -----------------------------------------------------------------------------

    def call(self, name: str, body: bytes, request_id: str | None) -> Call:
        """The scoring call to the URI already known (the loop's API; :meth:`invoke` and
        :meth:`invoke_sync` resolve the URI first)."""
        endpoint = self.endpoint(name)
        uri = self._known_uri(endpoint)
        if uri is None:
            raise NotReady(f"the scoring URI of Azure ML endpoint {endpoint!r} is not known yet")
        return self._call(name, endpoint, uri, body, request_id, None, settle=False)

    def _call(
        self,
        name: str,
        endpoint: str,
        uri: str,
        body: bytes,
        request_id: str | None,
        deployment: str | None,
        *,
        settle: bool,
    ) -> _Score:
        headers = {"content-type": _JSON, "accept": _JSON}
        if request_id and request_id.isprintable() and request_id.isascii():
            headers["x-request-id"] = request_id  # what the model server reads
            headers["x-ms-client-request-id"] = request_id  # what Azure's logs record
        if deployment:
            names.check_name("deployment", deployment)
            headers[PIN_HEADER] = deployment
        request = httpx.Request("POST", uri, content=body, headers=headers)
        return _Score(
            name, endpoint, request, auth_mode=self.auth_mode, pinned=deployment,
            settle=settle and self.arm_auth is not None,
        )  # fmt: skip

    def invoke_sync(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str | None = None,
        timeout: float = 60.0,
        deployment: str | None = None,
    ) -> InvokeResult:
        """:meth:`invoke` for callers without an event loop (the CLI, the smoke test)."""
        deadline = time.monotonic() + timeout
        endpoint = self.endpoint(name)
        uri = self._known_uri(endpoint) or self._uri_of(self.describe_sync(endpoint, timeout))
        client = self.clients.sync_client()
        call = self._call(name, endpoint, uri, body, request_id, deployment, settle=True)
        try:
            return run_sync(attempts(call, self.retry, _left(deadline, call)), client, self.auth())
        except _Unsettled as unsettled:
            try:
                found = self.describe_sync(endpoint, _left(deadline, call))
            except NotFound:
                raise
            except AiaasError as unanswered:  # ARM could not say: what the call found stands
                raise self._not_ready(unsettled, unanswered) from None
            fresh = self._uri_of(found)
            if not self._send_again(unsettled, uri, fresh):
                raise self._not_ready(unsettled) from None
            call = self._call(name, endpoint, fresh, body, request_id, deployment, settle=False)
            return run_sync(attempts(call, self.retry, _left(deadline, call)), client, self.auth())

    async def invoke(
        self,
        name: str,
        body: bytes,
        *,
        request_id: str | None = None,
        timeout: float = 60.0,
        deployment: str | None = None,
    ) -> InvokeResult:
        """Send ``body`` to deployment ``name``'s endpoint (``deployment``: to that Azure ML
        deployment alone, whatever its traffic share); the answer and its version."""
        deadline = time.monotonic() + timeout
        endpoint = self.endpoint(name)
        uri = self._known_uri(endpoint) or self._uri_of(await self.describe(endpoint, timeout))
        client = self.clients.async_client()
        call = self._call(name, endpoint, uri, body, request_id, deployment, settle=True)
        try:
            return await run_async(
                attempts(call, self.retry, _left(deadline, call)), client, self.auth()
            )
        except _Unsettled as unsettled:
            try:
                found = await self.describe(endpoint, _left(deadline, call))
            except NotFound:
                raise
            except AiaasError as unanswered:  # ARM could not say: what the call found stands
                raise self._not_ready(unsettled, unanswered) from None
            fresh = self._uri_of(found)
            if not self._send_again(unsettled, uri, fresh):
                raise self._not_ready(unsettled) from None
            call = self._call(name, endpoint, fresh, body, request_id, deployment, settle=False)
            return await run_async(
                attempts(call, self.retry, _left(deadline, call)), client, self.auth()
            )

    async def status(self, name: str) -> DeploymentStatus:
        """The endpoint's state from ARM (NotFound when there is none); ``UNKNOWN`` for a
        key-only invoke path, which cannot ask ARM."""
        endpoint = self.endpoint(name)
        if self.arm_auth is None:
            return DeploymentStatus.UNKNOWN
        return (await self.describe(endpoint)).status


def _left(deadline: float, call: Call) -> float:
    """The seconds left before ``deadline`` (DeadlineExceeded when none are)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"{call.what} did not answer in time")
    return left
