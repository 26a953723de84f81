"""``aiaas.oip``: the Open Inference Protocol codec on its own (no server needed).

The HTTP surfaces are covered by test_oip_surfaces.py and the peer clients by
test_oip_clients.py; these pin down the codec's edge cases, binary tensor data above all,
with bodies built byte by byte as the extension describes them.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import orjson
import pytest

from aiaas import oip
from aiaas.errors import AiaasError, BadRequest, PayloadTooLarge, UnsupportedMediaType


def _binary(header: dict[str, Any], raw: bytes) -> tuple[bytes, str]:
    """A body with binary tensor data, and its Inference-Header-Content-Length."""
    json_part = orjson.dumps(header)
    return json_part + raw, str(len(json_part))


def _tensor(name: str, shape: list[int], datatype: str, size: int) -> dict[str, Any]:
    return {
        "name": name,
        "shape": shape,
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
    }


def _strings(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _parse(body: bytes, header_length: str | None = None, **kw: Any) -> oip.InferRequest:
    kw.setdefault("max_items", 512)
    return oip.parse_infer(body, header_length=header_length, **kw)


def _refused(body: bytes, header_length: str | None = None, **kw: Any) -> AiaasError:
    with pytest.raises(AiaasError) as caught:
        _parse(body, header_length, **kw)
    return caught.value


@pytest.mark.parametrize(
    ("datatype", "fmt", "values"),
    [
        ("BOOL", "?", [True, False, True, True]),
        ("UINT8", "B", [0, 1, 254, 255]),
        ("UINT16", "H", [0, 1, 2, 65535]),
        ("UINT32", "I", [0, 1, 2, 2**32 - 1]),
        ("UINT64", "Q", [0, 1, 2, 2**64 - 1]),
        ("INT8", "b", [-128, 0, 1, 127]),
        ("INT16", "h", [-(2**15), 0, 1, 2]),
        ("INT32", "i", [-(2**31), 0, 1, 2]),
        ("INT64", "q", [-(2**63), 0, 1, 2**63 - 1]),
        ("FP16", "e", [0.5, -2.0, 1024.0, 0.25]),
        ("FP32", "f", [0.5, -2.0, 3.25, 1e30]),
        ("FP64", "d", [0.1, -2.0, 1e300, 2.5]),
    ],
)
def test_binary_inputs_of_every_fixed_size_datatype(
    datatype: str, fmt: str, values: list[Any]
) -> None:
    raw = struct.pack(f"<4{fmt}", *values)
    body, length = _binary({"inputs": [_tensor("x", [2, 2], datatype, len(raw))]}, raw)
    request = _parse(body, length)
    expected = list(struct.unpack(f"<4{fmt}", raw))  # FP32/FP16 as they round-trip
    assert request.items == [{"x": expected[:2]}, {"x": expected[2:]}]


def test_binary_and_json_inputs_mix_in_declaration_order() -> None:
    floats = struct.pack("<2f", 1.5, 2.5)
    strings = _strings("héllo".encode(), b"")
    header = {
        "id": "r9",
        "inputs": [
            _tensor("a", [2], "FP32", len(floats)),
            {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [[7], [8]]},
            _tensor("c", [2], "BYTES", len(strings)),
        ],
    }
    request = _parse(*_binary(header, floats + strings))
    assert request.id == "r9"
    assert request.items == [{"a": 1.5, "b": [7], "c": "héllo"}, {"a": 2.5, "b": [8], "c": ""}]


@pytest.mark.parametrize(
    ("header", "raw", "length", "needle"),
    [
        ({"inputs": [_tensor("x", [2], "FP32", 8)]}, b"\0" * 7, None, "runs past"),
        ({"inputs": [_tensor("x", [2], "FP32", 8)]}, b"\0" * 9, None, "1 bytes after the JSON"),
        ({"inputs": [_tensor("x", [3], "FP32", 8)]}, b"\0" * 8, None, "takes 12"),
        ({"inputs": [_tensor("x", [1], "FP32", -1)]}, b"", None, "must be a byte count"),
        ({"inputs": [{**_tensor("x", [1], "FP32", 4), "data": [1]}]}, b"\0" * 4, None, "both"),
        ({"inputs": [_tensor("x", [2], "BYTES", 6)]}, _strings(b"ab"), None, "exactly 2"),
        ({"inputs": [_tensor("x", [1], "BYTES", 7)]}, _strings(b"ab") + b"\0", None, "exactly 1"),
        ({"inputs": [_tensor("x", [1], "BYTES", 5)]}, _strings(b"\xff"), None, "not UTF-8"),
        ({"inputs": [_tensor("x", [1], "BYTES", 4)]}, struct.pack("<I", 99), None, "runs past"),
        (
            {"inputs": [_tensor("x", [1], "FP32", 4)]},
            struct.pack("<f", 1.0),
            "x",
            "not a byte count",
        ),
        ({"inputs": [_tensor("x", [1], "FP32", 4)]}, struct.pack("<f", 1.0), "999", "not a len"),
        ({"inputs": [_tensor("x", [1], "FP32", 4)]}, struct.pack("<f", float("nan")), None, "NaN"),
        ({"inputs": [_tensor("x", [2], "FP64", 16)]}, struct.pack("<2d", 1e308, 1e308), None, ""),
    ],
)
def test_bad_binary_data_is_400_naming_the_problem(
    header: dict[str, Any], raw: bytes, length: str | None, needle: str
) -> None:
    body, real_length = _binary(header, raw)
    if needle == "":  # two huge but finite values: their sum overflows, they are still fine
        assert _parse(body, real_length).items == [{"x": 1e308}, {"x": 1e308}]
        return
    err = _refused(body, length or real_length)
    assert isinstance(err, BadRequest) and needle in err.message, err.message


def test_binary_data_is_bounded_before_it_is_decoded() -> None:
    """A BYTES tensor claiming many elements is limited by the bytes actually sent, and the
    batch by the item limit, whatever binary_data_size says."""
    header = {"inputs": [_tensor("x", [10**12], "BYTES", 8)]}
    err = _refused(*_binary(header, _strings(b"abcd")))
    assert isinstance(err, PayloadTooLarge) and "at most 512" in err.message
    header = {"inputs": [_tensor("x", [1, 10**12], "BYTES", 8)]}
    started = time.monotonic()
    err = _refused(*_binary(header, _strings(b"abcd")))
    # refused from the header: allocating 10**12 items would take minutes or fail outright
    assert "exactly 1000000000000" in err.message and time.monotonic() - started < 2.0


def test_requested_outputs_and_binary_flags() -> None:
    tensor = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    names = ["label", "probabilities"]
    request = _parse(
        orjson.dumps(
            {
                "inputs": [tensor],
                "parameters": {"binary_data_output": True},
                "outputs": [
                    {"name": "probabilities"},
                    {"name": "label", "parameters": {"binary_data": False}},
                ],
            }
        ),
        output_names=names,
    )
    assert request.outputs == ["probabilities", "label"] and request.binary == {"probabilities"}
    for outputs, needle in [
        ([{"name": "nope"}], "has no such output"),
        ([{"name": "label", "parameters": {"classification": 2}}], "classification"),
        ([{"name": "label", "parameters": {"shared_memory_region": "r"}}], "shared memory"),
        ([{"name": "label", "parameters": {"binary_data": "yes"}}], "true or false"),
        ({"name": "label"}, "must be a list"),
    ]:
        body = orjson.dumps({"inputs": [tensor], "outputs": outputs})
        assert needle in _refused(body, output_names=names).message


def test_json_content_type_is_checked_unless_binary() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
    assert isinstance(_refused(body, content_type="text/csv"), UnsupportedMediaType)
    assert _parse(body, content_type="application/json; charset=utf-8").items == [{"x": 1}]
    raw, length = _binary({"inputs": [_tensor("x", [1], "FP32", 4)]}, struct.pack("<f", 1))
    assert _parse(raw, length, content_type="application/octet-stream").items == [{"x": 1.0}]


def test_messages_show_request_values_short_and_flat() -> None:
    """Deeply nested or huge values in shape, datatype or name are named, not ``repr``-ed
    (``repr`` of 1000 nested lists raises RecursionError: a 500)."""
    deep = b"[" * 1000 + b"]" * 1000
    for field in (b"shape", b"datatype", b"name"):
        tensor = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
        body = orjson.dumps({"inputs": [tensor]}).replace(
            b'"%s":' % field + orjson.dumps(tensor[field.decode()]), b'"%s":%s' % (field, deep)
        )
        message = _refused(body).message
        assert len(message) < 300 and ("[[…]]" in message or "non-empty string" in message)
    long_shape = {"name": "x", "shape": [1] * 100_000, "datatype": "FP32", "data": [1]}
    message = _refused(orjson.dumps({"inputs": [long_shape]})).message
    assert "1 to 64 sizes" in message and len(message) < 300


def test_duplicate_names_and_mismatched_batches_are_400() -> None:
    one = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    two = {"name": "y", "shape": [2], "datatype": "FP32", "data": [1, 2]}
    assert "came before" in _refused(orjson.dumps({"inputs": [one, one]})).message
    assert "differs from 1" in _refused(orjson.dumps({"inputs": [one, two]})).message
    ragged = {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], 3, 4]}
    assert "mixes nested lists" in _refused(orjson.dumps({"inputs": [ragged]})).message
    assert '"id" must be a string' in _refused(orjson.dumps({"id": [1], "inputs": [one]})).message


def _answer(request: oip.InferRequest, outputs: list[Any]) -> tuple[dict[str, Any], bytes]:
    response = oip.infer_response(request, outputs, "m", "v1")
    body = bytes(response.body)
    length = response.headers.get(oip.HEADER_LENGTH)
    if length is None:
        assert response.media_type == "application/json"
        return orjson.loads(body), b""
    assert response.media_type == "application/octet-stream"
    return orjson.loads(body[: int(length)]), body[int(length) :]


OUTPUTS = [
    {"label": "setosa", "id": 0, "p": [0.5, 0.25], "ok": True, "extra": {"k": 1}},
    {"label": "virginica", "id": 2, "p": [0.125, 0.75], "ok": False, "extra": None},
]


def test_json_answer_infers_datatypes_and_shapes() -> None:
    header, raw = _answer(oip.InferRequest(items=[], id="q"), OUTPUTS)
    assert raw == b"" and header["id"] == "q" and header["model_version"] == "v1"
    tensors = {t["name"]: t for t in header["outputs"]}
    assert tensors["label"] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["setosa", "virginica"],
    }
    assert tensors["id"]["datatype"] == "INT64" and tensors["id"]["data"] == [0, 2]
    assert tensors["p"]["shape"] == [2, 2] and tensors["p"]["data"] == [0.5, 0.25, 0.125, 0.75]
    assert tensors["ok"]["datatype"] == "BOOL"
    # What is no tensor (objects, nulls) is one JSON text per item.
    assert tensors["extra"] == {
        "name": "extra",
        "datatype": "BYTES",
        "shape": [2],
        "data": ['{"k":1}', "null"],
    }


def test_binary_answer_follows_the_json_header_in_output_order() -> None:
    request = oip.InferRequest(items=[], outputs=["p", "label", "id"], binary={"p", "label"})
    header, raw = _answer(request, OUTPUTS)
    p, label, ident = header["outputs"]
    assert [p["name"], label["name"], ident["name"]] == ["p", "label", "id"]
    assert p["parameters"] == {"binary_data_size": 16} and "data" not in p
    assert label["parameters"] == {"binary_data_size": len(_strings(b"setosa", b"virginica"))}
    assert ident["data"] == [0, 2]  # not asked for as binary
    assert raw == struct.pack("<4f", 0.5, 0.25, 0.125, 0.75) + _strings(b"setosa", b"virginica")


def test_binary_answer_widens_floats_beyond_fp32() -> None:
    request = oip.InferRequest(items=[], binary_default=True)
    header, raw = _answer(request, [{"x": 1e300}, {"x": 2.0}])
    assert header["outputs"][0]["datatype"] == "FP64" and raw == struct.pack("<2d", 1e300, 2.0)
    header, raw = _answer(request, [{"n": 2**70}, {"n": 1}])
    assert header["outputs"][0]["datatype"] == "FP64"


def test_asking_for_an_output_the_answer_lacks_is_400() -> None:
    request = oip.InferRequest(items=[], outputs=["missing"])
    with pytest.raises(BadRequest, match="not in the model's answer"):
        oip.infer_response(request, OUTPUTS, "m", "v1")


def test_many_distinct_requested_outputs_are_deduplicated_in_linear_time() -> None:
    # With no known output names (nothing to check them against), a request may name as
    # many outputs as its body holds; each is checked against those before it in O(1).
    names = [{"name": f"o{i}"} for i in range(50_000)]
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}],
            "outputs": names,
        }
    )
    started = time.perf_counter()
    request = oip.parse_infer(body, max_items=8)
    assert time.perf_counter() - started < 1.0  # a list lookup took ~10 s
    assert request.outputs is not None and len(request.outputs) == 50_000
    with pytest.raises(BadRequest, match="asked for before"):
        oip.parse_infer(
            orjson.dumps({**orjson.loads(body), "outputs": [*names, names[7]]}), max_items=8
        )
