"""Load the user's model from a bundle and run batches of validated items through it."""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aiaas.bundle import ARTIFACTS_DIR, CODE_DIR, load_model_class
from aiaas.errors import ModelError
from aiaas.manifest import Manifest
from aiaas.model import Model
from aiaas.runtime.inference_process import InferenceProcess
from aiaas.runtime.outputs import OutputChecker, OutputValidation

log = logging.getLogger("aiaas.runner")


def pick_device(requested: str | None = None) -> str:
    """``requested`` if given, else ``"cuda"`` when a GPU is visible, else ``"cpu"``.

    A CUDA device asked for but not visible is refused (:class:`ModelError`): serving on the
    CPU instead would answer ``/ping`` on a GPU's bill, many times slower.
    """
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(
                f"device {requested!r} was asked for, but torch {torch.__version__} (built "
                f"for CUDA {torch.version.cuda or 'none'}) sees no CUDA GPU: the host's NVIDIA "
                "driver may be older than that CUDA needs, or no GPU is attached"
            )
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_summary() -> str:
    """torch's version and the accelerators it sees, e.g. ``2.13.0+cpu (CPU only)``."""
    import torch

    if torch.cuda.is_available():
        gpus = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"
    else:
        gpus = "CPU only"
    return f"{torch.__version__} ({gpus})"


