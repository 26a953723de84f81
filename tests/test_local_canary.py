"""Local's traffic split: what a canary or linear step leaves behind when it does not finish.

The happy path (both versions serve while the step holds, describe reports the shares, then
all the traffic moves) is the conformance suite's canary test. Here: a split whose new
server is gone sends its calls to the live one, and the next deploy removes a split a killed
deploy left. Real ``aiaas serve`` processes throughout.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port

from adapters.base import DeploymentStatus
from adapters.local.provider import LocalProvider
from adapters.local.state import SPLIT_FILE, ServerRecord, Split, pick, read_split, read_state
from aiaas.bundle import BuiltBundle


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    prov = LocalProvider(state_dir=str(tmp_path / "state"))
    yield prov
    prov.delete("probe")
    prov.close()


def test_pick_follows_the_share() -> None:
    live = _record(1, 1001)
    new = _record(2, 1002)
    split = Split(30, new)
    assert pick(live, None, 0.0) is live
    assert [pick(live, split, d / 100).pid for d in range(100)].count(2) == 30
    assert Split.from_json(split.to_json()) == split


@pytest.mark.parametrize("text", ['{"pct": 0, "server": {"pid": 1}}', '{"pct": "x"}', "[]"])
def test_a_split_file_that_is_not_one_is_ignored(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "local" / "probe"
    folder.mkdir(parents=True)
    (folder / SPLIT_FILE).write_text(text)
    assert read_split(tmp_path, "probe") is None  # every call goes to the live server


def test_a_split_whose_new_server_is_gone_sends_its_calls_to_the_live_one(
    provider: LocalProvider, probe_bundle: BuiltBundle
) -> None:
    """As a deploy killed during its canary step leaves it: the new server died, its split
    file stayed. No call fails; describe shows the share and that version stopped; the next
    deploy removes the split."""
    provider.deploy(probe_bundle.path)
    live = read_state(provider.root, "probe")
    assert live is not None
    gone = dataclasses.replace(live, pid=2**22 + 7, port=free_port(), version="gone-version")
    provider._write_split("probe", Split(90, gone))
    body = json.dumps(probe_bundle.manifest.example_request).encode()
    versions = {provider.invoker.invoke_sync("probe", body).version for _ in range(20)}
    assert versions == {live.version}
    described = provider.describe("probe")
    assert [(v.version, v.traffic_pct, v.status) for v in described.versions] == [
        (live.version, 10, DeploymentStatus.READY),
        ("gone-version", 90, DeploymentStatus.STOPPED),
    ]
    provider.deploy(probe_bundle.path)  # the same digest: nothing restarts, the split goes
    assert read_split(provider.root, "probe") is None
    assert [(v.version, v.traffic_pct) for v in provider.describe("probe").versions] == [
        (live.version, 100)
    ]


def _record(pid: int, port: int) -> ServerRecord:
    return ServerRecord(pid=pid, port=port, version=f"v{pid}")
