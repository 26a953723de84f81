"""A function whose invoke path cannot ask whether the deployment answers
(``DeploymentStatus.UNKNOWN``: a key-only Azure function cannot call ARM) is ready unless its
last call found the deployment unreachable, and says so without a cloud's own words.

The invoker is a stand-in written against the ``Invoker`` contract: no provider in this
repository answers ``UNKNOWN`` yet (Azure ML's key-only invoke path is the first), so the
contract is the only boundary there is to test at."""

from __future__ import annotations

from starlette.testclient import TestClient

from adapters.base import DeploymentStatus, Invoker, InvokeResult
from aiaas.bundle import BuiltBundle
from aiaas.config import ProjectConfig
from aiaas.errors import NotReady
from functions.app import FunctionApp


class KeyOnlyInvoker(Invoker):
    """Answers with the version given, or fails as an unreachable endpoint does."""

    name = "keyonly"

    def __init__(self, version: str) -> None:
        self.version = version
        self.reachable = True

    @classmethod
    def from_config(cls, config: ProjectConfig) -> KeyOnlyInvoker:
        raise NotImplementedError

    async def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        if not self.reachable:
            raise NotReady("scoring URI https://x.inference.ml.azure.com refused: account 42")
        answer = b'{"outputs":[{"value":2.0,"batch_size":1,"salt":"1"}],"model":"probe",'
        return InvokeResult(answer + f'"version":"{self.version}"}}'.encode(), self.version)

    def invoke_sync(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        raise NotImplementedError

    async def status(self, name: str) -> DeploymentStatus:
        return DeploymentStatus.UNKNOWN


def test_ready_until_a_call_does_not_reach_the_deployment(probe_bundle: BuiltBundle) -> None:
    invoker = KeyOnlyInvoker(probe_bundle.manifest.version)
    client = TestClient(FunctionApp(invoker, probe_bundle.manifest, keys=None).asgi())
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["deployment_status"] == "unknown"

    invoker.reachable = False
    assert client.post("/predict", json={"inputs": [{"value": 1}]}).status_code == 503
    not_ready = client.get("/v2/health/ready")
    assert not_ready.status_code == 503
    assert "did not reach it (not_ready)" in not_ready.text
    assert "azure.com" not in not_ready.text and "account" not in not_ready.text

    invoker.reachable = True  # the next call answers: ready again
    assert client.post("/predict", json={"inputs": [{"value": 1}]}).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
