"""Real traffic through the function tier (issue 16, items 17-25): the real Lambda handler
(``functions.aws_lambda``, built from the environment as at Lambda init) in front of a probe
deployed on the emulated SageMaker, with faults scripted in the runtime emulator and the
upstream calls counted where they arrive (``runtime_calls``). One deployment for the module.

What is asserted is what a caller and an operator see: statuses, error codes, headers, what
reached the log, how many calls SageMaker got. No timing bound is tight: the deadline tests
only check that an answer came before a slow upstream's (seconds apart)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib
import json
import logging
import struct
import sys
import time
from collections.abc import Iterator, MutableMapping
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import function_url_event
from sagemaker_emulated import deployed_probe

from adapters.base import DeploymentStatus, Invoker, InvokeResult
from aiaas import oip
from aiaas.manifest import MANIFEST_FILE
from aiaas.retry import CALLER_RETRIES_HEADER, TIMEOUT_HEADER, RetryBudget
from emulators.aws import AwsEmulator
from functions.app import CLIENT_CLOSED, FunctionApp, redact
from functions.metering import UsageRecord

EXAMPLE = b'{"inputs": [{"value": 3}]}'


@dataclasses.dataclass
class Lambda:
    """The Lambda handler and the emulators behind it."""

    handler: Any
    aws: AwsEmulator

    @property
    def function(self) -> FunctionApp:
        app: FunctionApp = self.handler.app.state.function
        return app

    def fresh_budget(self) -> None:
        """A new retry budget for the function's invoker (what a new Lambda instance has):
        each test starts from no history, whatever ran before it."""
        invoker: Any = self.function.invoker
        invoker.retry = dataclasses.replace(invoker.retry, budget=RetryBudget())

    def call(
        self,
        path: str = "/predict",
        body: bytes = EXAMPLE,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        remaining_ms: int = 30_000,
        binary: bool = False,
    ) -> dict[str, Any]:
        """One function URL invocation; ``remaining_ms``: the Lambda context's time left."""
        if binary:
            event = function_url_event(base64.b64encode(body), path=path, method=method,
                                       headers=headers)  # fmt: skip
            event["isBase64Encoded"] = True
        else:
            event = function_url_event(body, path=path, method=method, headers=headers)
        ends = time.monotonic() + remaining_ms / 1000
        context = SimpleNamespace(
            aws_request_id="req",
            function_name="aiaas",
            get_remaining_time_in_millis=lambda: max(0, int((ends - time.monotonic()) * 1000)),
        )
        response: dict[str, Any] = self.handler(event, context)
        return response

    def upstream_calls(self, mark: int) -> int:
        return len([c for c in self.aws.runtime_calls[mark:] if c.endpoint == "probe"])


@pytest.fixture(scope="module")
def lam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lambda]:
    work = tmp_path_factory.mktemp("function-traffic")
    extra = "function:\n  auth: platform\n"
    with deployed_probe(work, "traffic", extra) as (emulator, mp, project, bundle):
        (work / MANIFEST_FILE).write_text(bundle.manifest.model_dump_json())
        mp.setenv("AIAAS_CONFIG", str(project / "aiaas.yaml"))
        mp.setenv("AIAAS_MANIFEST", str(work / MANIFEST_FILE))
        sys.modules.pop("functions.aws_lambda", None)
        try:
            yield Lambda(importlib.import_module("functions.aws_lambda").handler, emulator)
        finally:
            sys.modules.pop("functions.aws_lambda", None)


@pytest.fixture
def fn(lam: Lambda) -> Iterator[Lambda]:
    lam.aws.clear_faults()
    lam.fresh_budget()
    yield lam
    lam.aws.clear_faults()


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(response["body"])["error"]
    return error


# -- item 17: SageMaker's own failures are a 503 with Retry-After --------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_sagemakers_own_failure_reaches_the_caller_as_503_with_retry_after(
    fn: Lambda, status: int
) -> None:
    fn.aws.fault("probe", status)
    mark = len(fn.aws.runtime_calls)
    response = fn.call()
    assert response["statusCode"] == 503, response
    assert int(response["headers"]["retry-after"]) >= 1
    assert error_of(response)["code"] == "unavailable"
    assert fn.upstream_calls(mark) >= 2  # a transient failure is retried (within the budget)
    fn.fresh_budget()  # (the spent one would not retry: the window holds no success)
    fn.aws.fault("probe", status, times=1)  # one failure, then SageMaker answers
    assert fn.call()["statusCode"] == 200


