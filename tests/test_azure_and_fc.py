"""The Azure Functions and Alibaba FC 3.0 entrypoints, answered by a real local deployment.

Azure: ``azure.functions.HttpRequest`` objects through the registered ``AsgiFunctionApp``
function, as the Functions host calls it. FC: the custom runtime as a real process, over
HTTP on 127.0.0.1 (FC itself binds 0.0.0.0:9000; ``FC_SERVER_HOST``/``PORT`` move it).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import httpx
import pytest
from conftest import FunctionSetup, free_port, saturate

AzureCall = Callable[[bytes, dict[str, str]], func.HttpResponse]


@pytest.fixture(scope="module")
def azure(probe_function: FunctionSetup) -> Iterator[AzureCall]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in probe_function.env.items():
            mp.setenv(key, value)
        sys.modules.pop("functions.azure_functions", None)
        module = importlib.import_module("functions.azure_functions")
        function = module.app.get_functions()[0].get_user_function()

        def call(body: bytes, headers: dict[str, str]) -> func.HttpResponse:
            request = func.HttpRequest(
                method="POST", url="https://aiaas-fn.azurewebsites.net/predict",
                headers={"content-type": "application/json", **headers}, body=body,
                route_params={"route": "predict"},
            )  # fmt: skip
            response: func.HttpResponse = asyncio.run(function(request, None))
            return response

        try:
            yield call
        finally:
            sys.modules.pop("functions.azure_functions", None)


def _json(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


def test_azure_prediction(azure: AzureCall, probe_function: FunctionSetup) -> None:
    auth = {"authorization": f"Bearer {probe_function.api_key}", "x-request-id": "az-1"}
    response = azure(b'{"inputs": [{"value": 4}]}', auth)
    assert response.status_code == 200, response.get_body()
    assert _json(response)["outputs"][0]["value"] == 8.0
    assert response.headers["x-request-id"] == "az-1"


def test_azure_401_413_422_429(azure: AzureCall, probe_function: FunctionSetup) -> None:
    auth = {"x-api-key": probe_function.api_key}
    assert azure(b'{"inputs": [{"value": 4}]}', {}).status_code == 401
    big = b'{"inputs": [{"value": 1}], "pad": "' + b"x" * (100 * 1024 * 1024) + b'"}'
    response = azure(big, auth)
    assert response.status_code == 413 and _json(response)["error"]["code"] == "payload_too_large"
    response = azure(b'{"inputs": [{"valu": 4}]}', auth)
    assert (
        response.status_code == 422 and _json(response)["error"]["details"][0]["field"] == "value"
    )
    busy = saturate(probe_function.provider)
    response = azure(b'{"inputs": [{"value": 4}]}', auth)
    assert [bool(f.result().body) for f in busy] == [True, True]
    assert response.status_code == 429 and response.headers["retry-after"] == "1"


@pytest.fixture(scope="module")
def fc_url(probe_function: FunctionSetup) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        **probe_function.env,
        "FC_SERVER_HOST": "127.0.0.1",
        "FC_SERVER_PORT": str(port),
    }
    proc = subprocess.Popen([sys.executable, "-m", "functions.alibaba_fc"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                httpx.get(url + "/health", timeout=1.0)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "FC custom runtime did not start"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_fc_custom_runtime(fc_url: str, probe_function: FunctionSetup) -> None:
    auth = {"authorization": f"Bearer {probe_function.api_key}"}
    r = httpx.post(fc_url + "/predict", json={"inputs": [{"value": 5}]}, headers=auth)
    assert r.status_code == 200 and r.json()["outputs"][0]["value"] == 10.0
    assert httpx.post(fc_url + "/predict", json={"inputs": [{"value": 5}]}).status_code == 401
    r = httpx.post(fc_url + "/predict", json={"inputs": [{"value": []}]}, headers=auth)
    assert r.status_code == 422
    big = b'{"inputs": [{"value": 1}], "pad": "' + b"x" * (32 * 1024 * 1024) + b'"}'
    r = httpx.post(fc_url + "/predict", content=big, headers=auth, timeout=60)
    assert r.status_code == 413
    busy = saturate(probe_function.provider)
    r = httpx.post(fc_url + "/predict", json={"inputs": [{"value": 5}]}, headers=auth)
    assert [bool(f.result().body) for f in busy] == [True, True]
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
