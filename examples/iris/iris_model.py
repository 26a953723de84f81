"""Iris species from four measurements: a small MLP trained at bundle-build time.

The data is scikit-learn's bundled copy of Fisher's iris set (no download). Training is
seeded and single-threaded with deterministic algorithms, so every build writes the same
bytes and the bundle digest is stable.

Artifacts written by :meth:`Iris.prepare`:

* ``iris.safetensors``: the network's weights;
* ``iris.json``: class names, feature names, and the training split's feature mean and
  standard deviation (inputs are standardised with them before the network sees them);
* ``metrics.json``: held-out accuracy and how it was measured (seed, split sizes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel, Field, FiniteFloat
from safetensors.torch import load_file, save_file

import aiaas
from aiaas.runtime.determinism import deterministic_training

SEED = 7
TEST_FRACTION = 0.3
EPOCHS = 400
LEARNING_RATE = 0.01
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
MAX_CM = 100.0  # iris organs measure under 10 cm; a generous bound, far from float overflow


Centimetres = Annotated[FiniteFloat, Field(ge=0, le=MAX_CM)]
"""One measurement: a length in cm that a flower can have. Outside it the network's logits
overflow (1e308 gave NaN probabilities, which strict output checking refuses as a 500): such
input is refused as a 422 naming the field instead."""


class Measurements(BaseModel):
    """Sepal length, sepal width, petal length, petal width, in cm."""

    features: list[Centimetres] = Field(
        min_length=4,
        max_length=4,
        description="sepal length, sepal width, petal length, petal width (cm, 0-100)",
    )


class Species(BaseModel):
    """The predicted species and the probability of each class."""

    label: str = Field(description="setosa, versicolor or virginica")
    label_id: int = Field(ge=0, le=2, description="index of the label in the class list")
    probabilities: list[float] = Field(
        min_length=3, max_length=3, description="probability of each class, in label_id order"
    )


class Split(NamedTuple):
    """The seeded, stratified train/test split (features in cm, labels as class ids)."""

    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor
    y_test: torch.Tensor
    labels: list[str]


def network() -> torch.nn.Sequential:
    """4 → 16 → 16 → 3."""
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 3),
    )


def split() -> Split:
    """The split used for training and for the accuracy test (same seed, same rows)."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=TEST_FRACTION, random_state=SEED, stratify=data.target
    )
    return Split(
        x_train=torch.tensor(x_train, dtype=torch.float32),
        x_test=torch.tensor(x_test, dtype=torch.float32),
        y_train=torch.tensor(y_train, dtype=torch.long),
        y_test=torch.tensor(y_test, dtype=torch.long),
        labels=[str(n) for n in data.target_names],
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n", encoding="utf-8")


class Iris(aiaas.Model[Measurements, Species]):
    """Classifies an iris flower as setosa, versicolor or virginica."""

    name = "iris"
    input_schema = Measurements
    output_schema = Species
    example_input: ClassVar[dict[str, Any]] = {"features": [5.1, 3.5, 1.4, 0.2]}
    max_batch_size = 64
    max_delay_ms = 2.0
    gpu_count = 0  # a 4-16-16-3 MLP: a CPU instance is plenty
    memory_mb = 512

    @classmethod
    def prepare(cls, artifacts_dir: Path) -> None:
        """Train on the training split; write weights, normalisation and held-out accuracy."""
        data = split()
        mean, std = data.x_train.mean(dim=0), data.x_train.std(dim=0)
        with deterministic_training(SEED):
            net = network()
            optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
            inputs = (data.x_train - mean) / std
            for _ in range(EPOCHS):  # full batch: 105 flowers
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(net(inputs), data.y_train).backward()
                optimiser.step()
            with torch.no_grad():
                predicted = net((data.x_test - mean) / std).argmax(dim=1)
            accuracy = (predicted == data.y_test).float().mean().item()
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()},
            str(artifacts_dir / "iris.safetensors"),
        )
        _write_json(
            artifacts_dir / "iris.json",
            {
                "labels": data.labels,
                "features": FEATURES,
                "feature_mean": mean.tolist(),
                "feature_std": std.tolist(),
            },
        )
        _write_json(
            artifacts_dir / "metrics.json",
            {
                "test_accuracy": round(accuracy, 4),
                "test_size": len(data.y_test),
                "train_size": len(data.y_train),
                "seed": SEED,
                "epochs": EPOCHS,
            },
        )

    def load(self, model_dir: Path) -> None:
        """Weights onto :attr:`device`; class names and normalisation from ``iris.json``."""
        meta = json.loads((model_dir / "iris.json").read_text(encoding="utf-8"))
        self.labels: list[str] = meta["labels"]
        self.mean = torch.tensor(meta["feature_mean"], dtype=torch.float32, device=self.device)
        self.std = torch.tensor(meta["feature_std"], dtype=torch.float32, device=self.device)
        self.net = network().to(self.device).eval()
        self.net.load_state_dict(load_file(str(model_dir / "iris.safetensors"), device=self.device))

    def predict(self, batch: list[Measurements]) -> list[dict[str, Any]]:
        """One forward pass over the whole batch."""
        x = torch.tensor([item.features for item in batch], dtype=torch.float32, device=self.device)
        probs = torch.softmax(self.net((x - self.mean) / self.std), dim=1)
        ids = probs.argmax(dim=1).tolist()
        return [
            {"label": self.labels[i], "label_id": i, "probabilities": p}
            for i, p in zip(ids, probs.cpu().tolist(), strict=True)
        ]
