"""A real ``aiaas function serve`` process that keeps running while the CLI changes what it
should enforce: keys created and revoked (``aiaas keys``), and a redeploy with another
schema. Each change must reach the running app within its documented bound."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import PROJECTS, build_probe_variant, free_port

from adapters.local.provider import LocalProvider
from aiaas.bundle import build_bundle
from aiaas.config import load_config
from functions.auth import RELOAD_INTERVAL_S

SLACK_S = 1.0  # a loaded 2-core machine: scheduling, the CLI's own exit, our polling


@dataclass
class Served:
    project: Path
    url: str
    provider: LocalProvider
    version: str


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "aiaas", *args, "--config", str(project)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _create_key(project: Path) -> tuple[str, str]:
    created = _cli(project, "keys", "create")
    assert created.returncode == 0, created.stderr
    key = next(line.split()[-1] for line in created.stdout.splitlines() if "API key" in line)
    return key, key.split("_")[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve")
    project = work / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    built = build_bundle(project, project / "dist" / "model.tar.gz")
    provider = LocalProvider.from_config(load_config(project, env={}))
    provider.deploy(built.path)
    port = free_port()
    log = (work / "function.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiaas", "function", "serve", "probe", "--config", str(project),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (work / "function.log").read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (work / "function.log").read_text()
            time.sleep(0.05)
        yield Served(project, url, provider, built.manifest.version)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        provider.delete("probe")


def _status(url: str, key: str) -> int:
    body = {"inputs": [{"value": 1}]}
    return httpx.post(url + "/predict", json=body, headers={"x-api-key": key}).status_code


def _within(bound_s: float, condition: Callable[[], bool]) -> float:
    """Seconds until ``condition`` held; fails if it did not within ``bound_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < bound_s, f"not within {bound_s:g}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_revoked_keys_stop_and_new_keys_start_working_while_it_runs(served: Served) -> None:
    old_key, old_id = _create_key(served.project)  # created after the app started
    _within(RELOAD_INTERVAL_S + SLACK_S, lambda: _status(served.url, old_key) == 200)
    revoked = _cli(served.project, "keys", "revoke", old_id)
    assert revoked.returncode == 0, revoked.stderr
    _within(RELOAD_INTERVAL_S + SLACK_S, lambda: _status(served.url, old_key) == 401)
    new_key, _ = _create_key(served.project)
    _within(RELOAD_INTERVAL_S + SLACK_S, lambda: _status(served.url, new_key) == 200)
    assert _status(served.url, old_key) == 401  # and it stays revoked


def test_a_redeploy_is_followed_by_the_openapi_and_the_usage_records(
    served: Served, tmp_path: Path
) -> None:
    key, _ = _create_key(served.project)
    _within(RELOAD_INTERVAL_S + SLACK_S, lambda: _status(served.url, key) == 200)
    doc = httpx.get(served.url + "/openapi.json").json()
    assert doc["info"]["version"] == served.version
    assert "note" not in doc["components"]["schemas"]["ProbeInInput"]["properties"]

    # v2: another digest and another input schema (a new field), deployed under the same name
    v2 = build_probe_variant(
        tmp_path, "    fail: bool = False\n", "    fail: bool = False\n    note: str = ''\n"
    )
    assert v2.manifest.version != served.version
    served.provider.deploy(v2.path, name="probe")

    def openapi_is_v2() -> bool:
        doc = httpx.get(served.url + "/openapi.json").json()
        return bool(doc["info"]["version"] == v2.manifest.version)

    _within(1.0 + SLACK_S, openapi_is_v2)
    doc = httpx.get(served.url + "/openapi.json").json()
    assert "note" in doc["components"]["schemas"]["ProbeInInput"]["properties"]
    assert httpx.get(served.url + "/health").json()["version"] == v2.manifest.version
    r = httpx.post(
        served.url + "/predict",
        json={"inputs": [{"value": 1, "note": "v2"}]},
        headers={"x-api-key": key, "x-request-id": "after-redeploy"},
    )
    assert r.status_code == 200 and r.json()["version"] == v2.manifest.version
    db = sqlite3.connect(served.project / ".aiaas" / "usage.sqlite")
    try:
        rows = db.execute(
            "SELECT version FROM usage WHERE request_id = 'after-redeploy'"
        ).fetchall()
    finally:
        db.close()
    assert rows == [(v2.manifest.version,)]
