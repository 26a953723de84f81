"""What output checking approves, every encoder can send: numpy values, aliases, values
JSON cannot carry, strict types. The probe model misbehaves on request (``PROBE_BREAK``)."""

from __future__ import annotations

import math
import struct
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import PROBE_BREAKS, ServerProcess
from pydantic import BaseModel, Field

from aiaas.runtime.batcher import BadResult
from aiaas.runtime.outputs import OutputChecker

INFER = "/v2/models/probe/infer"


def _model_error(r: httpx.Response, oip: bool = False) -> str:
    assert r.status_code == 500, r.text
    if oip:
        message: str = r.json()["error"]
        assert r.json()["code"] == "model_error"
        return message
    err = r.json()["error"]
    assert err["code"] == "model_error"
    return str(err["message"])


def _infer_body(values: list[float], **extra: Any) -> dict[str, Any]:
    tensor = {"name": "value", "shape": [len(values)], "datatype": "FP32", "data": values}
    return {"inputs": [tensor], **extra}


def _binary_outputs(r: httpx.Response) -> dict[str, tuple[dict[str, Any], bytes]]:
    """Each output's JSON header entry and its binary data, from a binary OIP answer."""
    length = int(r.headers["inference-header-content-length"])
    header = (
        r.json()
        if length == len(r.content)
        else httpx.Response(200, content=r.content[:length]).json()
    )
    out, offset = {}, length
    for tensor in header["outputs"]:
        size = tensor["parameters"]["binary_data_size"]
        out[tensor["name"]] = (tensor, r.content[offset : offset + size])
        offset += size
    return out


class TestNumpyResults:
    """Finding 3: numpy results that output checking approved are served by every encoder."""

    def test_simple_and_oip_json_and_binary(self, broken_probe: ServerProcess) -> None:
        server = broken_probe  # numpy results on value 13
        assert PROBE_BREAKS["numpy"] == 13  # the figures below are 13 doubled
        r = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 13}]})
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out == {
            "value": 26.0,
            "batch_size": 1,
            "salt": "1",
            "embedding": [26.0, -26.0],
            "pair": [26.0, 1],
        }

        r = httpx.post(server.url + INFER, json=_infer_body([13, 13]))
        assert r.status_code == 200, r.text
        tensors = {t["name"]: t for t in r.json()["outputs"]}
        assert tensors["value"] == {
            "name": "value",
            "datatype": "FP32",
            "shape": [2],
            "data": [26.0, 26.0],
        }
        assert tensors["batch_size"]["datatype"] == "INT64"
        assert tensors["batch_size"]["data"] == [2, 2]
        assert tensors["embedding"]["shape"] == [2, 2]
        assert tensors["embedding"]["data"] == [26.0, -26.0, 26.0, -26.0]

        body = _infer_body([13], parameters={"binary_data_output": True})
        r = httpx.post(server.url + INFER, json=body)
        assert r.status_code == 200, r.text
        binary = _binary_outputs(r)
        tensor, raw = binary["embedding"]
        assert tensor["datatype"] == "FP32" and tensor["shape"] == [1, 2]
        assert struct.unpack("<2f", raw) == (26.0, -26.0)
        tensor, raw = binary["batch_size"]
        assert tensor["datatype"] == "INT64" and struct.unpack("<q", raw) == (1,)
        assert "Traceback" not in server.log()


class TestUnencodable:
    """Finding 5: results JSON cannot carry are a model error for their caller, not a 500
    ``internal`` with a traceback."""

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("big_int", "outputs[1].batch_size: cannot be encoded as JSON: an integer beyond 64"),
            ("int_key", "outputs[1].1: cannot be encoded as JSON: a key that is not a string"),
        ],
    )
    def test_on_every_protocol(self, broken_probe: ServerProcess, kind: str, expected: str) -> None:
        server, bad = broken_probe, PROBE_BREAKS[kind]
        r = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 1}, {"value": bad}]})
        assert expected in _model_error(r)
        r = httpx.post(server.url + INFER, json=_infer_body([1, bad]))
        assert expected in _model_error(r, oip=True)
        ok = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 2}]})
        assert ok.status_code == 200
        log = server.log()
        assert "Traceback" not in log and "unhandled error" not in log

    def test_in_warn_mode_it_is_still_a_model_error(self, broken_probe_warn: ServerProcess) -> None:
        server, bad = broken_probe_warn, PROBE_BREAKS["big_int"]
        r = httpx.post(server.url + "/invocations", json={"inputs": [{"value": bad}]})
        assert "an integer beyond 64 bits" in _model_error(r)
        r = httpx.post(server.url + INFER, json=_infer_body([bad]))
        assert "an integer beyond 64 bits" in _model_error(r, oip=True)
        assert "Traceback" not in server.log()


