"""The PAI-EAS invoke path (adapters/pai/invoke.py) and the ACS3 signer (adapters/auth.py)
against a stand-in HTTP server on 127.0.0.1, and the endpoint and token lookup against the
EAS emulator.

The stand-in answers exactly what each case needs (a 450, a 408, a 400 with or without our
JSON body, a ``Retry-After``, a token that changed) from a script, checks the service token
on ``/api/predict/<service>`` and the ACS3 signature of DescribeService with the EAS
emulator's own verifier (``emulators.acs3.verify_acs3``, which checks what the real SDK
signs). No deploy: the whole map runs in well under a second. One test runs the invoke path
in a fresh interpreter and checks it loads no Alibaba Cloud SDK, pydantic nor torch; the
last one looks a service up on the emulated EAS (emulators/alibaba.py: one service created
with the real SDK, then created again with a new token) from the variables alone, as
``aiaas invoke`` from a shell does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from alibaba_emulated import alibaba, create_service, eas_client, service_config, upload

from adapters.auth import Acs3Signer, AlibabaCredentials
from adapters.base import DeploymentStatus
from adapters.pai import PaiSettings, names
from adapters.pai.invoke import PaiInvoker
from aiaas.bundle import BuiltBundle
from aiaas.errors import (
    AccessDenied,
    AiaasError,
    BadRequest,
    ConfigError,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    Throttled,
    Unavailable,
)
from aiaas.packaged import FunctionConfig
from aiaas.retry import TIMEOUT_HEADER, RetryBudget
from emulators.acs3 import verify_acs3
from emulators.alibaba import AlibabaEmulator
from emulators.httpserver import HttpServer, KeepAliveHandler

__all__ = ["alibaba"]  # the emulator's fixture, imported for pytest

REGION = "cn-hangzhou"
SETTINGS = PaiSettings(region=REGION, workspace_id="123456")
SERVICE = names.service_name("probe", SETTINGS)
TOKEN = "service-token-1"
SECRETS = {"AK": "SK", "STS.AK": "STS.SK"}
EXAMPLE = b'{"inputs": [{"value": 3}]}'
ANSWER = b'{"outputs":[{"value":6.0}],"model":"probe","version":"v1digest"}'


def verified(method: str, raw_path: str, raw_query: str, headers: Any, body: bytes) -> str | None:
    """The EAS emulator's verdict on a request's ACS3 signature (None: valid)."""
    plain = {k: v for k, v in headers.items()}
    return verify_acs3(method, raw_path, raw_query, plain, body, SECRETS)


@dataclass
class Eas:
    """The stand-in: the data plane (token checked, scripted replies) and DescribeService."""

    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    calls: list[dict[str, str]] = field(default_factory=list)
    describes: list[dict[str, str]] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=lambda: {SERVICE: "Running"})
    token: str = TOKEN  # what the service takes
    given: str | None = None  # what DescribeService says it takes (None: the token)
    internet: str | None = None  # DescribeService's InternetEndpoint host (None: this server)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: HttpServer | None = None

    def predict(self, handler: KeepAliveHandler) -> tuple[int, dict[str, str], bytes]:
        handler.body()
        with self.lock:
            self.calls.append({k.lower(): v for k, v in handler.headers.items()})
            scripted = self.script.pop(0) if self.script else None
        if handler.path != f"/api/predict/{SERVICE}":
            return 404, {}, b"Not Found"
        if handler.headers.get("Authorization") != self.token:
            return 401, {}, b"Unauthorized"
        return scripted or (200, {}, ANSWER)

    def describe(self, handler: KeepAliveHandler) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(handler.path)
        body = handler.body()
        with self.lock:
            self.describes.append({k.lower(): v for k, v in handler.headers.items()})
        code = verified("GET", split.path, split.query, handler.headers, body)
        if code is not None:
            return 400, {}, json.dumps({"Code": code, "Message": "refused"}).encode()
        _, region, service = split.path.rsplit("/", 2)
        if region != REGION or service not in self.states:
            return 404, {}, json.dumps({"Code": "InvalidService.NotFound"}).encode()
        assert self.server is not None
        answer = {"ServiceName": service, "Status": self.states[service], "CurrentVersion": 2,
                  "LatestVersion": 2, "RunningInstance": 1, "TotalInstance": 1,
                  "AccessToken": self.given or self.token,
                  "InternetEndpoint": f"{self.internet or self.server.url}/api/predict/"
                                      f"{service}",
                  # never reachable from here; never asked: the internet one comes first
                  "IntranetEndpoint": f"http://1.vpc.{REGION}.pai-eas.aliyuncs.com/api/predict/"
                                      f"{service}"}  # fmt: skip
        return 200, {}, json.dumps(answer).encode()


@pytest.fixture(scope="module")
def eas() -> Iterator[Eas]:
    stand_in = Eas()

    class Handler(KeepAliveHandler):
        def do_POST(self) -> None:
            status, headers, body = stand_in.predict(self)
            self.send(status, {"content-type": "application/json", **headers}, body)

        def do_GET(self) -> None:
            status, headers, body = stand_in.describe(self)
            self.send(status, {"content-type": "application/json", **headers}, body)

    stand_in.server = HttpServer(Handler, name="eas")
    stand_in.server.start()
    try:
        yield stand_in
    finally:
        stand_in.server.stop()


@pytest.fixture
def fresh(eas: Eas) -> Iterator[Eas]:
    yield eas
    eas.script.clear()
    eas.calls.clear()
    eas.describes.clear()
    eas.token, eas.given, eas.internet = TOKEN, None, None


def settings(eas: Eas) -> PaiSettings:
    """``pai.endpoint`` pointed at the stand-in (host:port, protocol http)."""
    assert eas.server is not None
    return PaiSettings(region=REGION, workspace_id="123456",
                       endpoint=eas.server.url.split("://")[1], protocol="http")  # fmt: skip


def env(eas: Eas, **more: str) -> dict[str, str]:
    assert eas.server is not None
    base = {"AIAAS_PAI_ENDPOINT": f"{eas.server.url}/api/predict/{SERVICE}",
            "AIAAS_PAI_TOKEN": TOKEN, "ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.AK",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "STS.SK",
            "ALIBABA_CLOUD_SECURITY_TOKEN": "sts-token-1"}  # fmt: skip
    return {k: v for k, v in {**base, **more}.items() if v}


def invoker(eas: Eas, **more: str) -> PaiInvoker:
    config = FunctionConfig("pai", Path("."), settings(eas))
    built = PaiInvoker.from_config(config, env(eas, **more))
    built.retry = type(built.retry)(5, 0.01, 0.02, budget=RetryBudget(allowance=100))
    return built


def run(built: PaiInvoker, make: Callable[[], Any]) -> Any:
    async def main() -> Any:
        try:
            return await make()
        finally:
            await built.aclose()

    return asyncio.run(main())


def ours(error: AiaasError) -> bytes:
    """Our model server's JSON error body for ``error``."""
    return json.dumps(error.to_dict()).encode()


