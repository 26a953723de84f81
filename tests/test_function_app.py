"""The minimal function app in front of a real local deployment, over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import free_port

from adapters.local import LocalProvider
from aiaas.bundle import BuiltBundle
from aiaas.config import LocalSection
from functions.app import create_app


@pytest.fixture(scope="module")
def function_url(
    probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    state = tmp_path_factory.mktemp("state")
    provider = LocalProvider(LocalSection(state_dir=str(state)))
    provider.deploy(probe_bundle.path)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(provider, "probe"), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        provider.delete("probe")


def test_predict_returns_a_real_prediction(function_url: str) -> None:
    r = httpx.post(
        function_url + "/predict",
        json={"inputs": [{"value": 2.5}]},
        headers={"x-request-id": "fn-1"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["value"] == 5.0
    assert r.headers["x-request-id"] == "fn-1"
    assert httpx.get(function_url + "/health").json()["provider"] == "local"


def test_errors_pass_through_as_typed_json(function_url: str) -> None:
    r = httpx.post(function_url + "/predict", json={"inputs": [{"value": "x"}]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = httpx.post(function_url + "/predict", content=b"{oops")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = httpx.post(function_url + "/predict", content=b"x" * (6 * 1024 * 1024 + 1))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_missing_deployment_is_404(tmp_path: Path) -> None:
    app = create_app(LocalProvider(LocalSection(state_dir=str(tmp_path))), "ghost")
    from fastapi.testclient import TestClient

    r = TestClient(app).post("/predict", json={"inputs": [{"value": 1}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
