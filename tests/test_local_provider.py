"""The local provider against real model server processes: what the conformance suite
(tests/conformance, run for local) does not cover: how the server is started, the ports,
a dead server, a model that cannot load. Its lifecycle, same-digest and switch-without-a-
failed-request guarantees are the conformance suite's."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import build_probe_variant

from adapters.base import DeploymentStatus, VersionState
from adapters.local import process
from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from aiaas.config import ServerSection
from aiaas.errors import DeployFailed, PayloadTooLarge

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


class _AnswersEverything(http.server.BaseHTTPRequestHandler):
    """Another process's server: 200 and ``body`` to every request, each one kept."""

    seen: list[str]

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer()

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("content-length", "4")
        self.end_headers()
        self.wfile.write(b"body")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[tuple[int, list[str]]]:
    """A server of another process on a port of 127.0.0.1: its port, and what it was sent."""
    seen: list[str] = []
    handler = type("Handler", (_AnswersEverything,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_the_server_never_imports_from_the_callers_folder(
    provider: LocalProvider,
    probe_bundle: BuiltBundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: ``aiaas deploy`` run from a folder holding a checkout named ``aiaas`` (where
    ``aiaas init`` tells you to run it) failed, ``module 'aiaas' has no attribute 'Model'``:
    ``python -m`` put the caller's folder first on the server's import path."""
    project = tmp_path / "project"
    (project / "aiaas").mkdir(parents=True)
    (project / "aiaas" / "__init__.py").write_text("")
    monkeypatch.chdir(project)
    steps: list[str] = []
    d = provider.deploy(probe_bundle.path, progress=lambda msg, _f: steps.append(msg))
    assert d.status == "ready" and d.version == probe_bundle.manifest.version
    assert d.endpoint and d.endpoint.startswith("http://127.0.0.1:")
    assert steps[-1] == "ready" and any(s.startswith("smoke test") for s in steps)
    out = json.loads(provider.invoker.invoke_sync("probe", BODY, request_id="rid-1").body)
    assert out["outputs"][0]["value"] == 6.0
    assert any("loaded on cpu" in line for line in provider.logs("probe"))
    live = VersionState(probe_bundle.manifest.version, 100, DeploymentStatus.READY)
    assert provider.describe("probe").versions == (live,)


def test_the_server_is_the_container_entrypoint_with_a_clouds_environment(
    tmp_path: Path, probe_bundle: BuiltBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local runs what the clouds run: ``python -m aiaas.runtime.container serve`` with the
    ``server:`` settings as AIAAS_SERVER__* variables, and none of the caller's AIAAS_*."""
    monkeypatch.setenv("AIAAS_SERVER__MAX_QUEUE_SIZE", "999")  # the caller's: not the server's
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "1")
    server = ServerSection(max_queue_size=3, queue_wait_ms=0)
    provider = LocalProvider(server=server, state_dir=tmp_path / "state")
    with provider:
        try:
            d = provider.deploy(probe_bundle.path)
            pid = d.details["pid"]
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:-1]
            bundle_dir = provider.root / "bundles" / probe_bundle.manifest.version
            assert argv == [b"-P", b"-m", b"aiaas.runtime.container", b"serve",
                            str(bundle_dir).encode()]  # fmt: skip
            environ = dict(
                item.split(b"=", 1)
                for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if item
            )
            given = {k: v for k, v in environ.items() if k.startswith(b"AIAAS_")}
            assert given == {
                b"AIAAS_HOST": b"127.0.0.1",
                b"AIAAS_PORT": str(d.details["port"]).encode(),
                b"AIAAS_SERVER__MAX_QUEUE_SIZE": b"3",
                b"AIAAS_SERVER__QUEUE_WAIT_MS": b"0.0",
            }
            assert b"SAGEMAKER_BIND_TO_PORT" not in environ
            assert Path(f"/proc/{pid}/cwd").resolve() == provider.root / "local" / "probe"
            four = json.dumps({"inputs": [{"value": i} for i in range(4)]}).encode()
            with pytest.raises(PayloadTooLarge, match="at most 3 per request"):
                provider.invoker.invoke_sync("probe", four)  # the server took max_queue_size
        finally:
            provider.delete("probe")


def test_a_port_taken_before_the_server_binds_it_is_not_mistaken_for_the_server(
    provider: LocalProvider,
    probe_bundle: BuiltBundle,
    impostor: tuple[int, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The port is chosen free, then bound by the server a moment later: another process (a
    concurrent deploy, a parallel test worker) may take it in between. Before, the deploy
    then waited on that other server, smoke-tested it, and recorded it as the new version.
    Now the server that failed to bind is started again on another port.

    Patched: which port the provider chooses, handing out the impostor's port first. The
    race itself (a bind landing between two system calls) cannot be made to happen on demand;
    a chosen port that is already taken is its outcome."""
    taken, seen = impostor
    real = process.free_port
    handed: list[int] = []

    def choose(host: str) -> int:
        handed.append(taken if not handed else real(host))
        return handed[-1]

    monkeypatch.setattr(process, "free_port", choose)
    steps: list[str] = []
    d = provider.deploy(probe_bundle.path, progress=lambda msg, _f: steps.append(msg))
    assert handed[0] == taken and d.details["port"] == handed[-1] != taken
    assert "POST /invocations" not in seen  # the smoke test went to our own server
    assert any(f"port {taken} was taken meanwhile: starting on another" in s for s in steps)
    result = provider.invoker.invoke_sync("probe", BODY)
    assert result.version == probe_bundle.manifest.version
    records = sorted(p.name for p in (provider.root / "local" / "probe").glob("server-*.json"))
    assert records == [f"server-{d.details['pid']}.json"]  # the failed start is forgotten...
    assert provider.describe("probe").details.get("strays") is None  # ...and stopped


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
