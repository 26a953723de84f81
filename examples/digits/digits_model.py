"""Handwritten digits from a base64 PNG: a small CNN trained at bundle-build time.

Images follow scikit-learn's digits convention: 8x8 grayscale, dark background, bright
strokes. A larger image is resized to 8x8; pixel values 0..255 map to the data set's 0..16.
Training is seeded and single-threaded with deterministic algorithms (stable digest).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from pydantic import BaseModel, Field, field_validator
from safetensors.torch import load_file, save_file

import aiaas

SEED = 11
TEST_FRACTION = 0.2
EPOCHS = 12
BATCH = 32
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 1 << 20


def encode_png(pixels: Sequence[Sequence[float]]) -> str:
    """Base64 PNG of an 8x8 grid of 0..16 values (the data set's scale)."""
    image = Image.new("L", (8, 8))
    image.putdata([min(255, round(v * 255 / 16)) for row in pixels for v in row])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode_png(data: str) -> torch.Tensor:
    """An 8x8 float tensor on the 0..16 scale from a base64 PNG (validated beforehand)."""
    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("L")
    if image.size != (8, 8):
        image = image.resize((8, 8), Image.Resampling.BILINEAR)
    return torch.tensor(list(image.getdata()), dtype=torch.float32).reshape(8, 8) * (16 / 255)


# A "0" as in the data set, for the warm-up and the manifest's example request.
_ZERO = [
    [0, 0, 5, 13, 9, 1, 0, 0],
    [0, 0, 13, 15, 10, 15, 5, 0],
    [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0],
    [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0],
    [0, 0, 6, 13, 10, 0, 0, 0],
]


class DigitImage(BaseModel):
    """One image of a handwritten digit."""

    image: str = Field(
        description="Base64 PNG, 8x8 grayscale (larger ones are resized), bright strokes on dark.",
        json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/png"},
    )

    @field_validator("image")
    @classmethod
    def _is_base64_png(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
        if len(raw) > MAX_IMAGE_BYTES:
            raise ValueError(f"image is {len(raw)} bytes; at most {MAX_IMAGE_BYTES}")
        if not raw.startswith(PNG_MAGIC):
            raise ValueError("not a PNG image")
        try:
            Image.open(io.BytesIO(raw)).verify()
        except Exception:
            raise ValueError("PNG data is corrupt") from None
        return value


class Digit(BaseModel):
    """The most likely digit and the probability of each of 0..9."""

    digit: int
    probabilities: list[float]


def network() -> torch.nn.Sequential:
    """conv 1→16 → conv 16→32 → pool → linear 512→10."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10),
    )  # fmt: skip


def split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seeded, stratified train/test split (images as N x 8 x 8 on the 0..16 scale)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.images, data.target, test_size=TEST_FRACTION, random_state=SEED, stratify=data.target
    )
    return (
        torch.tensor(x_train, dtype=torch.float32),
        torch.tensor(x_test, dtype=torch.float32),
        torch.tensor(y_train, dtype=torch.long),
        torch.tensor(y_test, dtype=torch.long),
    )


class Digits(aiaas.Model[DigitImage, Digit]):
    """Reads a handwritten digit."""

    name = "digits"
    input_schema = DigitImage
    output_schema = Digit
    example_input: ClassVar[dict[str, Any]] = {"image": encode_png(_ZERO)}
    max_batch_size = 64
    max_delay_ms = 2.0
    gpu_count = 0
    memory_mb = 512

    @classmethod
    def prepare(cls, artifacts_dir: Path) -> None:
        """Train on the training split; write weights and the held-out accuracy."""
        x_train, x_test, y_train, y_test = split()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            generator = torch.Generator().manual_seed(SEED)
            torch.manual_seed(SEED)
            net = network()
            optimiser = torch.optim.Adam(net.parameters(), lr=0.003)
            inputs = (x_train / 16).unsqueeze(1)
            for _ in range(EPOCHS):
                order = torch.randperm(len(inputs), generator=generator)
                for start in range(0, len(order), BATCH):
                    idx = order[start : start + BATCH]
                    optimiser.zero_grad()
                    torch.nn.functional.cross_entropy(net(inputs[idx]), y_train[idx]).backward()
                    optimiser.step()
            with torch.no_grad():
                predicted = net((x_test / 16).unsqueeze(1)).argmax(dim=1)
                accuracy = (predicted == y_test).float().mean().item()
        finally:
            torch.use_deterministic_algorithms(False)
            torch.set_num_threads(threads)
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()},
            str(artifacts_dir / "digits.safetensors"),
        )
        meta = {"test_accuracy": round(accuracy, 4), "seed": SEED, "epochs": EPOCHS}
        (artifacts_dir / "metrics.json").write_text(
            json.dumps(meta, sort_keys=True, indent=2) + "\n"
        )

    def load(self, model_dir: Path) -> None:
        self.net = network().to(self.device).eval()
        self.net.load_state_dict(
            load_file(str(model_dir / "digits.safetensors"), device=self.device)
        )

    def predict(self, batch: list[DigitImage]) -> list[dict[str, Any]]:
        images = torch.stack([decode_png(item.image) for item in batch]).to(self.device)
        probs = torch.softmax(self.net((images / 16).unsqueeze(1)), dim=1)
        digits = probs.argmax(dim=1).tolist()
        return [
            {"digit": d, "probabilities": p}
            for d, p in zip(digits, probs.cpu().tolist(), strict=True)
        ]
