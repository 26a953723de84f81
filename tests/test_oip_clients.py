"""Peer clients, unmodified and with their defaults, against both aiaas surfaces (issue 7, 14).

Triton's ``tritonclient.http`` and KServe's ``InferenceRESTClient`` send tensors as binary
tensor data by default (a JSON header, then raw little-endian bytes); ``tritonclient`` also
asks for binary outputs by default. Each client drives a real iris model server (started by
the local provider on 127.0.0.1) and a real function app in front of it (uvicorn, with an
API key that the clients pass as a header), and must read its own answers and surface our
errors as its own exceptions with our message.

Both packages are in the ``dev`` extra, installed whole (``pip install --dry-run`` showed
neither changes torch, numpy, pydantic, starlette or fastapi).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from conftest import serve_asgi

from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from functions.app import FunctionApp
from functions.auth import KeyChecker, create_key

if TYPE_CHECKING:
    from kserve import InferRequest

# The peers' clients are imported by their tests only: importing kserve and tritonclient
# costs about 0.9 s, which every collection (a `-k` run's too) would otherwise pay.

API_KEY, RECORD = create_key()
SURFACES = ["server", "function"]
FEATURES = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32
)


@pytest.fixture(scope="module")
def iris(
    build_example: Callable[[str], BuiltBundle], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[str, dict[str, str]]]]:
    """``{surface: (base URL, headers)}``: the iris model server and a function app (with
    an API key) forwarding to it."""
    bundle = build_example("iris")
    provider = LocalProvider(state_dir=str(tmp_path_factory.mktemp("clients")))
    deployment = provider.deploy(bundle.path)
    assert deployment.endpoint is not None
    keys = KeyChecker({RECORD.key_id: RECORD})
    app = FunctionApp(provider.invoker, bundle.manifest, keys=keys).asgi()
    try:
        with serve_asgi(app) as function_url:
            yield {
                "server": (deployment.endpoint, {}),
                "function": (function_url, {"authorization": f"Bearer {API_KEY}"}),
            }
    finally:
        provider.delete("iris")


def _expected(server_url: str) -> list[dict[str, Any]]:
    """The same features through the simple protocol: what the OIP answers must match."""
    inputs = [{"features": row} for row in FEATURES.tolist()]
    r = httpx.post(server_url + "/invocations", json={"inputs": inputs}, timeout=30)
    assert r.status_code == 200, r.text
    outputs: list[dict[str, Any]] = r.json()["outputs"]
    return outputs


@pytest.mark.parametrize("surface", SURFACES)
def test_tritonclient_with_its_defaults(
    iris: dict[str, tuple[str, dict[str, str]]], surface: str
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    url, auth = iris[surface]
    expected = _expected(iris["server"][0])
    client = triton.InferenceServerClient(url.removeprefix("http://"))

    def headers() -> dict[str, str]:
        # A new dict per call: infer() writes Inference-Header-Content-Length into the dict
        # it is given, which would carry one request's header length into the next call.
        return dict(auth)

    try:
        assert client.is_server_live(headers=headers())
        assert client.is_server_ready(headers=headers())
        assert client.is_model_ready("iris", headers=headers())
        meta = client.get_server_metadata(headers=headers())
        assert meta["name"] == "aiaas" and "binary_tensor_data" in meta["extensions"]
        model = client.get_model_metadata("iris", headers=headers())
        assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]

        # Defaults: the input goes as binary tensor data, every output comes back binary.
        features = triton.InferInput("features", list(FEATURES.shape), "FP32")
        features.set_data_from_numpy(FEATURES)
        result = client.infer("iris", [features], request_id="t1", headers=headers())
        answer = result.get_response()
        assert answer["id"] == "t1" and answer["model_name"] == "iris"
        assert all("binary_data_size" in out["parameters"] for out in answer["outputs"])
        labels = result.as_numpy("label")
        assert labels is not None
        assert [b.decode() for b in labels] == [e["label"] for e in expected]
        label_ids = result.as_numpy("label_id")
        assert label_ids is not None and label_ids.dtype == np.int64
        assert label_ids.tolist() == [e["label_id"] for e in expected]
        probabilities = result.as_numpy("probabilities")
        assert probabilities is not None and probabilities.shape == (3, 3)
        assert np.allclose(probabilities, [e["probabilities"] for e in expected], atol=1e-6)

        pending = client.async_infer("iris", [features], headers=headers())
        assert np.array_equal(pending.get_result().as_numpy("label_id"), label_ids)

        # One output asked for (binary by default), and JSON both ways when asked.
        only = client.infer(
            "iris", [features], outputs=[triton.InferRequestedOutput("label_id")], headers=headers()
        )
        assert [o["name"] for o in only.get_response()["outputs"]] == ["label_id"]
        as_json = triton.InferInput("features", list(FEATURES.shape), "FP32")
        as_json.set_data_from_numpy(FEATURES, binary_data=False)
        wanted = [triton.InferRequestedOutput("probabilities", binary_data=False)]
        plain = client.infer("iris", [as_json], outputs=wanted, headers=headers())
        assert "data" in plain.get_response()["outputs"][0]
        assert np.allclose(plain.as_numpy("probabilities"), probabilities, atol=1e-6)

        # Our errors surface as the client's own exception, with our message.
        short = triton.InferInput("features", [1, 3], "FP32")
        short.set_data_from_numpy(FEATURES[:1, :3])
        with pytest.raises(InferenceServerException) as caught:
            client.infer("iris", [short], headers=headers())
        assert caught.value.status() == "422"
        assert "instances[0].features" in str(caught.value.message())
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("nope", headers=headers())
        assert caught.value.status() == "404" and "not served here" in str(caught.value)
    finally:
        client.close()


@pytest.mark.parametrize("surface", SURFACES)
def test_kserve_rest_client_with_its_defaults(
    iris: dict[str, tuple[str, dict[str, str]]], surface: str
) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    url, headers = iris[surface]
    expected = _expected(iris["server"][0])

    def request(rows: np.ndarray[Any, Any], **parameters: Any) -> InferRequest:
        features = InferInput("features", list(rows.shape), "FP32")
        features.set_data_from_numpy(rows)  # default: binary tensor data
        return InferRequest("iris", [features], request_id="k1", parameters=parameters or None)

    async def drive() -> None:
        client = InferenceRESTClient(RESTConfig(protocol="v2"))  # v2 is the OIP
        try:
            assert await client.is_server_live(url, headers=headers)
            assert await client.is_server_ready(url, headers=headers)
            assert await client.is_model_ready(url, "iris", headers=headers)

            answer = await client.infer(url, request(FEATURES), "iris", headers=dict(headers))
            assert not isinstance(answer, dict)
            outputs = {out.name: out for out in answer.outputs}
            assert outputs["label"].data == [e["label"] for e in expected]
            assert outputs["label_id"].data == [e["label_id"] for e in expected]
            probabilities = outputs["probabilities"].as_numpy()
            assert np.allclose(probabilities, [e["probabilities"] for e in expected], atol=1e-6)

            # Binary outputs when asked for with the request parameter.
            answer = await client.infer(
                url, request(FEATURES, binary_data_output=True), "iris", headers=dict(headers)
            )
            assert not isinstance(answer, dict)
            binary = {out.name: out for out in answer.outputs}
            assert binary["label"].data == [e["label"] for e in expected]
            assert np.allclose(binary["probabilities"].as_numpy(), probabilities, atol=1e-6)

            with pytest.raises(httpx.HTTPStatusError) as caught:
                await client.infer(url, request(FEATURES[:1, :3]), "iris", headers=dict(headers))
            assert caught.value.response.status_code == 422
            assert "instances[0].features" in str(caught.value)
        finally:
            await client.close()

    asyncio.run(drive())
