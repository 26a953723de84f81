"""How an invoke path proves who it is: three ``httpx.Auth`` kinds, over httpx only.

- :class:`SigV4`: AWS Signature Version 4 (httpx-auth's ``AWS4Auth``, a pure-Python signer:
  about 10 ms to import where boto3 costs ~415 ms of cold start), re-made only when the
  credential source hands out new credentials (a role's, refreshed).
- :class:`StaticHeader`: one header with a secret from the environment: an Azure ML endpoint
  key (``Authorization: Bearer <key>``), a PAI-EAS token (``Authorization: <token>``).
- :class:`ManagedIdentityBearer`: an Entra ID token for ``resource`` from the managed-identity
  endpoint that Azure App Service and Functions give a function (``IDENTITY_ENDPOINT`` and
  ``IDENTITY_HEADER``), fetched over httpx (no ``azure-identity`` on a cold start), cached and
  fetched again before it expires; concurrent callers wait for one fetch.

A refused or failed token fetch raises the typed error (:class:`~aiaas.errors.AccessDenied`,
:class:`~aiaas.errors.NotReady`) out of the call, so the invoke loop does not retry it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import httpx

from aiaas.errors import AccessDenied, ConfigError, NotReady, ProviderError

if TYPE_CHECKING:
    from httpx_auth import AWS4Auth


class AwsCredentials(Protocol):
    """What SigV4 signs with (``adapters.sagemaker.aws.Credentials`` is one)."""

    @property
    def access_key_id(self) -> str: ...
    @property
    def secret_access_key(self) -> str: ...
    @property
    def session_token(self) -> str | None: ...


class SigV4(httpx.Auth):
    """Signs each request for AWS ``service`` in ``region`` with the credentials that
    ``credentials()`` gives now (httpx-auth is imported on the first request only)."""

    requires_request_body = True  # the signature covers the body's hash

    def __init__(
        self, credentials: Callable[[], AwsCredentials], *, region: str, service: str
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._signer: AWS4Auth | None = None
        self._signed_with: AwsCredentials | None = None

    def signer(self) -> AWS4Auth:
        """httpx-auth's signer for the current credentials (re-made only when they change)."""
        current = self.credentials()
        if self._signer is None or current is not self._signed_with:
            from httpx_auth import AWS4Auth

            self._signer = AWS4Auth(
                access_id=current.access_key_id,
                secret_key=current.secret_access_key,
                region=self.region,
                service=self.service,
                security_token=current.session_token,
            )
            self._signed_with = current
        return self._signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield from self.signer().auth_flow(request)


class StaticHeader(httpx.Auth):
    """One header with a fixed secret value, e.g. ``Authorization: Bearer <endpoint key>``."""

    def __init__(self, header: str, value: str) -> None:
        self.header = header
        self._value = value

    @classmethod
    def from_env(
        cls, header: str, variable: str, env: Mapping[str, str], *, prefix: str = ""
    ) -> StaticHeader:
        """The header with ``prefix`` + the value of ``variable`` (ConfigError when unset)."""
        value = env.get(variable, "").strip()
        if not value:
            raise ConfigError(f"{variable} is not set: the invoke path needs it for {header}")
        return cls(header, prefix + value)

    def __repr__(self) -> str:
        return f"StaticHeader({self.header!r}, ***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self._value
        yield request


IDENTITY_API_VERSION = (
    "2019-08-01"  # App Service / Functions managed identity (learn.microsoft.com:
)
# "How to use managed identities for App Service and Azure Functions", REST protocol)
REFRESH_MARGIN_S = 300.0  # fetch again this long before expiry (less for short-lived tokens)


@dataclass(frozen=True)
class Token:
    """A bearer token, when it was fetched and when it expires (epoch seconds)."""

    value: str
    fetched_at: float
    expires_on: float

    def fresh(self, now: float) -> bool:
        """True until ``REFRESH_MARGIN_S`` before its expiry (half its life, if shorter)."""
        margin = min(REFRESH_MARGIN_S, (self.expires_on - self.fetched_at) / 2)
        return now < self.expires_on - margin