# -- the tests ---------------------------------------------------------------------------------


def test_a_call_carries_the_token_request_id_and_deadline(fresh: Eas) -> None:
    built = invoker(fresh)
    result = run(built, lambda: built.invoke("probe", EXAMPLE, request_id="rid-1", timeout=5))
    assert (result.body, result.version) == (ANSWER, "v1digest")
    (call,) = fresh.calls
    assert call["authorization"] == TOKEN and call["x-request-id"] == "rid-1"
    assert 0 < int(call[TIMEOUT_HEADER]) <= 5000
    assert built.invoke_sync("probe", EXAMPLE, timeout=5).body == ANSWER
    built.close()


def test_450_429_and_502_503_504_are_retried_within_the_deadline(fresh: Eas) -> None:
    built = invoker(fresh)
    fresh.script += [(450, {}, b"queue full"), (429, {"retry-after": "0"}, b"rate limited"),
                     (502, {}, b""), (503, {}, b""), ]  # fmt: skip
    assert built.invoke_sync("probe", EXAMPLE, timeout=5).body == ANSWER
    assert len(fresh.calls) == 5
    fresh.script += [(504, {}, b"")] * 3
    assert run(built, lambda: built.invoke("probe", EXAMPLE, timeout=5)).body == ANSWER
    fresh.script[:] = [(450, {}, b"queue full")] * 10
    with pytest.raises(Overloaded, match="EAS's request queue is full") as full:
        built.invoke_sync("probe", EXAMPLE, timeout=5)
    assert full.value.cloud_text == "queue full" and full.value.retry_after
    fresh.script[:] = [(429, {}, b"")] * 10
    with pytest.raises(Throttled, match="1,000 QPS"):
        built.invoke_sync("probe", EXAMPLE, timeout=5)
    fresh.script[:] = [(503, {}, b"")] * 10
    with pytest.raises(Unavailable):
        built.invoke_sync("probe", EXAMPLE, timeout=5)
    built.close()


