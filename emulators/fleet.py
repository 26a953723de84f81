"""A fleet of model containers: aiaas's container entrypoint as local processes.

A cloud runs the one image with its own environment (SageMaker's ``SAGEMAKER_*``, Azure ML's
``AZUREML_MODEL_DIR``, PAI-EAS's mount path); an emulator runs the same entrypoint,
``python -m aiaas.runtime.container``, in this interpreter with that environment, waits for
its health route, collects what it prints and stops it as the cloud would (SIGTERM, then
SIGKILL after a grace period).

Gap from every cloud: the image named in the deploy is not run (no container engine here);
what runs is this checkout's entrypoint, in this interpreter.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class ContainerProcess:
    """One running container: its process, port, working folder and output lines."""

    popen: subprocess.Popen[bytes]
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
        popen = subprocess.Popen(
            [sys.executable, "-m", "aiaas.runtime.container", *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        container = cls(popen, port, workdir)
        container.reader = threading.Thread(
            target=container._pump, args=(on_line,), name=f"logs-{popen.pid}", daemon=True
        )
        container.reader.start()
        return container

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def ping(self, path: str = "/ping") -> bool:
        """True when its health route answers 200."""
        return ping(self.port, path)

    def text(self) -> str:
        """Everything it printed so far."""
        return "\n".join(self.output)

    def _pump(self, on_line: Callable[[str], None] | None) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.output.append(line)
            if on_line is not None:
                on_line(line)


def stop_all(containers: Iterable[ContainerProcess], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each container, SIGKILL those still running after ``grace_s``, reap them."""
    containers = list(containers)
    for container in containers:
        if container.running():
            with contextlib.suppress(ProcessLookupError):
                container.popen.send_signal(signal.SIGTERM)
    for container in containers:
        try:
            container.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            container.popen.kill()
            container.popen.wait()
        if container.reader is not None:
            container.reader.join(timeout=5)
        if container.popen.stdout is not None:
            container.popen.stdout.close()
