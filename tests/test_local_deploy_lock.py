"""Deploys of one name are serialised, and every server the provider starts can be found.

Real ``aiaas serve`` processes throughout; which ones are running is read from /proc, not
from the provider's own records.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, build_probe_variant

from adapters.base import DeploymentStatus, VersionState
from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    prov = LocalProvider(state_dir=str(tmp_path / "state"))
    yield prov
    prov.delete("probe")
    for pid in _servers_of(prov):  # whatever the provider could not find: never leak it
        os.kill(pid, signal.SIGKILL)


def _servers_of(provider: LocalProvider) -> list[int]:
    """Pids of the live ``aiaas serve`` processes serving a bundle from this provider's state."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        ours = b"serve" in argv and any(str(provider.root).encode() in a for a in argv)
        if ours and state != "Z":
            found.append(int(proc.name))
    return sorted(found)


def _wait_until_gone(pids: list[int], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"{pids} still running"
        for pid in pids:  # they may be our children: reap them
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def test_two_concurrent_deploys_leave_exactly_one_server(
    provider: LocalProvider, probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    v2 = build_probe_variant(tmp_path, 'VERSION_SALT = "1"', 'VERSION_SALT = "2"')
    results: dict[str, object] = {}

    def deploy(bundle: BuiltBundle) -> None:
        try:
            results[bundle.manifest.version] = provider.deploy(bundle.path)
        except Exception as exc:  # reported below
            results[bundle.manifest.version] = exc

    threads = [threading.Thread(target=deploy, args=(b,)) for b in (probe_bundle, v2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(isinstance(r, Exception) for r in results.values()), results
    live = provider.describe("probe")
    assert live.status == "ready" and "strays" not in live.details
    assert _servers_of(provider) == [live.details["pid"]]
    assert provider.delete("probe") is True
    _wait_until_gone([live.details["pid"]])
    assert _servers_of(provider) == []


DEPLOY = """
import sys
from pathlib import Path
from adapters.local.provider import LocalProvider
from adapters.local import LocalSection
LocalProvider(state_dir=sys.argv[1]).deploy(Path(sys.argv[2]))
"""


def _start_deploy_process(provider: LocalProvider, bundle: Path) -> subprocess.Popen[bytes]:
    """``provider.deploy(bundle)`` in another process whose server sits loading the model."""
    slow = {**os.environ, "PROBE_LOAD_DELAY_S": "60"}
    return subprocess.Popen(
        [sys.executable, "-c", DEPLOY, str(provider.root), str(bundle)],
        cwd=REPO, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _kill_once_it_started_a_server(
    provider: LocalProvider, deployer: subprocess.Popen[bytes], already: list[int]
) -> list[int]:
    """Wait until ``deployer`` started a server and recorded it (it holds the lock then),
    SIGKILL it, and return the pids of the servers it left. (Killed between starting the
    process and writing its record, a deploy leaves a server no record names: under load
    the kill landed there; that gap of the provider is not what these tests are about.)"""

    def recorded(pid: int) -> bool:
        return (provider.root / "local" / "probe" / f"server-{pid}.json").is_file()

    try:
        deadline = time.monotonic() + 60
        while not (started := sorted(set(_servers_of(provider)) - set(already))) or not all(
            recorded(pid) for pid in started
        ):
            assert deployer.poll() is None, "the deploy process ended early"
            assert time.monotonic() < deadline, "the deploy never started its server"
            time.sleep(0.05)
    finally:
        deployer.send_signal(signal.SIGKILL)  # mid-deploy
        deployer.wait()
    return started


def test_a_killed_deploy_neither_blocks_the_next_nor_leaves_its_server(
    provider: LocalProvider, probe_bundle: BuiltBundle
) -> None:
    deployer = _start_deploy_process(provider, probe_bundle.path)
    orphans = _kill_once_it_started_a_server(provider, deployer, [])
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(provider.deploy(probe_bundle.path)))
    thread.start()
    thread.join(timeout=120)
    assert done, "the next deploy is blocked (or failed)"
    live = provider.describe("probe")
    assert live.status == "ready" and "strays" not in live.details
    _wait_until_gone(orphans)  # the next deploy stopped what the killed one left
    assert _servers_of(provider) == [live.details["pid"]]


def test_status_reports_strays_and_delete_stops_every_server(
    provider: LocalProvider, probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    first = provider.deploy(probe_bundle.path)
    v2 = build_probe_variant(tmp_path, 'VERSION_SALT = "1"', 'VERSION_SALT = "2"')
    deployer = _start_deploy_process(provider, v2.path)
    stray = _kill_once_it_started_a_server(provider, deployer, [first.details["pid"]])
    described = provider.describe("probe")
    assert described.status == "ready" and described.details["pid"] == first.details["pid"]
    assert described.details["strays"] == stray
    # the live version takes all the traffic; the stray, still loading, none
    assert described.versions == (
        VersionState(probe_bundle.manifest.version, 100, DeploymentStatus.READY),
        VersionState(v2.manifest.version, 0, DeploymentStatus.CREATING),
    )
    assert [d.details.get("strays") for d in provider.list()] == [stray]
    # Deploy would stop the stray even for the live digest: plan says so (and is not unchanged).
    plan = provider.plan(probe_bundle.path)
    assert not plan.unchanged
    assert [c.name for c in plan.changes if c.action == "delete"] == [f"pid {stray[0]}"]
    config = tmp_path / "aiaas.yaml"
    config.write_text(f"model:\n  entrypoint: m:M\nstate_dir: {provider.root}\n")
    for args in (["status", "probe"], ["status"]):  # what a user sees
        r = subprocess.run(
            [sys.executable, "-m", "aiaas", *args, "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"pid {stray[0]}" in r.stdout if len(args) == 2 else "(+1 stray)" in r.stdout
    assert provider.delete("probe") is True
    _wait_until_gone([first.details["pid"], *stray])
    assert _servers_of(provider) == []
