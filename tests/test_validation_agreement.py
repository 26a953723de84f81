"""One validation truth: the function tier's edge and the model server judge every item alike.

Issue 8 §5. For every example's input schema (probe, iris, digits, minilm, as their built
bundles' manifests carry them) and a table of hostile inputs (wrong types, numeric strings,
bool for a number, extra keys, nulls, huge numbers, NaN and Infinity tokens, nested junk,
empty objects, arrays for objects, very long strings), the edge's verdict equals the
server's: both accept, or both refuse with the same error (status, index, field and
message). Each input is sent as a JSON body ``{"inputs": [good, hostile]}`` and read by
the parser both tiers use, so only what a caller can send is tried and a refusal must name
index 1.

The edge is :class:`functions.edge.EdgeValidator` (what the function app runs); the server
is :meth:`aiaas.runtime.dataplane.DataPlane.validate` of a data plane built on the bundle's
real model class (what both of the server's transports run), and, for the probe, a real
``aiaas serve`` process over HTTP.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
from conftest import ServerProcess, build_probe_variant

from aiaas import oip
from aiaas.bundle import open_bundle
from aiaas.config import ServerSection
from aiaas.errors import AiaasError, InvalidInput
from aiaas.protocol import parse_json, simple_inputs
from aiaas.runtime.dataplane import DataPlane
from aiaas.runtime.runner import ModelRunner
from functions.edge import EdgeValidator

if TYPE_CHECKING:
    from aiaas.bundle import BuiltBundle

EXAMPLES = ("probe", "iris", "digits", "minilm")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Values put in place of one property of a good item, as the JSON text a caller sends.
HOSTILE_VALUES: list[tuple[str, bytes]] = [
    ("numeric string", b'"3"'),
    ("float string", b'"3.5"'),
    ("numeric strings", b'["1", "2", "3", "4"]'),
    ("true", b"true"),
    ("false", b"false"),
    ("bools", b"[true, false, true, false]"),
    ("null", b"null"),
    ("nulls", b"[null, null, null, null]"),
    ("integer", b"3"),
    ("integral float", b"3.0"),
    ("fraction", b"3.5"),
    ("negative", b"-1"),
    ("zero", b"0"),
    ("huge float", b"1e308"),
    ("integer beyond 64 bits", b"1" + b"0" * 30),
    ("integer beyond float", b"1" + b"0" * 400),
    ("1e400", b"1e400"),
    ("NaN", b"NaN"),
    ("Infinity", b"Infinity"),
    ("-Infinity", b"-Infinity"),
    ("smallest float", b"5e-324"),
    ("empty string", b'""'),
    ("unicode", orjson.dumps("é🙂")),
    ("long string", b'"' + b"x" * 100_001 + b'"'),
    ("long base64", b'"' + b"AAAA" * 25_000 + b'"'),
    ("empty list", b"[]"),
    ("four numbers", b"[1, 2.5, 3, 4]"),
    ("four numbers, one null", b"[1, null, 3, 4]"),
    ("three numbers", b"[1, 2, 3]"),
    ("five numbers", b"[1, 2, 3, 4, 5]"),
    ("long list", orjson.dumps([0.5] * 10_000)),
    ("nested lists", b"[[1], [2], [3], [4]]"),
    ("empty object", b"{}"),
    ("object", b'{"value": 1}'),
    ("nested junk", b'{"a": [1, {"b": null}], "c": {"d": [[], {}]}}'),
]

_HOLE = "@@hostile@@"


def _body(*items: bytes) -> bytes:
    return b'{"inputs": [' + b", ".join(items) + b"]}"


def _with(good: dict[str, Any], key: str, value: bytes) -> bytes:
    """``good`` as JSON, with ``key``'s value replaced by the JSON text ``value``."""
    return orjson.dumps({**good, key: _HOLE}).replace(orjson.dumps(_HOLE), value)