class ManagedIdentityBearer(httpx.Auth):
    """``Authorization: Bearer <token>`` with an Entra ID token for ``resource`` from the
    managed-identity endpoint: ``GET $IDENTITY_ENDPOINT?resource=<r>&api-version=2019-08-01``
    with ``X-IDENTITY-HEADER: $IDENTITY_HEADER``, answered with ``access_token`` and
    ``expires_on``. The token is reused until near its expiry; one fetch serves every caller
    waiting for it (per event loop for async callers, per process for sync ones)."""

    def __init__(
        self,
        resource: str,
        *,
        endpoint: str,
        secret: str,
        client_id: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resource = resource
        self.endpoint = endpoint
        self.client_id = client_id
        self.timeout = timeout
        self.fetches = 0
        self._secret = secret
        self._clock = clock
        self._token: Token | None = None
        self._sync_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_env(
        cls, resource: str, env: Mapping[str, str], *, client_id: str | None = None
    ) -> ManagedIdentityBearer:
        """From ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` (ConfigError when absent: the
        function app has no managed identity switched on)."""
        endpoint, secret = env.get("IDENTITY_ENDPOINT", ""), env.get("IDENTITY_HEADER", "")
        if not endpoint or not secret:
            raise ConfigError(
                "IDENTITY_ENDPOINT and IDENTITY_HEADER are not set: switch on the function "
                "app's managed identity (or use an endpoint key)"
            )
        return cls(resource, endpoint=endpoint, secret=secret, client_id=client_id)

    def __repr__(self) -> str:
        return f"ManagedIdentityBearer({self.resource!r}, endpoint={self.endpoint!r})"

    def _token_request(self) -> httpx.Request:
        params = {"resource": self.resource, "api-version": IDENTITY_API_VERSION}
        if self.client_id:
            params["client_id"] = self.client_id
        request = httpx.Request(
            "GET", self.endpoint, params=params, headers={"X-IDENTITY-HEADER": self._secret}
        )
        request.extensions["timeout"] = httpx.Timeout(self.timeout).as_dict()
        return request

    def _token_from(self, sent: httpx.Response | httpx.TransportError, now: float) -> Token:
        """The token in the identity endpoint's answer, or the typed error."""
        where = f"the managed-identity endpoint {self.endpoint} (resource {self.resource})"
        if isinstance(sent, httpx.TransportError):
            raise NotReady(f"{where} is not reachable: {sent!r}", retry_after=1.0)
        status = sent.status_code
        said = sent.text[:200]
        if status in (400, 401, 403, 404):
            raise AccessDenied(
                f"{where} refused a token ({status}): {said} (is the identity switched on, "
                "and allowed this resource?)"
            )
        if status != 200:
            raise NotReady(f"{where} failed ({status}): {said}", retry_after=1.0)
        try:
            answer = json.loads(sent.content)
            return Token(str(answer["access_token"]), now, float(answer["expires_on"]))
        except (ValueError, KeyError, TypeError):
            raise ProviderError(
                f"{where} answered 200 without access_token and expires_on: {said!r}"
            ) from None

    def _usable(self) -> Token | None:
        token = self._token
        return token if token is not None and token.fresh(self._clock()) else None

    def token_sync(self) -> str:
        """The current token, fetched (once, whoever else waits) when missing or expiring."""
        with self._sync_lock:
            token = self._usable()
            if token is None:
                self.fetches += 1
                asked = self._clock()
                try:
                    with httpx.Client(trust_env=False) as client:
                        sent: httpx.Response | httpx.TransportError = client.send(
                            self._token_request()
                        )
                except httpx.TransportError as exc:
                    sent = exc
                token = self._token = self._token_from(sent, asked)
            return token.value

    async def token(self) -> str:
        """:meth:`token_sync` for the event loop: callers on one loop share one fetch."""
        loop = asyncio.get_running_loop()
        if self._async_lock is None or self._lock_loop is not loop:
            self._async_lock, self._lock_loop = asyncio.Lock(), loop
        async with self._async_lock:
            token = self._usable()
            if token is None:
                self.fetches += 1
                asked = self._clock()
                try:
                    async with httpx.AsyncClient(trust_env=False) as client:
                        sent: httpx.Response | httpx.TransportError = await client.send(
                            self._token_request()
                        )
                except httpx.TransportError as exc:
                    sent = exc
                token = self._token = self._token_from(sent, asked)
            return token.value

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token_sync()}"
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self.token()}"
        yield request