def test_eas_answers_map_to_their_errors(fresh: Eas) -> None:
    built = invoker(fresh)
    cases: list[tuple[int, bytes, type[Exception], str]] = [
        (408, b"timeout", DeadlineExceeded, "rpc.keepalive"),
        (400, b"processor error", BadRequest, "refused the request"),
        (400, ours(InvalidInput("inputs[0].value: not a number")), InvalidInput, "not a number"),
        (403, b"forbidden", AccessDenied, "AIAAS_PAI_TOKEN is not the service's AccessToken"),
        (500, b"internal", Unavailable, "PAI-EAS failed"),
    ]
    for status, body, error, words in cases:
        fresh.script[:] = [(status, {}, body)]
        with pytest.raises(error, match=words):
            built.invoke_sync("probe", EXAMPLE, timeout=5)
    assert len(fresh.calls) == len(cases)  # none of them sent again
    # our container's own retryable answer (a full server queue) is retried like EAS's
    fresh.script[:] = [(503, {"retry-after": "0"}, ours(Overloaded("full", retry_after=0.0)))]
    assert built.invoke_sync("probe", EXAMPLE, timeout=5).body == ANSWER
    wrong = invoker(fresh, AIAAS_PAI_TOKEN="not-the-token")
    with pytest.raises(AccessDenied, match="401"):
        wrong.invoke_sync("probe", EXAMPLE, timeout=5)
    with pytest.raises(NotFound, match="no PAI-EAS service 'other_"):
        built.invoke_sync("other", EXAMPLE, timeout=5)
    with pytest.raises(BadRequest, match="is not valid"):
        built.invoke_sync("Bad.Name", EXAMPLE, timeout=5)
    built.close()
    wrong.close()


def test_a_connection_never_made_is_retried_then_not_ready(fresh: Eas) -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]  # closed again below: nothing listens there
    built = invoker(fresh, AIAAS_PAI_ENDPOINT=f"http://127.0.0.1:{port}")
    with pytest.raises(NotReady, match="not reachable"):
        built.invoke_sync("probe", EXAMPLE, timeout=5)
    built.close()


