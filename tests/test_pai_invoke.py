"""The PAI-EAS invoke path (adapters/pai/invoke.py) and the ACS3 signer (adapters/auth.py)
against a stand-in HTTP server on 127.0.0.1.

The stand-in is written here, not the EAS emulator (emulators/alibaba.py), which was being
written beside this module: it answers exactly what each case needs (a 450, a 408, a 400 with
or without our JSON body, a ``Retry-After``) from a script, checks the service token on
``/api/predict/<service>`` and the ACS3 signature of DescribeService with the EAS emulator's
own verifier (``emulators.acs3.verify_acs3``, which checks what the real SDK signs). No
deploy: the whole map runs in well under a second. The last test runs the invoke path in a
fresh interpreter and checks it loads no Alibaba Cloud SDK, pydantic nor torch.
"""

from __future__ import annotations

import asyncio
import json
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

from adapters.auth import Acs3Signer, AlibabaCredentials
from adapters.base import DeploymentStatus
from adapters.pai import PaiSettings, names
from adapters.pai.invoke import PaiInvoker
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
from emulators.httpserver import HttpServer, KeepAliveHandler

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
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: HttpServer | None = None

    def predict(self, handler: KeepAliveHandler) -> tuple[int, dict[str, str], bytes]:
        handler.body()
        with self.lock:
            self.calls.append({k.lower(): v for k, v in handler.headers.items()})
            scripted = self.script.pop(0) if self.script else None
        if handler.path != f"/api/predict/{SERVICE}":
            return 404, {}, b"Not Found"
        if handler.headers.get("Authorization") != TOKEN:
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
        answer = {"ServiceName": service, "Status": self.states[service], "CurrentVersion": 2,
                  "LatestVersion": 2, "RunningInstance": 1, "TotalInstance": 1,
                  "AccessToken": TOKEN}  # fmt: skip
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
    with pytest.raises(ConfigError, match="AIAAS_PAI_ENDPOINT is not set"):
        PaiInvoker.from_config(config, {"AIAAS_PAI_TOKEN": TOKEN})
    with pytest.raises(ConfigError, match="AIAAS_PAI_TOKEN is not set"):
        PaiInvoker.from_config(config, {"AIAAS_PAI_ENDPOINT": "http://127.0.0.1:1"})
    with pytest.raises(ConfigError, match="is not an http"):
        PaiInvoker.from_config(
            config, {"AIAAS_PAI_ENDPOINT": "127.0.0.1:1", "AIAAS_PAI_TOKEN": "t"}
        )


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
section, env = json.loads(sys.argv[1]), json.loads(sys.argv[2])
config = FunctionConfig("pai", Path("."), PaiSettings.read(section))
built = PaiInvoker.from_config(config, env)
async def main():
    answer = await built.invoke("probe", b'{"inputs": [{"value": 3}]}', timeout=5)
    status = await built.status("probe")
    await built.aclose()
    return [answer.version, str(status)]
print(json.dumps(asyncio.run(main())))
tops = {m.split(".")[0] for m in sys.modules}
heavy = [m for m in sorted(tops) if m.startswith("alibabacloud")
         or m in ("pydantic", "torch", "eas_prediction", "Tea")]
print(json.dumps(heavy))
"""


def test_the_invoke_path_loads_no_alibaba_sdk_pydantic_nor_torch(eas: Eas) -> None:
    """A fresh interpreter (this one has pydantic and torch loaded) answers a prediction and
    its status, then lists what it imported."""
    section, variables = json.dumps(settings(eas).__dict__), json.dumps(env(eas))
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_RUN, section, variables],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answered, heavy = done.stdout.strip().splitlines()
    assert json.loads(answered) == ["v1digest", "ready"]
    assert json.loads(heavy) == []
