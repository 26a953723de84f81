"""The local provider's model server processes: start one, tell whether a recorded one is
still ours, find the ports it listens on, and stop some (a grace period, then SIGKILL).

Everything here reads ``/proc`` (Linux). A pid alone never names a process: once ours has
exited the pid may be reused, even by another project's server, so a process is followed by
its pid *and* its start time (``/proc/<pid>/stat`` field 22).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.local.state import ServerRecord

STOP_TIMEOUT_S = 35.0  # the server drains for up to 30 s after SIGTERM
REAP_PATIENCE_S = 2.0  # a server seen exiting is collected within this, not left a zombie
ENTRYPOINT = "aiaas.runtime.container"  # the cloud container's entrypoint (its module)
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's ``st`` column


def free_port(host: str) -> int:
    """A port that was free on ``host`` a moment ago. Another process may take it before
    the server binds it: :func:`port_taken` tells, and the caller starts again on another."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached (its own session: it outlives the CLI that started it), its
    stdout and stderr appended to ``log``, nothing on its stdin."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env), cwd=cwd, start_new_session=True,
        )  # fmt: skip


def port_taken(log: Path) -> bool:
    """True when the server's log says its port was taken (uvicorn logs ``[Errno 98] error
    while attempting to bind on address (...): address already in use`` and exits)."""
    try:
        return "address already in use" in log.read_text(errors="replace").lower()
    except OSError:
        return False


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on: its socket inodes (``/proc/<pid>/fd``)
    matched against the listening sockets of its network namespace (``/proc/<pid>/net``).
    Tells our server from another process answering on the port we meant to use."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    if not inodes:  # still loading its model: no need to read the whole TCP table
        return ports
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()  # sl local_address rem_address st ... uid timeout inode
            if len(fields) > 9 and fields[3] == _LISTEN and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (the state) on; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()  # the command name (field 2) may hold anything


def start_time(pid: int) -> int | None:
    """When ``pid`` started (``/proc/<pid>/stat`` field 22, clock ticks since boot)."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _runs_a_server(cmdline: list[bytes], record: ServerRecord) -> bool:
    """The command line is the one a server of ``record`` was started with: the container
    entrypoint serving the recorded bundle, or (a server started by an older version of this
    provider) ``aiaas serve ... --port <the recorded port>``."""
    if ENTRYPOINT.encode() in cmdline and b"serve" in cmdline:
        return not record.bundle_dir or record.bundle_dir.encode() in cmdline
    if b"aiaas" not in cmdline or b"serve" not in cmdline or b"--port" not in cmdline:
        return False
    at = cmdline.index(b"--port") + 1
    return at < len(cmdline) and cmdline[at] == str(record.port).encode()


def is_ours(record: ServerRecord | None) -> bool:
    """True if the server that ``record`` (a state or server record) describes is alive.

    The process must have the recorded pid, the recorded start time and the command line of
    a server of that record (records written before start times were kept: the port).
    """
    if record is None or record.pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not _runs_a_server(cmdline, record):
        return False
    if record.pid_start is None and ENTRYPOINT.encode() in cmdline:
        return False  # this provider always records the start time of what it starts
    fields = stat_fields(record.pid)
    if not fields or fields[0] == "Z":  # a zombie has exited
        return False
    return record.pid_start is None or (len(fields) > 19 and fields[19] == str(record.pid_start))


def stop(records: Sequence[ServerRecord | None]) -> None:
    """SIGTERM each server that is still ours (it drains in-flight requests), then SIGKILL
    what is left after :data:`STOP_TIMEOUT_S`. They drain side by side.

    Each process is followed by its pid *and* start time, so a pid that is reused during the
    drain (by another project's server, say) counts as ours having exited and is never sent
    the final SIGKILL."""
    ours = [(r.pid, start_time(r.pid)) for r in records if r is not None and is_ours(r)]
    stopping = list(ours)
    for pid, _ in ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        for pid, _ in ours:
            reap(pid)
        # Exited, not merely "no longer looks like ours": an exiting process's cmdline
        # reads empty for a moment before it becomes a zombie.
        ours = [(pid, start) for pid, start in ours if not _gone(pid, start)]
        if not ours:
            for pid, start in stopping:  # a child may still be on its way to being a zombie
                if start_time(pid) in (start, None):  # not if the pid is another's now
                    reap(pid, patience_s=REAP_PATIENCE_S)
            return
        time.sleep(0.05)
    for pid, start in ours:
        if not _gone(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        reap(pid)


def _gone(pid: int, start: int | None) -> bool:
    """True once the process that started at ``start`` as ``pid`` has exited (the pid may
    already belong to another process)."""
    return _exited(pid) or start_time(pid) != start


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie (it has exited; only the reaping is left)."""
    fields = stat_fields(pid)
    return not fields or fields[0] in ("Z", "X")


def reap(pid: int, patience_s: float = 0.0) -> None:
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
