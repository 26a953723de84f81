"""Load the user's model from a bundle and run batches of validated items through it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aiaas.bundle import ARTIFACTS_DIR, CODE_DIR, load_model_class
from aiaas.manifest import Manifest
from aiaas.model import Model

log = logging.getLogger("aiaas.runner")


def pick_device(requested: str | None = None) -> str:
    """``requested`` if given, else ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if requested:
        return requested
    import torch

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
    """Owns the user's :class:`~aiaas.Model` instance; every call runs in the inference thread."""

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        *,
        device: str | None = None,
        torch_threads: int | None = None,
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self._requested_device = device
        self._torch_threads = torch_threads
        self.model_class: type[Model[Any, Any]] = load_model_class(
            bundle_dir / CODE_DIR, manifest.entrypoint
        )
        self.input_schema: type[BaseModel] = self.model_class.input_schema
        self.model: Model[Any, Any] | None = None
        self.device = "cpu"

    def load(self) -> None:
        """Instantiate, load weights onto the device and warm up with the example request."""
        import torch

        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        started = time.perf_counter()
        self.device = pick_device(self._requested_device)
        model = self.model_class()
        model.device = self.device
        model.load(self.bundle_dir / ARTIFACTS_DIR)
        self.model = model
        example = [
            self.input_schema.model_validate(i) for i in self.manifest.example_request["inputs"]
        ]
        self.run_batch(example)  # warm-up: first forward pays for lazy init, not the first caller
        log.info(
            "model %s %s loaded on %s in %.2fs",
            self.manifest.name,
            self.manifest.version,
            self.device,
            time.perf_counter() - started,
        )

    def run_batch(self, items: list[Any]) -> list[Any]:
        """``predict`` under ``torch.inference_mode()``; results become JSON-ready dicts."""
        import torch

        assert self.model is not None, "load() first"
        with torch.inference_mode():
            results = self.model.predict(items)
        return [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in results]
