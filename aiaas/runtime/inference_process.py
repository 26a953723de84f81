"""Inference in its own process (``server.inference_in: process``), one per inference worker.

In one process the event loop (HTTP parsing, validation, refusals) and the forward pass
share one GIL: torch releases it inside an op and takes it back between ops, and under
open-loop overload each time it found the event loop holding it (``bench/overload.py``:
goodput 0.64-0.74 x capacity). With this setting each inference worker's model lives in a
child process with its own interpreter and GIL; the server's process keeps batching as
before, and each batch's validated items (pickled) go to a child over a pipe, which runs
``predict`` and the output check and sends the results back.

The children are started with multiprocessing's ``spawn`` method (a fresh interpreter: no
fork of a process that holds threads, and the only way CUDA works in a child) when the
server starts, from the event loop's thread; each loads its own model copy and sets its own
torch threads. A child that dies is seen at once (its sentinel, watched by the event loop;
a batch in flight fails with :class:`InferenceProcessDied`, a 503). A child ignores SIGINT
and SIGTERM (a Ctrl-C or a signal to the whole process group must not cut a drain short):
the server tells it to stop once its batches are answered, and it dies with the server
(``PR_SET_PDEATHSIG`` on Linux, and the pipe's end-of-file).

Messages on the pipe, pickled by :class:`multiprocessing.connection.Connection`:

- child → server, once: ``("loaded", (device, torch_threads))`` or ``("load_failed", exc)``;
- server → child: a list of items (one batch), or ``None``: stop;
- child → server, per batch: ``("ok", results)`` or ``("error", exc)``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiaas.errors import ModelError, NotReady

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

    from aiaas.manifest import Manifest
    from aiaas.runtime.outputs import OutputValidation

log = logging.getLogger("aiaas.inference_process")

#: How long a child may take to finish its batch and exit once told to stop.
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


class InferenceProcessDied(NotReady):
    """An inference process is gone (killed, crashed): nothing more is computed. Answered
    503 ``not_ready`` with ``Retry-After``; the server stops so that its platform (or
    supervisor) starts it again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=1.0)