# -- item 18: retries do not multiply load -------------------------------------------------


def test_a_caller_that_retries_gets_one_upstream_call_and_the_back_off(fn: Lambda) -> None:
    fn.aws.fault("probe", 400, code="ThrottlingException")
    mark = len(fn.aws.runtime_calls)
    for _ in range(5):
        response = fn.call(headers={CALLER_RETRIES_HEADER: "1"})
        assert response["statusCode"] == 429, response
        assert int(response["headers"]["retry-after"]) >= 1
    assert fn.upstream_calls(mark) == 5  # one each: the caller retries, the function does not


def test_under_sustained_throttling_the_retry_budget_stops_retries(fn: Lambda) -> None:
    """Callers that do not retry: the first calls are retried, then the budget (no success
    in its window) stops retries, and each call costs one upstream call (4 each before)."""
    fn.aws.fault("probe", 400, code="ThrottlingException")
    mark = len(fn.aws.runtime_calls)
    statuses = [fn.call()["statusCode"] for _ in range(10)]
    assert statuses == [429] * 10
    assert fn.upstream_calls(mark) <= 10 + RetryBudget().allowance


# -- item 19: the cloud's text goes to the log only ----------------------------------------


@pytest.mark.parametrize(
    ("status", "aws_text"),
    [(500, "An internal failure occurred."), (424, "Received server error from primary.")],
)
def test_aws_error_text_reaches_the_log_not_the_caller(
    fn: Lambda, caplog: pytest.LogCaptureFixture, status: int, aws_text: str
) -> None:
    fn.aws.fault("probe", status)
    with caplog.at_level(logging.WARNING, logger="aiaas.function"):
        response = fn.call(headers={"x-request-id": "traffic-19"})
    error = error_of(response)
    assert aws_text not in response["body"]
    assert error["request_id"] == "traffic-19" and error["code"] in ("unavailable", "model_error")
    logged = [r.getMessage() for r in caplog.records if "traffic-19" in r.getMessage()]
    assert any(aws_text in line for line in logged), logged


def test_credentials_in_a_clouds_text_are_redacted_before_the_log() -> None:
    text = (
        "Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/sagemaker/aws4_request, "
        "Signature=0123456789abcdef0123456789abcdef x-amz-security-token:FQoGZXIvYXdzEXAMPLE"
        " Authorization: Bearer abc.def.ghi"
    )
    said = redact(text)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "0123456789abcdef0123", "FQoGZXIv", "abc.def.ghi"):
        assert secret not in said, said
    assert said.count("[redacted]") >= 4


# -- item 21: deadlines ----------------------------------------------------------------------


def test_the_lambda_contexts_remaining_time_bounds_the_call(fn: Lambda) -> None:
    """function.invoke_timeout_s is 30 s; the invocation has 1.5 s left: the caller gets a
    504 when those run out, not SageMaker's answer 4 s later (nor Lambda's own timeout)."""
    fn.aws.fault("probe", 200, times=1, delay_s=4.0)
    started = time.monotonic()
    response = fn.call(remaining_ms=1500)
    assert response["statusCode"] == 504, response
    assert time.monotonic() - started < 3.5  # before the slow answer (4 s), by far


def test_the_callers_own_deadline_bounds_the_call(fn: Lambda) -> None:
    fn.aws.fault("probe", 200, times=1, delay_s=4.0)
    started = time.monotonic()
    response = fn.call(headers={TIMEOUT_HEADER: "1000"})
    assert response["statusCode"] == 504, response
    assert time.monotonic() - started < 3.5


def test_a_malformed_caller_deadline_is_a_400_naming_the_header(fn: Lambda) -> None:
    response = fn.call(headers={TIMEOUT_HEADER: "1.5"})
    assert response["statusCode"] == 400, response
    message = json.loads(response["body"])["error"]["message"]
    assert TIMEOUT_HEADER in message and "milliseconds" in message, message


# -- item 22: binary tensors are sized before they are decoded ------------------------------


