"""Work nobody waits for is not computed: the deadline travels with the request, and the model
server drops queued work whose deadline has passed (504) or whose client has gone (499).

One real model server (uvicorn, the probe model, batches of one) on 127.0.0.1, in this
process: a request sleeping ``BUSY_MS`` in the inference thread keeps the others queued. What
was computed is read where it happens: every item the runner's ``run_batch`` is handed (the
real one runs after it is recorded), by its value.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from conftest import serve_asgi

from adapters.http_invoker import RetryPolicy, attempts
from adapters.local.invoke import LocalInvoker
from adapters.local.state import STATE_FILE, ServerRecord, deployment_dir
from adapters.sagemaker import aws as aws_env
from adapters.sagemaker.invoke import SageMakerInvoker
from aiaas.bundle import BuiltBundle, open_bundle
from aiaas.custom_attributes import CUSTOM_ATTRIBUTES_HEADER
from aiaas.errors import DeadlineExceeded
from aiaas.retry import TIMEOUT_HEADER
from aiaas.runtime.app import create_app
from aiaas.runtime.dataplane import DataPlane
from aiaas.runtime.runner import ModelRunner

T = TypeVar("T")
BUSY_MS = 600  # how long the request that keeps the others queued computes


class Computed:
    """The values of the items the runner was handed, in order (recorded, then run)."""

    def __init__(self, runner: ModelRunner) -> None:
        self.values: list[float] = []
        self._run = runner.run_batch
        runner.run_batch = self  # type: ignore[method-assign]

    def __call__(self, items: list[Any]) -> list[Any]:
        self.values += [item.value for item in items]
        return self._run(items)


@dataclass
class Slow:
    """The server: its URL, what it computed, its data plane (for the queue's depth)."""

    url: str
    computed: Computed
    plane: DataPlane


@pytest.fixture(scope="module")
def slow(probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slow]:
    bundle_dir, manifest = open_bundle(probe_bundle.path, cache_dir=tmp_path_factory.mktemp("b"))
    manifest.batching.max_batch_size = 1
    manifest.batching.max_delay_ms = 0
    runner = ModelRunner(bundle_dir, manifest)
    computed = Computed(runner)
    app = create_app(runner)
    with serve_asgi(app) as url:
        deadline = time.monotonic() + 60
        while httpx.get(url + "/ping").status_code != 200:
            assert time.monotonic() < deadline, "the probe never loaded"
            time.sleep(0.02)
        yield Slow(url, computed, app.endpoints["/invocations"].plane)


def _simple(value: int, sleep_ms: int = 0) -> dict[str, Any]:
    return {"inputs": [{"value": value, "sleep_ms": sleep_ms}]}


def _oip(value: int) -> dict[str, Any]:
    return {"inputs": [{"name": "value", "shape": [1], "datatype": "FP32", "data": [value]}]}


def _metric(url: str, status: int) -> float:
    """Requests to /invocations answered ``status``, from /metrics."""
    label = f'aiaas_requests_total{{route="/invocations",status="{status}"}} '
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(label):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _while_busy(
    server: Slow, first: int, late: Callable[[httpx.AsyncClient], Awaitable[T]], then: int
) -> tuple[T, list[float]]:
    """Compute item ``first`` for ``BUSY_MS``; meanwhile await ``late`` (requests that queue
    behind it); then ask for item ``then`` (queued after whatever ``late`` left). Returns
    what ``late`` returned and the values computed meanwhile."""
    before = len(server.computed.values)

    async def run() -> T:
        async with httpx.AsyncClient(timeout=30.0) as client:
            post = client.post
            busy = asyncio.create_task(
                post(server.url + "/invocations", json=_simple(first, BUSY_MS))
            )
            while first not in server.computed.values[before:]:
                await asyncio.sleep(0.005)
            result = await late(client)
            assert (await busy).status_code == 200
            assert (await post(server.url + "/invocations", json=_simple(then))).status_code == 200
            return result

    result = asyncio.run(run())
    return result, server.computed.values[before:]


def test_queued_requests_past_their_deadline_get_504_and_are_never_computed(slow: Slow) -> None:
    """The deadline as the header (simple protocol and OIP) and as SageMaker's custom
    attribute: each request is answered 504 at its deadline, long before the item ahead of it
    is done, and is skipped, not computed, when its turn comes."""
    url = slow.url
    header = {TIMEOUT_HEADER: "50"}
    attribute = {CUSTOM_ATTRIBUTES_HEADER: "trace=on; aiaas-timeout-ms=50;aiaas-request-id=r1"}

    async def late(client: httpx.AsyncClient) -> tuple[list[httpx.Response], float]:
        started = time.monotonic()
        answers = await asyncio.gather(
            client.post(url + "/invocations", json=_simple(101), headers=header),
            client.post(url + "/invocations", json=_simple(102), headers=attribute),
            client.post(url + "/v2/models/probe/infer", json=_oip(103), headers=header),
        )
        return list(answers), time.monotonic() - started

    (answers, waited), computed = _while_busy(slow, 100, late, 104)
    assert [a.status_code for a in answers] == [504, 504, 504]
    simple, carried, oip = (a.json() for a in answers)
    assert simple["error"]["code"] == carried["error"]["code"] == oip["code"] == "deadline_exceeded"
    for answer in (simple, carried):  # the caller's deadline, not request_timeout_s
        assert "caller's deadline passed" in answer["error"]["message"], answer
    assert carried["error"]["request_id"] == "r1"
    assert waited < BUSY_MS / 1000  # at their deadline, not when their turn came
    assert computed == [100, 104]


def test_a_client_that_disconnects_while_queued_is_never_computed(slow: Slow) -> None:
    """The connection closes while the request waits in the queue: it is dropped (499 in
    /metrics, nothing sent), and the inference thread skips it."""
    host, port = slow.url.removeprefix("http://").split(":")
    body = json.dumps(_simple(105)).encode()
    head = f"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    gone_before = _metric(slow.url, 499)

    async def late(_client: httpx.AsyncClient) -> None:
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(head.encode() + body)
            while slow.plane.batcher.queue_depth < 1:
                await asyncio.sleep(0.005)
        # closed while queued

    _, computed = _while_busy(slow, 106, late, 107)
    assert computed == [106, 107]
    assert _metric(slow.url, 499) == gone_before + 1


@pytest.mark.parametrize(
    ("path", "headers", "named"),
    [
        ("/invocations", {TIMEOUT_HEADER: "soon"}, TIMEOUT_HEADER),
        ("/invocations", {TIMEOUT_HEADER: "-5"}, TIMEOUT_HEADER),
        ("/invocations", {CUSTOM_ATTRIBUTES_HEADER: "aiaas-timeout-ms=1.5"}, "aiaas-timeout-ms"),
        ("/v2/models/probe/infer", {TIMEOUT_HEADER: "1e3"}, TIMEOUT_HEADER),
    ],
)
def test_a_malformed_deadline_is_400_naming_the_header(
    slow: Slow, path: str, headers: dict[str, str], named: str
) -> None:
    body = _simple(1) if path == "/invocations" else _oip(1)
    answer = httpx.post(slow.url + path, json=body, headers=headers)
    assert answer.status_code == 400
    error = answer.json()
    message = error["error"]["message"] if path == "/invocations" else error["error"]
    assert named in message and "milliseconds" in message


# -- the invoke path carries the deadline ------------------------------------------------


def _sagemaker(url: str = "http://127.0.0.1:9") -> SageMakerInvoker:
    credentials = aws_env.Credentials("AKIDEXAMPLE", "secret")
    return SageMakerInvoker("us-east-1", lambda: credentials, runtime_url=url, api_url=url)


def test_each_sagemaker_attempt_carries_its_time_left_in_the_custom_attributes() -> None:
    """InvokeEndpoint forwards only the custom attributes: each attempt writes the
    milliseconds its call has left there, beside the request id (a retry carries less)."""
    call = _sagemaker().call("probe", b'{"inputs": []}', "rid-9")
    steps = attempts(call, RetryPolicy(max_attempts=2, base=0.02, cap=0.02), timeout=5.0)
    first = next(steps)
    assert isinstance(first, httpx.Request)
    attributes = first.headers[CUSTOM_ATTRIBUTES_HEADER]
    left = int(attributes.split(";")[0].removeprefix("aiaas-timeout-ms="))
    assert attributes == f"aiaas-timeout-ms={left};aiaas-request-id=rid-9"
    assert 4900 < left <= 5000
    assert TIMEOUT_HEADER not in first.headers  # InvokeEndpoint would not forward it
    pause = steps.send(httpx.Response(503, request=first))  # SageMaker's own 5xx: retried
    assert isinstance(pause, float) and pause <= 0.02
    time.sleep(0.02)  # the longest backoff the policy can ask for: 20 ms less left at least
    second = steps.send(None)
    assert isinstance(second, httpx.Request)
    again = int(second.headers[CUSTOM_ATTRIBUTES_HEADER].split(";")[0].split("=")[1])
    assert again <= left - 20


def test_the_deadline_each_invoke_path_sends_makes_the_server_drop_the_request(
    slow: Slow, tmp_path: Path
) -> None:
    """The request each provider's invoke path builds (local: the header; SageMaker: the
    custom attributes, as InvokeEndpoint forwards them) reaches the server queued behind a
    busy item with 100 ms left: it is answered 504 and never computed. The requests are sent
    by a client that would wait seconds, so the 504 is the server's own."""
    state = deployment_dir(tmp_path, "probe")
    state.mkdir(parents=True)
    port = int(slow.url.rsplit(":", 1)[1])
    (state / STATE_FILE).write_text(ServerRecord(pid=1, port=port).to_json())
    local = LocalInvoker(tmp_path).call("probe", json.dumps(_simple(111)).encode(), "rid-l")
    built = _sagemaker().call("probe", json.dumps(_simple(112)).encode(), "rid-s")
    policy = RetryPolicy(max_attempts=1)

    def first_request(call: Any) -> httpx.Request:
        request = next(attempts(call, policy, timeout=0.1))
        assert isinstance(request, httpx.Request)
        request.extensions["timeout"] = httpx.Timeout(30.0).as_dict()  # the loop's: 0.1 s
        return request

    from_local = first_request(local)
    from_sagemaker = first_request(built)
    forwarded = httpx.Request(  # what the SageMaker runtime sends the container
        "POST",
        slow.url + "/invocations",
        content=from_sagemaker.content,
        headers={
            "content-type": "application/json",
            CUSTOM_ATTRIBUTES_HEADER: from_sagemaker.headers[CUSTOM_ATTRIBUTES_HEADER],
        },
    )

    async def late(client: httpx.AsyncClient) -> list[httpx.Response]:
        return list(await asyncio.gather(client.send(from_local), client.send(forwarded)))

    answers, computed = _while_busy(slow, 110, late, 113)
    assert [a.status_code for a in answers] == [504, 504]
    assert [a.headers["x-request-id"] for a in answers] == ["rid-l", "rid-s"]
    assert computed == [110, 113]
    with pytest.raises(DeadlineExceeded):  # and the invoke path reads the 504 as such
        steps = attempts(local, policy, timeout=1.0)
        next(steps)
        steps.send(answers[0])
