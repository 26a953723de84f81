"""Load the user's model from a bundle and run batches of validated items through it."""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aiaas.bundle import ARTIFACTS_DIR, CODE_DIR, load_model_class
from aiaas.errors import ModelError
from aiaas.manifest import Manifest
from aiaas.model import Model
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
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self._requested_device = device
        self._torch_threads = torch_threads
        self.workers = workers
        self.model_class: type[Model[Any, Any]] = load_model_class(
            bundle_dir / CODE_DIR, manifest.entrypoint
        )
        self.input_schema: type[BaseModel] = self.model_class.input_schema
        self.outputs = OutputChecker(self.model_class.output_schema, output_validation)
        self._idle: queue.SimpleQueue[Model[Any, Any]] = queue.SimpleQueue()
        self.loaded = False
        self.load_finished = False  # load() returned or raised: no thread is still loading
        self.device = "cpu"

    def load(self) -> None:
        """Instantiate each worker's model, load weights onto the device and warm each up
        with the example request."""
        try:
            self._load()
        finally:
            self.load_finished = True

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
