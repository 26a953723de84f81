"""How an invoke path proves who it is: three ``httpx.Auth`` kinds, over httpx only.

- :class:`SigV4`: AWS Signature Version 4 (httpx-auth's ``AWS4Auth``, a pure-Python signer:
  about 10 ms to import where boto3 costs ~415 ms of cold start), re-made only when the
  credential source hands out new credentials (a role's, refreshed).
- :class:`StaticHeader`: one header with a secret from the environment: an Azure ML endpoint
  key (``Authorization: Bearer <key>``), a PAI-EAS token (``Authorization: <token>``).
- :class:`ManagedIdentityBearer`: an Entra ID token for ``resource`` from the managed-identity
  endpoint that Azure App Service and Functions give a function (``IDENTITY_ENDPOINT`` and
  ``IDENTITY_HEADER``, api-version 2019-08-01; or, on hosts that offer only the older
  protocol, ``MSI_ENDPOINT`` and ``MSI_SECRET``, api-version 2017-09-01), fetched over httpx
  (no ``azure-identity`` on a cold start), cached and fetched again before it expires;
  concurrent callers wait for one fetch. A request the callee refuses with 401 is sent once
  more with a freshly fetched token (a token revoked before its expiry), unless the fetch
  gives the refused token back (the identity endpoint caches its tokens): then the 401 stands.
- :class:`CredentialBearer`: ``Authorization: Bearer <token>`` from any object with azure-core's
  ``get_token(scope)`` (the control plane's azure-identity credential), without importing it.
  On 401 the token is asked for once more; azure-identity's credentials cache their tokens
  and azure-core's ``get_token`` has no force-refresh flag, so when the answer is the
  refused token the request is not sent again (the 401 stands, for the caller to map).
- :class:`Acs3Signer`: Alibaba Cloud's ACS3-HMAC-SHA256 signature of an OpenAPI call (a
  PAI-EAS DescribeService) with an AccessKey or STS credentials, over httpx (no tea-openapi:
  0.3-0.9 s of import), as ``alibabacloud_tea_openapi/utils.py:get_authorization`` signs.

A refused or failed token fetch raises the typed error (:class:`~aiaas.errors.AccessDenied`,
:class:`~aiaas.errors.NotReady`) out of the call, so the invoke loop does not retry it. No
error carries a token, a key or the identity secret: a 200 answer from the identity endpoint
is never quoted (only what is missing or malformed in it, by name and type), and its error
answers go to the error's ``cloud_text`` (the operator's log), not its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import re
import ssl
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

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


# App Service / Functions managed identity (learn.microsoft.com: "How to use managed
# identities for App Service and Azure Functions", REST endpoint reference): the current
# protocol, and the older one Linux Consumption hosts offered (a ``secret`` header, an
# ``expires_on`` that may be a date string such as "06/20/2019 02:57:58 +00:00" or, from
# Windows hosts, "1/16/2020 5:24:12 AM +00:00").
IdentityProtocol = Literal["2019-08-01", "2017-09-01"]
IDENTITY_API_VERSION: IdentityProtocol = "2019-08-01"
MSI_API_VERSION: IdentityProtocol = "2017-09-01"
_PROTOCOL_HEADER: dict[str, str] = {
    IDENTITY_API_VERSION: "X-IDENTITY-HEADER",
    MSI_API_VERSION: "secret",
}
_PROTOCOL_CLIENT_ID: dict[str, str] = {
    IDENTITY_API_VERSION: "client_id",
    MSI_API_VERSION: "clientid",
}
REFRESH_MARGIN_S = 300.0  # fetch again this long before expiry (less for short-lived tokens)
_DATE = re.compile(
    r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})(?:\s*([AaPp][Mm]))?"
    r"\s*(?:([+-])(\d{2}):?(\d{2}))?\s*$"
)


def expiry_seconds(value: object) -> float:
    """A managed-identity answer's ``expires_on`` as epoch seconds: epoch seconds (a number
    or its string: the 2019-08-01 protocol), or the 2017-09-01 protocol's date string,
    ``M/D/YYYY H:MM:SS [AM|PM] +HH:MM`` (UTC offset; 12-hour clock when AM/PM is given).
    ValueError when it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    found = _DATE.match(text)
    if found is None:
        raise ValueError(f"expires_on {text!r} is neither epoch seconds nor a date")
    month, day, year, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    half, sign, off_h, off_m = found.group(7), found.group(8), found.group(9), found.group(10)
    if half is not None:
        hour = hour % 12 + (12 if half.lower() == "pm" else 0)
    import calendar  # only for this rare form: not on every cold start

    moment = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if sign is not None:
        offset = (int(off_h) * 60 + int(off_m)) * 60
        moment -= offset if sign == "+" else -offset
    return float(moment)


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


