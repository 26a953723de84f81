"""The model server as a real process on 127.0.0.1, driven over HTTP with the probe model."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProcess

from aiaas.bundle import BuiltBundle

StartServer = Callable[..., ServerProcess]


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _post_many(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        return list(await asyncio.gather(*(client.post(url, json=b) for b in bodies)))


@pytest.fixture(scope="module")
def probe(
    probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server for the module's tests that only send requests (they compare metrics and
    log lines as deltas: earlier tests have used the same server)."""
    log = tmp_path_factory.mktemp("probe-server") / "server.log"
    server = ServerProcess(probe_bundle.path, log, ["--max-body-bytes", "4096"], {})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


class TestRoutes:
    """Every cloud's route answers on the one server."""

    def test_health_routes(self, probe: ServerProcess) -> None:
        for path in (
            "/ping",
            "/",
            "/ready",
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/probe/ready",
        ):
            assert httpx.get(probe.url + path).status_code == 200, path
        assert httpx.get(probe.url + "/v2").json()["name"] == "aiaas"

    @pytest.mark.parametrize("path", ["/invocations", "/score", "/", "/api/predict/probe-svc"])
    def test_simple_protocol_on_every_cloud_path(
        self, probe: ServerProcess, path: str, probe_bundle: BuiltBundle
    ) -> None:
        r = httpx.post(probe.url + path, json={"inputs": [{"value": 1.5}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["outputs"][0]["value"] == 3.0
        assert body["model"] == "probe"
        assert body["version"] == probe_bundle.manifest.version

    def test_multi_item_request_keeps_order(self, probe: ServerProcess) -> None:
        values = [float(v) for v in range(12)]  # more than max_batch_size (8): split, reassembled
        r = httpx.post(probe.url + "/invocations", json={"inputs": [{"value": v} for v in values]})
        assert r.status_code == 200
        assert [o["value"] for o in r.json()["outputs"]] == [2 * v for v in values]

    def test_oip_metadata_and_infer(self, probe: ServerProcess, probe_bundle: BuiltBundle) -> None:
        meta = httpx.get(probe.url + "/v2/models/probe").json()
        assert meta["versions"] == [probe_bundle.manifest.version]
        assert {"name": "value", "datatype": "FP32", "shape": [-1]} in meta["inputs"]
        request = {
            "id": "r1",
            "inputs": [{"name": "value", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}],
        }
        r = httpx.post(probe.url + "/v2/models/probe/infer", json=request)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "r1" and body["model_name"] == "probe"
        out = {t["name"]: t for t in body["outputs"]}
        assert out["value"]["shape"] == [3] and out["value"]["data"] == [2.0, 4.0, 6.0]
        versioned = f"/v2/models/probe/versions/{probe_bundle.manifest.version}/infer"
        assert httpx.post(probe.url + versioned, json=request).status_code == 200

    def test_request_id_is_echoed_or_created(self, probe: ServerProcess) -> None:
        r = httpx.post(
            probe.url + "/invocations",
            json={"inputs": [{"value": 1}]},
            headers={"x-request-id": "abc-123"},
        )
        assert r.headers["x-request-id"] == "abc-123"
        r = httpx.post(probe.url + "/invocations", json={"inputs": [{"value": 1}]})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])

    @pytest.mark.parametrize("path", ["/invocations", "/v2/models/probe/infer"])
    def test_request_id_carried_in_sagemaker_custom_attributes(
        self, probe: ServerProcess, path: str
    ) -> None:
        # InvokeEndpoint forwards only X-Amzn-SageMaker-Custom-Attributes to the container.
        simple = {"inputs": [{"value": 1}]}
        oip = {"inputs": [{"name": "value", "shape": [1], "datatype": "FP32", "data": [1]}]}
        body = simple if path == "/invocations" else oip
        carried = {"x-amzn-sagemaker-custom-attributes": "trace=on; aiaas-request-id=rid-77"}
        r = httpx.post(probe.url + path, json=body, headers=carried)
        assert r.status_code == 200 and r.headers["x-request-id"] == "rid-77"
        both = {**carried, "x-request-id": "rid-direct"}  # a direct caller's own id wins
        assert httpx.post(probe.url + path, json=body, headers=both).headers["x-request-id"] == (
            "rid-direct"
        )
        unsafe = {"x-amzn-sagemaker-custom-attributes": "aiaas-request-id=a b\tc"}
        r = httpx.post(probe.url + path, json=body, headers=unsafe)
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])  # not echoed as is

    def test_metrics(self, probe: ServerProcess) -> None:
        before = httpx.get(probe.url + "/metrics").text
        httpx.post(probe.url + "/invocations", json={"inputs": [{"value": 1}]})
        httpx.post(probe.url + "/invocations", content=b"{")
        after = httpx.get(probe.url + "/metrics").text

        def added(name: str, **labels: str) -> float:
            return _metric(after, name, **labels) - _metric(before, name, **labels)

        assert added("aiaas_requests_total", route="/invocations", status="200") == 1
        assert added("aiaas_requests_total", route="/invocations", status="400") == 1
        assert added("aiaas_request_duration_seconds_count", route="/invocations") == 2
        assert added("aiaas_batch_size_count") == 1  # the malformed one never reached a batch
        assert added("aiaas_batch_size_sum") == 1
        assert "aiaas_queue_depth" in after


