"""The ``local`` provider's control plane: the model server as a background process.

State lives under ``<state_dir>/local/<name>/``: ``deployment.json`` (the live server's pid,
port, version, log) and one ``server-<pid>.json`` per server this provider started and has
not stopped yet, written before the server is waited on, so ``delete`` can stop every one of
them and ``describe`` reports strays. Deploys and deletes of one name take an exclusive
``flock`` on ``<state_dir>/local/<name>.lock``: the kernel releases it when the holder dies,
so a crashed deploy never leaves it stuck.

The server is the cloud container's entrypoint (:mod:`aiaas.runtime.container`) given the
environment a cloud gives it (``AIAAS_HOST``, ``AIAAS_PORT``, the ``server:`` settings as
``AIAAS_SERVER__*``): local runs what the clouds run. Only the bundle is named differently,
after ``serve`` on its command line, where ``ps`` shows which version each process serves.
The processes themselves (start, is it still ours, stop) are :mod:`adapters.local.process`.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from adapters.base import (
    Change,
    Deployment,
    DeploymentStatus,
    Plan,
    ProgressFn,
    Provider,
    VersionState,
    model_server_error,
    no_progress,
)
from adapters.local import LocalSection, process
from adapters.local.invoke import LocalInvoker
from adapters.local.state import (
    STATE_FILE,
    ServerRecord,
    checked_name,
    deployment_dir,
    read_state,
    server_url,
    state_or_raise,
    unreachable,
)
from aiaas.bundle import inspect_archive, open_bundle, verify_archive
from aiaas.config import ENV_PREFIX, NAME_PATTERN, ProjectConfig, ServerSection, server_environment
from aiaas.errors import AiaasError, DeadlineExceeded, DeployFailed, NotFound
from aiaas.manifest import MANIFEST_FILE, Manifest, read_manifest_file

SERVER_RECORD = "server-{pid}.json"
SWITCH_GRACE_S = 0.5  # callers that read the old port just before the switch still land
PORT_ATTEMPTS = 5  # a port taken between choosing it and the server binding it: another one
CLOUD_PLACES = ("AZUREML_MODEL_DIR", "SAGEMAKER_BASE_DIR", "SAGEMAKER_BIND_TO_PORT")
"""The clouds' variables that steer the container entrypoint: never inherited from the
caller (nor any ``AIAAS_*``): the server's environment is what this provider gives it."""


class _PortTaken(Exception):
    """The server could not bind its port: another process took it after it was chosen."""


