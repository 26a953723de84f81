"""The ``local`` provider's control plane: the model server as a background process.

State lives under ``<state_dir>/local/<name>/``: ``deployment.json`` (the live server's pid,
port, version, log) and one ``server-<pid>.json`` per server this provider started and has
not stopped yet, written before the server is waited on, so ``delete`` can stop every one of
them and ``describe`` reports strays. Deploys and deletes of one name take an exclusive
``flock`` on ``<state_dir>/local/<name>.lock``: the kernel releases it when the holder dies,
so a crashed deploy never leaves it stuck. The same server code runs here as in every cloud
container.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from adapters.base import (
    Change,
    Deployment,
    DeploymentStatus,
    Plan,
    ProgressFn,
    Provider,
    model_server_error,
    no_progress,
)
from adapters.local import LocalSection
from adapters.local.invoke import LocalInvoker
from adapters.local.state import (
    STATE_FILE,
    checked_name,
    deployment_dir,
    read_state,
    server_url,
    state_or_raise,
    unreachable,
)
from aiaas.bundle import inspect_archive, open_bundle, verify_archive
from aiaas.cli_support import server_options
from aiaas.config import NAME_PATTERN, ProjectConfig, ServerSection
from aiaas.errors import AiaasError, DeadlineExceeded, DeployFailed, NotFound
from aiaas.manifest import MANIFEST_FILE, Manifest, read_manifest_file

SERVER_RECORD = "server-{pid}.json"
STOP_TIMEOUT_S = 35.0  # the server drains for up to 30 s after SIGTERM
REAP_PATIENCE_S = 2.0  # a server seen exiting is collected within this, not left a zombie
SWITCH_GRACE_S = 0.5  # callers that read the old port just before the switch still land


class LocalProvider(Provider):
    """Runs ``aiaas serve`` per deployment as a detached process on a free loopback port."""

    name = "local"

    def __init__(
        self,
        settings: LocalSection | None = None,
        server: ServerSection | None = None,
        *,
        state_dir: Path | str = ".aiaas",
    ) -> None:
        """``state_dir``: where deployments are recorded (relative paths from the cwd)."""
        self.settings = settings or LocalSection()
        self.server = server or ServerSection()
        self.root = Path(state_dir).resolve()
        # Plain HTTP to a loopback port only (settings.host is loopback): no TLS, so no CA
        # bundle to load either.
        self._http = httpx.Client(
            timeout=httpx.Timeout(60.0, connect=2.0), trust_env=False, verify=False
        )
        self._invoker = LocalInvoker(self.root, self.settings.host)

    @classmethod
    def from_config(cls, config: ProjectConfig) -> LocalProvider:
        return cls(
            config.provider_settings("local", LocalSection),
            config.server,
            state_dir=config.state_path,
        )

    @property
    def invoker(self) -> LocalInvoker:
        """The invoke path over this provider's state (what a function would build)."""
        return self._invoker

    def close(self) -> None:
        self._http.close()
        self._invoker.close()

    # -- state ---------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return deployment_dir(self.root, name)

    def _read_state(self, name: str) -> dict[str, Any] | None:
        return read_state(self.root, name)

    def _write_state(self, name: str, state: dict[str, Any]) -> None:
        path = self._dir(name) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(path)  # atomic: a reader sees the old or the new state, never half

    @contextlib.contextmanager
    def _locked(self, name: str, progress: ProgressFn = no_progress) -> Iterator[None]:
        """Hold the exclusive lock of deployment ``name`` (one deploy or delete at a time).

        The lock file lives beside the deployment's folder and is never deleted (deleting a
        lock file lets two holders lock two different files). ``flock`` belongs to the open
        file: the kernel drops it when this process exits, however it exits.
        """
        base = self.root / "local"
        base.mkdir(parents=True, exist_ok=True)
        with (base / f"{checked_name(name)}.lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"waiting for another deploy or delete of {name}", None)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _record_server(self, name: str, state: dict[str, Any]) -> None:
        path = self._dir(name) / SERVER_RECORD.format(pid=state["pid"])
        path.write_text(json.dumps(state, indent=2, sort_keys=True))

    def _forget_server(self, name: str, pid: Any) -> None:
        with contextlib.suppress(OSError):
            (self._dir(name) / SERVER_RECORD.format(pid=pid)).unlink()

    def _recorded_servers(self, name: str) -> builtins.list[dict[str, Any]]:
        """Every server this provider started for ``name`` and has not stopped yet."""
        records = []
        for path in sorted(self._dir(name).glob(SERVER_RECORD.format(pid="*"))):
            with contextlib.suppress(OSError, ValueError):
                records.append(json.loads(path.read_text()))
        return records

    def _stray_records(
        self, name: str, state: dict[str, Any] | None
    ) -> builtins.list[dict[str, Any]]:
        """Live servers of ``name`` that are not the one ``state`` points to (e.g. left by a
        deploy that was killed before it switched over)."""
        live = state.get("pid") if state else None
        return [
            r for r in self._recorded_servers(name) if r.get("pid") != live and _is_our_process(r)
        ]

    def _strays(self, name: str, state: dict[str, Any] | None) -> builtins.list[int]:
        """The pids of :meth:`_stray_records`."""
        return [r["pid"] for r in self._stray_records(name, state)]

    def _stop_strays(self, name: str, state: dict[str, Any] | None, progress: ProgressFn) -> None:
        """Stop stray servers and forget the records of servers that are gone (under the lock:
        no other deploy is starting one right now)."""
        strays = self._stray_records(name, state)
        if strays:
            progress(f"stopping {len(strays)} stray server(s) {[r['pid'] for r in strays]}", None)
            _stop_processes(strays)
        live = state.get("pid") if state else None
        for record in self._recorded_servers(name):
            if record.get("pid") != live and not _is_our_process(record):
                self._forget_server(name, record.get("pid"))

    def _url(self, state: dict[str, Any]) -> str:
        return server_url(self.settings.host, state)

    # -- Provider ------------------------------------------------------------------------

    def upload(self, bundle: Path) -> str:
        """Unpack and verify the bundle into ``<state_dir>/bundles/<version>`` (skipped when
        that version is there and matches); the folder's ``file://`` URI."""
        bundle_dir, _ = open_bundle(bundle, cache_dir=self.root / "bundles")
        return bundle_dir.as_uri()

    def plan(self, bundle: Path, *, name: str | None = None) -> Plan:
        claimed = inspect_archive(bundle)
        name = checked_name(name or claimed.name)
        current = self._read_state(name)
        live = self._live(current)
        server = f"{name} (model server on {self.settings.host})"
        # Deploy stops servers a killed deploy left behind, whatever the digest: so plan says so.
        strays = [
            Change("delete", "stray server process", f"pid {pid}", "left by an unfinished deploy")
            for pid in self._strays(name, current)
        ]
        if live and current is not None and current.get("digest") == claimed.digest:
            keep = f"{claimed.version} already live (pid {current.get('pid')})"
            return Plan(
                name, claimed.version, (Change("keep", "server process", server, keep), *strays)
            )
        cached = (self.root / "bundles" / claimed.version).is_dir()
        changes = [
            Change("keep" if cached else "create", "bundle folder",
                   str(self.root / "bundles" / claimed.version),
                   "already unpacked" if cached else "unpack and verify the archive"),
        ]  # fmt: skip
        if current is None or not live:
            changes.append(Change("create", "server process", server, f"start {claimed.version}"))
        else:
            changes.append(Change("update", "server process", server,
                f"start {claimed.version}, switch to it after its smoke test, stop "
                f"{current.get('version')} (pid {current.get('pid')})"))  # fmt: skip
        return Plan(name, claimed.version, (*changes, *strays))

    def deploy(
        self, bundle: Path, *, name: str | None = None, progress: ProgressFn = no_progress
    ) -> Deployment:
        claimed = inspect_archive(bundle)  # the manifest alone: which name to lock
        name = name or claimed.name
        with self._locked(name, progress):
            return self._deploy_locked(name, bundle, claimed, progress)

    def _deploy_locked(
        self, name: str, bundle: Path, claimed: Manifest, progress: ProgressFn
    ) -> Deployment:
        self._dir(name).mkdir(parents=True, exist_ok=True)
        current = self._read_state(name)
        self._stop_strays(name, current, progress)
        if self._live(current) and current and current.get("digest") == claimed.digest:
            # Checked as it is, not unpacked: opening it would re-check the live server's
            # unpacked copy and delete it if the model's load wrote into it.
            verify_archive(bundle)
            progress("already live: nothing to do", 1.0)
            return self._deployment(name, current, DeploymentStatus.READY)
        progress("unpacking bundle", 0.05)  # under the lock: no deploy of this name races it
        bundle_dir = _path_of(self.upload(bundle))
        manifest = read_manifest_file(bundle_dir / MANIFEST_FILE)
        progress(f"starting {manifest.name} {manifest.version}", 0.1)
        new, proc = self._start(name, bundle_dir, manifest)
        self._record_server(name, new)  # before waiting: delete must find it whatever happens
        try:
            self._wait_ready(new, proc, progress)
            progress("smoke test", 0.9)
            self._smoke_test(new, manifest)
        except BaseException as exc:
            proc.kill()  # never became live: nothing to drain
            proc.wait()
            self._forget_server(name, new["pid"])
            if isinstance(exc, AiaasError):
                raise DeployFailed(
                    f"{name} {manifest.version} did not become ready: {exc.message}"
                ) from exc
            raise
        self._write_state(name, new)
        if current and current.get("pid") != new["pid"]:
            progress(f"stopping previous version {current.get('version')}", 0.95)
            time.sleep(SWITCH_GRACE_S)
            _stop_process(current)
            self._forget_server(name, current.get("pid"))
        progress("ready", 1.0)
        return self._deployment(name, new, DeploymentStatus.READY)

    def describe(self, name: str) -> Deployment:
        """The deployment's state; ``details["strays"]`` lists the pids of servers started for
        it that are not the live one (a deploy running now, or one that was killed)."""
        state = self._read_state(name)
        if state is None:
            strays = self._strays(name, None)
            if not strays:
                raise NotFound(f"no local deployment named {name!r}")
            status = (
                DeploymentStatus.CREATING
                if self._deploy_in_progress(name)
                else DeploymentStatus.STOPPED
            )
            return Deployment(name, self.name, "", status, None, {"strays": strays})
        if not _is_our_process(state):
            status = DeploymentStatus.STOPPED
        elif not self._healthy(state):
            status = DeploymentStatus.CREATING
        elif self._deploy_in_progress(name) and self._strays(name, state):
            status = DeploymentStatus.UPDATING  # a new version is starting beside this one
        else:
            status = DeploymentStatus.READY
        deployment = self._deployment(name, state, status)
        strays = self._strays(name, state)
        if strays:  # servers a deploy started but never switched to (or a deploy running now)
            deployment.details["strays"] = strays
        return deployment

    def list(self) -> builtins.list[Deployment]:
        base = self.root / "local"
        names = (
            sorted(
                p.name
                for p in base.iterdir()
                if p.is_dir() and re.fullmatch(NAME_PATTERN, p.name) and self._any_state(p)
            )
            if base.is_dir()
            else []
        )
        found = []
        for name in names:
            with contextlib.suppress(NotFound):  # only dead servers' records: nothing to show
                found.append(self.describe(name))
        return found

    @staticmethod
    def _any_state(directory: Path) -> bool:
        return (directory / STATE_FILE).is_file() or any(
            directory.glob(SERVER_RECORD.format(pid="*"))
        )

    def _deploy_in_progress(self, name: str) -> bool:
        """True while another deploy or delete of ``name`` holds its lock."""
        path = self.root / "local" / f"{checked_name(name)}.lock"
        if not path.is_file():
            return False
        with path.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
        return False

    def live_manifest(self, name: str) -> Manifest | None:
        state = self._read_state(name)
        if state is None or "bundle_dir" not in state:
            return None
        try:
            return read_manifest_file(Path(state["bundle_dir"]) / MANIFEST_FILE)
        except (OSError, AiaasError):
            return None

    def delete(self, name: str) -> bool:
        with self._locked(name):
            return self._delete_locked(name)

    def _delete_locked(self, name: str) -> bool:
        state = self._read_state(name)
        directory = self._dir(name)
        if state is None and not directory.exists():
            return False
        servers = {r.get("pid"): r for r in self._recorded_servers(name)}
        if state is not None:
            servers[state.get("pid")] = state
        _stop_processes(list(servers.values()))
        for path in sorted(directory.glob("*"), reverse=True):
            if path.is_file():
                path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()
        return True

    def logs(self, name: str, tail: int = 100) -> builtins.list[str]:
        state = self._state_or_raise(name)
        try:
            lines = Path(state["log"]).read_text(errors="replace").splitlines()
        except OSError:
            return []
        return lines[-tail:]

    # -- helpers -------------------------------------------------------------------------

    def _state_or_raise(self, name: str) -> dict[str, Any]:
        return state_or_raise(self.root, name)

    def _start(
        self, name: str, bundle_dir: Path, manifest: Manifest
    ) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
        port = _free_port(self.settings.host)
        log_path = self._dir(name) / f"server-{manifest.version}-{port}.log"
        cmd = [
            sys.executable, "-m", "aiaas", "serve", str(bundle_dir),
            "--host", self.settings.host, "--port", str(port), *server_options(self.server),
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,  # outlives the CLI that started it
            )  # fmt: skip
        state = {
            "name": name,
            "version": manifest.version,
            "digest": manifest.digest,
            "model": manifest.name,
            "pid": proc.pid,
            "pid_start": _start_time(proc.pid),  # with the pid: names this process only
            "port": port,
            "bundle_dir": str(bundle_dir),
            "log": str(log_path),
            "started_at": time.time(),
        }
        return state, proc

    def _wait_ready(
        self, state: dict[str, Any], proc: subprocess.Popen[bytes], progress: ProgressFn
    ) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(Path(state["log"]).read_text(errors="replace").splitlines()[-15:])
                raise DeployFailed(
                    f"server process exited during start-up; last log lines:\n{tail}"
                )
            if self._healthy(state):
                return
            waited = time.monotonic() - started
            progress(f"loading model ({waited:.0f}s)", 0.1 + 0.8 * min(waited / 60.0, 0.99))
            time.sleep(0.2)
        raise DeadlineExceeded(
            f"not ready after {self.settings.ready_timeout_s:g}s (see {state['log']})"
        )

    def _smoke_test(self, state: dict[str, Any], manifest: Manifest) -> None:
        body = json.dumps(manifest.example_request).encode()
        try:
            response = self._http.post(
                self._url(state) + "/invocations",
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.TransportError as exc:  # the new server died or hung: a failed deploy
            raise unreachable(state["name"], str(exc) or type(exc).__name__) from None
        if response.status_code != 200:
            raise model_server_error(
                response.status_code, response.content, response.headers.get("retry-after")
            )

    def _live(self, state: dict[str, Any] | None) -> bool:
        """The recorded server is ours (pid and start time) and answers ``/ping``: the one
        test plan and deploy share for "already live"."""
        return state is not None and _is_our_process(state) and self._healthy(state)

    def _healthy(self, state: dict[str, Any]) -> bool:
        try:
            return self._http.get(self._url(state) + "/ping", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _deployment(self, name: str, state: dict[str, Any], status: DeploymentStatus) -> Deployment:
        return Deployment(
            name=name,
            provider=self.name,
            version=str(state.get("version", "")),
            status=status,
            endpoint=self._url(state) if "port" in state else None,
            details={k: state.get(k) for k in ("pid", "port", "digest", "log", "started_at")},
        )


def _path_of(uri: str) -> Path:
    """The local path of a ``file://`` URI (what :meth:`LocalProvider.upload` returns)."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int) -> builtins.list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (the state) on; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()  # the command name (field 2) may hold anything


def _start_time(pid: int) -> int | None:
    """When ``pid`` started (``/proc/<pid>/stat`` field 22, clock ticks since boot)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _is_our_process(record: dict[str, Any] | None) -> bool:
    """True if the server that ``record`` (a state or server record) describes is alive.

    A pid alone is not enough: once our server has exited, the pid may be reused, even by
    another project's ``aiaas serve``. The process must also have the recorded start time
    and serve the recorded port (records written before start times were kept: the port).
    """
    pid = record.get("pid") if record else None
    if record is None or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"aiaas" not in cmdline or b"serve" not in cmdline or b"--port" not in cmdline:
        return False
    at = cmdline.index(b"--port") + 1
    if at >= len(cmdline) or cmdline[at] != str(record.get("port")).encode():
        return False
    fields = _stat_fields(pid)
    if not fields or fields[0] == "Z":  # a zombie has exited
        return False
    started = record.get("pid_start")
    return started is None or (len(fields) > 19 and fields[19] == str(started))


def _stop_process(record: dict[str, Any] | None) -> None:
    """SIGTERM (the server drains in-flight requests), then SIGKILL after the drain time."""
    _stop_processes([record])


def _stop_processes(records: Sequence[dict[str, Any] | None]) -> None:
    """:func:`_stop_process` for several servers at once (they drain side by side).

    Each process is followed by its pid *and* start time, so a pid that is reused during the
    drain (by another project's server, say) counts as ours having exited and is never sent
    the final SIGKILL."""
    ours = [(r["pid"], _start_time(r["pid"])) for r in records if r and _is_our_process(r)]
    stopping = list(ours)
    for pid, _ in ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        for pid, _ in ours:
            _reap(pid)
        # Exited, not merely "no longer looks like ours": an exiting process's cmdline
        # reads empty for a moment before it becomes a zombie.
        ours = [(pid, start) for pid, start in ours if not _gone(pid, start)]
        if not ours:
            for pid, start in stopping:  # a child may still be on its way to being a zombie
                if _start_time(pid) in (start, None):  # not if the pid is another's now
                    _reap(pid, patience_s=REAP_PATIENCE_S)
            return
        time.sleep(0.05)
    for pid, start in ours:
        if not _gone(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(pid)


def _gone(pid: int, start: int | None) -> bool:
    """True once the process that started at ``start`` as ``pid`` has exited (the pid may
    already belong to another process)."""
    return _exited(pid) or _start_time(pid) != start


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie (it has exited; only the reaping is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _reap(pid: int, patience_s: float = 0.0) -> None:
    """Collect ``pid``'s exit status if it is our child, so it leaves no zombie; with
    ``patience_s``, keep trying that long for a child that is still on its way out."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except (ChildProcessError, OSError):  # not our child, or already collected
            return
        if done or time.monotonic() >= deadline:
            return
        time.sleep(0.01)
