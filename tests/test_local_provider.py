"""The local provider's whole lifecycle, against real ``aiaas serve`` processes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import build_probe_variant

from adapters.local.invoke import LocalInvoker
from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from aiaas.errors import DeployFailed, InvalidInput, NotFound

BODY = json.dumps({"inputs": [{"value": 3}]}).encode()


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    prov = LocalProvider(state_dir=str(tmp_path / "state"))
    yield prov
    for d in prov.list():
        prov.delete(d.name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _new_version(tmp_path: Path) -> BuiltBundle:
    """The probe project with one constant changed: a different digest."""
    return build_probe_variant(tmp_path, 'VERSION_SALT = "1"', 'VERSION_SALT = "2"')


def test_deploy_invoke_describe_logs_delete(
    provider: LocalProvider, probe_bundle: BuiltBundle
) -> None:
    steps: list[str] = []
    d = provider.deploy(probe_bundle.path, progress=lambda msg, _f: steps.append(msg))
    assert d.status == "ready" and d.version == probe_bundle.manifest.version
    assert d.endpoint and d.endpoint.startswith("http://127.0.0.1:")
    assert steps[-1] == "ready" and any(s.startswith("smoke test") for s in steps)
    out = json.loads(provider.invoker.invoke_sync("probe", BODY, request_id="rid-1").body)
    assert out["outputs"][0]["value"] == 6.0
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.value"):
        provider.invoker.invoke_sync("probe", b'{"inputs": [{"value": "x"}]}')
    assert provider.describe("probe").status == "ready"
    assert [x.name for x in provider.list()] == ["probe"]
    assert any("loaded on cpu" in line for line in provider.logs("probe"))
    pid = d.details["pid"]
    assert provider.delete("probe") is True
    assert not _pid_alive(pid)
    assert provider.delete("probe") is False  # idempotent
    with pytest.raises(NotFound):
        provider.describe("probe")
    with pytest.raises(NotFound):
        provider.invoker.invoke_sync("probe", BODY)


def test_redeploying_the_same_digest_changes_nothing(
    provider: LocalProvider, probe_bundle: BuiltBundle
) -> None:
    first = provider.deploy(probe_bundle.path)
    again = provider.deploy(probe_bundle.path)
    assert again.details["pid"] == first.details["pid"]
    assert again.details["port"] == first.details["port"]
    assert again.details["started_at"] == first.details["started_at"]


def test_new_digest_switches_without_a_failed_request(
    provider: LocalProvider, probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    v2 = _new_version(tmp_path)
    assert v2.manifest.version != probe_bundle.manifest.version
    first = provider.deploy(probe_bundle.path)
    salts: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        # A separate invoke path over the same state, as the function tier builds it.
        caller = LocalInvoker(provider.root, provider.settings.host)
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                salts.append(
                    json.loads(caller.invoke_sync("probe", BODY).body)["outputs"][0]["salt"]
                )
            except Exception as exc:
                failures.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(0.3)
        second = provider.deploy(v2.path)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert second.version == v2.manifest.version and second.details["pid"] != first.details["pid"]
    assert salts[0] == "1" and salts[-1] == "2" and len(salts) > 20
    assert not _pid_alive(first.details["pid"])  # the old version was stopped
    assert provider.describe("probe").version == v2.manifest.version


def test_stale_pid_is_cleaned_up_not_an_error(
    provider: LocalProvider, probe_bundle: BuiltBundle
) -> None:
    d = provider.deploy(probe_bundle.path)
    os.kill(d.details["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _pid_alive(d.details["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert provider.describe("probe").status == "stopped"
    redeployed = provider.deploy(probe_bundle.path)  # same digest, but dead: started again
    assert redeployed.status == "ready" and redeployed.details["pid"] != d.details["pid"]
    os.kill(redeployed.details["pid"], signal.SIGKILL)
    time.sleep(0.2)
    assert provider.delete("probe") is True
    assert provider.list() == []


def test_a_model_that_cannot_load_fails_the_deploy_and_keeps_the_old_one(
    provider: LocalProvider, probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    provider.deploy(probe_bundle.path)
    bundle = build_probe_variant(
        tmp_path, "self.scale = torch", "raise OSError('weights missing'); self.scale = torch"
    )
    provider.settings.ready_timeout_s = 30
    with pytest.raises(DeployFailed, match=r"weights missing"):
        provider.deploy(bundle.path)
    assert provider.describe("probe").version == probe_bundle.manifest.version
    assert (
        json.loads(provider.invoker.invoke_sync("probe", BODY).body)["outputs"][0]["value"] == 6.0
    )
