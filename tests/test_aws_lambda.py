"""The Lambda entrypoint driven with real event shapes (function URL payload 2.0 and API
Gateway HTTP API), answered by a real local deployment of the probe model."""

from __future__ import annotations

import base64
import copy
import importlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import PROJECTS

from adapters.local import LocalProvider
from aiaas.bundle import BuiltBundle, build_bundle
from aiaas.config import load_config
from aiaas.manifest import MANIFEST_FILE
from functions.auth import create_key

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lambda"
API_KEY, RECORD = create_key()
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Handler]:
    # A project whose server has a one-item queue, so concurrent calls get throttled.
    work = tmp_path_factory.mktemp("lambda")
    project = work / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(
        "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
        "server:\n  max_queue_size: 1\n"
    )
    built: BuiltBundle = build_bundle(project, work / "probe.tar.gz")
    (work / MANIFEST_FILE).write_text(built.manifest.model_dump_json())
    provider = LocalProvider.from_config(load_config(project, env={}))
    provider.deploy(built.path)
    env = {"AIAAS_CONFIG": str(project / "aiaas.yaml"), "AIAAS_MANIFEST": str(work / MANIFEST_FILE),
           "AIAAS_API_KEYS": str(RECORD)}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        sys.modules.pop("functions.aws_lambda", None)
        module = importlib.import_module("functions.aws_lambda")
        try:
            yield module.handler
        finally:
            provider.delete("probe")
            sys.modules.pop("functions.aws_lambda", None)


def _event(
    fixture: str, body: bytes, *, key: str | None = API_KEY, base64_body: bool = False
) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(json.loads((FIXTURES / fixture).read_text()))
    if key is not None:
        event["headers"]["authorization"] = f"Bearer {key}"
    event["headers"]["content-length"] = str(len(body))
    event["body"] = base64.b64encode(body).decode() if base64_body else body.decode()
    event["isBase64Encoded"] = base64_body
    return event


CONTEXT = SimpleNamespace(
    aws_request_id="req-1", function_name="aiaas", get_remaining_time_in_millis=lambda: 30000
)
FIXTURE_NAMES = ["function_url_v2.json", "apigw_http_api_v2.json"]


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
@pytest.mark.parametrize("base64_body", [False, True])
def test_prediction_through_the_event(handler: Handler, fixture: str, base64_body: bool) -> None:
    event = _event(fixture, b'{"inputs": [{"value": 21}]}', base64_body=base64_body)
    response = handler(event, CONTEXT)
    assert response["statusCode"] == 200, response
    body = json.loads(response["body"])
    assert body["outputs"][0]["value"] == 42.0 and body["model"] == "probe"
    assert response["headers"]["x-request-id"]


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_401_413_422(handler: Handler, fixture: str) -> None:
    assert (
        handler(_event(fixture, b'{"inputs": [{"value": 1}]}', key=None), CONTEXT)["statusCode"]
        == 401
    )
    assert (
        handler(_event(fixture, b'{"inputs": [{"value": 1}]}', key=API_KEY + "x"), CONTEXT)[
            "statusCode"
        ]
        == 401
    )
    too_big = b'{"inputs": [{"value": 1}], "pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    response = handler(_event(fixture, too_big), CONTEXT)
    assert (
        response["statusCode"] == 413
        and json.loads(response["body"])["error"]["code"] == "payload_too_large"
    )
    response = handler(_event(fixture, b'{"inputs": [{"value": "x"}]}'), CONTEXT)
    assert response["statusCode"] == 422
    assert json.loads(response["body"])["error"]["message"].startswith("inputs[0].value")


def test_429_with_retry_after_when_the_endpoint_is_saturated(handler: Handler) -> None:
    # Lambda runs one event at a time per instance (Mangum is not thread-safe), so other
    # callers fill the endpoint's one running slot and one queue slot directly.
    import os
    import time

    provider = LocalProvider.from_config(load_config(os.environ["AIAAS_CONFIG"], env={}))
    slow = b'{"inputs": [{"value": 1, "sleep_ms": 1500}]}'
    with ThreadPoolExecutor(2) as pool:
        busy = [pool.submit(provider.invoke, "probe", slow) for _ in range(2)]
        time.sleep(0.5)
        response = handler(_event("function_url_v2.json", b'{"inputs": [{"value": 1}]}'), CONTEXT)
        assert all(json.loads(f.result())["outputs"] for f in busy)
    assert response["statusCode"] == 429, response
    assert response["headers"]["retry-after"] == "1"
    assert json.loads(response["body"])["error"]["code"] == "overloaded"
