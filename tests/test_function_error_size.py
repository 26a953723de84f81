"""Error answers stay small and within the platform's response limit, like any answer.

A real function app (uvicorn on 127.0.0.1) in front of a real ``aiaas serve`` process running
a probe whose input model forbids extra keys (``additionalProperties: false`` in its JSON
Schema): fastjsonschema's message for that lists every unexpected key, as long as the request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import build_probe_variant, serve_asgi

from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from functions.app import FunctionApp
from functions.edge import ENVELOPE_RESERVE

FORBID = 'class ProbeIn(BaseModel):\n    model_config = {"extra": "forbid"}\n'


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalProvider, BuiltBundle]]:
    work: Path = tmp_path_factory.mktemp("strict")
    built = build_probe_variant(work, "class ProbeIn(BaseModel):\n", FORBID)
    assert built.manifest.input_schema.get("additionalProperties") is False
    provider = LocalProvider(state_dir=str(work / "state"))
    provider.deploy(built.path)
    try:
        yield provider, built
    finally:
        provider.delete("probe")


def _many_keys(size: int) -> bytes:
    """One item with unexpected keys filling about ``size`` bytes."""
    keys = ",".join(f'"k{i:09d}":0' for i in range(size // 15))
    return ('{"inputs":[{"value":1,' + keys + "}]}").encode()


@pytest.mark.parametrize("route", ["/predict", "/v2/models/probe/infer"])
def test_a_schema_error_listing_every_key_is_cut_short(
    strict: tuple[LocalProvider, BuiltBundle], route: str
) -> None:
    """Before: a 5.85 MB request got a 10.8 MB 422 (every key in the message, twice)."""
    provider, built = strict
    app = FunctionApp(provider.invoker, built.manifest, keys=None).asgi()
    body = _many_keys(5_850_000)
    if "infer" in route:  # an extra tensor named by 5 MB: an extra key of the item
        body = orjson.dumps(
            {"inputs": [{"name": "value", "shape": [1], "datatype": "FP32", "data": [1]},
                        {"name": "x" * 5_000_000, "shape": [1], "datatype": "INT64", "data": [0]}]}
        )  # fmt: skip
    with serve_asgi(app) as url:
        r = httpx.post(url + route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text[:300]
    assert len(r.content) < 2048, len(r.content)
    answer = r.json()
    message = answer["error"] if "infer" in route else answer["error"]["message"]
    assert "must not contain" in message and message.endswith("…")


def test_an_error_over_the_response_limit_keeps_its_status_without_details(
    strict: tuple[LocalProvider, BuiltBundle],
) -> None:
    """Before: error answers were never checked against the limit at all."""
    provider, built = strict
    limit = ENVELOPE_RESERVE + 600  # room for a short error, not for ten listed problems
    app = FunctionApp(provider.invoker, built.manifest, keys=None, max_response_bytes=limit).asgi()
    items = [{"value": "not a number " * 10} for _ in range(20)]
    with serve_asgi(app) as url:
        r = httpx.post(url + "/predict", json={"inputs": items})
        ok = httpx.post(url + "/predict", json={"inputs": [{"value": 1}]})
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "invalid_input" and "details" not in error, error
    assert error["message"].startswith("inputs[0].value") and len(r.content) <= 600
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("route", ["/invocations", "/v2/models/probe/infer"])
def test_the_model_server_cuts_a_huge_field_name_short_too(
    strict: tuple[LocalProvider, BuiltBundle], route: str
) -> None:
    """The model server validates with pydantic, whose ``loc`` of an unexpected key is the
    key itself: before, a 5 MB key came back twice in a 10 MB 422."""
    provider, _ = strict
    endpoint = provider.describe("probe").endpoint
    assert endpoint is not None
    body = orjson.dumps({"inputs": [{"value": 1, "x" * 5_000_000: 0}]})
    if "infer" in route:
        body = orjson.dumps(
            {"inputs": [{"name": "value", "shape": [1], "datatype": "FP32", "data": [1]},
                        {"name": "x" * 5_000_000, "shape": [1], "datatype": "INT64", "data": [0]}]}
        )  # fmt: skip
    r = httpx.post(endpoint + route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text[:300]
    assert len(r.content) < 2048, len(r.content)