class InferenceProcess:
    """The server's side of one inference child: start it, wait for its model, run batches
    on it (one at a time, from one inference thread), stop it."""

    def __init__(
        self,
        index: int,
        bundle_dir: Path,
        manifest: Manifest,
        *,
        device: str | None,
        torch_threads: int | None,
        share: int,
        output_validation: OutputValidation,
    ) -> None:
        self.index = index
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._child_conn: Connection | None = child_conn
        level = logging.getLogger().getEffectiveLevel()
        self.process: SpawnProcess = ctx.Process(
            target=child_main,
            args=(child_conn, os.getpid(), bundle_dir, manifest),
            kwargs={
                "device": device,
                "torch_threads": torch_threads,
                "share": share,
                "output_validation": output_validation,
                "log_level": level,
            },
            name=f"aiaas-inference-{index}",
            daemon=True,  # multiprocessing ends it at the server's exit, should it get there
        )
        self.stopping = False
        self._lock = threading.Lock()
        self._death: str | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self.process.pid

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable when the child has exited."""
        return self.process.sentinel

    def start(self) -> None:
        """Start the child (it loads its model on its own); call from the thread that lives
        as long as the server (the child's death signal follows that thread on Linux)."""
        self.process.start()
        atexit.register(self.stop, now=True)  # before multiprocessing's own exit hook runs
        if self._child_conn is not None:
            self._child_conn.close()  # the child's end is the child's alone: its death is EOF
            self._child_conn = None

    def wait_loaded(self) -> tuple[str, int]:
        """Block until the child's model is loaded and warmed up: its device and torch
        threads. Raises what the load raised (as the child sent it), or
        :class:`~aiaas.errors.ModelError` if the child died while loading."""
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            raise ModelError(f"{self.died()} while loading the model") from None
        if kind == "load_failed":
            raise payload
        device, threads = payload
        return str(device), int(threads)

    def run(self, items: list[Any]) -> list[Any]:
        """Run one batch in the child: its checked results, in order. Raises what
        ``predict`` raised (with the child's traceback as a note), or
        :class:`InferenceProcessDied`."""
        try:
            self._conn.send(items)
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            raise InferenceProcessDied(self.died()) from None
        if kind == "error":
            raise payload
        results: list[Any] = payload
        return results

    def died(self) -> str:
        """What became of the child, in words, for a log line and a 503's message (the
        same words for every caller: the event loop's watcher and the inference thread)."""
        with self._lock:
            if self._death is None:
                self.process.join(timeout=1.0)  # its pipe closed: exiting, if not gone
                code = self.process.exitcode
                if code is None:
                    how = "stopped answering"
                elif code < 0:
                    try:
                        how = f"was killed by {signal.Signals(-code).name}"
                    except ValueError:
                        how = f"was killed by signal {-code}"
                else:
                    how = f"exited with status {code}"
                self._death = f"inference process {self.index} (pid {self.pid}) {how}"
            return self._death

    def stop(self, *, now: bool = False) -> None:
        """Stop the child: once its current batch is done (it is told to stop, and killed
        past :data:`STOP_TIMEOUT_S`), or ``now`` (killed: e.g. while it still loads)."""
        self.stopping = True
        if self.process.pid is None:
            return  # never started
        if not now and self.process.is_alive():
            with contextlib.suppress(OSError):  # already gone
                self._conn.send(None)
            self.process.join(timeout=STOP_TIMEOUT_S)
        if self.process.is_alive():  # it ignores SIGTERM: see the module's docstring
            self.process.kill()
        self.process.join(timeout=STOP_TIMEOUT_S)
        self._conn.close()


# -- the child ----------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Linux: be sent SIGKILL when the server dies, however it dies (``prctl``)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before the prctl
        os._exit(1)


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` with the child's traceback as a note, or, if it cannot be pickled, a
    :class:`~aiaas.errors.ModelError` saying what it was."""
    import pickle

    text = "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(f"in the inference process (pid {os.getpid()}):\n{text}")
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return ModelError(f"model error: {exc!r}")


def child_main(
    conn: Connection,
    parent_pid: int,
    bundle_dir: Path,
    manifest: Manifest,
    *,
    device: str | None,
    torch_threads: int | None,
    share: int,
    output_validation: OutputValidation,
    log_level: int,
) -> None:
    """The child: load the model (one :class:`~aiaas.runtime.runner.ModelRunner` worker),
    then run each batch the server sends until told to stop or the server is gone.
    ``torch_threads``: its intra-op threads; None: torch's default split between the
    ``share`` inference processes (as ``inference_workers`` threads split them)."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[inference {os.getpid()}]: %(message)s",
    )
    logging.getLogger("aiaas.runner").setLevel(logging.WARNING)  # the server logs the load
    from aiaas.runtime.runner import ModelRunner

    try:
        if torch_threads is None and share > 1:
            import torch

            torch_threads = max(1, torch.get_num_threads() // share)
        runner = ModelRunner(
            bundle_dir,
            manifest,
            device=device,
            torch_threads=torch_threads,
            output_validation=output_validation,
        )
        runner.load()
        import torch

        conn.send(("loaded", (runner.device, torch.get_num_threads())))
    except BaseException as exc:
        conn.send(("load_failed", _sendable(exc)))
        return
    while True:
        try:
            items = conn.recv()
        except (EOFError, OSError):
            return  # the server is gone
        if items is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", runner.run_batch(items))
        except Exception as exc:
            reply = ("error", _sendable(exc))
        try:
            data = ForkingPickler.dumps(reply)
        except Exception as exc:  # a result pickle cannot carry
            failure = ModelError(f"model error: a result cannot be sent: {exc!r}")
            data = ForkingPickler.dumps(("error", failure))
        try:
            conn.send_bytes(data)
        except OSError:
            return  # the server is gone
