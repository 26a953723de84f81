"""Hostile and malformed Open Inference Protocol requests, on both HTTP surfaces.

One probe model server (a real ``aiaas serve`` process started by the local provider) and a
real function app in front of it (uvicorn on 127.0.0.1): every request here goes to both and
must get the same small, fast 4xx naming the problem (issue 7, items 6, 9 and 13).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from conftest import cpu_seconds, serve_asgi

from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from functions.app import FunctionApp

SURFACES = ["server", "function"]


@dataclasses.dataclass(frozen=True)
class Served:
    """The two surfaces' URLs and the model server's pid."""

    urls: dict[str, str]
    server_pid: int


@pytest.fixture(scope="module")
def served(probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``urls``: ``{"server": model server URL, "function": function app URL}``; the
    function app (in this process) forwards to that same server."""
    provider = LocalProvider(state_dir=str(tmp_path_factory.mktemp("oip-state")))
    deployment = provider.deploy(probe_bundle.path)
    assert deployment.endpoint is not None
    app = FunctionApp(provider.invoker, probe_bundle.manifest, keys=None).asgi()
    try:
        with serve_asgi(app) as function_url:
            urls = {"server": deployment.endpoint, "function": function_url}
            yield Served(urls, int(deployment.details["pid"]))
    finally:
        provider.delete("probe")


@pytest.fixture(scope="module")
def urls(served: Served) -> dict[str, str]:
    """``served``'s URLs, by surface."""
    return served.urls


def _infer(url: str, body: bytes | dict[str, Any], **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"content-type": "application/json", **headers}
    return httpx.post(url + "/v2/models/probe/infer", content=content, headers=sent, timeout=30)


