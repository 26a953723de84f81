"""SIGTERM while the model is still loading stops the server at once.

A load cannot be interrupted and Python joins its thread at exit, so the server used to wait
the load out: a cancelled deploy or a stray server took the platform's whole kill timeout
(30 s on SageMaker, 35 s for the local provider) instead of exiting. Both ways a server is
started are checked with a real process and a load far longer than the allowed exit time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import ServerProcess, free_port

from aiaas.bundle import BuiltBundle

LOAD_S = "120"  # far past the exit time allowed below, and past any kill timeout
EXIT_WITHIN_S = 5.0  # generous for a loaded 2-core machine; the exit itself takes < 1 s


def _wait_loading(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the port is open and readiness says the model is loading."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            r = httpx.get(url + "/v2/health/ready", timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        assert r.status_code == 503 and "loading" in r.text, r.text
        return
    raise AssertionError(f"server never opened its port:\n{log.read_text()}")


def _terminate_timed(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=EXIT_WITHIN_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, time.monotonic() - started


def test_container_entrypoint_exits_0_at_once(probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "container.log"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "AIAAS_HOST": "127.0.0.1",
        "AIAAS_PORT": str(port),
        "AIAAS_MODEL_DIR": str(probe_bundle.path.parent),
        "PROBE_LOAD_DELAY_S": LOAD_S,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiaas.runtime.container", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    _wait_loading(f"http://127.0.0.1:{port}", proc, log)
    code, took = _terminate_timed(proc)
    assert code == 0, log.read_text()
    assert took < EXIT_WITHIN_S
    text = log.read_text()
    assert "stopped while the model was still loading" in text
    assert "Traceback" not in text


def test_aiaas_serve_exits_at_once(probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    server = ServerProcess(
        probe_bundle.path, tmp_path / "serve.log", [], {"PROBE_LOAD_DELAY_S": LOAD_S}
    )
    try:
        _wait_loading(server.url, server.proc, server.log_path)
        code, took = _terminate_timed(server.proc)
    finally:
        server.stop()
    # `aiaas serve` keeps no SIGTERM handler: uvicorn re-raises the signal after its drain.
    assert code in (0, -signal.SIGTERM), server.log()
    assert took < EXIT_WITHIN_S
    assert "Traceback" not in server.log()
