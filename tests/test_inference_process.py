"""``server.inference_in: process``: each inference worker's model in a child process of its own.

Real ``aiaas serve`` processes of the probe model on 127.0.0.1. What must hold: a prediction
answers as it does with the model in the server's own process (results, a model error, a
result that breaks the output schema); a child killed in the middle of a batch is a 503
``not_ready`` with ``Retry-After`` for that batch, not a hang, and the server stops (exit 1)
so its platform starts a new one; SIGTERM lets the batch in flight finish, then leaves no
process behind; SIGTERM while the children still load exits at once, children included.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProcess

from aiaas.bundle import BuiltBundle, open_bundle
from aiaas.runtime.runner import ModelRunner

ARGS = ["--inference-in", "process"]
WRONG_KEY = 21.0  # the probe answers {"valeu": ...} for this value (PROBE_BREAK)


def _child_pid(server: ServerProcess) -> int:
    """The inference process's pid, as the server's load line names it."""
    found = re.search(r"own inference process.*pids (\d+)\)", server.log())
    assert found, server.log()
    return int(found.group(1))


def _children(pid: int) -> set[int]:
    """The processes ``pid`` started that still run (the inference process, and the
    resource tracker multiprocessing's spawn starts)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _all_gone(pids: set[int], within: float) -> set[int]:
    """The processes of ``pids`` still running after up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := {p for p in pids if _running(p)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _post(url: str, inputs: list[dict[str, Any]], timeout: float = 20.0) -> httpx.Response:
    return httpx.post(url + "/invocations", json={"inputs": inputs}, timeout=timeout)


def test_answers_as_in_the_servers_own_process_and_sigterm_leaves_no_process(
    probe_bundle: BuiltBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One server's life (each start costs two torch imports): predictions, then SIGTERM.
    env = {"PROBE_BREAK": f"wrong_key:{WRONG_KEY:g}"}
    server = ServerProcess(probe_bundle.path, tmp_path / "s.log", ARGS, env)
    try:
        server.wait_ready()
        children = _children(server.proc.pid)
        assert _child_pid(server) in children  # the model is not in the server's process

        monkeypatch.setenv("PROBE_BREAK", env["PROBE_BREAK"])
        runner = ModelRunner(*open_bundle(probe_bundle.path))  # the model in this process
        runner.load()
        inputs: list[dict[str, Any]] = [{"value": 0.5}, {"value": -3}, {"value": 7}]
        expected = runner.run_batch([runner.input_schema.model_validate(i) for i in inputs])
        r = _post(server.url, inputs)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == expected  # batch_size 3 included: one batch, as here

        failed = _post(server.url, [{"value": 1, "fail": True}])
        assert failed.status_code == 500
        assert failed.json()["error"] == {
            "code": "model_error",
            "message": "model error: RuntimeError('probe was asked to fail')",
            "request_id": failed.headers["x-request-id"],
        }
        assert "in the inference process (pid" in server.log()  # the child's traceback

        bad = _post(server.url, [{"value": 2}, {"value": WRONG_KEY}])  # checked in the child
        assert bad.status_code == 500
        message = bad.json()["error"]["message"]
        assert message.startswith("model returned an invalid result: outputs[1]"), message

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(_post, server.url, [{"value": 4, "sleep_ms": 800}])
            time.sleep(0.3)  # in flight by then; if not, the drain answers it all the same
            server.proc.terminate()
            answer = waiting.result(timeout=30)
        assert answer.status_code == 200, answer.text  # the batch in flight finished
        assert answer.json()["outputs"][0]["value"] == 8.0
        server.proc.wait(timeout=30)
        assert not _all_gone(children, within=10.0)  # the child and spawn's tracker too
    finally:
        server.stop()


def test_a_killed_inference_process_is_a_503_not_a_hang_and_the_server_stops(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    server = ServerProcess(probe_bundle.path, tmp_path / "s.log", ARGS, {})
    try:
        server.wait_ready()
        child = _child_pid(server)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            # 5 s in predict; whether the kill finds it in the child, queued or not yet
            # read, the answer is the same 503
            waiting = pool.submit(_post, server.url, [{"value": 1, "sleep_ms": 5000}])
            time.sleep(0.3)  # let it reach the child (not an assertion: see above)
            os.kill(child, signal.SIGKILL)
            answer = waiting.result(timeout=20)
            elapsed = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        error = answer.json()["error"]
        assert error["code"] == "not_ready"
        assert error["message"] == f"inference process 0 (pid {child}) was killed by SIGKILL"
        assert elapsed < 4.5, elapsed  # answered at the kill, not after the 5 s predict
        assert server.proc.wait(timeout=30) == 1  # stopped, for its platform to restart it
        assert f"inference process 0 (pid {child}) was killed by SIGKILL" in server.log()
    finally:
        server.stop()


def test_sigterm_while_the_inference_process_loads_exits_at_once_with_it(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    env = {"PROBE_LOAD_DELAY_S": "120"}
    server = ServerProcess(probe_bundle.path, tmp_path / "s.log", ARGS, env)
    try:
        deadline = time.monotonic() + 60
        children: set[int] = set()
        while len(children) < 2 and time.monotonic() < deadline:  # tracker + child
            assert server.proc.poll() is None, server.log()
            children = _children(server.proc.pid)
            time.sleep(0.05)
        assert len(children) == 2, server.log()
        started = time.monotonic()
        server.proc.terminate()
        server.proc.wait(timeout=10)
        assert time.monotonic() - started < 5.0  # not the 120 s load
        assert not _all_gone(children, within=10.0)
    finally:
        server.stop()
