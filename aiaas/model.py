"""The model API users write against: subclass :class:`Model`, declare schemas, load, predict.

Everything else (batching, HTTP, health, clouds) belongs to aiaas. This module never imports
torch: the server sets :attr:`Model.device` before calling :meth:`Model.load` and runs
:meth:`Model.predict` under ``torch.inference_mode()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

InputT = TypeVar("InputT", bound=BaseModel)
OutputT = TypeVar("OutputT", bound=BaseModel)


class Model(Generic[InputT, OutputT]):
    """Base class of a servable model.

    Subclasses set the class attributes and implement :meth:`load` and :meth:`predict`::

        class TextIn(BaseModel):
            text: str

        class Embedding(BaseModel):
            embedding: list[float]

        class Embedder(aiaas.Model[TextIn, Embedding]):
            name = "minilm"
            input_schema = TextIn
            output_schema = Embedding
            max_batch_size = 32

            def load(self, model_dir):
                self.net = ...to(self.device)

            def predict(self, batch):
                return [Embedding(embedding=...) for item in batch]

    Attributes:
        name: the model's name (URL-safe); OIP routes use it.
        input_schema / output_schema: pydantic models of one item in and one result out.
            Their JSON Schemas go into the bundle manifest, so the function tier can validate
            requests without importing this code.
        example_input: one valid input item, used for warm-up and the manifest's example.
        max_batch_size / max_delay_ms: dynamic batching hints (overridable in aiaas.yaml).
        gpu_count / memory_mb: resource hints for the cloud instance.
        device: ``"cuda"`` when a GPU is visible, else ``"cpu"``; set before ``load``.
    """

    name: ClassVar[str] = "model"
    input_schema: ClassVar[type[BaseModel]]
    output_schema: ClassVar[type[BaseModel]]
    example_input: ClassVar[dict[str, Any]] = {}
    max_batch_size: ClassVar[int] = 32
    max_delay_ms: ClassVar[float] = 5.0
    gpu_count: ClassVar[int] = 1
    memory_mb: ClassVar[int] = 2048

    device: str = "cpu"

    @classmethod
    def prepare(cls, artifacts_dir: Path) -> None:
        """Write the model's weights into ``artifacts_dir`` at bundle-build time.

        Override to train, convert or copy weights; the default writes nothing (weights may
        already sit in the project's ``artifacts/`` folder). Must be deterministic: same
        inputs, same bytes, so the bundle digest is stable.
        """

    def load(self, model_dir: Path) -> None:
        """Load weights from ``model_dir`` (the bundle's ``artifacts/``) onto :attr:`device`."""
        raise NotImplementedError

    def predict(self, batch: list[InputT]) -> list[OutputT] | list[dict[str, Any]]:
        """Return one result per input item, in order. Called with 1..max_batch_size items.

        The server checks what comes back: the wrong number of results fails the batch, and
        each result must fit :attr:`output_schema` with finite numbers only (with
        ``server.output_validation: strict``, the default, a result that does not is a
        ``model_error`` for its caller instead of being served)."""
        raise NotImplementedError
