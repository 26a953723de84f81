"""A model server that dies mid-request: callers of the function app get 503 + Retry-After.

Real pieces throughout: a local deployment (an ``aiaas serve`` process), the function app on
uvicorn in front of it, httpx as the caller, and SIGKILL while a prediction is running.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import build_probe_variant, serve_asgi

from adapters.local.provider import LocalProvider
from aiaas.errors import DeployFailed
from functions.app import FunctionApp

SLEEP_LINE = "        time.sleep(max(item.sleep_ms for item in batch) / 1000.0)"
# The probe, marking a file when a prediction starts: the test then knows the request is in
# the server's hands (a polled condition instead of a guessed sleep).
MARKED = (
    "        if os.environ.get('PROBE_MARK'):\n"
    "            Path(os.environ['PROBE_MARK']).write_text('predicting')\n" + SLEEP_LINE
)


def _pid_gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


def test_killed_server_mid_request_gives_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "predicting"
    monkeypatch.setenv("PROBE_MARK", str(mark))  # the server process inherits it
    bundle = build_probe_variant(tmp_path, SLEEP_LINE, MARKED)
    provider = LocalProvider(state_dir=str(tmp_path / "state"))
    deployment = provider.deploy(bundle.path)
    pid = deployment.details["pid"]
    try:
        mark.unlink()  # written by the deploy's smoke test
        app = FunctionApp(provider.invoker, bundle.manifest, keys=None).asgi()
        with serve_asgi(app) as url:
            answers: list[httpx.Response] = []
            slow = {"inputs": [{"value": 1, "sleep_ms": 10_000}]}
            caller = threading.Thread(
                target=lambda: answers.append(httpx.post(url + "/predict", json=slow, timeout=60))
            )
            caller.start()
            deadline = time.monotonic() + 30
            while not mark.exists():
                assert time.monotonic() < deadline, "the slow prediction never started"
                time.sleep(0.01)
            os.kill(pid, signal.SIGKILL)
            caller.join(timeout=60)
            assert answers, "the in-flight call got no answer"
            in_flight = answers[0]
            assert in_flight.status_code == 503, in_flight.text
            assert in_flight.json()["error"]["code"] == "not_ready"
            assert int(in_flight.headers["retry-after"]) >= 1
            while not _pid_gone(pid):
                time.sleep(0.01)
            for _ in range(2):  # the calls that follow: the same answer, not a 500
                after = httpx.post(url + "/predict", json={"inputs": [{"value": 1}]}, timeout=30)
                assert after.status_code == 503, after.text
                assert int(after.headers["retry-after"]) >= 1
                assert "not reachable" in after.json()["error"]["message"]
    finally:
        provider.delete(deployment.name)


def test_a_server_dying_in_the_smoke_test_fails_the_deploy_cleanly(tmp_path: Path) -> None:
    # Call 1 is the server's own warm-up (it must pass for /ping to turn 200); call 2 is the
    # deploy's smoke test.
    dies_on_the_second_call = (
        "        Probe.calls = getattr(Probe, 'calls', 0) + 1\n"
        "        if Probe.calls == 2:\n"
        "            os._exit(3)\n" + SLEEP_LINE
    )
    dying = build_probe_variant(tmp_path, SLEEP_LINE, dies_on_the_second_call)
    provider = LocalProvider(state_dir=str(tmp_path / "state"))
    try:
        with pytest.raises(
            DeployFailed, match=r"took no traffic; its smoke test failed: .*not reachable"
        ):
            provider.deploy(dying.path)
        assert provider.list() == []  # nothing live, no stray
    finally:
        provider.delete("probe")