class TestStrictTypes:
    """Finding 6: validation is strict, so what is served is what the schema publishes."""

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("str_float", "outputs[0].value: Input should be a valid number"),
            ("bool_int", "outputs[0].batch_size: Input should be a valid integer"),
        ],
    )
    def test_a_value_of_the_wrong_json_type_is_a_model_error(
        self, broken_probe: ServerProcess, kind: str, expected: str
    ) -> None:
        r = httpx.post(
            broken_probe.url + "/invocations", json={"inputs": [{"value": PROBE_BREAKS[kind]}]}
        )
        assert expected in _model_error(r)


class Embedded(BaseModel):
    """An output schema with a list of floats and an integer."""

    embedding: list[float] = Field(min_length=2, max_length=2)
    count: int = 0


class TestChecker:
    """The checker on its own (no server): what it approves is JSON-native."""

    def test_numpy_and_tuples_pass_and_come_back_json_native(self) -> None:
        checker = OutputChecker(Embedded)
        results: list[Any] = [
            {"embedding": [np.float32(1.5), np.float32(2.0)]},  # sum() is a numpy scalar
            {"embedding": (1.0, 2)},
            {"embedding": np.array([1.0, 2.0]), "count": np.int64(3)},
            {"embedding": [1, 2.5], "count": 3},  # an int for a float: strict takes it
        ]
        checked = checker.check(results)
        assert checked == [
            {"embedding": [1.5, 2.0]},
            {"embedding": [1.0, 2]},
            {"embedding": [1.0, 2.0], "count": 3},
            {"embedding": [1, 2.5], "count": 3},
        ]
        assert type(checked[0]["embedding"][0]) is float
        assert type(checked[2]["count"]) is int
        assert checked[3] is results[3]  # native results are not copied

    def test_strict_types_and_values_json_cannot_carry(self) -> None:
        checker = OutputChecker(Embedded)
        problems = checker.problems(
            [
                {"embedding": ["0.5", 1.0]},
                {"embedding": [1.0, 1.0], "count": True},
                {"embedding": [np.float32(1.0), np.float32("nan")]},
                {"embedding": (1.0, math.inf)},
                {"embedding": [1.0, 1.0], "count": 2**64},
                {"embedding": [np.zeros(2), np.zeros(3)]},  # sum() raises ValueError
            ]
        )
        assert problems[0] == (".embedding[0]", "Input should be a valid number")
        assert problems[1] == (".count", "Input should be a valid integer")
        assert problems[2][0] == ".embedding[1]" and "not a finite number" in problems[2][1]
        assert problems[3][0] == ".embedding[1]" and "not a finite number" in problems[3][1]
        assert problems[4] == (".count", "cannot be encoded as JSON: an integer beyond 64 bits")
        assert problems[5] == (".embedding[0]", "Input should be a valid number")

    def test_a_bad_result_is_replaced_in_strict_mode(self) -> None:
        checked = OutputChecker(Embedded).check([{"embedding": [1.0, 1.0], "count": 2**70}])
        assert checked == [
            BadResult(".count", "cannot be encoded as JSON: an integer beyond 64 bits")
        ]


class TestEncoderNet:
    """What output checking does not catch (an integer beyond 64 bits hidden in a list whose
    float sum is finite) is still a model error naming the item when it is encoded."""

    def test_simple_and_oip_encoders(self) -> None:
        from aiaas import oip
        from aiaas.errors import ModelError
        from aiaas.protocol import simple_response

        outputs = [{"x": [1.0, 2.0]}, {"x": [2**70, 0.5]}]
        with pytest.raises(ModelError, match=r"outputs\[1\]: Integer exceeds 64-bit range"):
            simple_response(outputs, "m", "1")
        request = oip.parse_infer(
            b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}',
            max_items=8,
        )
        with pytest.raises(ModelError, match=r"outputs\[1\]: .*64-bit"):
            oip.infer_response(request, outputs, "m", "1")
