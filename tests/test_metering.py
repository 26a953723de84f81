"""Metering: one usage record per call, EMF on AWS, SQLite locally, `aiaas usage`, cost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECTS, FunctionSetup
from starlette.testclient import TestClient

from aiaas.config import load_config
from aiaas.errors import ConfigError
from aiaas.manifest import read_manifest_file
from aiaas.pricing import FREE, CostModel, Price
from functions.app import FunctionApp
from functions.auth import load_checker
from functions.metering import JsonLineSink, SqliteSink, UsageRecord, summarize
from functions.platforms.aws import PLATFORM as AWS
from functions.platforms.local import PLATFORM as LOCAL


class ListSink:
    """Keeps records in memory: a real sink, for looking at what was recorded."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def record(self, usage: UsageRecord) -> None:
        self.records.append(usage)


def test_every_call_leaves_exactly_one_record(probe_function: FunctionSetup) -> None:
    sink = ListSink()
    env = probe_function.env
    app = FunctionApp(
        probe_function.provider.invoker, read_manifest_file(Path(env["AIAAS_MANIFEST"])),
        keys=load_checker({"AIAAS_API_KEYS": env["AIAAS_API_KEYS"]}), usage=sink, platform="aws",
    ).asgi()  # fmt: skip
    client = TestClient(app)
    auth = {"authorization": f"Bearer {probe_function.api_key}"}
    calls = [
        (auth, {"inputs": [{"value": 1}]}, 200),
        ({}, {"inputs": [{"value": 1}]}, 401),
        (auth, {"inputs": [{"value": "x"}]}, 422),
        (auth, {"inputs": [{"value": 1, "fail": True}]}, 502),
    ]
    for headers, body, status in calls:
        assert client.post("/predict", json=body, headers=headers).status_code == status
    client.get("/health")
    client.get("/v2/models/probe", headers=auth)
    assert [r.status for r in sink.records] == [200, 401, 422, 502]  # GETs are not metered
    key_id = probe_function.api_key.split("_")[1]
    assert [r.key_id for r in sink.records] == [key_id, "-", key_id, key_id]
    first = sink.records[0]
    assert first.model == "probe" and first.provider == "local" and first.bytes_in > 0
    assert first.bytes_out > 0 and first.latency_ms > 0 and first.cost_usd > 0
    assert len({r.request_id for r in sink.records}) == 4
    assert all(probe_function.api_key not in json.dumps(r.__dict__) for r in sink.records)


def test_emf_line_is_a_cloudwatch_metric(capsys: pytest.CaptureFixture[str]) -> None:
    record = UsageRecord(
        1_700_000_000.5, "r1", "k1", "m", "v", "sagemaker", 200, 12.5, 100, 2000, 1e-6
    )
    JsonLineSink(emf=True).record(record)
    line = json.loads(capsys.readouterr().out.strip())
    spec = line["_aws"]["CloudWatchMetrics"][0]
    assert line["_aws"]["Timestamp"] == 1_700_000_000_500 and spec["Namespace"] == "aiaas"
    for metric in spec["Metrics"]:
        assert isinstance(line[metric["Name"]], int | float)
    for dimensions in spec["Dimensions"]:
        assert all(isinstance(line[d], str) for d in dimensions)


def test_sqlite_records_and_the_usage_command(tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(PROJECTS / "probe", project)
    sink = SqliteSink(project / ".aiaas" / "usage.sqlite")
    for i, (key, status) in enumerate([("k1", 200), ("k1", 502), ("k2", 200)]):
        sink.record(
            UsageRecord(
                2e9 + i, f"r{i}", key, "probe", "v", "local", status, 10.0 * (i + 1), 1, 1, 0.5
            )
        )
    rows = summarize(project / ".aiaas" / "usage.sqlite", since=0, by="key_id")
    assert rows == [("k1", 2, 1, 15.0, 1.0), ("k2", 1, 0, 30.0, 0.5)]
    cmd = [
        sys.executable,
        "-m",
        "aiaas",
        "usage",
        "--since",
        "2000-01-01",
        "--by",
        "key",
        "--config",
        str(project),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "k1" in out.stdout and "k2" in out.stdout
    bad = subprocess.run(
        [*cmd[:-2], "--by", "colour", "--config", str(project)], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "--by colour" in bad.stderr


def test_cost_estimate_adds_function_and_endpoint_share() -> None:
    gpu = Price(0.736, "hour", "a GPU instance", "test")
    one_second = CostModel.build(AWS.prices, gpu, 1024).estimate(1.0)
    assert one_second == pytest.approx(0.20 / 1e6 + 0.0000166667 + 0.736 / 3600)
    assert CostModel.build(LOCAL.prices, FREE, 512).estimate(5.0) == 0.0


def test_price_overrides_come_from_the_config_read_once(tmp_path: Path) -> None:
    (tmp_path / "aiaas.yaml").write_text(
        "model: {entrypoint: m:M}\npricing:\n  endpoint_hourly_usd: 3.6\n"
    )
    env = {"AIAAS_PRICING__FUNCTION_REQUEST_USD": "0.5"}
    prices = load_config(tmp_path, env=env).pricing
    cost = CostModel.build(
        AWS.prices, FREE, 1024,
        function_request_usd=prices.function_request_usd,
        function_gb_second_usd=prices.function_gb_second_usd,
        endpoint_hourly_usd=prices.endpoint_hourly_usd,
    )  # fmt: skip
    assert cost.estimate(1.0) == pytest.approx(0.5 + 0.0000166667 + 3.6 / 3600)
    with pytest.raises(
        ConfigError, match=r"AIAAS_PRICING__ENDPOINT_HOURLY_USD .*pricing\.endpoint_hourly_usd"
    ):
        load_config(tmp_path, env={"AIAAS_PRICING__ENDPOINT_HOURLY_USD": "-1"})


def test_the_usage_database_is_private_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)  # the usual umask, which made the file 0644
    try:
        path = tmp_path / ".aiaas" / "usage.sqlite"
        sink = SqliteSink(path)
        sink.record(UsageRecord(2e9, "r", "k", "probe", "v", "local", 200, 1.0, 1, 1, 0.0))
        files = [path, path.with_name("usage.sqlite-wal"), path.with_name("usage.sqlite-shm")]
        assert all(f.exists() for f in files)
        assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600] * 3
        older = tmp_path / "old.sqlite"  # written by an earlier aiaas with mode 0644
        older.touch(mode=0o644)
        SqliteSink(older)
        assert stat.S_IMODE(older.stat().st_mode) == 0o600
    finally:
        os.umask(old)
