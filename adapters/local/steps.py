"""The local provider's steps of the shared deploy transaction (:mod:`adapters.rollout`).

A version is one model server process; the traffic goes where ``deployment.json`` points
(the invoke path reads it on every call). So: *create* starts the new server on its own
port, *settled* is one look at whether it answers ``/ping``, the smoke test goes to its port
before any traffic does, *switch* writes ``split.json`` for a canary or linear step that
sends part of the traffic and replaces ``deployment.json`` for the step that sends all of it,
and the replaced server is stopped last. Nothing here is ever "taken" after a failed call:
every step is a local system call that either happened or did not.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from adapters.base import Change, model_server_error
from adapters.local import SPEC, process
from adapters.local.state import STATE_FILE, ServerRecord, Split, checked_name, unreachable
from adapters.rollout import Diff, Settle, Terms, TrafficStep
from aiaas.bundle import inspect_archive
from aiaas.errors import DeployFailed
from aiaas.manifest import MANIFEST_FILE, Manifest, read_manifest_file

if TYPE_CHECKING:
    from adapters.local.provider import LocalProvider

PORT_ATTEMPTS = 5  # a port taken between choosing it and the server binding it: another one
SWITCH_GRACE_S = 0.5  # callers that read the old port just before the switch still land
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class Desired:
    """Deployment ``name`` serving the bundle archive at ``bundle`` (its manifest as the
    archive claims it: checked when it is unpacked)."""

    name: str
    bundle: Path
    manifest: Manifest


@dataclass(frozen=True)
class Live:
    """What deployment ``name`` is now: the recorded live server (if any) and whether it is
    ours and answers."""

    state: ServerRecord | None
    serving: bool


@dataclass
class _Started:
    """The server :meth:`LocalSteps.create` started, until it takes the traffic."""

    record: ServerRecord
    proc: subprocess.Popen[bytes]
    bundle_dir: Path
    manifest: Manifest
    attempts: int = 1


class LocalSteps:
    """:class:`~adapters.rollout.Steps` over one :class:`LocalProvider` (its state folder and
    settings). One deploy at a time: the provider holds the deployment's lock around it."""

    capabilities = SPEC.capabilities  # a new server is smoke-tested on its own port first
    terms = Terms(noun="deployment", cloud="the local server", timeout_key="local.ready_timeout_s")

    def __init__(self, provider: LocalProvider) -> None:
        self.provider = provider
        self.started: _Started | None = None
        self.switched = False  # the started server takes the traffic
        self.replaced: ServerRecord | None = None  # the server it took the traffic from
        self.bundle_dir: Path | None = None  # where upload unpacked the bundle

    def upload(self, bundle: Path) -> str:
        """:meth:`LocalProvider.upload`, remembering the folder for :meth:`create`."""
        uri = self.provider.upload(bundle)
        self.bundle_dir = _path_of(uri)
        return uri

    # -- what is wanted, what is there ---------------------------------------------------

    def desired(self, bundle: Path, name: str | None) -> Desired:
        claimed = inspect_archive(bundle)  # the manifest alone; unpacking checks the rest
        return Desired(checked_name(name or claimed.name), Path(bundle), claimed)

    def live(self, desired: Desired) -> Live:
        state = self.provider._read_state(desired.name)
        return Live(state, state is not None and self.provider._live(state))

    def diff(self, desired: Desired, live: Live) -> Diff:
        manifest, name, state = desired.manifest, desired.name, live.state
        version = manifest.version
        folder = self.provider.root / "bundles" / version
        record = str(self.provider._dir(name) / STATE_FILE)
        server = f"{name} {version} (model server on {self.provider.settings.host})"
        if state is not None and live.serving and state.digest == manifest.digest:
            keep = f"{version} already live (pid {state.pid})"
            return Diff(
                name,
                manifest,
                upload=Change("keep", "bundle folder", str(folder), "already unpacked"),
                new_version=(Change("keep", "server process", server, keep),),
                entry=Change("keep", "live server record", record, f"names {version}"),
                live_version=version,
            )
        cached = folder.is_dir()
        upload = Change(
            "keep" if cached else "create",
            "bundle folder",
            str(folder),
            "already unpacked" if cached else "unpack and verify the archive",
        )
        start = Change("create", "server process", server, f"start {version}")
        if state is None:
            entry = Change("create", "live server record", record, f"names {version}")
            return Diff(name, manifest, upload, (start,), entry)
        entry = Change(
            "update",
            "live server record",
            record,
            f"switch from {state.version or 'the recorded server'} to {version} after its "
            "smoke test",
        )
        old = Change(
            "delete",
            "server process",
            f"pid {state.pid}",
            f"stop {state.version or 'the recorded server'} once {version} serves",
        )
        return Diff(
            name,
            manifest,
            upload,
            (start,),
            entry,
            leftovers=(old,) if process.is_ours(state) else (),  # else: nothing of ours runs
            live_version=state.version or None,
        )

    # -- the new version -----------------------------------------------------------------

    def create(self, desired: Desired, diff: Diff) -> None:
        """Start the new server (unpacking the bundle, or checking the unpacked copy)."""
        provider = self.provider
        provider._dir(desired.name).mkdir(parents=True, exist_ok=True)
        bundle_dir = self.bundle_dir
        if bundle_dir is None:  # unpacked already: upload checks that copy and reuses it
            bundle_dir = _path_of(self.upload(desired.bundle))
        manifest = read_manifest_file(bundle_dir / MANIFEST_FILE)
        record, proc = provider._start(desired.name, bundle_dir, manifest)
        provider._record_server(desired.name, record)  # before waiting: delete finds it
        self.started = _Started(record, proc, bundle_dir, manifest)

    def settled(self, desired: Desired, traffic_pct: int) -> Settle:
        """0 %: the new server listens on its port (its own socket) and answers ``/ping``.
        100 %: ``deployment.json`` names it (written by :meth:`switch`)."""
        started = self._started()
        if traffic_pct > 0:
            return Settle("ok")
        record, proc = started.record, started.proc
        exited = proc.poll() is not None
        log = Path(record.log)
        if record.port in process.listening_ports(record.pid):
            return Settle("ok") if self.provider._healthy(record) else Settle("pending", "loading")
        if process.port_taken(log):
            return self._restart_on_another_port(desired, started)
        if exited:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
            return Settle(
                "failed", f"server process exited during start-up; last log lines:\n{tail}"
            )
        return Settle("pending", "loading model")

    def _restart_on_another_port(self, desired: Desired, started: _Started) -> Settle:
        """The server could not bind its port (another process took it after it was chosen):
        start it again on another, up to :data:`PORT_ATTEMPTS` times."""
        taken = started.record.port
        self.discard()
        if started.attempts >= PORT_ATTEMPTS:
            return Settle(
                "failed", f"another process took each of {PORT_ATTEMPTS} free ports first"
            )
        provider = self.provider
        record, proc = provider._start(desired.name, started.bundle_dir, started.manifest)
        provider._record_server(desired.name, record)
        self.started = _Started(
            record, proc, started.bundle_dir, started.manifest, started.attempts + 1
        )
        return Settle("pending", f"port {taken} was taken meanwhile: starting on another")

    def taken(self, desired: Desired, traffic_pct: int) -> str | None:
        return None  # local calls either happened or did not: none goes on after a failure

    def smoke(self, desired: Desired, body: bytes, *, before_traffic: bool) -> bytes:
        """The example request to the new server's own port (it takes no traffic yet)."""
        record = self._started().record
        try:
            response = self.provider._http.post(
                self.provider._url(record) + "/invocations",
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.TransportError as exc:  # the new server died or hung: a failed deploy
            raise unreachable(desired.name, str(exc) or type(exc).__name__) from None
        if response.status_code != 200:
            raise model_server_error(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        return response.content

    # -- traffic -------------------------------------------------------------------------

    def switch(self, desired: Desired, live: Live, step: TrafficStep) -> None:
        """``step.pct`` of the traffic to the new server: below 100 % (a canary or linear
        step, with a live server to share it), ``split.json`` names the new server and its
        share; at 100 %, ``deployment.json`` names it and the split goes. Both files are
        replaced atomically: the invoke path reads the old or the new one."""
        record = self._started().record
        self.switched = True
        if step.pct < 100 and live.serving:
            self.provider._write_split(desired.name, Split(step.pct, record))
            return
        self.provider._write_state(desired.name, record)
        self.provider._clear_split(desired.name)
        self.replaced = live.state
        if live.state is not None and not process.is_ours(live.state):
            self.provider._forget_server(desired.name, live.state.pid)  # exited: no leftover

    def switch_back(self, desired: Desired, live: Live) -> None:
        if live.state is not None:
            self.provider._write_state(desired.name, live.state)
        self.provider._clear_split(desired.name)
        self.switched = False
        self.replaced = None

    # -- removal -------------------------------------------------------------------------

    def remove(self, change: Change) -> None:
        """``create``: the new server (it did not go live); ``delete``: the replaced server,
        after a grace for callers that read its port just before the switch."""
        if change.kind != "server process":
            return  # the live server record: written only by switch, nothing to remove
        if change.action == "create":
            self.discard()
            return
        replaced = self.replaced
        if replaced is None or change.name != f"pid {replaced.pid}":
            return
        time.sleep(SWITCH_GRACE_S)
        process.stop([replaced])
        self.provider._forget_server(replaced.name or self._started().record.name, replaced.pid)
        self.replaced = None

    def discard(self) -> None:
        """Stop the started server that took no traffic (killed: nothing to drain) and
        forget its record. Nothing when none was started or it went live."""
        started = self.started
        if started is None or self.switched:
            return
        started.proc.kill()
        started.proc.wait()
        self.provider._forget_server(started.record.name, started.record.pid)
        self.started = None

    # -- scaling: one process, nothing to scale ------------------------------------------

    def read_scaling(self, desired: Desired) -> object:
        return None

    def apply_scaling(self, desired: Desired, changes: tuple[Change, ...]) -> None:
        return None

    def restore_scaling(self, desired: Desired, before: object) -> None:
        return None

    def _started(self) -> _Started:
        if self.started is None:
            raise DeployFailed("no new server was started")  # the transaction's order
        return self.started


def _path_of(uri: str) -> Path:
    """The local path of a ``file://`` URI (what :meth:`LocalProvider.upload` returns)."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))
