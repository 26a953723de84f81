"""Finding 7: one item holding a million bad list elements is answered 422 quickly, with
bounded memory, naming the first problem (input validation shares
the bounded error shape with output checking's neighbour, ``aiaas.protocol``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import ServerProcess, build_probe_variant
from pydantic import BaseModel

from aiaas.errors import InvalidInput
from aiaas.protocol import validate_items

StartServer = Callable[..., ServerProcess]


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (``VmHWM``), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def test_a_million_bad_elements_in_one_item(start_server: StartServer, tmp_path: Path) -> None:
    bundle = build_probe_variant(
        tmp_path, "    fail: bool = False\n", "    fail: bool = False\n    ints: list[int] = []\n"
    )
    server = start_server(bundle.path)
    body = b'{"inputs": [{"value": 1, "ints": [' + b",".join([b'"x"'] * 1_000_000) + b"]}]}"
    assert len(body) < 6_000_000  # under the default body limit: validation must refuse it
    before = _peak_rss_mb(server.proc.pid)
    cpu_before = server.cpu_seconds()
    r = httpx.post(
        server.url + "/invocations",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    cpu = server.cpu_seconds() - cpu_before
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    # The JSON Schema check (the one the edge runs too) stops at an item's first problem.
    assert err["message"] == "inputs[0].ints.0: must be integer"
    assert err["details"] == [{"index": 0, "field": "ints.0", "message": "must be integer"}]
    # before: 2.65 s of the event loop and ~1.1 GB more peak memory (errors() built a dict
    # per error). pydantic's own validation still holds its million errors for a moment
    # (~350 MB, bounded by max_body_bytes). The server's CPU time, not the wall clock,
    # which a busy machine stretches by whatever else runs.
    assert cpu < 1.0, cpu
    grown = _peak_rss_mb(server.proc.pid) - before
    assert grown < 700, f"peak RSS grew {grown:.0f} MB"
    ok = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 2, "ints": [1]}]})
    assert ok.status_code == 200, ok.text


class Ints(BaseModel):
    """An input schema with an unbounded list."""

    ints: list[int]
    name: str = ""


def test_problems_past_the_cut_are_counted() -> None:
    items = [{"ints": [1] * 50 + ["x"] * 20, "name": 3}]
    try:
        validate_items(Ints, items)
    except InvalidInput as exc:
        # the first 10 elements are fine: the cut copy finds only the name
        assert str(exc) == "inputs[0].name: Input should be a valid string (and 20 more)"
    else:
        raise AssertionError("not refused")
    try:
        validate_items(Ints, [{"ints": [1] * 50 + ["x"] * 20}])
    except InvalidInput as exc:
        assert str(exc) == (
            "inputs[0]: a value past the first 10 elements of a list breaks the input schema"
            " (and 19 more)"
        )
    else:
        raise AssertionError("not refused")


def test_few_problems_are_all_listed_across_items() -> None:
    items = [{"ints": ["x", 2, "y"]}, {"ints": [1], "name": 5}]
    try:
        validate_items(Ints, items)
    except InvalidInput as exc:
        assert str(exc).startswith("inputs[0].ints.0: ") and str(exc).endswith("(and 2 more)")
        assert [d["field"] for d in exc.details] == ["ints.0", "ints.2", "name"]
    else:
        raise AssertionError("not refused")
