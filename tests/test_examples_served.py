"""Each example model behind every route of a real model server process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import ServerProcess

from aiaas import oip
from aiaas.bundle import BuiltBundle

EXAMPLES = ["minilm", "iris", "digits"]
SIMPLE_PATHS = ["/invocations", "/score", "/", "/api/predict/svc"]
HEALTH_PATHS = ["/ping", "/", "/ready", "/v2/health/live", "/v2/health/ready"]

# What one result of each example must look like.
RESULT_CHECKS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "minilm": lambda r: (
        len(r["embedding"]) == 384 and abs(sum(v * v for v in r["embedding"]) - 1) < 1e-4
    ),
    "iris": lambda r: (
        r["label"] in ("setosa", "versicolor", "virginica")
        and abs(sum(r["probabilities"]) - 1) < 1e-4
    ),
    "digits": lambda r: 0 <= r["digit"] <= 9 and len(r["probabilities"]) == 10,
}


@pytest.fixture(scope="module", params=EXAMPLES)
def served(
    request: pytest.FixtureRequest,
    build_example: Callable[[str], BuiltBundle],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, BuiltBundle, ServerProcess]]:
    name: str = request.param
    bundle = build_example(name)
    log = tmp_path_factory.mktemp(f"serve-{name}") / "server.log"
    server = ServerProcess(bundle.path, log, [], {})
    try:
        yield name, bundle, server.wait_ready()
    finally:
        server.stop()


def test_every_health_route(served: tuple[str, BuiltBundle, ServerProcess]) -> None:
    name, _, server = served
    for path in [*HEALTH_PATHS, f"/v2/models/{name}/ready"]:
        assert httpx.get(server.url + path).status_code == 200, path


def test_simple_protocol_on_every_path(served: tuple[str, BuiltBundle, ServerProcess]) -> None:
    name, bundle, server = served
    example = bundle.manifest.example_request
    for path in SIMPLE_PATHS:
        r = httpx.post(server.url + path, json=example, timeout=30)
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        assert body["model"] == name and body["version"] == bundle.manifest.version
        assert RESULT_CHECKS[name](body["outputs"][0]), body["outputs"][0]


def test_batch_of_items_equals_items_alone(served: tuple[str, BuiltBundle, ServerProcess]) -> None:
    _, bundle, server = served
    item = bundle.manifest.example_request["inputs"][0]
    alone = httpx.post(server.url + "/invocations", json={"inputs": [item]}).json()["outputs"][0]
    three = httpx.post(server.url + "/invocations", json={"inputs": [item] * 3}).json()["outputs"]
    assert len(three) == 3
    for out in three:
        for key, value in alone.items():
            if isinstance(value, list):
                assert max(abs(a - b) for a, b in zip(out[key], value, strict=True)) < 1e-4
            else:
                assert out[key] == value


def test_oip_metadata_and_infer(served: tuple[str, BuiltBundle, ServerProcess]) -> None:
    name, bundle, server = served
    meta = httpx.get(server.url + f"/v2/models/{name}").json()
    assert meta["name"] == name and meta["versions"] == [bundle.manifest.version]
    assert meta["inputs"] == oip.tensor_metadata(bundle.manifest.input_schema)
    item = bundle.manifest.example_request["inputs"][0]
    tensors = []
    for spec in meta["inputs"]:
        value = item[spec["name"]]
        shape = [2, len(value)] if isinstance(value, list) else [2]
        data = [value, value]
        tensors.append(
            {"name": spec["name"], "shape": shape, "datatype": spec["datatype"], "data": data}
        )
    r = httpx.post(
        server.url + f"/v2/models/{name}/infer", json={"id": "x1", "inputs": tensors}, timeout=30
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "x1" and body["model_version"] == bundle.manifest.version
    names = {t["name"] for t in body["outputs"]}
    assert names == {t["name"] for t in meta["outputs"]}
    assert all(t["shape"][0] == 2 for t in body["outputs"])


def test_schema_violation_names_the_field(served: tuple[str, BuiltBundle, ServerProcess]) -> None:
    _, bundle, server = served
    item = dict(bundle.manifest.example_request["inputs"][0])
    field = next(iter(bundle.manifest.input_schema["properties"]))
    item[field] = {"not": "valid"}
    r = httpx.post(
        server.url + "/invocations",
        json={"inputs": [bundle.manifest.example_request["inputs"][0], item]},
    )
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith(f"inputs[1].{field}")


def test_metrics_count_the_requests(served: tuple[str, BuiltBundle, ServerProcess]) -> None:
    _, bundle, server = served

    def count() -> float:
        text = httpx.get(server.url + "/metrics").text
        line = 'aiaas_requests_total{route="/invocations",status="200"} '
        return sum(float(ln[len(line) :]) for ln in text.splitlines() if ln.startswith(line))

    before = count()
    httpx.post(server.url + "/invocations", json=bundle.manifest.example_request, timeout=30)
    assert count() == before + 1