def test_a_binary_tensor_too_large_as_json_is_refused_before_it_is_decoded(
    fn: Lambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real = oip._values_from_bytes

    def counting(*args: Any) -> list[Any]:
        decoded.append(1)
        return real(*args)

    monkeypatch.setattr(oip, "_values_from_bytes", counting)
    count = 3_100_000  # 6.2 MB of FP16: under Lambda's 6 MB body limit, 12 MB as JSON
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "value",
                    "shape": [1, count],
                    "datatype": "FP16",
                    "parameters": {"binary_data_size": 2 * count},
                }
            ]
        }
    ).encode()
    body = header + struct.pack("<e", 0.5) * count
    mark = len(fn.aws.runtime_calls)
    response = fn.call(
        "/v2/models/probe/infer",
        body,
        headers={
            "content-type": "application/octet-stream",
            oip.HEADER_LENGTH: str(len(header)),
        },
        binary=True,
    )
    assert response["statusCode"] == 413, response["body"][:300]
    assert decoded == [] and fn.upstream_calls(mark) == 0


# -- item 24: request ids -----------------------------------------------------------------


def test_a_request_id_that_is_not_printable_ascii_is_refused_with_400(fn: Lambda) -> None:
    mark = len(fn.aws.runtime_calls)
    for given in ("rêqª-1", "req\t1"):
        response = fn.call(headers={"x-request-id": given})
        assert response["statusCode"] == 400, response
        error = error_of(response)
        assert error["code"] == "bad_request" and "x-request-id" in error["message"]
        assert response["headers"]["x-request-id"].isascii()
    assert fn.upstream_calls(mark) == 0
    assert fn.call(headers={"x-request-id": "req-1"})["statusCode"] == 200


# -- item 25: readiness --------------------------------------------------------------------


def test_readiness_asks_the_control_plane_at_most_every_few_seconds(
    fn: Lambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    def describes() -> int:
        return len([c for c in fn.aws.calls if c.action == "DescribeEndpoint"])

    fn.aws.refuse_next("sagemaker", "DescribeEndpoint", "ThrottlingException", "Rate exceeded")
    throttled = fn.call("/v2/health/ready", b"", method="GET")
    assert throttled["statusCode"] == 429 and int(throttled["headers"]["retry-after"]) >= 1
    assert "Rate exceeded" not in throttled["body"]
    before = describes()
    statuses = [fn.call("/v2/health/ready", b"", method="GET")["statusCode"] for _ in range(5)]
    assert statuses == [200] * 5
    assert describes() == before + 1  # one DescribeEndpoint for five probes
    # Once the cached answer is old, a throttled DescribeEndpoint answers with the last known.
    monkeypatch.setattr("functions.app.READY_CACHE_S", 0.0)
    fn.aws.refuse_next("sagemaker", "DescribeEndpoint", "ThrottlingException", "Rate exceeded")
    assert fn.call("/v2/health/ready", b"", method="GET")["statusCode"] == 200


# -- item 23: a caller gone mid-body ---------------------------------------------------------


class _Unused(Invoker):
    name = "unused"

    @classmethod
    def from_config(cls, config: Any) -> Invoker:
        raise NotImplementedError

    async def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        raise AssertionError("nothing is forwarded for a body never read")

    def invoke_sync(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        raise AssertionError("nothing is forwarded for a body never read")

    async def status(self, name: str) -> DeploymentStatus:
        return DeploymentStatus.READY


def test_a_caller_gone_mid_body_is_one_log_line_and_a_499(
    fn: Lambda, caplog: pytest.LogCaptureFixture
) -> None:
    """What Lambda cannot show (it reads the whole body first) but Azure's and FC's servers
    can: the ASGI app sees ``http.disconnect`` before the body's end."""
    records: list[UsageRecord] = []
    manifest = fn.function.manifest
    app = FunctionApp(_Unused(), manifest, usage=SimpleNamespace(record=records.append)).asgi()
    script: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"inputs": [', "more_body": True},
        {"type": "http.disconnect"},
    ]
    messages = iter(script)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    with caplog.at_level(logging.INFO, logger="aiaas.function"):
        asyncio.run(app(scope, receive, send))
    assert [r.status for r in records] == [CLIENT_CLOSED]
    lines = [r for r in caplog.records if r.name == "aiaas.function"]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "closed the connection" in lines[0].getMessage()
