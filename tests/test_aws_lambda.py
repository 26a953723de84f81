"""The Lambda entrypoint driven with real event shapes (function URL payload 2.0 and API
Gateway HTTP API), answered by a real local deployment of the probe model."""

from __future__ import annotations

import base64
import copy
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import FunctionSetup, saturate

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lambda"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture(scope="module")
def handler(probe_function: FunctionSetup) -> Iterator[Handler]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in probe_function.env.items():
            mp.setenv(key, value)
        sys.modules.pop("functions.aws_lambda", None)
        try:
            yield importlib.import_module("functions.aws_lambda").handler
        finally:
            sys.modules.pop("functions.aws_lambda", None)


@pytest.fixture(scope="module")
def api_key(probe_function: FunctionSetup) -> str:
    return probe_function.api_key


def _event(
    fixture: str, body: bytes, *, key: str | None, base64_body: bool = False
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
def test_prediction_through_the_event(
    handler: Handler, api_key: str, fixture: str, base64_body: bool
) -> None:
    event = _event(fixture, b'{"inputs": [{"value": 21}]}', key=api_key, base64_body=base64_body)
    response = handler(event, CONTEXT)
    assert response["statusCode"] == 200, response
    body = json.loads(response["body"])
    assert body["outputs"][0]["value"] == 42.0 and body["model"] == "probe"
    assert response["headers"]["x-request-id"]


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_401_413_422(handler: Handler, api_key: str, fixture: str) -> None:
    assert (
        handler(_event(fixture, b'{"inputs": [{"value": 1}]}', key=None), CONTEXT)["statusCode"]
        == 401
    )
    assert (
        handler(_event(fixture, b'{"inputs": [{"value": 1}]}', key=api_key + "x"), CONTEXT)[
            "statusCode"
        ]
        == 401
    )
    too_big = b'{"inputs": [{"value": 1}], "pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    response = handler(_event(fixture, too_big, key=api_key), CONTEXT)
    assert (
        response["statusCode"] == 413
        and json.loads(response["body"])["error"]["code"] == "payload_too_large"
    )
    response = handler(_event(fixture, b'{"inputs": [{"value": "x"}]}', key=api_key), CONTEXT)
    assert response["statusCode"] == 422
    assert json.loads(response["body"])["error"]["message"].startswith("inputs[0].value")


def test_429_with_retry_after_when_the_endpoint_is_saturated(
    handler: Handler, probe_function: FunctionSetup
) -> None:
    # Lambda runs one event at a time per instance (Mangum is not thread-safe), so other
    # callers fill the endpoint's one running slot and its one queue slot.
    busy = saturate(probe_function.provider)
    response = handler(
        _event("function_url_v2.json", b'{"inputs": [{"value": 1}]}', key=probe_function.api_key),
        CONTEXT,
    )
    assert all(json.loads(f.result().body)["outputs"] for f in busy)
    assert response["statusCode"] == 429, response
    assert response["headers"]["retry-after"] == "1"
    assert json.loads(response["body"])["error"]["code"] == "overloaded"