class LocalProvider(Provider):
    """Runs the cloud container's entrypoint per deployment as a detached process on a
    loopback port."""

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

    def _read_state(self, name: str) -> ServerRecord | None:
        return read_state(self.root, name)

    def _write_state(self, name: str, state: ServerRecord) -> None:
        path = self._dir(name) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(state.to_json())
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

    def _record_server(self, name: str, record: ServerRecord) -> None:
        path = self._dir(name) / SERVER_RECORD.format(pid=record.pid)
        path.write_text(record.to_json())

    def _forget_server(self, name: str, pid: int) -> None:
        with contextlib.suppress(OSError):
            (self._dir(name) / SERVER_RECORD.format(pid=pid)).unlink()

    def _recorded_servers(self, name: str) -> builtins.list[ServerRecord]:
        """Every server this provider started for ``name`` and has not stopped yet."""
        records = []
        for path in sorted(self._dir(name).glob(SERVER_RECORD.format(pid="*"))):
            with contextlib.suppress(OSError, ValueError):
                records.append(ServerRecord.from_json(path.read_text()))
        return records

    def _stray_records(self, name: str, state: ServerRecord | None) -> builtins.list[ServerRecord]:
        """Live servers of ``name`` that are not the one ``state`` points to (e.g. left by a
        deploy that was killed before it switched over)."""
        live = state.pid if state else None
        return [r for r in self._recorded_servers(name) if r.pid != live and process.is_ours(r)]

    def _strays(self, name: str, state: ServerRecord | None) -> builtins.list[int]:
        """The pids of :meth:`_stray_records`."""
        return [r.pid for r in self._stray_records(name, state)]

    def _stop_strays(self, name: str, state: ServerRecord | None, progress: ProgressFn) -> None:
        """Stop stray servers and forget the records of servers that are gone (under the lock:
        no other deploy is starting one right now)."""
        strays = self._stray_records(name, state)
        if strays:
            progress(f"stopping {len(strays)} stray server(s) {[r.pid for r in strays]}", None)
            process.stop(strays)
        live = state.pid if state else None
        for record in self._recorded_servers(name):
            if record.pid != live and not process.is_ours(record):
                self._forget_server(name, record.pid)

    def _url(self, state: ServerRecord) -> str:
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
        server = f"{name} (model server on {self.settings.host})"
        # Deploy stops servers a killed deploy left behind, whatever the digest: so plan says so.
        strays = [
            Change("delete", "stray server process", f"pid {pid}", "left by an unfinished deploy")
            for pid in self._strays(name, current)
        ]
        if current is not None and self._live(current) and current.digest == claimed.digest:
            keep = f"{claimed.version} already live (pid {current.pid})"
            return Plan(
                name, claimed.version, (Change("keep", "server process", server, keep), *strays)
            )
        cached = (self.root / "bundles" / claimed.version).is_dir()
        changes = [
            Change("keep" if cached else "create", "bundle folder",
                   str(self.root / "bundles" / claimed.version),
                   "already unpacked" if cached else "unpack and verify the archive"),
        ]  # fmt: skip
        if current is None or not self._live(current):
            changes.append(Change("create", "server process", server, f"start {claimed.version}"))
        else:
            changes.append(Change("update", "server process", server,
                f"start {claimed.version}, switch to it after its smoke test, stop "
                f"{current.version} (pid {current.pid})"))  # fmt: skip
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
        if current is not None and self._live(current) and current.digest == claimed.digest:
            # Checked as it is, not unpacked: opening it would re-check the live server's
            # unpacked copy and delete it if the model's load wrote into it.
            verify_archive(bundle)
            progress("already live: nothing to do", 1.0)
            return self._deployment(name, current, DeploymentStatus.READY)
        progress("unpacking bundle", 0.05)  # under the lock: no deploy of this name races it
        bundle_dir = _path_of(self.upload(bundle))
        manifest = read_manifest_file(bundle_dir / MANIFEST_FILE)
        progress(f"starting {manifest.name} {manifest.version}", 0.1)
        try:
            new = self._start_ready(name, bundle_dir, manifest, progress)
        except AiaasError as exc:
            raise DeployFailed(
                f"{name} {manifest.version} did not become ready: {exc.message}"
            ) from exc
        self._write_state(name, new)
        if current and current.pid != new.pid:
            progress(f"stopping previous version {current.version}", 0.95)
            time.sleep(SWITCH_GRACE_S)
            process.stop([current])
            self._forget_server(name, current.pid)
        progress("ready", 1.0)
        return self._deployment(name, new, DeploymentStatus.READY)

    def _start_ready(
        self, name: str, bundle_dir: Path, manifest: Manifest, progress: ProgressFn
    ) -> ServerRecord:
        """Start a server of ``manifest`` and return it once it answers and passed its smoke
        test; a server that does not is stopped and forgotten before the error goes up.

        The port is chosen free, but another process (a concurrent deploy, a test worker)
        may bind it before the server does: that server fails to bind, and is started again
        on another port. A server answering on the chosen port counts only if it is ours.
        """
        for _ in range(PORT_ATTEMPTS):
            new, proc = self._start(name, bundle_dir, manifest)
            self._record_server(name, new)  # before waiting: delete must find it whatever happens
            try:
                self._wait_ready(new, proc, progress)
                progress("smoke test", 0.9)
                self._smoke_test(new, manifest)
            except _PortTaken:
                self._discard(name, new, proc)
                progress(f"port {new.port} was taken meanwhile: starting on another", None)
                continue
            except BaseException:
                self._discard(name, new, proc)
                raise
            return new
        raise DeployFailed(f"another process took each of {PORT_ATTEMPTS} free ports first")

    def _discard(self, name: str, record: ServerRecord, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()  # never became live: nothing to drain
        proc.wait()
        self._forget_server(name, record.pid)

    def describe(self, name: str) -> Deployment:
        """The deployment's state. :attr:`Deployment.versions` holds the live version (all
        the traffic) and each stray server still running (none); ``details["strays"]`` lists
        the strays' pids: servers started for it that are not the live one (a deploy running
        now, or one that was killed)."""
        state = self._read_state(name)
        strays = self._stray_records(name, state)
        stray_versions = tuple(
            VersionState(
                r.version,
                0,
                DeploymentStatus.READY if self._healthy(r) else DeploymentStatus.CREATING,
            )
            for r in strays
        )
        if state is None:
            if not strays:
                raise NotFound(f"no local deployment named {name!r}")
            status = (
                DeploymentStatus.CREATING
                if self._deploy_in_progress(name)
                else DeploymentStatus.STOPPED
            )
            return Deployment(
                name, self.name, "", status, None, {"strays": [r.pid for r in strays]},
                stray_versions,
            )  # fmt: skip
        if not process.is_ours(state):
            own = DeploymentStatus.STOPPED
        elif not self._healthy(state):
            own = DeploymentStatus.CREATING
        else:
            own = DeploymentStatus.READY
        status = own
        if own is DeploymentStatus.READY and strays and self._deploy_in_progress(name):
            status = DeploymentStatus.UPDATING  # a new version is starting beside this one
        versions = (VersionState(state.version, 100, own), *stray_versions)
        deployment = self._deployment(name, state, status, versions)
        if strays:  # servers a deploy started but never switched to (or a deploy running now)
            deployment.details["strays"] = [r.pid for r in strays]
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
        if state is None or not state.bundle_dir:
            return None
        try:
            return read_manifest_file(Path(state.bundle_dir) / MANIFEST_FILE)
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
        servers = {r.pid: r for r in self._recorded_servers(name)}
        if state is not None:
            servers[state.pid] = state
        process.stop(builtins.list(servers.values()))
        for path in sorted(directory.glob("*"), reverse=True):
            if path.is_file():
                path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()
        return True

    def logs(self, name: str, tail: int = 100) -> builtins.list[str]:
        state = state_or_raise(self.root, name)
        try:
            lines = Path(state.log).read_text(errors="replace").splitlines()
        except OSError:
            return []
        return lines[-tail:]

    # -- helpers -------------------------------------------------------------------------

    def server_environment(self, port: int) -> dict[str, str]:
        """The server process's environment: the caller's, less every ``AIAAS_*`` variable
        and the clouds' bundle and port variables, plus what a cloud gives its container
        (``AIAAS_HOST``, ``AIAAS_PORT`` and the ``server:`` settings as
        ``AIAAS_SERVER__*``)."""
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(ENV_PREFIX) and k not in CLOUD_PLACES
        }
        return {
            **inherited,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "AIAAS_HOST": self.settings.host,
            "AIAAS_PORT": str(port),
            **server_environment(self.server),
        }

    def _start(
        self, name: str, bundle_dir: Path, manifest: Manifest
    ) -> tuple[ServerRecord, subprocess.Popen[bytes]]:
        """Start the container entrypoint on the bundle folder, as a cloud starts it.

        ``-P``: the caller's working directory is not put on the server's import path (a
        folder named ``aiaas`` there, such as a checkout, would shadow the installed
        package); the process runs in the deployment's folder.
        """
        port = process.free_port(self.settings.host)
        log_path = self._dir(name) / f"server-{manifest.version}-{port}.log"
        argv = [sys.executable, "-P", "-m", process.ENTRYPOINT, "serve", str(bundle_dir)]
        proc = process.spawn(
            argv, env=self.server_environment(port), cwd=self._dir(name), log=log_path
        )
        record = ServerRecord(
            name=name,
            version=manifest.version,
            digest=manifest.digest,
            model=manifest.name,
            pid=proc.pid,
            pid_start=process.start_time(proc.pid),  # with the pid: names this process only
            port=port,
            bundle_dir=str(bundle_dir),
            log=str(log_path),
            started_at=time.time(),
        )
        return record, proc

    def _wait_ready(
        self, state: ServerRecord, proc: subprocess.Popen[bytes], progress: ProgressFn
    ) -> None:
        """Until the server (ours: it listens on its port) answers ``/ping``; :class:`_PortTaken`
        when another process had bound its port."""
        log = Path(state.log)
        deadline = time.monotonic() + self.settings.ready_timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            exited = proc.poll() is not None
            if state.port in process.listening_ports(state.pid):
                if self._healthy(state):
                    return
            elif process.port_taken(log):
                raise _PortTaken(state.port)
            elif exited:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise DeployFailed(
                    f"server process exited during start-up; last log lines:\n{tail}"
                )
            waited = time.monotonic() - started
            progress(f"loading model ({waited:.0f}s)", 0.1 + 0.8 * min(waited / 60.0, 0.99))
            time.sleep(0.2)
        raise DeadlineExceeded(
            f"not ready after {self.settings.ready_timeout_s:g}s (see {state.log})"
        )

    def _smoke_test(self, state: ServerRecord, manifest: Manifest) -> None:
        body = json.dumps(manifest.example_request).encode()
        try:
            response = self._http.post(
                self._url(state) + "/invocations",
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.TransportError as exc:  # the new server died or hung: a failed deploy
            raise unreachable(state.name, str(exc) or type(exc).__name__) from None
        if response.status_code != 200:
            raise model_server_error(
                response.status_code, response.content, response.headers.get("retry-after")
            )

    def _live(self, state: ServerRecord) -> bool:
        """The recorded server is ours (pid and start time) and answers ``/ping``: the one
        test plan and deploy share for "already live"."""
        return process.is_ours(state) and self._healthy(state)

    def _healthy(self, state: ServerRecord) -> bool:
        if state.port is None:
            return False
        try:
            return self._http.get(self._url(state) + "/ping", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _deployment(
        self,
        name: str,
        state: ServerRecord,
        status: DeploymentStatus,
        versions: tuple[VersionState, ...] = (),
    ) -> Deployment:
        return Deployment(
            name=name,
            provider=self.name,
            version=state.version,
            status=status,
            endpoint=self._url(state) if state.port is not None else None,
            details=state.details(),
            versions=versions,
        )


def _path_of(uri: str) -> Path:
    """The local path of a ``file://`` URI (what :meth:`LocalProvider.upload` returns)."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))