def token_of(body: bytes, now: float, where: str) -> Token:
    """The token in a managed-identity 200 answer (``access_token`` and ``expires_on``, or
    ``expires_in``), fetched at ``now``. ProviderError naming the missing or unparsable key
    and its JSON type, never a value: the body holds the access token."""

    def malformed(what: str) -> ProviderError:
        return ProviderError(f"{where} answered 200 {what}")

    try:
        answer = json.loads(body)
    except ValueError:
        raise malformed(f"with a body that is not JSON ({len(body)} bytes)") from None
    if not isinstance(answer, dict):
        raise malformed(f"with a JSON {type(answer).__name__}, not an object")
    value = answer.get("access_token")
    if not isinstance(value, str) or not value:
        kind = "missing" if value is None else f"a {type(value).__name__}"
        raise malformed(f"without an access_token string ({kind})")
    key = "expires_on" if answer.get("expires_on") is not None else "expires_in"
    given = answer.get(key)
    if given is None:
        raise malformed("without expires_on (or expires_in)")
    expires = math.nan
    if isinstance(given, str | int | float) and not isinstance(given, bool):
        with contextlib.suppress(ValueError):
            expires = expiry_seconds(given) if key == "expires_on" else now + float(given)
    if not math.isfinite(expires):
        form = "epoch seconds or a date" if key == "expires_on" else "a number of seconds"
        raise malformed(
            f"with an {key} that is not {form} (a {type(given).__name__} of "
            f"{len(str(given))} characters)"
        )
    return Token(value, now, expires)