def _oip_error(r: httpx.Response, status: int, *needles: str) -> str:
    """The OIP error message (``{"error": "<message>"}``), checked for status and words."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    message = r.json()["error"]
    assert isinstance(message, str)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _value(*values: float) -> dict[str, Any]:
    return {"name": "value", "shape": [len(values)], "datatype": "FP32", "data": list(values)}


@pytest.mark.parametrize("surface", SURFACES)
def test_valid_request_still_works(urls: dict[str, str], surface: str) -> None:
    r = _infer(urls[surface], {"id": "ok", "inputs": [_value(1, 2.5)]})
    assert r.status_code == 200, r.text
    out = {t["name"]: t for t in r.json()["outputs"]}
    assert out["value"]["data"] == [2.0, 5.0] and out["value"]["datatype"] == "FP32"
    assert out["batch_size"]["datatype"] == "INT64" and out["salt"]["datatype"] == "BYTES"
    assert r.json()["id"] == "ok"


# -- item 6: a small request must not buy large work ----------------------------------------

AMPLIFIER = (
    b'{"inputs": [{"name": "features", "shape": [1000000, 0], "datatype": "FP32", "data": []}]}'
)


@pytest.mark.parametrize("surface", SURFACES)
def test_amplifying_shape_gets_a_cheap_small_4xx_and_ping_stays_responsive(
    served: Served, surface: str
) -> None:
    """Before: the server stalled 7 s (``/ping`` blocked 7.45 s, 954 MB RSS) and answered a
    106 MB 422; the function app took 7.8 s."""
    assert len(AMPLIFIER) == 89
    urls = served.urls
    answers: list[httpx.Response] = []

    def attack() -> None:
        for _ in range(3):
            answers.append(_infer(urls[surface], AMPLIFIER))

    # CPU time, not the wall clock: a busy machine stretches wall time by whatever else
    # runs, not the work the server (its own process) and the function app (this one) do.
    cpu_before = cpu_seconds(served.server_pid) + time.process_time()
    thread = threading.Thread(target=attack)
    thread.start()
    pings: list[float] = []
    with httpx.Client(timeout=30) as client:  # one client: each httpx.get builds a TLS context
        while thread.is_alive() or not pings:  # poll the model server's health while attacked
            started = time.monotonic()
            assert client.get(urls["server"] + "/ping").status_code == 200
            pings.append(time.monotonic() - started)
            time.sleep(0.01)  # the pings' own cost stays small beside the bound below
    thread.join()
    cpu = cpu_seconds(served.server_pid) + time.process_time() - cpu_before
    assert len(answers) == 3
    for r in answers:
        _oip_error(r, 413, "inputs[0] (features)", "1000000 items", "at most 512")
        assert len(r.content) < 1024, len(r.content)
    assert cpu < 1.0, cpu  # three attacks, the pings and their clients: ~0.1-0.2 s
    # and a loop blocked without using CPU: a bound no busy machine reaches (7.45 s before)
    assert max(pings) < 5.0, pings


@pytest.mark.parametrize("surface", SURFACES)
def test_shape_is_checked_against_the_data_before_expanding(
    urls: dict[str, str], surface: str
) -> None:
    empty = {"name": "value", "shape": [512, 4], "datatype": "FP32", "data": []}
    _oip_error(_infer(urls[surface], {"inputs": [empty]}), 400, "0 values do not fill")
    # Zero-size axes after large ones would be a billion empty lists out of no data.
    hollow = {"name": "value", "shape": [1, 1_000_000_000, 0], "datatype": "FP32", "data": []}
    started = time.monotonic()
    _oip_error(_infer(urls[surface], {"inputs": [hollow]}), 400, "inputs[0] (value)")
    assert time.monotonic() - started < 1.0
    many_dims = {"name": "value", "shape": [1] * 100_000, "datatype": "FP32", "data": [1]}
    _oip_error(_infer(urls[surface], {"inputs": [many_dims]}), 400, "1 to 64 sizes")


# -- item 9: nesting ------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


@pytest.mark.parametrize("surface", SURFACES)
def test_deeply_nested_data_is_400_naming_the_tensor(urls: dict[str, str], surface: str) -> None:
    """Before: 500 on both (``RecursionError`` in ``oip._flatten``)."""
    body = b'{"inputs":[{"name":"value","shape":[1],"datatype":"FP32","data":%s}]}' % _nested(990)
    _oip_error(_infer(urls[surface], body), 400, "inputs[0] (value)", "nested deeper than")
    # Nesting by one level more than the shape has axes is refused the same way.
    two = {"name": "value", "shape": [2], "datatype": "FP32", "data": [[1], [2]]}
    _oip_error(_infer(urls[surface], {"inputs": [two]}), 400, "nested deeper than its shape")
    # Past orjson's own depth limit (1024) the body is not even JSON: still a 400.
    body = b'{"inputs":[{"name":"value","shape":[1],"datatype":"FP32","data":%s}]}' % _nested(2000)
    _oip_error(_infer(urls[surface], body), 400, "malformed JSON")


@pytest.mark.parametrize("surface", SURFACES)
def test_extra_tensor_holding_a_deep_object_is_400(urls: dict[str, str], surface: str) -> None:
    """Before: 500 in the function app (``orjson.dumps`` recursion limit when forwarding)."""
    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    extra = b'{"name":"extra","shape":[1],"datatype":"BYTES","data":[%s]}' % deep
    value = orjson.dumps(_value(1))
    body = b'{"inputs":[%s,%s]}' % (value, extra)
    _oip_error(_infer(urls[surface], body), 400, "inputs[1] (extra)", "strings, not an object")
    for datatype in ("FP32", "BOOL", "INT64"):
        body = body.replace(b'"BYTES"', b'"%s"' % datatype.encode())
        _oip_error(_infer(urls[surface], body), 400, "inputs[1] (extra)", "not an object")
    # As deep as the shape allows is fine, and goes through the function app's forwarding.
    depth = 64
    ok = {"name": "extra", "shape": [1] * depth, "datatype": "FP32", "data": [1]}
    r = _infer(urls[surface], {"inputs": [_value(1), ok]})
    assert r.status_code == 200, r.text


# -- item 13: datatypes and shapes ------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_datatype_is_checked(urls: dict[str, str], surface: str) -> None:
    """Before: ``"NOPE"`` got 200."""
    url = urls[surface]
    nope = {**_value(1), "datatype": "NOPE"}
    _oip_error(_infer(url, {"inputs": [nope]}), 400, "'NOPE' is not an OIP datatype", "FP32")
    missing = {"name": "value", "shape": [1], "data": [1]}
    _oip_error(_infer(url, {"inputs": [missing]}), 400, "datatype is missing")
    cases = [
        ("FP32", ["1.5"], "FP32 data must hold numbers, not a string"),
        ("FP32", [True], "not true/false"),
        ("FP64", [None], "not null"),
        ("INT32", [1.5], "not a non-integer number"),
        ("INT8", [300], "300 does not fit INT8"),
        ("UINT64", [-1], "-1 does not fit UINT64"),
        ("BOOL", [1], "BOOL data must hold true/false"),
        ("BYTES", [1], "BYTES data must hold strings"),
    ]
    for datatype, data, needle in cases:
        tensor = {"name": "value", "shape": [1], "datatype": datatype, "data": data}
        _oip_error(_infer(url, {"inputs": [tensor]}), 400, "inputs[0] (value)", needle)
    # Values that fit their datatype pass this check and meet the model's schema.
    for datatype, data in (("INT8", [-128]), ("UINT8", [255]), ("FP16", [1]), ("INT64", [3])):
        tensor = {"name": "value", "shape": [1], "datatype": datatype, "data": data}
        assert _infer(url, {"inputs": [tensor]}).status_code == 200


@pytest.mark.parametrize("surface", SURFACES)
def test_shape_entries_are_sizes_and_the_batch_is_not_empty(
    urls: dict[str, str], surface: str
) -> None:
    """Before: ``[true, 4]`` was accepted; ``[0, 4]`` got 200 from the server and 400 from
    the function app."""
    url = urls[surface]
    for shape in ([True], [1.0], [-1], ["1"], [], None):
        tensor = {**_value(1), "shape": shape}
        _oip_error(_infer(url, {"inputs": [tensor]}), 400, "inputs[0] (value): shape must be")
    for shape in ([0], [0, 4]):
        tensor = {**_value(), "shape": shape}
        _oip_error(_infer(url, {"inputs": [tensor]}), 400, "the batch (shape[0]) is empty")


@pytest.mark.parametrize("surface", SURFACES)
def test_server_metadata_advertises_the_extensions_supported(
    urls: dict[str, str], surface: str
) -> None:
    meta = httpx.get(urls[surface] + "/v2").json()
    assert meta["name"] == "aiaas" and meta["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("surface", SURFACES)
def test_versioned_readiness_on_both_surfaces(urls: dict[str, str], surface: str) -> None:
    version = httpx.get(urls[surface] + "/v2/models/probe").json()["versions"][0]
    assert httpx.get(urls[surface] + f"/v2/models/probe/versions/{version}/ready").is_success
    r = httpx.get(urls[surface] + "/v2/models/probe/versions/0000/ready")
    _oip_error(r, 404, "not served here")


@pytest.mark.parametrize("surface", SURFACES)
def test_an_output_asked_for_twice_is_400(urls: dict[str, str], surface: str) -> None:
    """Before: each repetition encoded the whole tensor again (a 508 KB request bought a
    124 MB answer); now the list holds each known output at most once."""
    repeated = [{"name": "value"}, {"name": "salt"}, {"name": "value"}] + [{"name": "value"}] * 5000
    started = time.monotonic()
    r = _infer(urls[surface], {"inputs": [_value(*range(512))], "outputs": repeated})
    _oip_error(r, 400, "outputs[2]", "value", "asked for before")
    assert len(r.content) < 1024 and time.monotonic() - started < 2.0
    unknown = _infer(urls[surface], {"inputs": [_value(1)], "outputs": [{"name": "nope"}]})
    _oip_error(unknown, 400, "outputs[0]", "no such output")
    once = _infer(urls[surface], {"inputs": [_value(1)], "outputs": [{"name": "salt"}]})
    assert once.status_code == 200 and [t["name"] for t in once.json()["outputs"]] == ["salt"]
