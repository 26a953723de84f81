"""A fleet of model containers: aiaas's container entrypoint as local processes.

A cloud runs the one image with its own environment (SageMaker's ``SAGEMAKER_*``, Azure ML's
``AZUREML_MODEL_DIR``, PAI-EAS's mount path); an emulator runs the same entrypoint,
:func:`aiaas.runtime.container.main` (what ``python -m aiaas.runtime.container`` runs), in a
process of its own with that environment, working folder and arguments, in a session of its
own, waits for its health route, collects what it prints and stops it as the cloud would
(SIGTERM, then SIGKILL after a grace period).

Each container is forked from one preloaded process (:mod:`multiprocessing`'s forkserver,
started on first use) that has imported torch and the model server once: a container then
starts in a fraction of a second of CPU instead of about 1.5 s, which was most of what an
emulated deploy cost. The child replaces the whole environment with the container's before
the entrypoint runs.

Gaps from every cloud: the image named in the deploy is not run (no container engine here);
what runs is this checkout's entrypoint, in this interpreter. The server's modules were
imported before the container's environment was set, so a module that read a variable at
import time would read the emulator's (aiaas reads its variables when it starts serving,
:func:`aiaas.runtime.container.main`; torch's OpenMP runtime takes ``OMP_NUM_THREADS`` at
import, and the server sets its thread count itself); its import path is the emulator's. A
container ends as a multiprocessing child does (``os._exit``): its ``atexit`` handlers do not
run. Under a console script (``aiaas emulate aws``) multiprocessing runs that script's main
module again in each container before the entrypoint (its ``__main__`` guard keeps it from
doing anything but import); an error there, before the container's output is redirected,
goes to the emulator's stderr, not the container's log.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any

STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this (the clouds wait 30 s)
PING_TIMEOUT_S = 2.0  # SageMaker's ping request timeout; the others' are longer
PASSED_ENVIRONMENT = (
    "PATH", "HOME", "VIRTUAL_ENV", "PYTHONPATH", "TMPDIR", "LANG",
    # The test run's network guard, and its thread cap, go along to every container.
    "AIAAS_NETGUARD_LOG", "OMP_NUM_THREADS",
)  # fmt: skip
"""What a container takes from this process's environment; the rest is the cloud's."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int, path: str = "/ping", timeout: float = PING_TIMEOUT_S) -> bool:
    """True when ``GET path`` on 127.0.0.1:``port`` answers 200 within ``timeout``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


PRELOADED = ("torch", "aiaas.runtime.container", "aiaas.runtime.serve")
"""What the forkserver imports once: torch (a bundle's model imports it: about 1.2 s of CPU,
most of a container's start) and the model server with uvicorn. Nothing runs a torch
operation there, so no OpenMP pool exists yet when a container forks."""

_FORKSERVER_LOCK = threading.Lock()
_forkserver: list[multiprocessing.context.ForkServerContext] = []


def _context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, preloading :data:`PRELOADED` (set once per process)."""
    with _FORKSERVER_LOCK:
        if not _forkserver:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOADED))
            _forkserver.append(context)
        return _forkserver[0]


class _PassedFd:
    """A file descriptor handed to the forked child (the write end of its output pipe):
    pickled while the process starts, it travels with the forkserver's request, as
    :mod:`multiprocessing` passes its own pipes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[[Any], int], tuple[Any]]:
        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(passed: Any) -> int:
    return int(passed.detach())


def _run_entrypoint(
    environment: dict[str, str], workdir: str, args: tuple[str, ...], output: int
) -> None:
    """In the forked child: become the container (its own session, stdin from /dev/null,
    stdout and stderr into the pipe, exactly ``environment``, ``workdir``), then run the
    entrypoint; its return value is the exit status."""
    os.setsid()
    # Started as a daemon (so the emulator's exit stops it), but a container may start
    # processes of its own, as it may on the cloud (multiprocessing refuses a daemon's).
    multiprocessing.current_process().daemon = False
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)  # PYTHONUNBUFFERED's effect
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(workdir)
    sys.argv = [sys.argv[0], *args]
    from aiaas.runtime.container import main

    sys.exit(main(list(args)))


@dataclass
class ContainerProcess:
    """One running container: its process, port, working folder and output lines."""

    process: BaseProcess
    stdout: IO[bytes]
    port: int
    workdir: Path
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        *,
        workdir: Path,
        port: int,
        environment: Mapping[str, str],
        args: Iterable[str] = ("serve",),
        on_line: Callable[[str], None] | None = None,
    ) -> ContainerProcess:
        """Start the entrypoint in ``workdir`` with the cloud's ``environment`` (plus
        :data:`PASSED_ENVIRONMENT` from here); each line it prints is kept and handed to
        ``on_line`` (a cloud's log agent)."""
        env = {k: os.environ[k] for k in PASSED_ENVIRONMENT if k in os.environ}
        env.update(environment)
        env.update(AIAAS_HOST="127.0.0.1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        read_end, write_end = os.pipe()
        process = _context().Process(
            target=_run_entrypoint,
            args=(env, str(workdir), tuple(args), _PassedFd(write_end)),
            name=f"container-{port}",
            daemon=True,  # stopped with the emulator at the latest
        )
        try:
            process.start()
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the child holds its own copy: EOF when it exits
        container = cls(process, os.fdopen(read_end, "rb"), port, workdir)
        container.reader = threading.Thread(
            target=container._pump, args=(on_line,), name=f"logs-{process.pid}", daemon=True
        )
        container.reader.start()
        return container

    @property
    def pid(self) -> int:
        assert self.process.pid is not None  # started
        return self.process.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process.exitcode is None

    def ping(self, path: str = "/ping") -> bool:
        """True when its health route answers 200."""
        return ping(self.port, path)

    def text(self) -> str:
        """Everything it printed so far."""
        return "\n".join(self.output)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the container's process, if it still runs."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def _pump(self, on_line: Callable[[str], None] | None) -> None:
        for raw in self.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.output.append(line)
            if on_line is not None:
                on_line(line)


def stop_all(containers: Iterable[ContainerProcess], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each container, SIGKILL those still running after ``grace_s``, reap them."""
    containers = list(containers)
    for container in containers:
        container.signal(signal.SIGTERM)
    for container in containers:
        container.process.join(timeout=grace_s)
        if container.running():
            container.signal(signal.SIGKILL)
            container.process.join()
        if container.reader is not None:
            container.reader.join(timeout=5)
        container.stdout.close()