class ModelRunner:
    """Owns the user's :class:`~aiaas.Model` instances; every call runs in an inference thread.

    With ``workers > 1`` it loads one instance per worker, so batches can run side by side
    without the model having to be thread-safe (a tokenizer, for one, often is not), and
    splits torch's intra-op threads between them unless ``torch_threads`` says otherwise.

    With ``process=True`` each worker's instance lives in a child process of its own
    (:mod:`aiaas.runtime.inference_process`): :meth:`start` starts them, :meth:`load` waits
    for their models, :meth:`run_batch` sends a batch to an idle one, :meth:`close` stops
    them. The input schema and the model class are still imported here (the event loop
    validates), but no model is loaded in this process.
    """

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        *,
        device: str | None = None,
        torch_threads: int | None = None,
        workers: int = 1,
        output_validation: OutputValidation = "strict",
        process: bool = False,
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self._requested_device = device
        self._torch_threads = torch_threads
        self.workers = workers
        self.process = process
        self.processes: list[InferenceProcess] = []
        self._idle_processes: queue.SimpleQueue[InferenceProcess] = queue.SimpleQueue()
        self._watched: asyncio.AbstractEventLoop | None = None
        self._output_validation: OutputValidation = output_validation
        self.start()  # first: the children import the model's code while this process does
        try:
            self.model_class: type[Model[Any, Any]] = load_model_class(
                bundle_dir / CODE_DIR, manifest.entrypoint
            )
        except BaseException:
            self.close(now=True)
            raise
        self.input_schema: type[BaseModel] = self.model_class.input_schema
        self.outputs = OutputChecker(self.model_class.output_schema, output_validation)
        self._idle: queue.SimpleQueue[Model[Any, Any]] = queue.SimpleQueue()
        self.loaded = False
        self.load_finished = False  # load() returned or raised: no thread is still loading
        self.device = "cpu"

    def start(self) -> None:
        """With ``process=True``, start the inference processes (each loads its model on
        its own; :meth:`load` waits for them): the constructor does, from the thread that
        builds the runner, which must live as long as the server (a child's death signal
        follows that thread on Linux). Without, nothing: :meth:`load` loads here."""
        if not self.process or self.processes:
            return
        for index in range(self.workers):
            child = InferenceProcess(
                index,
                self.bundle_dir,
                self.manifest,
                device=self._requested_device,
                torch_threads=self._torch_threads,
                share=self.workers,
                output_validation=self._output_validation,
            )
            self.processes.append(child)
            child.start()

    def load(self) -> None:
        """Instantiate each worker's model, load weights onto the device and warm each up
        with the example request (with ``process=True``: wait until every inference
        process has done so)."""
        try:
            if self.process:
                self._load_processes()
            else:
                self._load()
        finally:
            self.load_finished = True

    def _load_processes(self) -> None:
        started = time.perf_counter()
        self.start()  # no-op when the event loop already did
        threads = 0
        for child in self.processes:
            self.device, threads = child.wait_loaded()
            self._idle_processes.put(child)
        self.loaded = True
        log.info(
            "model %s %s loaded on %s in %.2fs (%d worker%s, each in its own inference "
            "process, %d torch threads each; pids %s)",
            self.manifest.name,
            self.manifest.version,
            self.device,
            time.perf_counter() - started,
            self.workers,
            "" if self.workers == 1 else "s",
            threads,
            ", ".join(str(child.pid) for child in self.processes),
        )

    def watch(self, loop: asyncio.AbstractEventLoop, on_death: Callable[[str], None]) -> None:
        """Call ``on_death`` (in ``loop``) with what happened when an inference process dies
        before :meth:`close`; without ``process=True``, nothing to watch."""
        self._watched = loop
        for child in self.processes:
            loop.add_reader(child.sentinel, self._died, child, on_death)

    def _died(self, child: InferenceProcess, on_death: Callable[[str], None]) -> None:
        if self._watched is not None:
            self._watched.remove_reader(child.sentinel)
        if not child.stopping:
            on_death(child.died())

    def close(self, *, now: bool = False) -> None:
        """Stop the inference processes: each once its batch in flight is done, or ``now``
        (killed: e.g. while they still load). Blocks; nothing to do without
        ``process=True``."""
        for child in self.processes:
            child.stopping = True  # its exit is no death (the watcher just stops watching)
        for child in self.processes:
            child.stop(now=now)

    def _load(self) -> None:
        import torch

        threads = self._torch_threads
        if threads is None and self.workers > 1:
            threads = max(1, torch.get_num_threads() // self.workers)
        if threads:
            torch.set_num_threads(threads)
        started = time.perf_counter()
        self.device = pick_device(self._requested_device)
        example = [
            self.input_schema.model_validate(i) for i in self.manifest.example_request["inputs"]
        ]
        for _ in range(self.workers):
            model = self.model_class()
            model.device = self.device
            model.load(self.bundle_dir / ARTIFACTS_DIR)
            # warm-up: the first forward pays for lazy init, not the first caller
            self._check_example(self._predict(model, example))
            self._idle.put(model)
        self.loaded = True
        log.info(
            "model %s %s loaded on %s in %.2fs (%d worker%s, %d torch threads each)",
            self.manifest.name,
            self.manifest.version,
            self.device,
            time.perf_counter() - started,
            self.workers,
            "" if self.workers == 1 else "s",
            torch.get_num_threads(),
        )

    def _check_example(self, results: list[Any]) -> None:
        """The example request's results must fit the output schema: in ``strict`` mode a
        model that breaks its own contract fails to load, saying how, instead of answering
        every caller 500."""
        problems = self.outputs.problems(results)
        if not problems:
            return
        index, (path, message) = next(iter(problems.items()))
        if self.outputs.mode == "strict":
            raise ModelError(
                f"predict's result for the example request breaks the output schema "
                f"{self.outputs.schema.__name__}: outputs[{index}]{path}: {message}"
            )
        self.outputs.check(results)  # warn: logged once

    def run_batch(self, items: list[Any]) -> list[Any]:
        """``predict`` on an idle instance under ``torch.inference_mode()``; results become
        JSON-ready dicts, checked against the output schema (in ``strict`` mode a bad one is
        a :class:`~aiaas.runtime.batcher.BadResult`)."""
        assert self.loaded, "load() first"
        if self.process:
            child = self._idle_processes.get()  # never waits, as below
            try:
                return child.run(items)
            finally:
                self._idle_processes.put(child)
        model = self._idle.get()  # never waits: at most `workers` batches run at once
        try:
            results = self._predict(model, items)
        finally:
            self._idle.put(model)
        return self.outputs.check(results)

    @staticmethod
    def _predict(model: Model[Any, Any], items: list[Any]) -> list[Any]:
        import torch

        with torch.inference_mode():
            results = model.predict(items)
        # by alias: the output schema the manifest publishes (and the checker validates)
        # names a field by its alias (``class_: str = Field(alias="class")`` is "class")
        return [
            r.model_dump(mode="json", by_alias=True) if isinstance(r, BaseModel) else r
            for r in results
        ]
