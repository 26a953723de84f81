"""A stale server record whose pid now belongs to another process, even another project's
``aiaas serve``, must never get that process signalled (pid reuse)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port

from adapters.local.process import start_time as _start_time
from adapters.local.provider import SERVER_RECORD, LocalProvider
from adapters.local.state import ServerRecord
from aiaas.bundle import BuiltBundle
from aiaas.errors import NotFound


@pytest.fixture
def other_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Stands in for another project's model server: a process whose command line reads
    ``... aiaas serve DIR --port P`` like one (the real server would need a second bundle
    and seconds of start-up, and only its command line and pid matter here)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)",
         "aiaas", "serve", "/elsewhere/bundle", "--port", str(port)],
    )  # fmt: skip
    yield proc, port
    proc.kill()
    proc.wait()


def _plant(provider: LocalProvider, name: str, record: dict[str, int]) -> None:
    directory = provider.root / "local" / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SERVER_RECORD.format(pid=record["pid"])
    path.write_text(json.dumps(record))


def test_a_reused_pid_is_not_ours(
    tmp_path: Path,
    probe_bundle: BuiltBundle,
    other_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = other_server
    started = _start_time(proc.pid)
    assert started is not None
    provider = LocalProvider(state_dir=str(tmp_path / "state"))
    stale = [
        # our server had this pid and port, but started at another time
        {"pid": proc.pid, "port": port, "pid_start": started - 1},
        # a record from before start times were kept: our server had another port
        {"pid": proc.pid, "port": free_port()},
    ]
    for record in stale:
        _plant(provider, "probe", record)
        with pytest.raises(NotFound):  # not reported as a stray either
            provider.describe("probe")
        assert provider.delete("probe") is True  # removes the record...
        assert proc.poll() is None  # ...and leaves the other server alone
    _plant(provider, "probe", stale[0])
    try:
        deployed = provider.deploy(probe_bundle.path)  # stops strays first
        assert deployed.status == "ready" and "strays" not in deployed.details
        assert proc.poll() is None
    finally:
        provider.delete("probe")
    assert proc.poll() is None
    assert _start_time(deployed.details["pid"]) is None  # while our own server was stopped


def test_a_pid_reused_during_the_drain_is_not_killed(
    monkeypatch: pytest.MonkeyPatch, other_server: tuple[subprocess.Popen[bytes], int]
) -> None:
    """The stand-in ignores SIGTERM, like a server still draining; while it drains, its pid
    'is reused': its start time reads differently from then on. The final SIGKILL must spare it.

    The reuse itself is simulated by patching ``start_time`` after the first SIGTERM: a real
    pid cannot be made to be reused on demand."""
    import os
    import signal

    import adapters.local.process as local

    proc, port = other_server
    # The stand-in ignores SIGTERM from here on (sleep in a loop, handler set first).
    proc.kill()
    proc.wait()
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(300)",
         "aiaas", "serve", "/elsewhere/bundle", "--port", str(port)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        record = ServerRecord(pid=proc.pid, port=port, pid_start=_start_time(proc.pid))
        real_start_time = local.start_time
        real_kill = os.kill
        sent: list[int] = []

        def kill(pid: int, sig: int) -> None:
            sent.append(sig)
            if sig == signal.SIGTERM:  # from now on the pid belongs to "another" process
                monkeypatch.setattr(local, "start_time", lambda p: -1 if p == pid else
                                    real_start_time(p))  # fmt: skip
            real_kill(pid, sig)

        monkeypatch.setattr(os, "kill", kill)  # the local provider calls os.kill
        monkeypatch.setattr(local, "STOP_TIMEOUT_S", 0.3)
        local.stop([record])
        assert sent == [signal.SIGTERM]  # no SIGKILL for a process that is no longer ours
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_the_same_digest_on_a_server_that_is_not_ours_is_deployed_again(
    tmp_path: Path, probe_bundle: BuiltBundle
) -> None:
    """The recorded pid now names another process (its start time differs) while the port
    still answers: "already live" would send callers to a server that is not this
    deployment's. plan and deploy must both see that it is not live."""
    import os
    import signal

    provider = LocalProvider(state_dir=str(tmp_path / "state"))
    first = provider.deploy(probe_bundle.path)
    state_file = provider.root / "local" / "probe" / "deployment.json"
    state = json.loads(state_file.read_text())
    original_start = state["pid_start"]
    state["pid_start"] = original_start - 1  # the record no longer names that process
    state_file.write_text(json.dumps(state))
    try:
        plan = provider.plan(probe_bundle.path)
        assert not plan.unchanged
        assert [c.action for c in plan.changes if c.kind == "server process"] == ["create"]
        again = provider.deploy(probe_bundle.path)
        assert again.details["pid"] != first.details["pid"]
        assert provider.describe("probe").status == "ready"
    finally:
        provider.delete("probe")
        if _start_time(first.details["pid"]) == original_start:  # the server we started
            os.kill(first.details["pid"], signal.SIGTERM)
