"""The function app in front of a real local deployment, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import serve_asgi

from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from aiaas.errors import NotReady
from functions.app import FunctionApp
from functions.auth import KeyChecker, create_key

API_KEY, RECORD = create_key()
AUTH = {"authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def function_url(
    probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    state = tmp_path_factory.mktemp("state")
    provider = LocalProvider(state_dir=str(state))
    provider.deploy(probe_bundle.path)
    app = FunctionApp(
        provider.invoker,
        probe_bundle.manifest,
        keys=KeyChecker({RECORD.key_id: RECORD}),
        max_body_bytes=4096,
    ).asgi()
    try:
        with serve_asgi(app) as url:
            yield url
    finally:
        provider.delete("probe")


def test_predict_returns_a_real_prediction(function_url: str) -> None:
    headers = {**AUTH, "x-request-id": "fn-1"}
    r = httpx.post(function_url + "/predict", json={"inputs": [{"value": 2.5}]}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["value"] == 5.0
    assert r.headers["x-request-id"] == "fn-1"
    r = httpx.post(
        function_url + "/predict", json={"inputs": [{"value": 1}]}, headers={"x-api-key": API_KEY}
    )
    assert r.status_code == 200


def test_missing_or_wrong_key_is_401_without_saying_which(function_url: str) -> None:
    wrong = API_KEY[:-4] + "abcd"
    bodies = []
    for headers in (
        {},
        {"authorization": f"Bearer {wrong}"},
        {"x-api-key": "aiaas_nope_nope"},
        {"authorization": "Basic x"},
    ):
        r = httpx.post(function_url + "/predict", json={"inputs": [{"value": 1}]}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        bodies.append({**r.json()["error"], "request_id": None})
    assert all(b == bodies[0] for b in bodies)
    assert httpx.get(function_url + "/health").status_code == 200  # health needs no key


def test_edge_validation_rejects_before_forwarding(function_url: str) -> None:
    r = httpx.post(
        function_url + "/predict", json={"inputs": [{"value": 1}, {"value": "x"}]}, headers=AUTH
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_input" and err["message"].startswith("inputs[1].value:")
    r = httpx.post(function_url + "/predict", json={"inputs": [{"valu": 1}]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "value"
    r = httpx.post(function_url + "/predict", content=b"{oops", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = httpx.post(function_url + "/predict", content=b"x" * 5000, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_model_error_is_502_with_the_models_message(function_url: str) -> None:
    r = httpx.post(
        function_url + "/predict", json={"inputs": [{"value": 1, "fail": True}]}, headers=AUTH
    )
    assert r.status_code == 502
    assert "probe was asked to fail" in r.json()["error"]["message"]


def test_oip_routes(function_url: str, probe_bundle: BuiltBundle) -> None:
    meta = httpx.get(function_url + "/v2/models/probe", headers=AUTH).json()
    assert meta["versions"] == [probe_bundle.manifest.version]
    request = {"inputs": [{"name": "value", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}
    r = httpx.post(function_url + "/v2/models/probe/infer", json=request, headers=AUTH)
    assert r.status_code == 200, r.text
    assert {t["name"]: t["data"] for t in r.json()["outputs"]}["value"] == [2.0, 4.0]
    assert (
        httpx.post(function_url + "/v2/models/nope/infer", json=request, headers=AUTH).status_code
        == 404
    )
    assert httpx.get(function_url + "/v2/models/probe/ready", headers=AUTH).status_code == 200
    assert httpx.get(function_url + "/v2/health/live").status_code == 200


def test_openapi_carries_the_models_schemas(function_url: str) -> None:
    doc = httpx.get(function_url + "/openapi.json").json()
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    ref = body["properties"]["inputs"]["items"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["required"] == ["value"] and schema["properties"]["value"]["type"] == "number"


def test_missing_deployment_is_503(tmp_path: Path, probe_bundle: BuiltBundle) -> None:
    from starlette.testclient import TestClient

    provider = LocalProvider(state_dir=str(tmp_path))
    app = FunctionApp(
        provider.invoker, probe_bundle.manifest, keys=None
    ).asgi()  # platform auth: no key needed
    client = TestClient(app)
    r = client.post("/predict", json={"inputs": [{"value": 1}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == NotReady.code
    assert r.headers["retry-after"] == "30"  # gone: back within a deploy, if at all
    ready = client.get("/v2/health/ready")  # the route exists: not ready, not 404
    assert ready.status_code == 503 and ready.headers["retry-after"] == "30"


def test_oip_routes_answer_errors_in_the_oip_shape(function_url: str) -> None:
    """OIP clients (tritonclient, KServe) read ``{"error": "<string>"}`` on /v2 routes."""
    request = {"inputs": [{"name": "value", "shape": [1], "datatype": "FP32", "data": [1]}]}
    r = httpx.post(function_url + "/v2/models/probe/infer", json=request)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "missing or invalid API key"
    assert r.json()["code"] == "unauthorized" and r.json()["request_id"]
    r = httpx.post(function_url + "/v2/models/nope/infer", json=request, headers=AUTH)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    bad = {"inputs": [{"name": "value", "shape": [1], "datatype": "FP32", "data": ["x"]}]}
    r = httpx.post(function_url + "/v2/models/probe/infer", json=bad, headers=AUTH)
    assert r.status_code in (400, 422) and isinstance(r.json()["error"], str), r.text
    fail = {
        "inputs": [
            {"name": "value", "shape": [1], "datatype": "FP32", "data": [1]},
            {"name": "fail", "shape": [1], "datatype": "BOOL", "data": [True]},
        ]
    }
    r = httpx.post(function_url + "/v2/models/probe/infer", json=fail, headers=AUTH)
    assert r.status_code == 502 and "probe was asked to fail" in r.json()["error"]
    assert r.json()["code"] == "model_error"
    r = httpx.get(function_url + "/v2/models/nope", headers=AUTH)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    # The simple protocol keeps aiaas's own shape.
    r = httpx.post(function_url + "/predict", json={"inputs": [{"value": 1}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_openapi_describes_the_oip_infer_body_and_the_refusals(function_url: str) -> None:
    import fastjsonschema

    doc = httpx.get(function_url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        op = doc["paths"][path]["post"]
        content = op["requestBody"]["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/InferRequest"}
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/InferResponse"}
        for status in ("413", "415", "422"):
            error = op["responses"][status]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/OipError"}
    for status in ("413", "415", "422"):
        error = doc["paths"]["/predict"]["post"]["responses"][status]["content"]
        assert error["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    tensor = schemas["InferRequestInput"]
    assert tensor["required"] == ["name", "shape", "datatype", "data"]
    assert "FP32" in tensor["properties"]["datatype"]["enum"]

    # The documented example is a request the route accepts, and its answer has the
    # documented shape (both checked with the document's own schemas).
    example = doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"][
        "application/json"
    ]["example"]
    resolver = {"components": doc["components"]}
    check_request = fastjsonschema.compile(
        {**resolver, "$ref": "#/components/schemas/InferRequest"}
    )
    check_response = fastjsonschema.compile(
        {**resolver, "$ref": "#/components/schemas/InferResponse"}
    )
    check_request(example)
    r = httpx.post(function_url + "/v2/models/probe/infer", json=example, headers=AUTH)
    assert r.status_code == 200, r.text
    check_response(r.json())