def test_the_environment_is_required_and_named() -> None:
    config = FunctionConfig("pai", Path("."), SETTINGS)
    with pytest.raises(ConfigError, match="AIAAS_PAI_ENDPOINT is not set, and there are no"):
        PaiInvoker.from_config(config, {"AIAAS_PAI_TOKEN": TOKEN})
    with pytest.raises(ConfigError, match="AIAAS_PAI_TOKEN is not set, and there are no"):
        PaiInvoker.from_config(config, {"AIAAS_PAI_ENDPOINT": "http://127.0.0.1:1"})
    with pytest.raises(ConfigError) as neither:
        PaiInvoker.from_config(config, {"ALIBABA_CLOUD_ACCESS_KEY_ID": "AK"})  # no secret
    message = neither.value.message
    assert message.startswith("AIAAS_PAI_ENDPOINT and AIAAS_PAI_TOKEN are not set")
    assert "set AIAAS_PAI_ENDPOINT and AIAAS_PAI_TOKEN" in message  # one way
    assert "or ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET" in message
    assert "eas:DescribeService" in message  # the other
    with pytest.raises(ConfigError, match="is not an http"):
        PaiInvoker.from_config(
            config, {"AIAAS_PAI_ENDPOINT": "127.0.0.1:1", "AIAAS_PAI_TOKEN": "t"}
        )
    keys = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "AK", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "SK"}
    for bad in ("127.0.0.1:8080", "ftp://127.0.0.1", "http://127.0.0.1:8080/api", "http://",
                "http://u:p@127.0.0.1", "http://127.0.0.1:99999", "http://h?x=1"):  # fmt: skip
        with pytest.raises(ConfigError, match=r"^AIAAS_PAI_EAS_URL=.* is not an http\(s\)://"):
            PaiInvoker.from_config(config, {**keys, "AIAAS_PAI_EAS_URL": bad})
    built = PaiInvoker.from_config(config, {**keys, "AIAAS_PAI_EAS_URL": "HTTP://127.0.0.1:8/"})
    assert built.control_url == "http://127.0.0.1:8" and built.looks_up
    assert PaiInvoker.from_config(config, keys).control_url == (
        "https://pai-eas.cn-hangzhou.aliyuncs.com"  # the region's: no variable, no setting
    )


def lookup_env(eas: Eas, **more: str) -> dict[str, str]:
    """Credentials and EAS's URL only: what ``aiaas emulate alibaba`` exports."""
    assert eas.server is not None
    unset = {"AIAAS_PAI_ENDPOINT": "", "AIAAS_PAI_TOKEN": "", "AIAAS_PAI_EAS_URL": eas.server.url}
    return env(eas, **{**unset, **more})


def looking_up(eas: Eas, **more: str) -> PaiInvoker:
    """An invoker with neither the endpoint nor the token, and no ``pai.endpoint`` (the
    control plane's URL from ``AIAAS_PAI_EAS_URL``)."""
    config = FunctionConfig("pai", Path("."), SETTINGS)
    built = PaiInvoker.from_config(config, lookup_env(eas, **more))
    built.retry = type(built.retry)(5, 0.01, 0.02, budget=RetryBudget(allowance=100))
    return built


def test_the_endpoint_and_token_are_looked_up_once_per_service(fresh: Eas) -> None:
    built = looking_up(fresh)
    assert built.invoke_sync("probe", EXAMPLE, timeout=5).body == ANSWER
    assert run(built, lambda: built.invoke("probe", EXAMPLE, timeout=5)).body == ANSWER
    assert built.invoke_sync("probe", EXAMPLE, timeout=5).body == ANSWER
    (asked,) = fresh.describes  # one DescribeService for the three calls, signed
    assert asked["authorization"].startswith("ACS3-HMAC-SHA256 Credential=STS.AK,")
    assert [c["authorization"] for c in fresh.calls] == [TOKEN] * 3
    with pytest.raises(NotFound, match="no PAI-EAS service 'gone_"):  # DescribeService's 404
        built.invoke_sync("gone", EXAMPLE, timeout=5)
    assert len(fresh.calls) == 3  # nothing sent to a service that is not there
    # the internet endpoint comes first; a VPC-only service is reached at its intranet one
    answer = {
        "Status": "Running",
        "AccessToken": "t",
        "IntranetEndpoint": f"http://1.vpc.{REGION}.pai-eas.aliyuncs.com/api/predict/s",
    }
    assert built._access_of("s", answer).base == f"http://1.vpc.{REGION}.pai-eas.aliyuncs.com"
    with pytest.raises(NotReady, match="has no endpoint nor AccessToken yet"):
        built._access_of("s", {"Status": "Creating"})
    # a token the environment gives is used as it is: only the endpoint is looked up
    given = looking_up(fresh, AIAAS_PAI_TOKEN="not-the-token")
    with pytest.raises(AccessDenied, match="AIAAS_PAI_TOKEN is not the service's"):
        given.invoke_sync("probe", EXAMPLE, timeout=5)
    assert len(fresh.describes) == 3  # gone, then given's lookup; no second one after a 401
    built.close()
    given.close()


