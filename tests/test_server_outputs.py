"""What ``predict`` returns is checked before it is served: the count, the output schema,
finite numbers. The probe model misbehaves on request (``PROBE_BREAK``); iris is driven
into NaN by huge inputs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from conftest import PROBE_BREAKS, ServerProcess

from aiaas.bundle import BuiltBundle

StartServer = Callable[..., ServerProcess]
WRONG_KEY, NAN, SHORT = PROBE_BREAKS["wrong_key"], PROBE_BREAKS["nan"], PROBE_BREAKS["short"]


def _model_error(r: httpx.Response) -> str:
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["code"] == "model_error"
    message: str = err["message"]
    return message


def _passes(server: ServerProcess) -> float:
    """The forward passes the server has run so far."""
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith('aiaas_batch_size_count{model="probe"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _post_together(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return list(await asyncio.gather(*(client.post(url, json=b) for b in bodies)))


class TestStrict:
    """The default: a result that breaks the output schema is a 500 for its caller only."""

    def test_wrong_key_is_a_model_error_naming_item_and_field(
        self, broken_probe: ServerProcess
    ) -> None:
        server = broken_probe
        r = httpx.post(
            server.url + "/invocations",
            json={"inputs": [{"value": 1}, {"value": WRONG_KEY}]},
            headers={"x-request-id": "bad-key-1"},
        )
        message = _model_error(r)
        assert "outputs[1].value: Field required" in message
        ok = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 2}]})
        assert ok.status_code == 200 and ok.json()["outputs"][0]["value"] == 4.0
        log = server.log()
        assert log.count("outputs[1].value: Field required (request_id=bad-key-1)") == 1
        assert "Traceback" not in log

    def test_neighbours_in_the_batch_are_served(self, broken_probe: ServerProcess) -> None:
        server = broken_probe
        # the first request holds the inference thread, the other three share one batch
        bodies = [
            {"inputs": [{"value": v, "sleep_ms": 300 if v == 0 else 0}]}
            for v in (0, 1, WRONG_KEY, 2)
        ]
        responses = asyncio.run(_post_together(server.url + "/invocations", bodies))
        assert [r.status_code for r in responses] == [200, 200, 500, 200]
        assert "outputs[0].value" in _model_error(responses[2])

    def test_nan_is_a_model_error(self, broken_probe: ServerProcess) -> None:
        server = broken_probe
        r = httpx.post(server.url + "/invocations", json={"inputs": [{"value": NAN}]})
        assert "outputs[0].value: not a finite number (nan)" in _model_error(r)
        data = [1, NAN]
        request = {"inputs": [{"name": "value", "shape": [2], "datatype": "FP32", "data": data}]}
        r = httpx.post(server.url + "/v2/models/probe/infer", json=request)
        assert r.status_code == 500 and "outputs[1].value: not a finite" in r.json()["error"]

    def test_iris_with_huge_inputs_is_not_served_null_probabilities(
        self, start_server: StartServer, build_example: Callable[[str], BuiltBundle]
    ) -> None:
        """1e308 cm overflowed iris's logits into NaN probabilities, which strict output
        checking refused as a 500 (the probe's ``nan`` break still shows that check). The
        example now declares the measurements it accepts (0-100 cm): a 422 naming the item
        and field, before the model runs; the item alone is still served."""
        server = start_server(build_example("iris").path)
        for huge in ([1e308, 1e308, -1e308, 1e308], [-1.0, 3.5, 1.4, 0.2]):
            r = httpx.post(
                server.url + "/invocations",
                json={"inputs": [{"features": [5.1, 3.5, 1.4, 0.2]}, {"features": huge}]},
            )
            assert r.status_code == 422, r.text
            assert r.json()["error"]["message"].startswith("inputs[1].features")
        r = httpx.post(
            server.url + "/invocations", json={"inputs": [{"features": [5.1, 3.5, 1.4, 0.2]}]}
        )
        assert r.status_code == 200 and r.json()["outputs"][0]["label"] == "setosa"

    def test_a_model_breaking_its_schema_on_the_example_does_not_load(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        # The probe's example input is {"value": 1.0}: its warm-up result breaks the schema.
        server = start_server(probe_bundle.path, env={"PROBE_BREAK": "wrong_key:1"}, ready=False)
        assert server.proc.wait(timeout=60) == 1
        log = server.log()
        assert "model failed to load" in log
        assert "example request breaks the output schema ProbeOut: outputs[0].value" in log


class TestCount:
    def test_wrong_count_fails_the_batch_once_without_retrying_items(
        self, broken_probe: ServerProcess
    ) -> None:
        server = broken_probe
        counted = "predict returned 2 results for 3 inputs"
        earlier, passes = server.log().count(counted), _passes(server)
        r = httpx.post(
            server.url + "/invocations",
            json={"inputs": [{"value": 1}, {"value": SHORT}, {"value": 2}]},
        )
        assert counted in _model_error(r)
        log = server.log()
        # one line with the counts; before, each item was silently re-run alone
        assert log.count(counted) == earlier + 1
        assert "model raised on an item" not in log and "Traceback" not in log
        assert _passes(server) == passes + 1  # one forward pass
        ok = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 2}]})
        assert ok.status_code == 200


class TestWarn:
    def test_bad_results_are_served_and_logged_once(self, broken_probe_warn: ServerProcess) -> None:
        server = broken_probe_warn  # loaded although its example breaks the schema: warn
        for _ in range(3):
            r = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 1}]})
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["valeu"] == 2.0
        log = server.log()  # once per (path, problem): its other break is on another path
        assert log.count("logged once): outputs[i].value: Field required") == 1
