"""A managed-identity endpoint, as App Service and Azure Functions give a function, on 127.0.0.1.

Two protocols on one plain-HTTP route (``GET /msi/token``), as the platform offers them:

- api-version ``2019-08-01``: ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``, the secret in the
  ``X-IDENTITY-HEADER`` request header; ``expires_on`` answered in epoch seconds (a string);
- api-version ``2017-09-01``: ``MSI_ENDPOINT`` + ``MSI_SECRET``, the secret in the ``secret``
  header; ``expires_on`` answered as a UTC date, as Linux hosts write it
  (``06/20/2019 02:57:58 +00:00``). azure-identity 1.27 takes these two variables for Azure ML
  compute's endpoint, which speaks the same protocol but answers epoch seconds (its MSAL
  client cannot read the date): :attr:`IdentityEmulator.msi_epoch` = True answers that way.

Each answer carries a token shaped like Entra's: an unsigned JWT whose ``aud`` is the resource
asked for, ``iss`` ``https://sts.windows.net/<tenant>/``, ``tid``, ``oid``, ``iat``/``nbf``/``exp``
(Azurite's ``--oauth basic`` accepts it; the emulated ARM and scoring front ends check it with
:meth:`IdentityEmulator.verify`). :meth:`IdentityEmulator.revoke_tokens` makes every token issued
so far unusable (a refresh test).

Gaps from Azure: one identity (system-assigned); ``client_id``/``principal_id``/``mi_res_id``
(user-assigned identities) are accepted and ignored; tokens are not signed (whoever checks
them asks this emulator); no throttling, no token caching by the platform; the error bodies
are assumed (the platform's texts are not documented).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulators.faults import CallLog
from emulators.httpserver import HttpServer, KeepAliveHandler

TOKEN_PATH = "/msi/token"
API_2019 = "2019-08-01"
API_2017 = "2017-09-01"
DEFAULT_TENANT = "72f988bf-0000-4000-8000-000000000001"
TOKEN_LIFETIME_S = 3600  # Entra's managed-identity tokens last about a day; 1 h is enough


@dataclass(frozen=True)
class TokenRequest:
    """One token request as the emulator answered it."""

    api_version: str | None
    resource: str | None
    status: int


@dataclass(frozen=True)
class Claims:
    """What a token issued here says (the JWT's claims that matter)."""

    aud: str
    iss: str
    tid: str
    oid: str
    exp: int
    jti: str


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def claims_of(token: str) -> dict[str, Any] | None:
    """The payload of a JWT-shaped token (None when it is not one). Not verified."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


class IdentityEmulator:
    """The managed-identity endpoint: issues and verifies tokens (see the module's text)."""

    def __init__(
        self,
        *,
        tenant_id: str = DEFAULT_TENANT,
        header_secret: str | None = None,
        msi_secret: str | None = None,
        token_lifetime_s: int = TOKEN_LIFETIME_S,
    ) -> None:
        self.tenant_id = tenant_id
        self.header_secret = header_secret or uuid.uuid4().hex
        self.msi_secret = msi_secret or uuid.uuid4().hex
        self.token_lifetime_s = token_lifetime_s  # a test may shorten it
        # 2017-09-01's expires_on: False, a date as App Service writes it; True, epoch seconds
        # as Azure ML compute's endpoint answers (what azure-identity can read).
        self.msi_epoch = False
        self.principal_id = str(uuid.uuid4())  # the identity's object id (oid)
        self.client_id = str(uuid.uuid4())
        self._lock = threading.Lock()
        self._issued: dict[str, Claims] = {}  # token: its claims
        self._revoked_before = 0.0  # tokens issued before this (monotonic) are refused
        self._issued_at: dict[str, float] = {}
        self._requests: CallLog[TokenRequest] = CallLog()
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._http = HttpServer(Handler, name="managed-identity")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Serve on a free port of 127.0.0.1 (plain HTTP, as the platform's local endpoint)."""
        self._http.start()

    def stop(self) -> None:
        """Stop serving."""
        self._http.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>/msi/token``: ``IDENTITY_ENDPOINT`` and ``MSI_ENDPOINT``."""
        return self._http.url + TOKEN_PATH

    def env(self) -> dict[str, str]:
        """The 2019-08-01 protocol's variables (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``)."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.header_secret}

    def msi_env(self) -> dict[str, str]:
        """The 2017-09-01 protocol's variables (``MSI_ENDPOINT``, ``MSI_SECRET``)."""
        return {"MSI_ENDPOINT": self.endpoint, "MSI_SECRET": self.msi_secret}

    # -- tokens --------------------------------------------------------------------------------
    def issue(self, resource: str) -> tuple[str, int]:
        """A new token for ``resource`` (its ``aud``) and its expiry (epoch seconds)."""
        now = int(time.time())
        claims = Claims(
            aud=resource,
            iss=f"https://sts.windows.net/{self.tenant_id}/",
            tid=self.tenant_id,
            oid=self.principal_id,
            exp=now + self.token_lifetime_s,
            jti=uuid.uuid4().hex,
        )
        header = {"alg": "RS256", "typ": "JWT", "kid": "aiaas-emulator"}
        payload = {
            "aud": claims.aud, "iss": claims.iss, "iat": now, "nbf": now, "exp": claims.exp,
            "tid": claims.tid, "oid": claims.oid, "sub": claims.oid, "appid": self.client_id,
            "idtyp": "app", "uti": claims.jti, "ver": "1.0",
        }  # fmt: skip
        token = ".".join([_b64(header), _b64(payload), _b64(uuid.uuid4().bytes)])
        with self._lock:
            self._issued[token] = claims
            self._issued_at[token] = time.monotonic()
        return token, claims.exp

    def verify(self, token: str, audiences: tuple[str, ...] | frozenset[str]) -> str | None:
        """None when ``token`` was issued here, is not revoked nor expired and its ``aud`` is
        one of ``audiences``; else why not: ``"invalid"``, ``"expired"`` or ``"audience"``."""
        with self._lock:
            claims = self._issued.get(token)
            issued_at = self._issued_at.get(token, 0.0)
            revoked = issued_at < self._revoked_before
        if claims is None or revoked:
            return "invalid"
        if claims.exp <= time.time():
            return "expired"
        if claims.aud not in audiences:
            return "audience"
        return None

    def claims(self, token: str) -> Claims | None:
        """The claims of a token issued here (None: not one of ours)."""
        with self._lock:
            return self._issued.get(token)

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (new ones are fine)."""
        with self._lock:
            self._revoked_before = time.monotonic()

    def requests(self) -> list[TokenRequest]:
        """Every token request, in order."""
        return self._requests.all()

    # -- one request ---------------------------------------------------------------------------
    def answer(
        self, path: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:  # headers: lower-cased names
        """(status, JSON body) for ``GET path``."""
        split = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        version, resource = query.get("api-version"), query.get("resource")
        status, body = self._answer(split.path, version, resource, headers)
        self._requests.add(TokenRequest(version, resource, status))
        return status, body

    def _answer(
        self, path: str, version: str | None, resource: str | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if path.rstrip("/") != TOKEN_PATH:
            return 404, {"error": "not_found", "error_description": f"no route {path}"}
        if version == API_2019:
            secret, expected = headers.get("x-identity-header"), self.header_secret
        elif version == API_2017:
            secret, expected = headers.get("secret"), self.msi_secret
        else:
            return 400, {
                "error": "invalid_request",
                "error_description": f"api-version {version!r} is not supported: "
                f"use {API_2019} (X-IDENTITY-HEADER) or {API_2017} (secret)",
            }
        if secret != expected:
            return 401, {
                "error": "unauthorized_client",
                "error_description": "the identity header is missing or wrong",
            }
        if not resource:
            return 400, {"error": "invalid_request", "error_description": "resource is required"}
        token, expires = self.issue(resource.removesuffix("/.default"))
        if version == API_2019 or self.msi_epoch:
            expires_on = str(expires)
        else:  # 2017-09-01 on Linux: a UTC date without AM/PM
            expires_on = dt.datetime.fromtimestamp(expires, dt.UTC).strftime(
                "%m/%d/%Y %H:%M:%S +00:00"
            )
        return 200, {
            "access_token": token,
            "expires_on": expires_on,
            "resource": resource,
            "token_type": "Bearer",
            "client_id": self.client_id,
        }


class _Handler(KeepAliveHandler):
    owner: IdentityEmulator

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body = self.owner.answer(self.path, headers)
        self.send(status, {"Content-Type": "application/json"}, json.dumps(body).encode())
