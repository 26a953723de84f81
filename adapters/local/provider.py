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
    no_progress,
)
from adapters.local import LocalSection, process
from adapters.local.invoke import LocalInvoker
from adapters.local.state import (
    SPLIT_FILE,
    STATE_FILE,
    ServerRecord,
    Split,
    checked_name,
    deployment_dir,
    read_split,
    read_state,
    server_url,
    state_or_raise,
)
from adapters.local.steps import LocalSteps
from adapters.rollout import StillSettling, Timing, run_rollout
from aiaas.bundle import inspect_archive, open_bundle, verify_archive
from aiaas.config import (
    ENV_PREFIX,
    NAME_PATTERN,
    ProjectConfig,
    RolloutSection,
    ServerSection,
    server_environment,
)
from aiaas.errors import AiaasError, DeployFailed, NotFound
from aiaas.manifest import MANIFEST_FILE, Manifest, read_manifest_file

SERVER_RECORD = "server-{pid}.json"
POLL_S = 0.2  # how often a starting server is asked whether it is ready
CLOUD_PLACES = ("AZUREML_MODEL_DIR", "SAGEMAKER_BASE_DIR", "SAGEMAKER_BIND_TO_PORT")
"""The clouds' variables that steer the container entrypoint: never inherited from the
caller (nor any ``AIAAS_*``): the server's environment is what this provider gives it."""


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
        rollout: RolloutSection | None = None,
    ) -> None:
        """``state_dir``: where deployments are recorded (relative paths from the cwd);
        ``rollout``: how a new version takes the traffic (``deploy.rollout``)."""
        self.settings = settings or LocalSection()
        self.server = server or ServerSection()
        self.rollout = rollout or RolloutSection()
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
            rollout=config.deploy.rollout,
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

    def _write_split(self, name: str, split: Split) -> None:
        path = self._dir(name) / SPLIT_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(split.to_json())
        tmp.replace(path)

    def _clear_split(self, name: str) -> None:
        (self._dir(name) / SPLIT_FILE).unlink(missing_ok=True)

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

    def _stray_records(
        self, name: str, state: ServerRecord | None, split: Split | None = None
    ) -> builtins.list[ServerRecord]:
        """Live servers of ``name`` that are neither the one ``state`` points to nor the new
        version of a ``split`` (e.g. left by a deploy that was killed before it switched
        over)."""
        live = {state.pid if state else None, split.server.pid if split else None}
        return [r for r in self._recorded_servers(name) if r.pid not in live and process.is_ours(r)]

    def _strays(self, name: str, state: ServerRecord | None) -> builtins.list[int]:
        """The pids of :meth:`_stray_records` (a canary step's new server, which takes its
        share of the traffic, is not one)."""
        split = read_split(self.root, name) if state is not None else None
        return [r.pid for r in self._stray_records(name, state, split)]

    def _stop_strays(self, name: str, state: ServerRecord | None, progress: ProgressFn) -> None:
        """Stop stray servers and forget the records of servers that are gone (under the lock:
        no other deploy is starting one right now). A traffic split left by a killed deploy
        goes first: its new version is one of those strays."""
        self._clear_split(name)
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
        steps = LocalSteps(self)
        desired = steps.desired(bundle, name)
        planned = steps.diff(desired, steps.live(desired)).plan()
        # Deploy stops servers a killed deploy left behind, whatever the digest: so plan says so.
        strays = [
            Change("delete", "stray server process", f"pid {pid}", "left by an unfinished deploy")
            for pid in self._strays(desired.name, self._read_state(desired.name))
        ]
        return Plan(planned.name, planned.version, (*planned.changes, *strays))

    def deploy(
        self, bundle: Path, *, name: str | None = None, progress: ProgressFn = no_progress
    ) -> Deployment:
        """The shared deploy transaction (:func:`adapters.rollout.run_rollout`) over
        :class:`~adapters.local.steps.LocalSteps`, under the deployment's lock, after the
        servers a killed deploy left behind are stopped."""
        claimed = inspect_archive(bundle)  # the manifest alone: which name to lock
        name = checked_name(name or claimed.name)
        with self._locked(name, progress):
            self._stop_strays(name, self._read_state(name), progress)
            steps = LocalSteps(self)
            try:
                outcome = run_rollout(
                    steps,
                    bundle,
                    name=name,
                    rollout=self.rollout,
                    timing=Timing(self.settings.ready_timeout_s, POLL_S),
                    upload=steps.upload,
                    progress=progress,
                )
            except StillSettling as exc:  # a server still loading: it is stopped, not left
                steps.discard()
                raise DeployFailed(
                    f"{name} {claimed.version} was not ready after "
                    f"{self.settings.ready_timeout_s:g}s (local.ready_timeout_s); stopped"
                ) from exc
            except BaseException:
                steps.discard()  # never took traffic: nothing to drain
                raise
            live = self._read_state(name)
            if not outcome.changed:
                # Checked as it is, not unpacked: opening it would re-check the live server's
                # unpacked copy and delete it if the model's load wrote into it.
                verify_archive(bundle)
            if live is None:  # a deploy that succeeded recorded its server
                raise DeployFailed(f"{name}: no live server recorded after the deploy")
            return self._deployment(name, live, DeploymentStatus.READY)

    def describe(self, name: str) -> Deployment:
        """The deployment's state. :attr:`Deployment.versions` holds the live version (all
        the traffic, or what a canary or linear step leaves it), the new version of a step
        that holds (its share), and each stray server still running (none);
        ``details["strays"]`` lists the strays' pids: servers started for it that are not the
        live one (a deploy running now, or one that was killed)."""
        return self._describe(name, again=True)

    def _describe(self, name: str, *, again: bool) -> Deployment:
        # The state is read before the servers and the lock are looked at: a deploy that
        # switched and let go of its lock in between made a live server look stopped (or a
        # stray). ``again``: read once more when what was read has changed since.
        state = self._read_state(name)
        split = read_split(self.root, name) if state is not None else None
        strays = self._stray_records(name, state, split)
        stray_versions = tuple(VersionState(r.version, 0, self._own_status(r)) for r in strays)
        if state is None:
            if not strays:
                raise NotFound(f"no local deployment named {name!r}")
            if self._deploy_in_progress(name):
                status = DeploymentStatus.CREATING
            elif again and self._read_state(name) is not None:  # switched to just now
                return self._describe(name, again=False)
            else:
                status = DeploymentStatus.STOPPED
            return Deployment(
                name, self.name, "", status, None, {"strays": [r.pid for r in strays]},
                stray_versions,
            )  # fmt: skip
        if not process.is_ours(state):
            if again and self._read_state(name) != state:  # replaced just now
                return self._describe(name, again=False)
            own = DeploymentStatus.STOPPED
        elif not self._healthy(state):
            own = DeploymentStatus.CREATING
        else:
            own = DeploymentStatus.READY
        status = own
        if own is DeploymentStatus.READY and (strays or split) and self._deploy_in_progress(name):
            status = DeploymentStatus.UPDATING  # a new version is starting beside this one
        shares: tuple[VersionState, ...] = (VersionState(state.version, 100, own),)
        if split is not None:
            shares = (
                VersionState(state.version, 100 - split.pct, own),
                VersionState(split.server.version, split.pct, self._own_status(split.server)),
            )
        versions = (*shares, *stray_versions)
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

    def _live(self, state: ServerRecord) -> bool:
        """The recorded server is ours (pid and start time) and answers ``/ping``: the one
        test plan and deploy share for "already live"."""
        return process.is_ours(state) and self._healthy(state)

    def _own_status(self, record: ServerRecord) -> DeploymentStatus:
        """One server's own status: stopped (not ours any more), creating, or ready."""
        if not process.is_ours(record):
            return DeploymentStatus.STOPPED
        return DeploymentStatus.READY if self._healthy(record) else DeploymentStatus.CREATING

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
