"""Handwritten digits from a base64 PNG: a small CNN trained at bundle-build time.

Image convention (that of scikit-learn's digits, which the network is trained on):

* grayscale, dark background, bright strokes; colour images are converted to grayscale
  (Pillow's "L" conversion), 16-bit grayscale is scaled to 8 bits, and an alpha channel is
  ignored (transparent pixels count as their colour);
* 8x8 pixels. Any other size (up to :data:`MAX_SIDE` a side) is resized to 8x8 by area
  averaging (``BOX``): a 32x32 black-and-white bitmap becomes exactly the data set's
  representation, which counts the "on" pixels of each 4x4 block;
* pixel values 0..255 map linearly onto the data set's 0..16 scale.

The validator of :class:`DigitImage` decodes the image once, so an accepted item can always
be decoded by :meth:`Digits.predict`. Training is seeded and single-threaded with
deterministic algorithms, so every build writes the same bytes (stable bundle digest).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from PIL import Image
from pydantic import BaseModel, Field, field_validator
from safetensors.torch import load_file, save_file

import aiaas
from aiaas.runtime.determinism import deterministic_training

SEED = 11
TEST_FRACTION = 0.2
EPOCHS = 12
BATCH = 32
LEARNING_RATE = 0.003
SIZE = 8
SCALE = 16  # the data set's pixel values are 0..16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 1 << 20
MAX_SIDE = 256


def encode_png(pixels: Sequence[Sequence[float]]) -> str:
    """Base64 PNG (8-bit grayscale) of a grid of 0..16 values, the data set's scale.

    The grid is normally 8x8 (one row of the data set's ``images``); any rectangle works.
    Values are clamped to 0..16 and mapped to 0..255.
    """
    height, width = len(pixels), len(pixels[0]) if pixels else 0
    if not height or not width or any(len(row) != width for row in pixels):
        raise ValueError("pixels must be a non-empty rectangular grid")
    image = Image.new("L", (width, height))
    image.putdata([round(min(max(v, 0), SCALE) * 255 / SCALE) for row in pixels for v in row])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(data: str) -> torch.Tensor:
    """An 8x8 float tensor on the 0..16 scale from a base64 PNG (see the module docstring)."""
    with Image.open(io.BytesIO(base64.b64decode(data))) as opened:
        if opened.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale: 0..65535
            image = opened.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
        else:
            image = opened.convert("L")
    if image.size != (SIZE, SIZE):
        image = image.resize((SIZE, SIZE), Image.Resampling.BOX)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.reshape(SIZE, SIZE).to(torch.float32) * (SCALE / 255)


def _png_problem(raw: bytes) -> str | None:
    """Why ``raw`` (which starts like a PNG) cannot be used, or None when it can."""
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            image.verify()  # chunk structure and checksums, without decompressing
    except Image.DecompressionBombError:
        return f"image is too large; at most {MAX_SIDE}x{MAX_SIDE}"
    except Exception:
        return "PNG data is corrupt"
    if width > MAX_SIDE or height > MAX_SIDE:
        return f"image is {width}x{height}; at most {MAX_SIDE}x{MAX_SIDE}"
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()  # the pixel data decompresses completely
    except Exception:
        return "PNG data is corrupt"
    return None


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
        description=(
            f"Base64 PNG: 8x8 grayscale, bright strokes on a dark background (other sizes up"
            f" to {MAX_SIDE}x{MAX_SIDE} are resized to 8x8)."
        ),
        json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/png"},
    )

    @field_validator("image")
    @classmethod
    def _is_base64_png(cls, value: str) -> str:
        """Accept only base64 of a complete, not too large PNG."""
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
        if len(raw) > MAX_IMAGE_BYTES:
            raise ValueError(f"image is {len(raw)} bytes; at most {MAX_IMAGE_BYTES}")
        if not raw.startswith(PNG_MAGIC):
            raise ValueError("not a PNG image (base64 of a PNG file expected)")
        problem = _png_problem(raw)
        if problem:
            raise ValueError(problem)
        return value


class Digit(BaseModel):
    """The most likely digit and the probability of each of 0..9."""

    digit: int = Field(ge=0, le=9)
    probabilities: list[float] = Field(
        min_length=10, max_length=10, description="probability of each digit 0..9"
    )


class Split(NamedTuple):
    """The seeded, stratified train/test split (images N x 8 x 8 on the 0..16 scale)."""

    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor
    y_test: torch.Tensor


def network() -> torch.nn.Sequential:
    """conv 1→16 → conv 16→32 → pool → linear 512→10; input N x 1 x 8 x 8 scaled to 0..1."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10),
    )  # fmt: skip


def split() -> Split:
    """The split used for training and for the accuracy test (same seed, same images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.images, data.target, test_size=TEST_FRACTION, random_state=SEED, stratify=data.target
    )
    return Split(
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
    gpu_count = 0  # ~10k parameters: a CPU instance is plenty
    memory_mb = 512

    @classmethod
    def prepare(cls, artifacts_dir: Path) -> None:
        """Train on the training split; write weights and the held-out accuracy."""
        data = split()
        with deterministic_training(SEED):
            generator = torch.Generator().manual_seed(SEED)
            net = network()
            optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
            inputs = (data.x_train / SCALE).unsqueeze(1)
            for _ in range(EPOCHS):
                order = torch.randperm(len(inputs), generator=generator)
                for start in range(0, len(order), BATCH):
                    idx = order[start : start + BATCH]
                    optimiser.zero_grad()
                    loss = torch.nn.functional.cross_entropy(net(inputs[idx]), data.y_train[idx])
                    loss.backward()
                    optimiser.step()
            with torch.no_grad():
                predicted = net((data.x_test / SCALE).unsqueeze(1)).argmax(dim=1)
            accuracy = (predicted == data.y_test).float().mean().item()
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()},
            str(artifacts_dir / "digits.safetensors"),
        )
        metrics = {
            "test_accuracy": round(accuracy, 4),
            "test_size": len(data.y_test),
            "train_size": len(data.y_train),
            "seed": SEED,
            "epochs": EPOCHS,
        }
        (artifacts_dir / "metrics.json").write_text(
            json.dumps(metrics, sort_keys=True, indent=2) + "\n", encoding="utf-8"
        )

    def load(self, model_dir: Path) -> None:
        """Weights onto :attr:`device`."""
        self.net = network().to(self.device).eval()
        self.net.load_state_dict(
            load_file(str(model_dir / "digits.safetensors"), device=self.device)
        )

    def predict(self, batch: list[DigitImage]) -> list[dict[str, Any]]:
        """Decode every PNG, then one forward pass over the whole batch."""
        images = torch.stack([decode_png(item.image) for item in batch]).to(self.device)
        probs = torch.softmax(self.net((images / SCALE).unsqueeze(1)), dim=1)
        digits = probs.argmax(dim=1).tolist()
        return [
            {"digit": d, "probabilities": p}
            for d, p in zip(digits, probs.cpu().tolist(), strict=True)
        ]
