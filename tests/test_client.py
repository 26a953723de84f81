"""aiaas.Client against real HTTP servers on 127.0.0.1: the function app, and a small
server that throttles on purpose (the only way to get 429/503 on demand)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import aiaas
from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from aiaas.errors import DeadlineExceeded, InvalidInput, ModelError, Throttled
from aiaas.retry import CALLER_RETRIES_HEADER, CLIENT_ALLOWANCE, TIMEOUT_HEADER
from functions.app import FunctionApp
from functions.auth import KeyChecker, create_key


@pytest.fixture(scope="module")
def function(
    probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    key, record = create_key()
    provider = LocalProvider(state_dir=str(tmp_path_factory.mktemp("state")))
    provider.deploy(probe_bundle.path)
    try:
        with serve_asgi(
            FunctionApp(
                provider.invoker, probe_bundle.manifest, keys=KeyChecker({record.key_id: record})
            ).asgi()
        ) as url:
            yield url, key
    finally:
        provider.delete("probe")


def test_predict_and_infer(function: tuple[str, str]) -> None:
    url, key = function
    with aiaas.Client(url, api_key=key) as client:
        assert [o["value"] for o in client.predict([{"value": 1}, {"value": 2}])] == [2.0, 4.0]
        out = client.infer(
            "probe", [{"name": "value", "shape": [1], "datatype": "FP32", "data": [3]}]
        )
        assert out["outputs"][0]["data"] == [6.0]


def test_errors_are_typed(function: tuple[str, str]) -> None:
    url, key = function
    with aiaas.Client(url, api_key=key) as client:
        with pytest.raises(InvalidInput, match=r"inputs\[0\]\.value"):
            client.predict([{"value": "x"}])
        with pytest.raises(ModelError, match="probe was asked to fail"):
            client.predict([{"value": 1, "fail": True}])
    with (
        aiaas.Client(url, api_key="aiaas_0_wrong") as client,
        pytest.raises(aiaas.AiaasError) as info,
    ):
        client.predict([{"value": 1}])
    assert info.value.code == "unauthorized"


def _throttling_server(
    fail_times: int, status: int, retry_after: str
) -> tuple[Starlette, list[float]]:
    calls: list[float] = []

    async def predict(request: Request) -> Response:
        calls.append(time.monotonic())
        if len(calls) <= fail_times:
            body = {"error": {"code": "throttled", "message": "slow down"}}
            return JSONResponse(body, status_code=status, headers={"retry-after": retry_after})
        return JSONResponse({"outputs": [{"ok": True}], "model": "m", "version": "v"})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])]), calls


@pytest.mark.parametrize("status", [429, 503])
def test_retries_honour_retry_after(status: int) -> None:
    app, calls = _throttling_server(fail_times=2, status=status, retry_after="1")
    with serve_asgi(app) as url, aiaas.Client(url, timeout=10) as client:
        assert client.predict([{}]) == [{"ok": True}]
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.95 and calls[2] - calls[1] >= 0.95


def test_retries_stop_at_the_deadline() -> None:
    app, calls = _throttling_server(fail_times=100, status=429, retry_after="2")
    with serve_asgi(app) as url, aiaas.Client(url, timeout=3, max_retries=10) as client:
        started = time.monotonic()
        with pytest.raises(Throttled):
            client.predict([{}])
        assert time.monotonic() - started < 3.5
    assert len(calls) == 2  # a third wait of 2 s would pass the 3 s deadline


def test_unreachable_url_and_slow_server(tmp_path: Path) -> None:
    from conftest import free_port

    with (
        aiaas.Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client,
        pytest.raises(aiaas.AiaasError),
    ):
        client.predict([{}])

    async def slow(request: Request) -> Response:
        import asyncio

        await asyncio.sleep(3)
        return JSONResponse({"outputs": []})

    app = Starlette(routes=[Route("/predict", slow, methods=["POST"])])
    with (
        serve_asgi(app) as url,
        aiaas.Client(url, timeout=0.5) as client,
        pytest.raises(DeadlineExceeded),
    ):
        client.predict([{}])


def test_sustained_throttling_costs_one_call_per_call_and_says_the_client_retries() -> None:
    """Issue 16, item 18: under a callee that throttles every call, the retry budget (shared
    by the process's clients of one URL) stops retries after the first few, so thirty calls
    cost at most fifty requests (120 before: four attempts each). Every request says the
    client retries by itself, so the function does not retry for it too, and how much of
    the client's deadline is left."""
    seen: list[tuple[str | None, int]] = []

    async def predict(request: Request) -> Response:
        seen.append(
            (
                request.headers.get(CALLER_RETRIES_HEADER),
                int(request.headers.get(TIMEOUT_HEADER, "0")),
            )
        )
        body = {"error": {"code": "throttled", "message": "slow down"}}
        return JSONResponse(body, status_code=429, headers={"retry-after": "0"})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    with serve_asgi(app) as url:
        for _ in range(30):
            with aiaas.Client(url, timeout=10) as client, pytest.raises(Throttled):
                client.predict([{}])
    assert len(seen) <= 30 + CLIENT_ALLOWANCE, len(seen)
    assert all(flag == "1" and 0 < left <= 10_000 for flag, left in seen), seen
