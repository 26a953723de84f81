"""The real Lambda handler (Mangum + the function app, built from the environment as at
Lambda init) against a real local deployment: every answer fits Lambda's 6 MB response
limit, and keys from a file (``AIAAS_API_KEYS_FILE``) follow revocation while it is warm."""

from __future__ import annotations

import base64
import importlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import build_probe_variant, function_url_event

from adapters.local.provider import LocalProvider
from aiaas.config import load_config
from aiaas.manifest import MANIFEST_FILE
from functions.auth import RELOAD_INTERVAL_S, add_record, create_key, revoke_record

LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024
CONTEXT = SimpleNamespace(
    aws_request_id="req-1", function_name="aiaas", get_remaining_time_in_millis=lambda: 30000
)


@dataclass
class Lambda:
    handler: Any
    keys_file: Path
    key: str
    key_id: str

    def call(self, path: str, body: bytes, key: str | None = None) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {key or self.key}", "content-length": str(len(body))}
        event = function_url_event(body, path=path, headers=headers)
        response: dict[str, Any] = self.handler(event, CONTEXT)
        # What Lambda's runtime sends back, and what its 6 MB limit is counted on.
        assert len(json.dumps(response)) <= LAMBDA_RESPONSE_LIMIT
        return response


@pytest.fixture(scope="module")
def lam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lambda]:
    work = tmp_path_factory.mktemp("lambda")
    # A probe whose answer grows with its input: value v gives a salt of 2v characters.
    built = build_probe_variant(
        work,
        "salt=VERSION_SALT) for v in values.tolist()",
        "salt=VERSION_SALT * int(v)) for v in values.tolist()",
    )
    project = work / built.path.name.removesuffix(".tar.gz")
    provider = LocalProvider.from_config(load_config(project, env={}))
    (work / MANIFEST_FILE).write_text(built.manifest.model_dump_json())
    keys_file = work / "api-keys"  # as a mounted secret would be
    key, record = create_key()
    add_record(keys_file, record)
    env = {
        "AIAAS_CONFIG": str(project / "aiaas.yaml"),
        "AIAAS_MANIFEST": str(work / MANIFEST_FILE),
        "AIAAS_API_KEYS_FILE": str(keys_file),
    }
    try:  # the deploy too: a failure after it starts a server must still delete it
        provider.deploy(built.path)
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("AIAAS_API_KEYS", raising=False)
            for name, value in env.items():
                mp.setenv(name, value)
            sys.modules.pop("functions.aws_lambda", None)
            handler = importlib.import_module("functions.aws_lambda").handler
            yield Lambda(handler, keys_file, key, record.key_id)
    finally:
        sys.modules.pop("functions.aws_lambda", None)
        provider.delete("probe")


def test_a_model_answer_over_the_limit_becomes_a_small_clear_error(lam: Lambda) -> None:
    small = lam.call("/predict", b'{"inputs": [{"value": 1000}]}')
    assert small["statusCode"] == 200, small
    # 20 items of 400,000 characters each: an 8 MB answer from the model server.
    big = json.dumps({"inputs": [{"value": 200_000}] * 20}).encode()
    response = lam.call("/predict", big)
    assert response["statusCode"] == 502, str(response)[:300]
    error = json.loads(response["body"])["error"]
    assert error["code"] == "response_too_large" and "fewer items" in error["message"]
    assert len(response["body"]) < 1024


def test_amplifying_requests_get_small_answers(lam: Lambda) -> None:
    # 88 bytes of OIP asking for a million items (the 8.7 MB answer).
    oip = b'{"inputs":[{"name":"value","shape":[1000000,0],"datatype":"FP32","data":[]}]}'
    started = time.monotonic()
    response = lam.call("/v2/models/probe/infer", oip)
    assert 400 <= response["statusCode"] < 500 and len(response["body"]) < 4096, response
    assert time.monotonic() - started < 2.0
    # 100k invalid items (the 6.4 MB answer).
    many = json.dumps({"inputs": [{"value": "x"}] * 100_000}).encode()
    response = lam.call("/predict", many)
    assert response["statusCode"] == 413 and len(response["body"]) < 1024, response
    # Under the item limit, the listed problems are capped.
    some = json.dumps({"inputs": [{"value": "x"}] * 500}).encode()
    response = lam.call("/predict", some)
    assert response["statusCode"] == 422 and len(response["body"]) < 4096


def _salt_infer(value: int, binary: bool) -> bytes:
    """OIP infer of one item whose ``salt`` output is ``2 * value`` characters."""
    return json.dumps(
        {
            "inputs": [{"name": "value", "shape": [1], "datatype": "FP32", "data": [value]}],
            "outputs": [{"name": "salt", "parameters": {"binary_data": binary}}],
        }
    ).encode()


def test_a_binary_answer_counts_as_mangum_sends_it_in_base64(lam: Lambda) -> None:
    """Binary OIP answers (tritonclient's default) go back base64-encoded, 4 bytes per 3.
    Before: a 5.02 MB BYTES tensor was counted as 5.02 MB, passed, and Lambda got 6.69 MB."""
    response = lam.call("/v2/models/probe/infer", _salt_infer(2_510_000, binary=True))
    assert response["statusCode"] == 502, str(response)[:300]
    assert json.loads(response["body"])["code"] == "response_too_large"
    # The same answer as JSON text is 5.02 MB as Lambda counts it: it fits.
    response = lam.call("/v2/models/probe/infer", _salt_infer(2_510_000, binary=False))
    assert response["statusCode"] == 200, str(response)[:300]
    # A binary answer that fits in base64 comes back whole.
    response = lam.call("/v2/models/probe/infer", _salt_infer(2_200_000, binary=True))
    assert response["statusCode"] == 200 and response["isBase64Encoded"], str(response)[:300]
    assert len(base64.b64decode(response["body"])) > 4_400_000


def _until(bound_s: float, lam: Lambda, key: str, status: int) -> None:
    started = time.monotonic()
    body = b'{"inputs": [{"value": 1}]}'
    while lam.call("/predict", body, key)["statusCode"] != status:
        assert time.monotonic() - started < bound_s, f"not {status} within {bound_s:g}s"
        time.sleep(0.05)


def test_a_warm_handler_follows_its_key_file(lam: Lambda) -> None:
    bound = RELOAD_INTERVAL_S + 1.0  # the documented bound, plus a busy machine's slack
    _until(bound, lam, lam.key, 200)
    new_key, record = create_key()
    add_record(lam.keys_file, record)
    assert revoke_record(lam.keys_file, lam.key_id)
    _until(bound, lam, lam.key, 401)
    _until(bound, lam, new_key, 200)