def test_eas_public_endpoints_are_called_over_tls_and_the_rest_as_written() -> None:
    public = f"http://166408185518.{REGION}.pai-eas.aliyuncs.com/api/predict/svc"
    assert names.over_tls(public) == public.replace("http://", "https://", 1)
    assert names.over_tls(f"HTTP://1.{REGION.upper()}.PAI-EAS.aliyuncs.com/") == (
        f"https://1.{REGION.upper()}.PAI-EAS.aliyuncs.com/"
    )
    for kept in (
        f"https://1.{REGION}.pai-eas.aliyuncs.com/api/predict/svc",  # already
        f"http://1.vpc.{REGION}.pai-eas.aliyuncs.com/api/predict/svc",  # inside a VPC
        f"http://1.{REGION}.pai-eas.aliyuncs.com:8080/api/predict/svc",  # a port of its own
        "http://127.0.0.1:8080/api/predict/svc",  # an emulator
        "http://pai-eas.aliyuncs.com/",  # not a gateway's host
        "http://x.pai-eas.aliyuncs.com.example.com/",
        "http://example.com/x.pai-eas.aliyuncs.com",
        "http://[::1/",  # not a URL at all: left for the caller's own check
    ):
        assert names.over_tls(kept) == kept


def _connect_recorder() -> tuple[socket.socket, list[bytes], threading.Thread]:
    """A forward proxy on 127.0.0.1 that records each request's head and answers 502: what
    a call through ``HTTPS_PROXY`` asks for (``CONNECT host:443``) shows whether it goes over
    TLS, without resolving EAS's host (nothing here may leave the machine)."""
    listener = socket.create_server(("127.0.0.1", 0))
    heads: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by the test
            with conn:
                conn.settimeout(5)  # a stalled client cannot hold this thread
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                heads.append(head)
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, heads, thread