class TestBatching:
    def test_concurrent_requests_share_forward_passes(self, probe: ServerProcess) -> None:
        # The first request holds the inference thread for 300 ms; the other 15 queue up
        # meanwhile and must run as batches of up to max_batch_size (8).
        bodies = [{"inputs": [{"value": i, "sleep_ms": 300 if i == 0 else 0}]} for i in range(16)]
        before = httpx.get(probe.url + "/metrics").text
        responses = asyncio.run(_post_many(probe.url + "/invocations", bodies))
        assert all(r.status_code == 200 for r in responses)
        sizes = [r.json()["outputs"][0]["batch_size"] for r in responses]
        assert max(sizes) > 1 and max(sizes) <= 8
        text = httpx.get(probe.url + "/metrics").text
        passes = _metric(text, "aiaas_batch_size_count") - _metric(before, "aiaas_batch_size_count")
        items = _metric(text, "aiaas_batch_size_sum") - _metric(before, "aiaas_batch_size_sum")
        assert items == 16  # every item ran once (the warm-up bypasses the batcher)
        assert passes < items  # fewer forward passes than items: batching happened

    def test_one_failing_item_does_not_fail_its_batch_neighbours(
        self, probe: ServerProcess
    ) -> None:
        bodies = [
            {"inputs": [{"value": i, "sleep_ms": 200 if i == 0 else 0, "fail": i == 3}]}
            for i in range(6)
        ]
        responses = asyncio.run(_post_many(probe.url + "/invocations", bodies))
        statuses = [r.status_code for r in responses]
        assert statuses[3] == 500
        assert statuses[:3] + statuses[4:] == [200] * 5

    def test_inference_workers_run_batches_side_by_side(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(
            probe_bundle.path, "--inference-workers", "2", "--max-batch-size", "1"
        )
        assert "2 workers" in server.log()
        bodies = [{"inputs": [{"value": i, "sleep_ms": 1500}]} for i in range(2)]
        started = time.monotonic()
        responses = asyncio.run(_post_many(server.url + "/invocations", bodies))
        elapsed = time.monotonic() - started
        assert [r.json()["outputs"][0]["value"] for r in responses] == [0.0, 2.0]
        # one at a time would take 3 s: the two 1.5 s batches ran at once, one per worker
        assert elapsed < 2.7, elapsed


class TestBackpressure:
    def test_full_queue_answers_503_with_retry_after(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(probe_bundle.path, "--max-queue-size", "2", "--max-batch-size", "1")
        bodies = [{"inputs": [{"value": i, "sleep_ms": 400}]} for i in range(8)]
        responses = asyncio.run(_post_many(server.url + "/invocations", bodies))
        rejected = [r for r in responses if r.status_code == 503]
        assert rejected, [r.status_code for r in responses]
        assert all(r.headers["retry-after"] == "1" for r in rejected)
        assert all(r.json()["error"]["code"] == "overloaded" for r in rejected)
        assert {r.status_code for r in responses} == {200, 503}
        assert (
            httpx.post(server.url + "/invocations", json={"inputs": [{"value": 1}]}).status_code
            == 200
        )

    def test_a_full_queue_holds_a_request_for_room_before_refusing_it(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        # Clients that ignore Retry-After must not be able to come straight back: each
        # refusal costs them the wait (and the server next to nothing meanwhile).
        # Margins of over a second either way: a loaded machine's scheduler jitter must not
        # turn "room came within the wait" into a refusal, nor the reverse.
        server = start_server(
            probe_bundle.path, "--max-queue-size", "1", "--max-batch-size", "1",
            "--queue-wait-ms", "1500",
        )  # fmt: skip
        url = server.url + "/invocations"

        async def scenario(running_ms: int) -> tuple[list[httpx.Response], float]:
            async with httpx.AsyncClient(timeout=30.0) as client:
                running = asyncio.create_task(
                    client.post(url, json={"inputs": [{"value": 1, "sleep_ms": running_ms}]})
                )
                await asyncio.sleep(0.2)  # in the inference thread (nothing to poll for)
                queued = asyncio.create_task(client.post(url, json={"inputs": [{"value": 2}]}))
                deadline = time.monotonic() + 5
                while _metric((await client.get(server.url + "/metrics")).text,
                              "aiaas_queue_depth") < 1:  # fmt: skip
                    assert time.monotonic() < deadline, "the second request never queued"
                    await asyncio.sleep(0.01)
                started = time.monotonic()  # the queue is full
                third = await client.post(url, json={"inputs": [{"value": 3}]})
                waited = time.monotonic() - started
                return [await running, await queued, third], waited

        # the queue stays full ~2.7 s past the third's arrival, well beyond its 1.5 s wait
        responses, waited = asyncio.run(scenario(running_ms=3000))
        assert [r.status_code for r in responses] == [200, 200, 503]
        assert responses[2].headers["retry-after"] == "1"
        assert 1.4 < waited < 2.7, waited  # refused after the wait, not at once
        # room comes ~0.3 s after the third's arrival, well within its 1.5 s wait
        responses, waited = asyncio.run(scenario(running_ms=600))
        # room came within the wait: served instead of refused
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert responses[2].json()["outputs"][0]["value"] == 6.0


class TestBadInput:
    def _error(self, r: httpx.Response, status: int, code: str) -> dict[str, Any]:
        """The error of ``r``, in aiaas's shape ``{"error": {...}}`` or, on OIP routes, the
        OIP shape ``{"error": "<message>", "code", ...}`` (returned as aiaas's)."""
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        body: dict[str, Any] = r.json()
        if r.url.path.startswith("/v2"):
            assert isinstance(body["error"], str), body
            err = {**body, "message": body["error"]}
        else:
            err = body["error"]
        assert err["code"] == code
        return err

    def test_malformed_json_is_400(self, probe: ServerProcess) -> None:
        err = self._error(
            httpx.post(probe.url + "/invocations", content=b'{"inputs": ['), 400, "bad_request"
        )
        assert "malformed JSON" in err["message"]

    def test_wrong_envelope_is_400(self, probe: ServerProcess) -> None:
        bodies: list[Any] = [{"instances": []}, {"inputs": []}, [1, 2]]
        for body in bodies:
            self._error(httpx.post(probe.url + "/invocations", json=body), 400, "bad_request")

    def test_schema_violation_is_422_naming_index_and_field(self, probe: ServerProcess) -> None:
        r = httpx.post(
            probe.url + "/invocations", json={"inputs": [{"value": 1}, {"value": "abc"}]}
        )
        err = self._error(r, 422, "invalid_input")
        assert err["message"].startswith("inputs[1].value:")
        assert err["details"] == [
            {"index": 1, "field": "value", "message": err["details"][0]["message"]}
        ]

    def test_oip_schema_violation_is_422(self, probe: ServerProcess) -> None:
        request = {"inputs": [{"name": "valu", "shape": [1], "datatype": "FP32", "data": [1]}]}
        err = self._error(
            httpx.post(probe.url + "/v2/models/probe/infer", json=request), 422, "invalid_input"
        )
        assert "value" in err["message"]
        bad_shape = {"inputs": [{"name": "value", "shape": [2], "datatype": "FP32", "data": [1]}]}
        self._error(
            httpx.post(probe.url + "/v2/models/probe/infer", json=bad_shape), 400, "bad_request"
        )

    def test_body_over_limit_is_413(self, probe: ServerProcess) -> None:
        big = {"inputs": [{"value": 1.0}] * 1000}  # > 4096 bytes (the fixture's limit)
        self._error(httpx.post(probe.url + "/invocations", json=big), 413, "payload_too_large")

    def test_chunked_body_over_limit_is_413(self, probe: ServerProcess) -> None:
        def chunks() -> Iterator[bytes]:  # no content-length: the limit applies as it streams
            yield b'{"inputs": ['
            for _ in range(1000):
                yield b'{"value": 1.0},'
            yield b'{"value": 1.0}]}'

        r = httpx.post(probe.url + "/invocations", content=chunks())
        self._error(r, 413, "payload_too_large")
        assert "request body is over 4096 bytes" in r.json()["error"]["message"]

    def test_unknown_model_is_404(self, probe: ServerProcess) -> None:
        for path in ("/v2/models/nope", "/v2/models/nope/ready"):
            self._error(httpx.get(probe.url + path), 404, "not_found")
        self._error(httpx.post(probe.url + "/v2/models/nope/infer", json={}), 404, "not_found")
        self._error(httpx.get(probe.url + "/v2/models/probe/versions/0000/ready"), 404, "not_found")
        self._error(httpx.get(probe.url + "/no/such/route"), 404, "not_found")
        self._error(httpx.get(probe.url + "/invocations"), 405, "method_not_allowed")
        self._error(httpx.post(probe.url + "/api/predict/a/b", json={}), 404, "not_found")

    def test_model_exception_is_500_logged_once_and_server_keeps_serving(
        self, probe: ServerProcess
    ) -> None:
        earlier = probe.log().count("RuntimeError: probe was asked to fail")
        tracebacks = probe.log().count("Traceback")
        r = httpx.post(
            probe.url + "/invocations",
            json={"inputs": [{"value": 1, "fail": True}]},
            headers={"x-request-id": "boom-1"},
        )
        err = self._error(r, 500, "model_error")
        assert err["request_id"] == "boom-1"
        assert "probe was asked to fail" in err["message"]
        assert (
            httpx.post(probe.url + "/invocations", json={"inputs": [{"value": 2}]}).json()[
                "outputs"
            ][0]["value"]
            == 4.0
        )
        time.sleep(0.2)
        log = probe.log()
        assert log.count("request_id=boom-1") == 1
        assert log.count("RuntimeError: probe was asked to fail") == earlier + 1
        assert log.count("Traceback") == tracebacks + 1


class TestLifecycle:
    def test_not_ready_until_loaded(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(probe_bundle.path, env={"PROBE_LOAD_DELAY_S": "3"}, ready=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for the port, not for the model
            try:
                live = httpx.get(server.url + "/v2/health/live", timeout=1.0)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert live.status_code == 200
        ping = httpx.get(server.url + "/ping")
        assert ping.status_code == 503 and ping.headers["retry-after"] == "1"
        ready = httpx.get(server.url + "/v2/health/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        r = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 1}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert r.headers["retry-after"] == "1"  # every 503 says when to try again
        server.wait_ready()
        assert httpx.get(server.url + "/ready").status_code == 200

    def test_sigterm_finishes_in_flight_then_exits(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(probe_bundle.path)

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(timeout=30.0) as client:
                slow = asyncio.create_task(
                    client.post(
                        server.url + "/invocations",
                        json={"inputs": [{"value": 7, "sleep_ms": 1500}]},
                    )
                )
                await asyncio.sleep(0.5)  # the request is in flight
                server.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                with pytest.raises(httpx.ConnectError):  # no longer accepting
                    await client.get(server.url + "/ping", headers={"connection": "close"})
                return await slow

        response = asyncio.run(scenario())
        assert response.status_code == 200
        assert response.json()["outputs"][0]["value"] == 14.0
        # uvicorn re-raises the signal after its graceful shutdown: the exit status says SIGTERM
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Finished server process" in server.log()
        assert "Traceback" not in server.log()


def test_a_model_that_cannot_load_exits_with_status_1(
    start_server: StartServer, tmp_path: Path
) -> None:
    from conftest import build_probe_variant

    broken = build_probe_variant(
        tmp_path, "self.scale = torch", "raise OSError('no weights'); self.scale = torch"
    )
    server = start_server(broken.path, ready=False)
    assert server.proc.wait(timeout=60) == 1
    log = server.log()
    assert "model failed to load" in log and "OSError: no weights" in log


def test_a_request_id_that_is_not_printable_ascii_is_refused_with_400(
    probe: ServerProcess,
) -> None:
    """Issue 16, item 24, at the model server: a UTF-8 request id (seen as Latin-1 bytes) is
    a 400 naming the header on every route, answered with a new id; before, the server
    replaced it silently (and the function tier answered 500)."""
    body = {"inputs": [{"value": 1}]}
    for path in ("/invocations", "/v2/models/probe/infer"):
        json_body = (
            body
            if path == "/invocations"
            else {"inputs": [{"name": "value", "shape": [1], "datatype": "FP64", "data": [1]}]}
        )
        r = httpx.post(
            probe.url + path, json=json_body, headers={b"x-request-id": "caf\u00e9".encode()}
        )
        assert r.status_code == 400, (path, r.text)
        assert "x-request-id must be printable ASCII" in r.text
        assert r.headers["x-request-id"].isascii()
    ok = httpx.post(probe.url + "/invocations", json=body, headers={"x-request-id": "abc-1"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "abc-1"
