"""adapters/auth.py against real HTTP servers on 127.0.0.1: a static header reaches the server,
SigV4 signatures pass the SageMaker runtime emulator's independent check (botocore's signer on
the other side) and follow rotated credentials, and the managed-identity bearer fetches its
token from an identity endpoint speaking App Service's protocol (or the older MSI_ENDPOINT one):
once for concurrent callers, again before expiry and once more when a callee refuses it (401,
not when the fetch gives the refused token back), a refusing or failing endpoint is
AccessDenied or NotReady, and no error quotes a token; the azure-core credential bearer asks
again on 401 and sends again only with a new token."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from adapters.auth import (
    IDENTITY_API_VERSION,
    MSI_API_VERSION,
    CredentialBearer,
    ManagedIdentityBearer,
    SigV4,
    StaticHeader,
    expiry_seconds,
)
from adapters.sagemaker.aws import Credentials
from aiaas.errors import AccessDenied, AiaasError, ConfigError, NotReady, ProviderError
from emulators.fleet import free_port
from emulators.httpserver import HttpServer, KeepAliveHandler
from emulators.sagemaker_runtime import SageMakerRuntimeEmulator

RESOURCE = "https://ml.azure.com"
SECRET = "identity-header-secret"


@dataclass
class Seen:
    """What a test server was sent: one (method, path, headers, body) per request."""

    requests: list[tuple[str, str, Message[str, str], bytes]] = field(default_factory=list)


Answer = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, bytes]]


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], tuple[str, Seen]]]:
    """Start an HTTP/1.1 server on 127.0.0.1 answering with ``answer(handler, body)``."""
    servers: list[HttpServer] = []

    def start(answer: Answer) -> tuple[str, Seen]:
        seen = Seen()

        class Handler(KeepAliveHandler):
            def _any(self) -> None:
                body = self.body()
                seen.requests.append((self.command, self.path, self.headers, body))
                status, data = answer(self, body)
                self.send(status, {"content-type": "application/json"}, data)

            do_GET = do_POST = _any

        server = HttpServer(Handler, name="test-server")
        server.start()
        servers.append(server)
        return server.url, seen

    yield start
    for server in servers:
        server.stop()


def ok(_handler: BaseHTTPRequestHandler, _body: bytes) -> tuple[int, bytes]:
    return 200, b"{}"


def test_a_static_header_reaches_the_server_and_its_value_never_its_repr(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    url, seen = serve(ok)
    auth = StaticHeader.from_env(
        "Authorization", "ENDPOINT_KEY", {"ENDPOINT_KEY": "k-123"}, prefix="Bearer "
    )
    with httpx.Client(trust_env=False) as client:
        assert client.post(url + "/score", content=b"{}", auth=auth).status_code == 200
    assert seen.requests[0][2]["Authorization"] == "Bearer k-123"
    assert "k-123" not in repr(auth)
    with pytest.raises(ConfigError, match="ENDPOINT_KEY"):
        StaticHeader.from_env("Authorization", "ENDPOINT_KEY", {})


def test_sigv4_passes_an_independent_check_and_follows_rotated_credentials(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    url, seen = serve(ok)
    first, second = (
        Credentials("AKIDFIRST", "secret-1"),
        Credentials("AKIDSECOND", "secret-2", "tok"),
    )
    current = [first]
    auth = SigV4(lambda: current[0], region="eu-west-1", service="sagemaker")

    def check(credentials: Credentials, request: tuple[str, str, Message[str, str], bytes]) -> None:
        # The runtime emulator's verifier (botocore's SigV4 signer, written apart from ours).
        verifier = SageMakerRuntimeEmulator(
            lambda _name: None,
            account="123456789012",
            region="eu-west-1",
            access_key=credentials.access_key_id,
            secret_key=credentials.secret_access_key,
            session_token=credentials.session_token,
        )
        method, path, headers, body = request
        verifier.verify_sigv4(method, path, headers, body)

    with httpx.Client(trust_env=False) as client:
        client.post(url + "/endpoints/e/invocations", content=b'{"a": 1}', auth=auth)
        current[0] = second  # a role's credentials, refreshed
        client.post(url + "/endpoints/e/invocations", content=b'{"a": 2}', auth=auth)
    check(first, seen.requests[0])
    check(second, seen.requests[1])
    assert "AKIDSECOND/" in seen.requests[1][2]["Authorization"]
    with pytest.raises(Exception, match="signature"):  # the check can fail: wrong secret
        check(Credentials("AKIDFIRST", "not-the-secret"), seen.requests[0])


class Identity:
    """A managed-identity endpoint as App Service runs it (``X-IDENTITY-HEADER`` checked,
    ``resource`` and ``api-version`` required), answering tokens that live ``lifetime_s``."""

    def __init__(self, lifetime_s: float = 3600.0, delay_s: float = 0.0) -> None:
        self.lifetime_s, self.delay_s = lifetime_s, delay_s
        self.status = 200
        self.issued = 0

    def __call__(self, handler: BaseHTTPRequestHandler, _body: bytes) -> tuple[int, bytes]:
        query = parse_qs(urlsplit(handler.path).query)
        if handler.headers.get("X-IDENTITY-HEADER") != SECRET:
            return 401, b'{"error": "bad identity header"}'
        if query.get("api-version") != [IDENTITY_API_VERSION] or query.get("resource") != [
            RESOURCE
        ]:
            return 400, b'{"error": "bad query"}'
        if self.status != 200:
            return self.status, b'{"error": "identity not available"}'
        time.sleep(self.delay_s)
        self.issued += 1
        token = {
            "access_token": f"token-{self.issued}",
            "expires_on": str(int(time.time() + self.lifetime_s)),
            "resource": RESOURCE,
            "token_type": "Bearer",
        }
        return 200, json.dumps(token).encode()


def bearer(url: str, clock: Callable[[], float] = time.time) -> ManagedIdentityBearer:
    env = {"IDENTITY_ENDPOINT": url + "/msi/token", "IDENTITY_HEADER": SECRET}
    found = ManagedIdentityBearer.from_env(RESOURCE, env)
    return ManagedIdentityBearer(RESOURCE, endpoint=found.endpoint, secret=SECRET, clock=clock)


def test_the_bearer_token_is_sent_reused_and_fetched_again_before_it_expires(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    identity = Identity(lifetime_s=3600)
    identity_url, _ = serve(identity)
    scoring_url, scored = serve(ok)
    now = [time.time()]
    auth = bearer(identity_url, clock=lambda: now[0])

    async def score(n: int) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(n):
                await client.post(scoring_url + "/score", content=b"{}", auth=auth)

    asyncio.run(score(3))
    now[0] += 3600 - 299  # within five minutes of the expiry: fetched again first
    asyncio.run(score(1))
    with httpx.Client(trust_env=False) as client:  # the sync path shares the cached token
        client.post(scoring_url + "/score", content=b"{}", auth=auth)
    sent = [headers["Authorization"] for _, _, headers, _ in scored.requests]
    assert sent == ["Bearer token-1"] * 3 + ["Bearer token-2"] * 2
    assert identity.issued == auth.fetches == 2


def test_concurrent_callers_wait_for_one_fetch(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    identity = Identity(delay_s=0.3)
    identity_url, _ = serve(identity)
    auth = bearer(identity_url)

    async def many() -> set[str]:
        return set(await asyncio.gather(*(auth.token() for _ in range(20))))

    assert asyncio.run(many()) == {"token-1"}
    threaded = bearer(identity_url)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(threaded.token_sync())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(got) == {"token-2"} and len(got) == 8
    assert identity.issued == 2 and auth.fetches == threaded.fetches == 1


def test_a_refusing_or_failing_identity_endpoint_is_a_clear_typed_error(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    identity = Identity()
    identity_url, _ = serve(identity)
    wrong_secret = ManagedIdentityBearer(
        RESOURCE, endpoint=identity_url + "/msi/token", secret="wrong"
    )
    with pytest.raises(AccessDenied) as refused:
        wrong_secret.token_sync()
    assert "managed-identity endpoint" in refused.value.message
    assert RESOURCE in refused.value.message and "401" in refused.value.message
    identity.status = 500
    with pytest.raises(NotReady) as failed:
        asyncio.run(bearer(identity_url).token())
    assert "failed (500)" in failed.value.message and failed.value.retry_after
    port = free_port()  # nothing listens there
    with pytest.raises(NotReady, match="not reachable"):
        bearer(f"http://127.0.0.1:{port}").token_sync()
    with pytest.raises(ConfigError, match="IDENTITY_ENDPOINT"):
        ManagedIdentityBearer.from_env(RESOURCE, {"IDENTITY_HEADER": SECRET})


class OlderIdentity:
    """The 2017-09-01 managed-identity protocol (``MSI_ENDPOINT``/``MSI_SECRET``): the secret
    in a ``secret`` header, a user-assigned identity as ``clientid``, and ``expires_on`` as a
    UTC date string, in the form ``form`` (Linux hosts: 24-hour; Windows: AM/PM)."""

    def __init__(self, form: str) -> None:
        self.form = form
        self.issued = 0
        self.queries: list[dict[str, list[str]]] = []

    def __call__(self, handler: BaseHTTPRequestHandler, _body: bytes) -> tuple[int, bytes]:
        query = parse_qs(urlsplit(handler.path).query)
        self.queries.append(query)
        if handler.headers.get("secret") != SECRET or "X-IDENTITY-HEADER" in handler.headers:
            return 401, b'{"error": "bad secret"}'
        if query.get("api-version") != [MSI_API_VERSION] or query.get("resource") != [RESOURCE]:
            return 400, b'{"error": "bad query"}'
        self.issued += 1
        expires = time.gmtime(int(time.time()) + 3600)
        token = {"access_token": f"msi-{self.issued}", "resource": RESOURCE, "token_type": "Bearer",
                 "expires_on": time.strftime(self.form, expires)}  # fmt: skip
        return 200, json.dumps(token).encode()


@pytest.mark.parametrize("form", ["%m/%d/%Y %H:%M:%S +00:00", "%m/%d/%Y %I:%M:%S %p +00:00"])
def test_hosts_with_only_the_older_msi_protocol_are_served(
    serve: Callable[[Answer], tuple[str, Seen]], form: str
) -> None:
    """``MSI_ENDPOINT``/``MSI_SECRET`` when ``IDENTITY_*`` are absent: the ``secret`` header,
    api-version 2017-09-01, ``clientid``, and a date-string expiry read right (the token is
    reused until five minutes before it, then fetched again)."""
    identity = OlderIdentity(form)
    identity_url, _ = serve(identity)
    scoring_url, scored = serve(ok)
    env = {"MSI_ENDPOINT": identity_url + "/msi/token", "MSI_SECRET": SECRET}
    auth = ManagedIdentityBearer.from_env(RESOURCE, env, client_id="user-assigned-1")
    assert auth.protocol == MSI_API_VERSION
    with httpx.Client(trust_env=False) as client:
        for _ in range(2):
            client.post(scoring_url + "/score", content=b"{}", auth=auth)
    assert [h["Authorization"] for _, _, h, _ in scored.requests] == ["Bearer msi-1"] * 2
    assert identity.queries[0]["clientid"] == ["user-assigned-1"]
    now = time.time()
    assert auth._token is not None and abs(auth._token.expires_on - (now + 3600)) < 5
    both = {**env, "IDENTITY_ENDPOINT": identity_url + "/msi/token", "IDENTITY_HEADER": SECRET}
    assert ManagedIdentityBearer.from_env(RESOURCE, both).protocol == IDENTITY_API_VERSION
    with pytest.raises(ConfigError, match="MSI_ENDPOINT"):
        ManagedIdentityBearer.from_env(RESOURCE, {"MSI_ENDPOINT": identity_url})


@pytest.mark.parametrize(
    ("said", "epoch"),
    [("1700000000", 1700000000), (1700000000, 1700000000),
     ("06/20/2019 02:57:58 +00:00", 1560999478), ("1/16/2020 5:24:12 AM +00:00", 1579152252),
     ("1/16/2020 5:24:12 PM +00:00", 1579195452), ("1/16/2020 7:24:12 +02:00", 1579152252)],
)  # fmt: skip
def test_expires_on_is_read_as_epoch_seconds_or_a_date(said: object, epoch: int) -> None:
    assert expiry_seconds(said) == epoch
    with pytest.raises(ValueError):
        expiry_seconds("tomorrow")


def test_a_request_refused_with_401_is_sent_once_more_with_a_new_token(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    """A token refused before its expiry (revoked): fetched anew once, the request sent
    again; a second 401 is the answer. Sync and async alike."""
    identity = Identity()
    identity_url, _ = serve(identity)
    refusals = {"left": 1}

    def refuse_first(handler: BaseHTTPRequestHandler, _body: bytes) -> tuple[int, bytes]:
        if refusals["left"] > 0:
            refusals["left"] -= 1
            return 401, b'{"message": "token revoked"}'
        return 200, b"{}"

    scoring_url, scored = serve(refuse_first)
    auth = bearer(identity_url)
    with httpx.Client(trust_env=False) as client:
        assert client.post(scoring_url, content=b"{}", auth=auth).status_code == 200
        refusals["left"] = 2
        assert client.post(scoring_url, content=b"{}", auth=auth).status_code == 401

    async def once() -> int:
        refusals["left"] = 1
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.post(scoring_url, content=b"{}", auth=auth)).status_code

    assert asyncio.run(once()) == 200
    sent = [h["Authorization"] for _, _, h, _ in scored.requests]
    assert sent == ["Bearer token-1", "Bearer token-2", "Bearer token-2", "Bearer token-3",
                    "Bearer token-3", "Bearer token-4"]  # fmt: skip
    assert auth.refreshes == 3 and identity.issued == 4


LEAK = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-access-token-value"


def leaked(error: AiaasError) -> bool:
    """Whether ``error`` carries the secret anywhere a log or a caller could see."""
    seen = [error.message, str(error), repr(error), error.cloud_text or "", repr(error.details)]
    return any("secret-access-token" in text for text in seen)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"access_token": LEAK, "expires_on": "soon"}, "expires_on that is not epoch seconds or "
         "a date (a str of 4 characters)"),
        ({"access_token": LEAK, "expires_on": {"at": 1}}, "expires_on that is not epoch seconds "
         "or a date (a dict"),
        ({"access_token": LEAK, "expires_on": "nan"}, "expires_on that is not"),
        ({"access_token": LEAK, "expires_in": [3600]}, "expires_in that is not a number of "
         "seconds (a list"),
        ({"access_token": LEAK}, "without expires_on (or expires_in)"),
        ({"token": LEAK, "expires_on": 1}, "without an access_token string (missing)"),
        ({"access_token": [LEAK], "expires_on": 1}, "without an access_token string (a list)"),
        ([LEAK], "with a JSON list, not an object"),
        (f"<html>{LEAK}</html>", "not JSON"),
    ],
)  # fmt: skip
def test_a_malformed_200_names_what_is_wrong_and_never_quotes_the_token(
    serve: Callable[[Answer], tuple[str, Seen]], body: object, named: str
) -> None:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    identity_url, _ = serve(lambda _h, _b: (200, data))
    with pytest.raises(ProviderError) as info:
        bearer(identity_url).token_sync()
    assert named in info.value.message
    assert "answered 200" in info.value.message
    assert not leaked(info.value), info.value.message


def test_an_identity_refusal_keeps_its_words_out_of_the_message(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    """A refusal or failure body is the identity endpoint's words: they go to ``cloud_text``
    (the operator's log, redacted there), never to the caller's message."""
    said = json.dumps({"error": "denied", "echo": LEAK}).encode()
    status = [403]
    identity_url, _ = serve(lambda _h, _b: (status[0], said))
    with pytest.raises(AccessDenied) as refused:
        bearer(identity_url).token_sync()
    status[0] = 503
    with pytest.raises(NotReady) as failed:
        asyncio.run(bearer(identity_url).token())
    for error in (refused.value, failed.value):
        assert "secret-access-token" not in error.message
        assert error.cloud_text is not None and "denied" in error.cloud_text
    port = free_port()
    with pytest.raises(NotReady) as unreachable:
        bearer(f"http://127.0.0.1:{port}").token_sync()
    assert SECRET not in unreachable.value.message + (unreachable.value.cloud_text or "")


class CachingIdentity(Identity):
    """An identity endpoint that caches: it hands out the same token until told otherwise
    (App Service's endpoint answers from its cache until near the expiry)."""

    def __init__(self) -> None:
        super().__init__()
        self.cached: bytes | None = None

    def __call__(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
        if self.cached is None:
            status, self.cached = super().__call__(handler, body)
            return status, self.cached
        return 200, self.cached


def test_a_refused_token_handed_back_is_not_sent_again(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    """A 401 is sent again only with a different token: an identity endpoint that hands the
    refused token back gets one request, and the 401 stands (sync and async)."""
    identity = CachingIdentity()
    identity_url, _ = serve(identity)
    scoring_url, scored = serve(lambda _h, _b: (401, b'{"message": "token revoked"}'))
    auth = bearer(identity_url)
    with httpx.Client(trust_env=False) as client:
        assert client.post(scoring_url, content=b"{}", auth=auth).status_code == 401

    async def once() -> int:
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.post(scoring_url, content=b"{}", auth=auth)).status_code

    assert asyncio.run(once()) == 401
    assert [h["Authorization"] for _, _, h, _ in scored.requests] == ["Bearer token-1"] * 2
    assert (auth.refreshes, auth.unchanged, auth.fetches) == (0, 2, 3)  # 1 + one per 401


@dataclass
class FakeCredential:
    """azure-core's ``get_token`` shape: answers ``current`` (azure-identity's cache) and
    counts how often it was asked."""

    current: str
    asked: int = 0

    def get_token(self, *scopes: str, **_kwargs: object) -> object:
        assert scopes == ("https://ml.azure.com/.default",)
        self.asked += 1
        return type("AccessToken", (), {"token": self.current, "expires_on": 0})()


def test_the_credential_bearer_sends_again_only_with_a_new_token(
    serve: Callable[[Answer], tuple[str, Seen]],
) -> None:
    """On 401 the credential is asked again: the same (cached) token is not sent again, the
    401 stands at once; a new one is sent once. Sync and async alike."""
    refused = {"Bearer revoked"}

    def score(handler: BaseHTTPRequestHandler, _body: bytes) -> tuple[int, bytes]:
        if handler.headers.get("Authorization") in refused:
            return 401, b'{"message": "token revoked"}'
        return 200, b"{}"

    scoring_url, scored = serve(score)
    credential = FakeCredential("revoked")
    auth = CredentialBearer(credential, "https://ml.azure.com/.default")
    with httpx.Client(trust_env=False) as client:
        assert client.post(scoring_url, content=b"{}", auth=auth).status_code == 401
        assert (len(scored.requests), credential.asked, auth.unchanged) == (1, 2, 1)

        class Rotating(FakeCredential):
            def get_token(self, *scopes: str, **kwargs: object) -> object:
                answer = super().get_token(*scopes, **kwargs)
                self.current = "renewed"  # the next answer is a new token
                return answer

        rotating = Rotating("revoked")
        auth = CredentialBearer(rotating, "https://ml.azure.com/.default")
        assert client.post(scoring_url, content=b"{}", auth=auth).status_code == 200
    sent = [h["Authorization"] for _, _, h, _ in scored.requests]
    assert sent == ["Bearer revoked", "Bearer revoked", "Bearer renewed"]
    assert (auth.refreshes, auth.unchanged) == (1, 0)

    async def once(bearer: CredentialBearer) -> int:
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.post(scoring_url, content=b"{}", auth=bearer)).status_code

    stuck = CredentialBearer(FakeCredential("revoked"), "https://ml.azure.com/.default")
    assert asyncio.run(once(stuck)) == 401 and stuck.unchanged == 1
    assert len(scored.requests) == 4  # one more: not sent again
    assert "revoked" not in repr(stuck)