@pytest.mark.parametrize("given", [False, True], ids=["looked-up", "given"])
def test_the_public_gateway_is_called_over_tls(fresh: Eas, given: bool) -> None:
    """EAS gives its public gateway as an ``http://`` URL (DescribeService, the console); the
    token goes there over TLS only: the call asks the proxy for a tunnel to port 443, and
    nothing it sends the proxy carries the token. An explicit ``:80`` keeps plain HTTP."""
    host = f"166408185518.{REGION}.pai-eas.aliyuncs.com"
    fresh.internet = f"http://{host}"
    listener, heads, thread = _connect_recorder()
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    proxies = {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1"}
    endpoint = {"AIAAS_PAI_ENDPOINT": f"http://{host}/api/predict/{SERVICE}"} if given else {}
    built = looking_up(fresh, **proxies, **endpoint)
    plain = looking_up(fresh, **proxies, AIAAS_PAI_ENDPOINT=f"http://{host}:80")
    try:
        with pytest.raises(AiaasError):  # the stand-in proxy answers 502 to everything
            built.invoke_sync("probe", EXAMPLE, timeout=5)
        tunnels = len(heads)
        with pytest.raises(AiaasError):
            plain.invoke_sync("probe", EXAMPLE, timeout=5)
    finally:
        built.close()
        plain.close()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(fresh.describes) == 2  # DescribeService, direct (NO_PROXY): the tokens
    assert tunnels, "the call never reached the proxy"
    for head in heads[:tunnels]:
        assert head.startswith(f"CONNECT {host}:443 HTTP/1.1\r\n".encode()), head[:200]
        assert TOKEN.encode() not in head
    for head in heads[tunnels:]:  # what the user asked for: plain HTTP through the proxy
        assert head.startswith(f"POST http://{host}/api/predict/{SERVICE} ".encode())


def test_a_refused_token_is_read_again_once(fresh: Eas, caplog: pytest.LogCaptureFixture) -> None:
    """The service was created again (a new token): the 401 reads DescribeService again and
    the call goes through with the new token; when DescribeService still gives the refused
    token, AccessDenied at once. The token is never shown, nor logged (httpx's and the
    transport's debug lines included)."""
    caplog.set_level(logging.DEBUG)
    built = looking_up(fresh)
    assert built.invoke_sync("probe", EXAMPLE, timeout=5).body == ANSWER
    fresh.token = "service-token-2"  # created again
    assert run(built, lambda: built.invoke("probe", EXAMPLE, timeout=5)).body == ANSWER
    assert [c["authorization"] for c in fresh.calls] == [TOKEN, TOKEN, "service-token-2"]
    assert len(fresh.describes) == 2
    fresh.token, fresh.given = "service-token-3", "service-token-2"  # DescribeService lags
    with pytest.raises(AccessDenied, match="read again after the first refusal") as refused:
        built.invoke_sync("probe", EXAMPLE, timeout=5)
    assert len(fresh.describes) == 3 and len(fresh.calls) == 4  # one read, no second try
    kept = built._cached(SERVICE)
    assert kept is not None and kept.looked_up
    shown = [str(refused.value), repr(refused.value), str(refused.value.cloud_text),
             repr(built), repr(kept), repr(kept.auth)]  # fmt: skip
    assert not [text for text in shown if "service-token" in text], shown
    fresh.given = None
    assert built.invoke_sync("probe", EXAMPLE, timeout=5).body == ANSWER
    built.close()
    assert caplog.records and "service-token" not in caplog.text


def test_status_is_describe_service_signed_with_the_functions_sts_credentials(
    fresh: Eas,
) -> None:
    built = invoker(fresh)
    assert run(built, lambda: built.status("probe")) is DeploymentStatus.READY
    (asked,) = fresh.describes
    assert asked["x-acs-action"] == "DescribeService" and asked["x-acs-version"] == "2021-07-01"
    assert asked["x-acs-security-token"] == "sts-token-1"
    assert asked["authorization"].startswith("ACS3-HMAC-SHA256 Credential=STS.AK,")
    fresh.states[SERVICE] = "Updating"
    try:
        assert run(built, lambda: built.status("probe")) is DeploymentStatus.UPDATING
        service = built.describe_sync("probe")
        assert (service.current_version, service.running_instances) == (2, 1)
        assert "service-token" not in repr(service)  # the AccessToken is never kept
    finally:
        fresh.states[SERVICE] = "Running"
    with pytest.raises(NotFound, match="no PAI-EAS service 'gone_"):
        run(built, lambda: built.status("gone"))
    wrong = invoker(fresh, ALIBABA_CLOUD_ACCESS_KEY_SECRET="WRONG")
    with pytest.raises(AccessDenied, match=r"SignatureDoesNotMatch.*eas:DescribeService"):
        run(wrong, lambda: wrong.status("probe"))
    keyless = invoker(fresh, ALIBABA_CLOUD_ACCESS_KEY_ID="", ALIBABA_CLOUD_SECURITY_TOKEN="")
    assert run(keyless, lambda: keyless.status("probe")) is DeploymentStatus.UNKNOWN
    built.close()


def test_the_signer_verifies_with_queries_bodies_and_a_wrong_secret() -> None:
    def signed(secret: str, request: httpx.Request) -> httpx.Request:
        creds = AlibabaCredentials("AK", secret)
        Acs3Signer(lambda: creds, version="2021-07-01", action="ListServices").sign(request)
        return request

    def verdict(request: httpx.Request) -> str | None:
        path, _, query = request.url.raw_path.decode().partition("?")
        return verified(request.method, path, query, request.headers, request.content)

    label = json.dumps({"aiaas:project": "demo a/b"}, separators=(",", ":"))
    listing = httpx.Request(
        "GET", "http://127.0.0.1:8080/api/v2/services",
        params={"Filter": "aiaas", "PageSize": "50", "Label": label},
    )  # fmt: skip
    assert verdict(signed("SK", listing)) is None
    body = json.dumps({"metadata": {"name": "svc", "instance": 1}}).encode()
    create = httpx.Request("POST", "http://127.0.0.1:8080/api/v2/services", content=body,
                           headers={"content-type": "application/json",
                                    "x-acs-action": "CreateService"})  # fmt: skip
    assert verdict(signed("SK", create)) is None
    assert "content-type" in create.headers["authorization"]
    refused = httpx.Request("GET", "http://127.0.0.1:8080/api/v2/services/cn-hangzhou/svc")
    assert verdict(signed("WRONG", refused)) == "SignatureDoesNotMatch"
    assert "SK" not in repr(AlibabaCredentials("AK", "SK"))


LIGHT_RUN = """
import asyncio, json, sys
from pathlib import Path
from aiaas.packaged import FunctionConfig
from adapters.pai import PaiSettings
from adapters.pai.invoke import PaiInvoker
section, env, lookup = (json.loads(arg) for arg in sys.argv[1:4])
config = FunctionConfig("pai", Path("."), PaiSettings.read(section))
built = PaiInvoker.from_config(config, env)
looking = PaiInvoker.from_config(config, lookup)
async def main():
    answer = await built.invoke("probe", b'{"inputs": [{"value": 3}]}', timeout=5)
    status = await built.status("probe")
    found = await looking.invoke("probe", b'{"inputs": [{"value": 3}]}', timeout=5)
    await built.aclose()
    await looking.aclose()
    return [answer.version, str(status), found.version]
print(json.dumps(asyncio.run(main())))
tops = {m.split(".")[0] for m in sys.modules}
heavy = [m for m in sorted(tops) if m.startswith("alibabacloud")
         or m in ("pydantic", "torch", "eas_prediction", "Tea")]
print(json.dumps(heavy))
"""


def test_the_invoke_path_loads_no_alibaba_sdk_pydantic_nor_torch(eas: Eas) -> None:
    """A fresh interpreter (this one has pydantic and torch loaded) answers a prediction and
    its status, and one through the endpoint and token looked up, then lists what it
    imported."""
    section, variables = json.dumps(settings(eas).__dict__), json.dumps(env(eas))
    lookup = json.dumps(lookup_env(eas))
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_RUN, section, variables, lookup],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answered, heavy = done.stdout.strip().splitlines()
    assert json.loads(answered) == ["v1digest", "ready", "v1digest"]
    assert json.loads(heavy) == []


