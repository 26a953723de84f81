"""adapters/http_invoker.py: the retry/deadline loop on its own (sans-IO, driven by hand: no
server, no clock tricks beyond a short deadline), then its sync and async drivers, the per-loop
clients and the proxy variables against real HTTP servers on 127.0.0.1, over both transports
(the hand-written one and httpx's own)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from adapters.base import DeploymentStatus, InvokeResult
from adapters.http_invoker import (
    Call,
    HttpClients,
    HttpInvoker,
    Retry,
    RetryPolicy,
    Sent,
    TransportKind,
    attempts,
    never_sent,
    proxy_routes,
    result_of,
    transport_kind,
)
from aiaas.config import ProjectConfig
from aiaas.errors import ConfigError, DeadlineExceeded, InvalidInput, NotReady, Throttled
from aiaas.retry import RetryBudget, caller_retries
from emulators.httpserver import HttpServer, KeepAliveHandler

ANSWER = b'{"outputs":[{"y":1}],"model":"m","version":"v7"}'


def patient() -> RetryBudget:
    """A retry budget that never stops these tests' retries (the budget has its own tests)."""
    return RetryBudget(allowance=1000)


class Ceiling(random.Random):
    """Full jitter drawn at its ceiling: the policy's documented injection point."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Scripted(Call):
    """A call whose attempts are judged from a script: ``"retry"`` or ``"ok"`` per attempt."""

    what = "the scripted endpoint"

    def __init__(self, script: list[str], url: str = "http://127.0.0.1:9/x") -> None:
        self.script, self.url, self.built = script, url, 0

    def request(self) -> httpx.Request:
        self.built += 1
        return httpx.Request("POST", self.url, content=b"{}")

    def judge(self, sent: Sent) -> InvokeResult | Retry:
        if self.script.pop(0) == "ok":
            return InvokeResult(b"{}", "v1")
        return Retry(Throttled("busy", retry_after=0.01))


def drive(call: Call, policy: RetryPolicy, timeout: float) -> tuple[list[Any], Any]:
    """Run :func:`attempts` by hand: every request answered with a canned 200, every
    sleep recorded (not slept). The steps seen, and the result or the error raised."""
    steps: list[Any] = []
    loop = attempts(call, policy, timeout)
    reply: Sent | None = None
    try:
        step = next(loop)
        while True:
            steps.append(step)
            reply = httpx.Response(200) if isinstance(step, httpx.Request) else None
            step = loop.send(reply)
    except StopIteration as done:
        return steps, done.value
    except Exception as error:
        return steps, error


def test_the_loop_retries_with_growing_backoff_and_returns_the_result() -> None:
    call = Scripted(["retry", "retry", "ok"])
    steps, result = drive(call, RetryPolicy(4, 0.05, 2.0, Ceiling(), patient()), timeout=10)
    assert isinstance(result, InvokeResult) and result.version == "v1"
    kinds = [type(s).__name__ if isinstance(s, httpx.Request) else s for s in steps]
    assert kinds == ["Request", 0.05, "Request", 0.1, "Request"]
    assert call.built == 3  # the request is built for each attempt
    timeout = steps[0].extensions["timeout"]
    assert timeout["connect"] == 2.0 and 9 < timeout["read"] <= 10  # what is left, per attempt


def test_the_last_attempt_raises_its_error_with_retry_after_at_least_the_backoff() -> None:
    steps, error = drive(
        Scripted(["retry"] * 3), RetryPolicy(3, 0.5, 2.0, Ceiling(), patient()), 10
    )
    assert isinstance(error, Throttled)
    assert error.retry_after == 2.0  # the next ceiling (0.5 * 2**2), above the 0.01 said
    assert sum(isinstance(s, httpx.Request) for s in steps) == 3


def test_no_backoff_runs_past_the_deadline_and_no_attempt_starts_after_it() -> None:
    steps, error = drive(
        Scripted(["retry"] * 10), RetryPolicy(10, 1.0, 5.0, Ceiling(), patient()), 0.5
    )
    assert isinstance(error, Throttled)  # a 1 s backoff would pass the 0.5 s deadline
    assert len(steps) == 1
    steps, error = drive(Scripted(["ok"]), RetryPolicy(), timeout=0.0)
    assert isinstance(error, DeadlineExceeded) and steps == []
    assert "the scripted endpoint did not answer within 0s" in error.message


def test_never_sent_is_only_errors_raised_before_the_request_left() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/")
    before: list[type[httpx.TransportError]] = [
        httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
    ]  # fmt: skip
    after: list[type[httpx.TransportError]] = [
        httpx.ReadTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError,
    ]  # fmt: skip
    assert all(never_sent(error("x", request=request)) for error in before)
    assert not any(never_sent(error("x", request=request)) for error in after)


Handler = Callable[[BaseHTTPRequestHandler], tuple[int, bytes]]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], tuple[str, list[str]]]]:
    """An HTTP/1.1 server on 127.0.0.1; records each request line (method and target)."""
    servers: list[HttpServer] = []

    def start(answer: Handler) -> tuple[str, list[str]]:
        lines: list[str] = []

        class Handle(KeepAliveHandler):
            def _any(self) -> None:
                self.body()
                lines.append(f"{self.command} {self.path}")
                status, data = answer(self)
                self.send(status, {"content-type": "application/json"}, data)

            do_GET = do_POST = _any

        server = HttpServer(Handle, name="test-server")
        server.start()
        servers.append(server)
        return server.url, lines

    yield start
    for server in servers:
        server.stop()


class Plain(Call):
    """The smallest provider call: POST the body, a 503 is worth a retry, the rest is the
    model server's answer."""

    what = "the test server"

    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.body = url, body

    def request(self) -> httpx.Request:
        return httpx.Request("POST", self.url, content=self.body)

    def judge(self, sent: Sent) -> InvokeResult | Retry:
        if isinstance(sent, httpx.TransportError):
            raise NotReady(f"{self.what}: {sent!r}")
        if sent.status_code == 503:
            return Retry(NotReady("starting", retry_after=0.01))
        return result_of(sent)


