"""The function app records the version its invoke path says answered, on both surfaces.

The invoke path here is a scripted :class:`adapters.base.Invoker`: a cloud's invoke path
reads the version from the cloud's answer (e.g. a response header), which no provider
installed here does; the real local path is tested end to end elsewhere
(test_function_serve.py, the conformance suite).
"""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from adapters.base import DeploymentStatus, Invoker, InvokeResult
from aiaas.bundle import BuiltBundle
from functions.app import FunctionApp
from functions.metering import UsageRecord


class ScriptedInvoker(Invoker):
    name = "scripted"

    def __init__(self, body: bytes, version: str | None) -> None:
        self.result = InvokeResult(body, version)

    @classmethod
    def from_config(cls, config: Any) -> Invoker:
        raise NotImplementedError

    async def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        return self.result

    def invoke_sync(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        return self.result

    async def status(self, name: str) -> DeploymentStatus:
        return DeploymentStatus.READY


class ListSink:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def record(self, usage: UsageRecord) -> None:
        self.records.append(usage)


OUTPUT = b'{"outputs": [{"value": 2.0, "batch_size": 1, "salt": "1"}]}'  # no "version" in it


def test_the_invokers_version_is_the_one_recorded_and_answered(probe_bundle: BuiltBundle) -> None:
    sink = ListSink()
    app = FunctionApp(
        ScriptedInvoker(OUTPUT, "v-from-the-cloud"), probe_bundle.manifest, usage=sink
    ).asgi()
    client = TestClient(app)
    assert client.post("/predict", json={"inputs": [{"value": 1}]}).status_code == 200
    infer = {"inputs": [{"name": "value", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    r = client.post("/v2/models/probe/infer", json=infer)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "v-from-the-cloud"
    assert [rec.version for rec in sink.records] == ["v-from-the-cloud"] * 2


def test_an_answer_without_outputs_is_a_502_not_a_500(probe_bundle: BuiltBundle) -> None:
    app = FunctionApp(ScriptedInvoker(b'{"nothing": 1}', None), probe_bundle.manifest).asgi()
    infer = {"inputs": [{"name": "value", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    r = TestClient(app).post("/v2/models/probe/infer", json=infer)
    assert r.status_code == 502 and "holds no outputs" in r.json()["error"], r.text