def hostile_bodies(good: dict[str, Any], schema: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """Every hostile request for an input schema: ``(label, body)``, the bad item second."""
    g = orjson.dumps(good)
    keys = sorted({*good, *schema.get("properties", {})})
    for key in keys:
        for label, value in HOSTILE_VALUES:
            yield f"{key}={label}", _body(g, _with(good, key, value))
    whole: list[tuple[str, Any]] = [
        ("empty object", {}),
        ("array for an object", [good]),
        ("empty array", []),
        ("string", "text"),
        ("number", 3),
        ("null", None),
        ("true", True),
        ("extra key", {**good, "extra": 1}),
        ("extra nested junk", {**good, "junk": {"a": [None, {"b": []}]}}),
        ("every value null", dict.fromkeys(good)),
        ("every value a numeric string", dict.fromkeys(good, "3")),
        ("keys in upper case", {k.upper(): v for k, v in good.items()}),
    ]
    whole += [(f"without {key}", {k: v for k, v in good.items() if k != key}) for key in good]
    whole += [(f"{key} bad, rest missing", {key: [None]}) for key in good]
    for label, item in whole:
        yield f"item={label}", _body(g, orjson.dumps(item))


@dataclass
class Tiers:
    """One example's edge and server, and a good item of its (the manifest's example)."""

    edge: EdgeValidator
    plane: DataPlane
    good: dict[str, Any]
    schema: dict[str, Any]


@pytest.fixture(scope="module")
def tiers(
    build_example: Callable[[str], BuiltBundle],
    probe_bundle: BuiltBundle,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Tiers]:
    unpacked = tmp_path_factory.mktemp("unpacked")
    out: dict[str, Tiers] = {}
    for name in EXAMPLES:
        built = probe_bundle if name == "probe" else build_example(name)
        bundle_dir, manifest = open_bundle(built.path, cache_dir=unpacked)
        # the server's data plane on the bundle's own model class (never loaded: validation
        # needs the input schema only)
        plane = DataPlane(ModelRunner(bundle_dir, manifest), ServerSection())
        good = manifest.example_request["inputs"][0]
        out[name] = Tiers(EdgeValidator(manifest), plane, good, manifest.input_schema)
    return out


Verdict = tuple[str, str, Any]  # ("accepted", "", None) or (error code, message, details)


def _verdict(judge: Callable[[list[Any]], object], body: bytes) -> Verdict:
    try:
        judge(simple_inputs(parse_json(body)))
    except AiaasError as exc:
        return exc.code, exc.message, exc.details
    return "accepted", "", None


def edge_verdict(t: Tiers, body: bytes) -> Verdict:
    """As the function app judges a simple-protocol body."""
    return _verdict(t.edge.validate, body)


def server_verdict(t: Tiers, body: bytes) -> Verdict:
    """As the model server judges one (both transports call ``DataPlane.validate``)."""
    return _verdict(t.plane.validate, body)


@pytest.mark.parametrize("example", EXAMPLES)
def test_edge_and_server_agree_on_every_hostile_input(
    tiers: dict[str, Tiers], example: str
) -> None:
    t = tiers[example]
    assert edge_verdict(t, _body(orjson.dumps(t.good))) == ("accepted", "", None)
    counts = {"accepted": 0, "bad_request": 0, "invalid_input": 0}
    disagreements = []
    for label, body in hostile_bodies(t.good, t.schema):
        edge, server = edge_verdict(t, body), server_verdict(t, body)
        if edge != server:
            disagreements.append(f"{label}: edge {edge[:2]} != server {server[:2]}")
            continue
        counts[edge[0]] += 1
        if edge[0] == "invalid_input":  # the bad item is the second one: index 1
            assert edge[2][0]["index"] == 1, (label, edge)
            assert edge[1].startswith("inputs[1]"), (label, edge)
    assert not disagreements, "\n".join(disagreements)
    # the table is not vacuous: each kind of verdict is reached
    assert counts["invalid_input"] >= 30 and counts["bad_request"] >= 5, counts
    assert counts["accepted"] >= 2, counts


def test_numeric_string_is_refused_by_both_not_coerced(tiers: dict[str, Tiers]) -> None:
    """The issue's own case: ``{"value": "3"}`` passed the server (pydantic's lax mode made
    it 3.0) and got 422 at the edge. A JSON API does not coerce: both refuse it alike."""
    t = tiers["probe"]
    body = _body(b'{"value": 1}', b'{"value": "3"}')
    expected = ("invalid_input", "inputs[1].value: must be number")
    assert edge_verdict(t, body)[:2] == expected
    assert server_verdict(t, body)[:2] == expected
    for bad in (b'{"value": 1, "fail": 0}', b'{"value": 1, "sleep_ms": true}'):
        assert server_verdict(t, _body(bad))[0] == "invalid_input", bad


def test_the_edge_forwards_items_exactly_as_sent(tiers: dict[str, Tiers]) -> None:
    """Checking an item never writes the schema's defaults into it: the probe's
    ``sleep_ms`` and ``fail`` have defaults, and the OIP path forwards the items it checked."""
    items = [{"value": 1.0}, {"value": 2.0, "fail": False}]
    sent = copy.deepcopy(items)
    tiers["probe"].edge.validate(items)
    assert items == sent
    assert oip.forward_body(items) == orjson.dumps({"inputs": sent})


def test_content_keywords_are_asserted_alike(tiers: dict[str, Tiers]) -> None:
    """digits declares ``contentEncoding: base64`` and ``contentMediaType: image/png``:
    both tiers refuse text that is not base64 of a PNG with the same error."""
    t = tiers["digits"]
    for value, message in [
        ("not base64", "inputs[0].image: must be encoded by base64"),  # fastjsonschema's
        ("AAAA AAAA", "inputs[0].image: must be encoded by base64"),  # strict: no spaces
        ("AAAA", "inputs[0].image: must be image/png data (contentMediaType)"),
    ]:
        body = orjson.dumps({"inputs": [{"image": value}]})
        assert edge_verdict(t, body)[:2] == ("invalid_input", message)
        assert server_verdict(t, body)[:2] == ("invalid_input", message)


def test_the_models_own_validators_refuse_more_at_the_server_only(
    tiers: dict[str, Tiers],
) -> None:
    """What no JSON Schema can say stays the model's: digits' validator decodes the PNG.
    A PNG signature followed by junk fits the schema (the edge forwards it) and the server
    refuses it, in the same error shape, naming the same index and field."""
    t = tiers["digits"]
    junk = base64.b64encode(PNG_MAGIC + b"junk").decode()
    body = orjson.dumps({"inputs": [t.good, {"image": junk}]})
    assert edge_verdict(t, body) == ("accepted", "", None)
    code, message, details = server_verdict(t, body)
    assert code == InvalidInput.code and message.startswith("inputs[1].image: ")
    assert details[0]["index"] == 1 and details[0]["field"] == "image"


def test_a_real_server_process_agrees_with_the_edge(
    tiers: dict[str, Tiers],
    probe_bundle: BuiltBundle,
    start_server: Callable[..., ServerProcess],
) -> None:
    """The probe's table again, over HTTP against ``aiaas serve``: refused with the status
    and error the edge gives, or served (the probe's ``fail`` makes a valid item a 500)."""
    t = tiers["probe"]
    server = start_server(probe_bundle.path)
    status = {"invalid_input": 422, "bad_request": 400}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for label, body in hostile_bodies(t.good, t.schema):
            code, message, details = edge_verdict(t, body)
            r = client.post(
                "/invocations", content=body, headers={"content-type": "application/json"}
            )
            if code == "accepted":
                assert r.status_code in (200, 500), (label, r.text)
                if r.status_code == 500:
                    assert r.json()["error"]["code"] == "model_error", (label, r.text)
                continue
            error = r.json()["error"]
            assert (r.status_code, error["code"]) == (status[code], code), (label, r.text)
            assert error["message"] == message, label
            assert error.get("details") == details, label


def test_table_covers_the_examples_schemas(tiers: dict[str, Tiers]) -> None:
    """Every property of every example's schema gets the whole list of hostile values."""
    for name in EXAMPLES:
        t = tiers[name]
        labels = [label for label, _ in hostile_bodies(t.good, t.schema)]
        for key in t.schema["properties"]:
            assert sum(label.startswith(f"{key}=") for label in labels) == len(HOSTILE_VALUES)


def test_tuples_are_checked_alike(tmp_path: Path) -> None:
    """pydantic writes a tuple as JSON Schema 2020-12's ``prefixItems``, a keyword the
    compiled check (draft 7) would skip: it is checked, at the edge as at the server."""
    bundle = build_probe_variant(
        tmp_path,
        "    fail: bool = False\n",
        "    fail: bool = False\n    pair: tuple[int, str] = (0, '')\n",
    )
    bundle_dir, manifest = open_bundle(bundle.path, cache_dir=tmp_path / "unpacked")
    plane = DataPlane(ModelRunner(bundle_dir, manifest), ServerSection())
    t = Tiers(EdgeValidator(manifest), plane, {"value": 1.0}, manifest.input_schema)
    for pair, field in [
        (b'["x", 1]', "pair.0"),
        (b"[true, 1]", "pair.0"),
        (b"[1, 2]", "pair.1"),
        (b'[1, "x", 3]', "pair"),
        (b"[1]", "pair"),
    ]:
        body = _body(b'{"value": 1}', b'{"value": 1, "pair": ' + pair + b"}")
        edge = edge_verdict(t, body)
        assert edge == server_verdict(t, body), pair
        assert edge[0] == "invalid_input" and edge[2][0]["field"] == field, (pair, edge)
    good = _body(b'{"value": 1, "pair": [1, "x"]}')
    assert edge_verdict(t, good) == server_verdict(t, good) == ("accepted", "", None)


def test_a_schema_neither_tier_can_check_stops_the_server_saying_why(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """A pattern in pydantic's Rust regex dialect (``\\p{L}``) is no JSON Schema that Python
    can check: the server refuses to start (exit 1, one clear line), as the edge would
    refuse to, instead of serving what the edge cannot check."""
    line = "    fail: bool = False\n"
    field = "    name: str = Field(default='a', pattern=r'^\\p{L}+$')\n"
    bundle = build_probe_variant(tmp_path, line, line + field)
    server = start_server(bundle.path, ready=False)
    deadline = time.monotonic() + 60
    while server.proc.poll() is None:
        assert time.monotonic() < deadline, "the server kept running"
        time.sleep(0.05)
    assert server.proc.returncode == 1
    assert "the model's input schema cannot be checked as JSON Schema: bad escape \\p" in (
        server.log()
    )
    assert "Traceback" not in server.log()