class PlainInvoker(HttpInvoker):
    """A provider made of a request builder and a classifier, as the module promises."""

    name = "plain"

    def __init__(self, url: str, kind: TransportKind) -> None:
        self.url = url
        self.retry = RetryPolicy(4, 0.01, 0.05)
        self.clients = HttpClients(https=False, env={}, kind=kind)

    @classmethod
    def from_config(cls, config: ProjectConfig) -> PlainInvoker:
        raise NotImplementedError  # built directly in these tests

    def call(self, name: str, body: bytes, request_id: str | None) -> Call:
        return Plain(f"{self.url}/{name}", body)

    async def status(self, name: str) -> DeploymentStatus:
        return DeploymentStatus.READY


@pytest.mark.parametrize("kind", ["h11", "httpx"])
def test_both_drivers_run_the_same_loop_over_either_transport(
    serve: Callable[[Handler], tuple[str, list[str]]], kind: TransportKind
) -> None:
    served = [0]

    def starting_then_answers(handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        served[0] += 1
        if handler.path == "/invalid":
            error = {"code": "invalid_input", "message": "bad", "details": [{"index": 0}]}
            return 422, json.dumps({"error": error}).encode()
        return (503, b"{}") if served[0] % 2 else (200, ANSWER)

    url, lines = serve(starting_then_answers)
    invoker = PlainInvoker(url, kind)
    result = invoker.invoke_sync("m", b"{}")
    assert result == InvokeResult(ANSWER, "v7")

    async def twice() -> list[InvokeResult]:
        try:
            return [await invoker.invoke("m", b"{}") for _ in range(2)]
        finally:
            await invoker.aclose()

    assert asyncio.run(twice()) == [result, result]
    assert asyncio.run(twice()) == [result, result]  # another loop: another client, works
    assert lines.count("POST /m") == 10  # every call: a 503, then the answer
    with pytest.raises(InvalidInput) as invalid:
        invoker.invoke_sync("invalid", b"{}")
    assert invalid.value.details == [{"index": 0}]
    invoker.close()


def test_proxy_variables_send_calls_through_the_proxy_and_no_proxy_goes_direct(
    serve: Callable[[Handler], tuple[str, list[str]]],
) -> None:
    proxy_url, proxied = serve(lambda _h: (200, ANSWER))  # answers as the proxy would relay
    direct_url, direct = serve(lambda _h: (200, ANSWER))
    closed = socket.create_server(("127.0.0.1", 0))
    nowhere = closed.getsockname()[1]
    closed.close()
    target = f"http://localhost:{nowhere}/m"  # unreachable but through the proxy

    kinds: list[TransportKind] = ["h11", "httpx"]
    for kind in kinds:
        env = {"HTTP_PROXY": proxy_url, "NO_PROXY": "127.0.0.1"}
        clients = HttpClients(https=False, env=env, kind=kind)
        assert clients.sync_client().post(target, content=b"{}").status_code == 200

        async def through(clients: HttpClients = clients) -> list[int]:
            client = clients.async_client()
            answers = [
                (await client.post(target, content=b"{}")).status_code,
                (await client.post(direct_url + "/d", content=b"{}")).status_code,
            ]
            await clients.aclose()
            return answers

        assert asyncio.run(through()) == [200, 200]
        clients.close()
    assert proxied == [f"POST {target}"] * 4  # absolute-form: a forward proxy's request
    assert direct == ["POST /d"] * 2  # NO_PROXY: straight to the server


def test_proxy_routes_and_the_transport_switch() -> None:
    assert proxy_routes({}) == {}
    routes = proxy_routes(
        {"https_proxy": "proxy:3128", "HTTPS_PROXY": "ignored:1", "no_proxy": ".internal,svc"}
    )
    assert routes == {
        "https://": "http://proxy:3128",
        "all://internal": None,
        "all://*.internal": None,
        "all://svc": None,
        "all://*.svc": None,
    }
    assert proxy_routes({"ALL_PROXY": "http://p:1", "NO_PROXY": "*"}) == {}
    assert transport_kind({}) == "h11"
    assert transport_kind({"AIAAS_HTTP_TRANSPORT": "httpx"}) == "httpx"
    with pytest.raises(ConfigError, match="AIAAS_HTTP_TRANSPORT"):
        transport_kind({"AIAAS_HTTP_TRANSPORT": "curl"})


def test_the_sleep_between_async_attempts_does_not_block_the_loop(
    serve: Callable[[Handler], tuple[str, list[str]]],
) -> None:
    url, _ = serve(lambda _h: (503, b"{}"))
    invoker = PlainInvoker(url, "h11")
    invoker.retry = RetryPolicy(3, 0.2, 0.2, Ceiling())
    ticks: list[float] = []

    async def run() -> None:
        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        ticker = asyncio.create_task(tick())
        try:
            with pytest.raises(NotReady):
                await invoker.invoke("m", b"{}", timeout=5)
        finally:
            ticker.cancel()
            await invoker.aclose()

    asyncio.run(run())
    assert len(ticks) >= 10  # two 0.2 s backoffs: the loop kept running meanwhile


class Hinted(Scripted):
    """Every attempt throttled, with the callee's own back-off (its ``Retry-After``)."""

    def judge(self, sent: Sent) -> InvokeResult | Retry:
        self.script.pop(0)
        return Retry(Throttled("busy", retry_after=0.0), after=7.0)


def test_the_callees_back_off_reaches_the_caller_and_a_retrying_caller_gets_one_attempt() -> None:
    """Issue 16, item 18: the error raised carries the callee's back-off (not a fixed 1 s);
    a caller that retries by itself (``caller_retries``) gets one attempt; and a budget with
    no success in its window stops retries."""
    policy = RetryPolicy(max_attempts=5, base=0.01, rng=Ceiling(), budget=RetryBudget())
    token = caller_retries.set(True)
    try:
        call = Hinted(["retry"] * 5)
        steps, error = drive(call, policy, timeout=30)
    finally:
        caller_retries.reset(token)
    assert call.built == 1 and isinstance(error, Throttled) and error.retry_after == 7.0
    starved = RetryBudget(allowance=0)
    steps, error = drive(Scripted(["retry"] * 5), RetryPolicy(budget=starved), timeout=30)
    assert len([s for s in steps if isinstance(s, httpx.Request)]) == 1


def test_the_retry_budget_allows_retries_while_most_calls_succeed() -> None:
    now = [0.0]
    budget = RetryBudget(ratio=3.0, allowance=0, window_s=10, clock=lambda: now[0])
    assert not budget.can_retry()  # no success yet, no allowance
    for ok in [True, False] * 20:  # half the calls fail: 2 calls per success, within 3
        budget.record(ok)
    assert budget.can_retry()
    for _ in range(40):  # then every call fails: calls pass 3 x successes
        budget.record(False)
    assert not budget.can_retry()
    now[0] = 11.0  # the window has moved past all of it
    budget.record(True)
    assert budget.can_retry()