def test_from_a_shell_the_service_is_looked_up_on_the_emulated_eas(
    alibaba: AlibabaEmulator, probe_bundle: BuiltBundle
) -> None:
    """What ``aiaas emulate alibaba`` exports (credentials, ``AIAAS_PAI_EAS_URL``), no
    endpoint nor token and no ``pai.endpoint``: the invoker finds the service through the
    emulated EAS's DescribeService (ACS3-verified), and after the service is created again
    (a new AccessToken) its 401 reads the new token once and the call goes through."""
    settings = PaiSettings(region=alibaba.region)
    service = names.service_name("probe", settings)
    oss_path = upload(alibaba, probe_bundle.path, "aiaas/probe/v1")

    def created() -> None:
        create_service(alibaba, service_config(service, oss_path))
        assert alibaba.wait(service) == "Running", alibaba.container_output(service)

    created()
    built = PaiInvoker.from_config(FunctionConfig("pai", Path("."), settings), alibaba.env())
    first = json.loads(built.invoke_sync("probe", EXAMPLE, timeout=30).body)
    assert first["outputs"][0]["value"] == 6.0
    eas_client(alibaba).delete_service(alibaba.region, service)
    created()
    again = run(built, lambda: built.invoke("probe", EXAMPLE, timeout=30))
    assert json.loads(again.body)["outputs"][0]["value"] == 6.0
    described = [c for c in alibaba.calls() if c.action == "DescribeService"]
    assert [c.status for c in described] == [200, 200]  # once, then once after the 401
    assert [c.status for c in alibaba.predict_calls()] == [200, 401, 200]
    built.close()
