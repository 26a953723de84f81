"""API keys: hashing, verification, configuration errors, the keys CLI, and no key in logs."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECTS
from starlette.testclient import TestClient

from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from aiaas.errors import ConfigError, Unauthorized
from functions.app import FunctionApp
from functions.auth import KeyChecker, create_key, load_checker, parse_records


def test_a_created_key_verifies_and_its_record_holds_no_secret() -> None:
    key, record = create_key()
    checker = KeyChecker({record.key_id: record})
    assert checker.verify(key) == record.key_id
    secret = key.split("_", 2)[2]
    assert secret not in str(record) and key not in str(record)
    for bad in (
        None,
        "",
        key + "x",
        key.replace(record.key_id, "00000000"),
        "aiaas_" + record.key_id,
        "x_y_z",
    ):
        with pytest.raises(Unauthorized, match="missing or invalid API key"):
            checker.verify(bad)


def test_records_come_from_the_environment_first(tmp_path: Path) -> None:
    key_a, rec_a = create_key()
    key_b, rec_b = create_key()
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"{rec_b}\n")
    from_env = load_checker({"AIAAS_API_KEYS": f"{rec_a}, "}, keys_file)
    assert from_env.verify(key_a) == rec_a.key_id
    with pytest.raises(Unauthorized):
        from_env.verify(key_b)
    assert load_checker({}, keys_file).verify(key_b) == rec_b.key_id
    assert load_checker({}, tmp_path / "none").key_ids == []


def test_a_malformed_record_names_its_position() -> None:
    _, good = create_key()
    with pytest.raises(ConfigError, match="AIAAS_API_KEYS: record 2 is not"):
        parse_records(f"{good},abc:zz:11")


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    import shutil

    project = tmp_path / "p"
    shutil.copytree(PROJECTS / "probe", project)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "aiaas", "keys", *args, "--config", str(project)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    created = cli("create")
    assert created.returncode == 0, created.stderr
    key = next(
        line.split()[-1] for line in created.stdout.splitlines() if line.startswith("API key")
    )
    key_id = key.split("_")[1]
    stored = (project / ".aiaas" / "api-keys").read_text()
    assert key_id in stored and key.split("_", 2)[2] not in stored
    assert (project / ".aiaas" / "api-keys").stat().st_mode & 0o077 == 0
    assert cli("list").stdout.split() == [key_id]
    assert load_checker({}, project / ".aiaas" / "api-keys").verify(key) == key_id
    assert cli("revoke", key_id).returncode == 0
    assert cli("list").stdout.split() == []
    again = cli("revoke", key_id)
    assert again.returncode == 1 and "no API key with id" in again.stderr


def test_no_key_material_reaches_the_logs(
    probe_bundle: BuiltBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, record = create_key()
    secret = key.split("_", 2)[2]
    provider = LocalProvider(state_dir=str(tmp_path))
    provider.deploy(probe_bundle.path)
    try:
        client = TestClient(
            FunctionApp(
                provider.invoker, probe_bundle.manifest, keys=KeyChecker({record.key_id: record})
            ).asgi()
        )
        with caplog.at_level(logging.DEBUG):
            calls = [
                ({"authorization": f"Bearer {key}"}, {"inputs": [{"value": 1}]}),
                ({"authorization": f"Bearer {key}"}, {"inputs": [{"value": 1, "fail": True}]}),
                ({"authorization": f"Bearer {key}"}, {"inputs": [{"value": "x"}]}),
                ({"x-api-key": key + "wrong"}, {"inputs": [{"value": 1}]}),
                ({"authorization": f"Bearer {key[:-1]}"}, {"inputs": [{"value": 1}]}),
            ]
            responses = [
                client.post("/predict", json=body, headers=headers) for headers, body in calls
            ]
        assert [r.status_code for r in responses] == [200, 502, 422, 401, 401]
        server_log = "\n".join(provider.logs("probe", tail=1000))
    finally:
        provider.delete("probe")
    for text in (
        caplog.text,
        server_log,
        *(r.text for r in responses),
        *(str(dict(r.headers)) for r in responses),
    ):
        assert secret not in text and secret[:12] not in text


def _rewrite_in_place_same_tick(path: Path, text: str) -> None:
    """Overwrite ``path`` in place with same-size ``text`` and give it back its modification
    time: a rewrite within one timestamp tick (coarse-timestamp filesystems)."""
    import os

    before = os.stat(path)
    assert len(text.encode()) == before.st_size
    with open(path, "r+") as f:  # same inode, same size
        f.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_same_size_rewrite_in_the_same_tick_is_seen(tmp_path: Path) -> None:
    """Before: ``(mtime, size, inode)`` did not change, so a revoked key kept working."""
    from functions.auth import KeyFile

    _, record = create_key()
    _, other = create_key()  # records have a fixed length: the rewrite has the same size
    path = tmp_path / "api-keys"
    path.write_text(str(record))
    keys = KeyFile(path, interval_s=0.0)
    assert record.key_id in keys.records()
    _rewrite_in_place_same_tick(path, str(other))
    assert set(keys.records()) == {other.key_id}  # the change time moved: seen at once


def test_a_key_file_is_read_again_even_when_stat_looks_unchanged(tmp_path: Path) -> None:
    """Where even the change time does not move (its tick is coarse too), the periodic
    re-read still picks the rewrite up within ``full_reload_s``."""
    import os
    import time

    import functions.auth as auth

    _, record = create_key()
    _, other = create_key()
    path = tmp_path / "api-keys"
    path.write_text(str(record))
    frozen = os.stat(path)
    # The filesystem's timestamps are the boundary here: no local filesystem lets a test
    # keep a file's ctime from moving, so KeyFile's stat reports the old one.
    keys = auth.KeyFile(path, interval_s=0.0, full_reload_s=1.0, stat=lambda _p: frozen)
    _rewrite_in_place_same_tick(path, str(other))
    assert set(keys.records()) == {record.key_id}  # not yet: stat looks the same
    deadline = time.monotonic() + 5
    while set(keys.records()) != {other.key_id}:
        assert time.monotonic() < deadline, "never re-read"
        time.sleep(0.02)