class ManagedIdentityBearer(httpx.Auth):
    """``Authorization: Bearer <token>`` with an Entra ID token for ``resource`` from the
    managed-identity endpoint: ``GET <endpoint>?resource=<r>&api-version=2019-08-01`` with
    ``X-IDENTITY-HEADER: <secret>`` (or, with ``protocol="2017-09-01"``, the older form with
    a ``secret`` header), answered with ``access_token`` and ``expires_on``. The token is
    reused until near its expiry; one fetch serves every caller waiting for it (per event
    loop for async callers, per process for sync ones). A request answered 401 is sent once
    more with a token fetched anew (:attr:`refreshes` counts them): the callee may refuse a
    token before its expiry (revoked, or the identity's roles changed); a second 401 is the
    callee's answer. When the fetch gives the refused token back (App Service's endpoint
    caches tokens) the request is not sent again: the 401 stands (:attr:`unchanged`).

    The token request goes to ``endpoint`` alone: plain HTTP on the host's loopback in Azure
    (no CA bundle is loaded for it); an ``https`` endpoint is verified with ``ca_bundle``,
    else the system's trust store."""

    def __init__(
        self,
        resource: str,
        *,
        endpoint: str,
        secret: str,
        client_id: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        protocol: IdentityProtocol = IDENTITY_API_VERSION,
        ca_bundle: str | None = None,
    ) -> None:
        if protocol not in _PROTOCOL_HEADER:
            raise ConfigError(
                f"managed-identity protocol {protocol!r}: use {IDENTITY_API_VERSION} or "
                f"{MSI_API_VERSION}"
            )
        self.resource = resource
        self.endpoint = endpoint
        self.client_id = client_id
        self.timeout = timeout
        self.protocol: IdentityProtocol = protocol
        self.fetches = 0
        self.refreshes = 0  # 401s sent again with a new token
        self.unchanged = 0  # 401s that stood: the endpoint gave the refused token back
        self._secret = secret
        self._clock = clock
        self._ca_bundle = ca_bundle
        self._ssl: ssl.SSLContext | None = None
        self._token: Token | None = None
        self._sync_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_env(
        cls,
        resource: str,
        env: Mapping[str, str],
        *,
        client_id: str | None = None,
        ca_bundle: str | None = None,
    ) -> ManagedIdentityBearer:
        """From ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` (api-version 2019-08-01), else
        ``MSI_ENDPOINT`` and ``MSI_SECRET`` (2017-09-01: hosts that offer only the older
        protocol); ConfigError when neither pair is set (the function app has no managed
        identity switched on)."""
        endpoint, secret = env.get("IDENTITY_ENDPOINT", ""), env.get("IDENTITY_HEADER", "")
        if endpoint and secret:
            return cls(
                resource, endpoint=endpoint, secret=secret, client_id=client_id,
                ca_bundle=ca_bundle,
            )  # fmt: skip
        endpoint, secret = env.get("MSI_ENDPOINT", ""), env.get("MSI_SECRET", "")
        if endpoint and secret:
            return cls(
                resource, endpoint=endpoint, secret=secret, client_id=client_id,
                protocol=MSI_API_VERSION, ca_bundle=ca_bundle,
            )  # fmt: skip
        raise ConfigError(
            "IDENTITY_ENDPOINT and IDENTITY_HEADER are not set (nor MSI_ENDPOINT and "
            "MSI_SECRET): switch on the function app's managed identity (or use an endpoint key)"
        )

    def __repr__(self) -> str:
        return f"ManagedIdentityBearer({self.resource!r}, endpoint={self.endpoint!r})"

    def _verify(self) -> ssl.SSLContext | bool:
        """TLS for the token request: none over plain HTTP (nothing loaded), else verified."""
        if not self.endpoint.lower().startswith("https:"):
            return False
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self._ca_bundle)
        return self._ssl

    def _token_request(self) -> httpx.Request:
        params = {"resource": self.resource, "api-version": self.protocol}
        if self.client_id:
            params[_PROTOCOL_CLIENT_ID[self.protocol]] = self.client_id
        headers = {_PROTOCOL_HEADER[self.protocol]: self._secret}
        request = httpx.Request("GET", self.endpoint, params=params, headers=headers)
        request.extensions["timeout"] = httpx.Timeout(self.timeout).as_dict()
        return request

    def _token_from(self, sent: httpx.Response | httpx.TransportError, now: float) -> Token:
        """The token in the identity endpoint's answer, or the typed error. A 200 answer holds
        the token: it is never quoted in an error, which names only what is wrong with it."""
        where = f"the managed-identity endpoint {self.endpoint} (resource {self.resource})"
        if isinstance(sent, httpx.TransportError):
            raise NotReady(
                f"{where} is not reachable ({type(sent).__name__})",
                retry_after=1.0,
                cloud_text=repr(sent),
            )
        status = sent.status_code
        if status != 200:
            said = sent.text[:200].strip() or None  # an error answer: the operator's log only
            if status in (400, 401, 403, 404):
                raise AccessDenied(
                    f"{where} refused a token ({status}): is the identity switched on, and "
                    "allowed this resource?",
                    cloud_text=said,
                )
            raise NotReady(f"{where} failed ({status})", retry_after=1.0, cloud_text=said)
        return token_of(sent.content, now, where)

    def _usable(self) -> Token | None:
        token = self._token
        return token if token is not None and token.fresh(self._clock()) else None

    def _forget(self, value: str) -> None:
        """Drop the cached token if it is still ``value`` (the one a callee refused): a
        caller that already fetched a newer one keeps it."""
        if self._token is not None and self._token.value == value:
            self._token = None

    def token_sync(self) -> str:
        """The current token, fetched (once, whoever else waits) when missing or expiring."""
        with self._sync_lock:
            token = self._usable()
            if token is None:
                self.fetches += 1
                asked = self._clock()
                try:
                    with httpx.Client(trust_env=False, verify=self._verify()) as client:
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
                    async with httpx.AsyncClient(trust_env=False, verify=self._verify()) as client:
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
        used = self.token_sync()
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code == 401:
            with self._sync_lock:
                self._forget(used)
            fresh = self.token_sync()
            if fresh == used:  # the endpoint gave the refused token back: the 401 stands
                self.unchanged += 1
                return
            self.refreshes += 1
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        used = await self.token()
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code == 401:
            self._forget(used)  # no await between: no other task runs meanwhile
            fresh = await self.token()
            if fresh == used:
                self.unchanged += 1
                return
            self.refreshes += 1
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request


