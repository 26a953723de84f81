"""Iris species from four measurements: a small MLP trained at bundle-build time.

The data is scikit-learn's bundled copy of Fisher's iris set (no download). Training is
seeded and single-threaded with deterministic algorithms, so every build writes the same
bytes and the bundle digest is stable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file

import aiaas

SEED = 7
TEST_FRACTION = 0.3
EPOCHS = 400


class Measurements(BaseModel):
    """Sepal length, sepal width, petal length, petal width, in cm."""

    features: list[float] = Field(
        min_length=4,
        max_length=4,
        description="sepal length, sepal width, petal length, petal width (cm)",
    )


class Species(BaseModel):
    """The predicted species and the probability of each class."""

    label: str
    label_id: int
    probabilities: list[float]


def network() -> torch.nn.Sequential:
    """4 → 16 → 16 → 3."""
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 3),
    )


def split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """The seeded, stratified train/test split used for training and for the accuracy test."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=TEST_FRACTION, random_state=SEED, stratify=data.target
    )
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return (
        as_x(x_train),
        as_x(x_test),
        as_y(y_train),
        as_y(y_test),
        [str(n) for n in data.target_names],
    )


class Iris(aiaas.Model[Measurements, Species]):
    """Classifies an iris flower as setosa, versicolor or virginica."""

    name = "iris"
    input_schema = Measurements
    output_schema = Species
    example_input: ClassVar[dict[str, Any]] = {"features": [5.1, 3.5, 1.4, 0.2]}
    max_batch_size = 64
    max_delay_ms = 2.0
    gpu_count = 0
    memory_mb = 512

    @classmethod
    def prepare(cls, artifacts_dir: Path) -> None:
        """Train on the training split and write weights, normalisation and held-out accuracy."""
        x_train, x_test, y_train, y_test, names = split()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            torch.manual_seed(SEED)
            mean, std = x_train.mean(dim=0), x_train.std(dim=0)
            net = network()
            optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
            for _ in range(EPOCHS):
                optimiser.zero_grad()
                loss = torch.nn.functional.cross_entropy(net((x_train - mean) / std), y_train)
                loss.backward()
                optimiser.step()
            with torch.no_grad():
                accuracy = (
                    (net((x_test - mean) / std).argmax(dim=1) == y_test).float().mean().item()
                )
        finally:
            torch.use_deterministic_algorithms(False)
            torch.set_num_threads(threads)
        tensors = {f"net.{k}": v.contiguous() for k, v in net.state_dict().items()}
        save_file({**tensors, "mean": mean, "std": std}, str(artifacts_dir / "iris.safetensors"))
        meta = {"labels": names, "test_accuracy": round(accuracy, 4), "seed": SEED}
        (artifacts_dir / "metrics.json").write_text(
            json.dumps(meta, sort_keys=True, indent=2) + "\n"
        )

    def load(self, model_dir: Path) -> None:
        tensors = load_file(str(model_dir / "iris.safetensors"), device=self.device)
        self.net = network().to(self.device).eval()
        self.net.load_state_dict(
            {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
        )
        self.mean, self.std = tensors["mean"], tensors["std"]
        self.labels: list[str] = json.loads((model_dir / "metrics.json").read_text())["labels"]

    def predict(self, batch: list[Measurements]) -> list[dict[str, Any]]:
        x = torch.tensor([item.features for item in batch], dtype=torch.float32, device=self.device)
        probs = torch.softmax(self.net((x - self.mean) / self.std), dim=1)
        ids = probs.argmax(dim=1).tolist()
        return [
            {"label": self.labels[i], "label_id": i, "probabilities": p}
            for i, p in zip(ids, probs.cpu().tolist(), strict=True)
        ]
