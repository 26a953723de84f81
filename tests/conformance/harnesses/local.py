"""The ``local`` provider under the conformance suite.

What it writes is seen independently of the provider's own records: the files under the
project's state folder (the servers' own logs left out: the running server writes those, not
the control plane) and the ``aiaas serve`` processes whose bundle lies under that folder,
found in ``/proc``. The endpoint throttles the way a real one does: the test project's server
has one worker and a queue of :data:`QUEUE_SLOTS` with no waiting for room; one slow probe
request holds the worker and fast ones fill the queue behind it, so the next prediction is
refused ``503 Overloaded`` with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.base import Provider
from adapters.local.provider import LocalProvider
from conformance.harness import Harness, register

QUEUE_SLOTS = 4  # the test project's server queue (room for the suite's looping clients)
HOLD_S = 3.0  # how long one slow request keeps the probe's one worker busy when throttled
_DEPTH = re.compile(r"^aiaas_queue_depth\{[^}]*\} (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class ServerProcess:
    """One ``aiaas serve`` process of the project, as ``/proc`` shows it."""

    pid: int
    started: str  # /proc/<pid>/stat field 22: with the pid, names this process only
    deployment: str | None  # from the log its stdout goes to: <state>/local/<name>/...
    version: str  # the bundle folder it serves: <state>/bundles/<version>


@register
class LocalHarness(Harness):
    """``provider: local`` with its state in the test project."""

    name = "local"

    def config_yaml(self) -> str:
        return (
            "provider: local\n"
            "state_dir: state\n"
            "local:\n  ready_timeout_s: 60\n"
            # a small queue and no waiting for room: see throttled()
            f"server:\n  max_queue_size: {QUEUE_SLOTS}\n  queue_wait_ms: 0\n"
        )

    @property
    def state(self) -> Path:
        """The project's state folder (what the provider writes)."""
        return self.config.state_path

    def writes(self) -> Hashable:
        files = frozenset(
            (str(path.relative_to(self.state)), stat.st_ino, stat.st_size, stat.st_mtime_ns)
            for path in self.state.rglob("*")
            if not path.name.endswith(".log") and (stat := path.stat())
        )
        return files, frozenset(self.servers())

    def servers(self) -> list[ServerProcess]:
        """Every live ``aiaas serve`` process serving a bundle of this project's state."""
        bundles = str(self.state / "bundles") + os.sep
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                args = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0")]
                served = [a for a in args if a.startswith(bundles)]
                if "serve" not in args or not served:
                    continue
                stat = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                if stat[0] in ("Z", "X"):  # exited, not collected yet
                    continue
                log = Path(os.readlink(entry / "fd" / "1"))
                name = log.parent.name if log.parent.parent == self.state / "local" else None
                version = Path(served[0][len(bundles) :]).parts[0]
                found.append(ServerProcess(int(entry.name), stat[19], name, version))
        return found

    def running_versions(self, name: str) -> set[str]:
        return {s.version for s in self.servers() if s.deployment == name}

    @contextlib.contextmanager
    def throttled(self, name: str) -> Iterator[None]:
        endpoint = self.provider.describe(name).endpoint
        assert endpoint, f"{name} has no endpoint"
        slow, fill = (_probe_body(ms) for ms in (int(HOLD_S * 1000), 0))
        with (
            httpx.Client(timeout=HOLD_S * 4, trust_env=False) as http,
            ThreadPoolExecutor(1 + QUEUE_SLOTS) as pool,
        ):

            def send(body: bytes) -> Future[httpx.Response]:
                url = endpoint + "/invocations"
                return pool.submit(http.post, url, content=body, headers=_JSON)

            bodies = [slow] + [fill] * QUEUE_SLOTS
            calls = [send(body) for body in bodies]
            # Saturated: the queue full on two scrapes in a row while no call has come back
            # (the slow one runs; the fillers wait behind it). Until then every call that
            # came back (refused, or run before the slow one) is sent again.
            deadline = time.monotonic() + HOLD_S / 2
            full = 0
            while full < 2:
                assert time.monotonic() < deadline, "the probe server's queue never filled up"
                for i, call in enumerate(calls):
                    if call.done():
                        assert call.result().status_code in (200, 503), call.result().text
                        calls[i] = send(bodies[i])
                depth = _DEPTH.search(http.get(endpoint + "/metrics").text)
                queued = float(depth.group(1)) if depth else 0.0
                pending = not any(call.done() for call in calls)
                full = full + 1 if queued == QUEUE_SLOTS and pending else 0
            yield
            for call in calls:  # admitted, so answered
                assert call.result().status_code == 200, call.result().text

    @contextlib.contextmanager
    def foreign(self, name: str, bundle: Path) -> Iterator[None]:
        # Another project: its own state folder, its own servers.
        with LocalProvider(state_dir=self.workdir / "another-project" / "state") as other:
            try:
                other.deploy(bundle, name=name)
                yield
            finally:
                other.delete(name)

    def clients_closed(self, provider: Provider) -> bool:
        assert isinstance(provider, LocalProvider)
        return provider._http.is_closed and not provider.invoker.clients.sync_open

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if hasattr(self, "config"):
                # Anything the provider failed to stop is ours (it serves our state's
                # bundles): stop it, and fail loudly so the leak is seen.
                left = self.servers()
                for server in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(server.pid, signal.SIGKILL)
                assert not left, f"local provider left servers running: {left}"


_JSON = {"content-type": "application/json"}


def _probe_body(sleep_ms: int) -> bytes:
    return json.dumps({"inputs": [{"value": 1, "sleep_ms": sleep_ms}]}).encode()