class TokenSource(Protocol):
    """What :class:`CredentialBearer` asks for a token: azure-core's ``TokenCredential``
    (azure-identity's credentials), whose ``get_token`` answers an object with ``token``
    and ``expires_on``."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


class CredentialBearer(httpx.Auth):
    """``Authorization: Bearer <token>`` for ``scope`` from ``credential.get_token`` (the
    control plane's azure-identity credential, which caches its tokens; nothing of azure
    is imported here). On 401 the token is asked for once more and the request sent again
    with it (:attr:`refreshes`), unless the credential gives the refused token back
    (:attr:`unchanged`): azure-core's ``get_token`` takes no force-refresh flag and
    azure-identity answers from its cache until near the expiry, so sending it again would
    only be refused again; the 401 then stands at once, for the caller to map
    (``AccessDenied``). The async flow asks in a worker thread: a credential's
    ``get_token`` may block."""

    def __init__(self, credential: TokenSource, scope: str) -> None:
        self.credential = credential
        self.scope = scope
        self.refreshes = 0  # 401s sent again with a new token
        self.unchanged = 0  # 401s that stood: the credential had no newer token

    def __repr__(self) -> str:
        return f"CredentialBearer({self.scope!r})"

    def _token(self) -> str:
        return str(self.credential.get_token(self.scope).token)

    def _again(self, used: str, fresh: str) -> bool:
        """Whether to send a refused request again with ``fresh`` (counted either way)."""
        if fresh == used:
            self.unchanged += 1
            return False
        self.refreshes += 1
        return True

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        used = self._token()
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code == 401:
            fresh = self._token()
            if self._again(used, fresh):
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        used = await asyncio.to_thread(self._token)
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code == 401:
            fresh = await asyncio.to_thread(self._token)
            if self._again(used, fresh):
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request


ACS3_ALGORITHM = "ACS3-HMAC-SHA256"


@dataclass(frozen=True)
class AlibabaCredentials:
    """An Alibaba Cloud AccessKey pair, with the STS token of a role's credentials."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    def __repr__(self) -> str:
        return f"AlibabaCredentials({self.access_key_id!r}, ***)"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AlibabaCredentials | None:
        """From ``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` /
        ``ALIBABA_CLOUD_SECURITY_TOKEN`` (what Function Compute gives a function's role);
        None when the pair is not set."""
        key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "").strip()
        secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "").strip()
        if not key_id or not secret:
            return None
        return cls(key_id, secret, env.get("ALIBABA_CLOUD_SECURITY_TOKEN", "").strip() or None)


def _acs3_quote(value: str) -> str:
    return quote(value, safe="~")


class Acs3Signer(httpx.Auth):
    """Signs each request with ACS3-HMAC-SHA256 for Alibaba Cloud OpenAPI ``version`` (the
    action in the request's own ``x-acs-action`` header, else ``action``).

    It sets ``host``, ``x-acs-action``, ``x-acs-version``, ``x-acs-date``,
    ``x-acs-signature-nonce``, ``x-acs-content-sha256``, ``accept`` and, with STS credentials,
    ``x-acs-security-token``, then signs every ``x-acs-*`` header, ``host``, ``accept`` and
    ``content-type`` (lower-cased, sorted): the canonical request is the method, the raw path,
    the sorted query with keys and values encoded (``quote(v, safe="~")``), the signed headers
    (``name:value`` lines, values stripped), their list and the body's SHA-256 (hex); the
    signature is the HMAC-SHA256 (hex) of ``ACS3-HMAC-SHA256\n<sha256(canonical request)>``
    keyed with the secret. ``credentials()`` is asked on each request (a role's rotate)."""

    requires_request_body = True  # the signature covers the body's hash

    def __init__(
        self,
        credentials: Callable[[], AlibabaCredentials],
        *,
        version: str,
        action: str | None = None,
    ) -> None:
        self.credentials = credentials
        self.version = version
        self.action = action

    def __repr__(self) -> str:
        return f"Acs3Signer(version={self.version!r})"

    def sign(self, request: httpx.Request) -> None:
        """Set the ACS3 headers and ``Authorization`` on ``request``."""
        creds = self.credentials()
        body = request.content
        headers = request.headers
        action = headers.get("x-acs-action") or self.action
        if not action:
            raise ConfigError("an ACS3-signed request needs its action (x-acs-action)")
        headers["x-acs-action"] = action
        headers["x-acs-version"] = headers.get("x-acs-version") or self.version
        headers["x-acs-date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        headers["x-acs-signature-nonce"] = uuid.uuid4().hex
        body_hash = hashlib.sha256(body).hexdigest()
        headers["x-acs-content-sha256"] = body_hash
        headers.setdefault("accept", "application/json")
        if "host" not in headers:
            headers["host"] = request.url.netloc.decode("ascii")
        if creds.security_token:
            headers["x-acs-security-token"] = creds.security_token
        signed = sorted(
            {
                name.lower()
                for name in headers
                if name.lower().startswith("x-acs-")
                or name.lower() in ("host", "accept", "content-type")
            }
        )
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii") or "/"
        query = "&".join(
            f"{_acs3_quote(k)}={_acs3_quote(v)}"
            for k, v in sorted(request.url.params.multi_items())
        )
        canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
        canonical = "\n".join(
            [request.method, path, query, canonical_headers, ";".join(signed), body_hash]
        )
        to_sign = f"{ACS3_ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(
            creds.access_key_secret.encode(), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers["Authorization"] = (
            f"{ACS3_ALGORITHM} Credential={creds.access_key_id},"
            f"SignedHeaders={';'.join(signed)},Signature={signature}"
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request
