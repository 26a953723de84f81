"""The example models themselves: stated accuracy, determinism, input checks, embeddings.

Each model is loaded from its built bundle, exactly as the server loads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import EXAMPLES
from pydantic import ValidationError

from aiaas.bundle import BuiltBundle, build_bundle, load_model_class, open_bundle

# Held-out accuracy each example must reach (measured: iris 0.978, digits 0.986).
STATED_ACCURACY = {"iris": 0.95, "digits": 0.97}


def _load(bundle: BuiltBundle, cache: Path) -> Any:
    bundle_dir, manifest = open_bundle(bundle.path, cache_dir=cache)
    model = load_model_class(bundle_dir / "code", manifest.entrypoint)()
    model.device = "cpu"
    model.load(bundle_dir / "artifacts")
    return model


def _module(bundle: BuiltBundle) -> Any:
    return importlib.import_module(bundle.manifest.entrypoint.split(":")[0])


@pytest.mark.parametrize("name", ["iris", "digits"])
def test_training_is_deterministic(
    name: str, build_example: Callable[[str], BuiltBundle], tmp_path: Path
) -> None:
    first = build_example(name)
    again = build_bundle(EXAMPLES / name, tmp_path / "again.tar.gz")
    assert again.manifest.digest == first.manifest.digest
    assert again.path.read_bytes() == first.path.read_bytes()


def test_iris_reaches_its_stated_accuracy(
    build_example: Callable[[str], BuiltBundle], tmp_path: Path
) -> None:
    bundle = build_example("iris")
    model = _load(bundle, tmp_path)
    module = _module(bundle)
    _, x_test, _, y_test, labels = module.split()
    items = [module.Measurements(features=row) for row in x_test.tolist()]
    with torch.inference_mode():
        results = model.predict(items)
    accuracy = sum(r["label_id"] == int(y) for r, y in zip(results, y_test, strict=True)) / len(
        results
    )
    assert accuracy >= STATED_ACCURACY["iris"]
    assert {r["label"] for r in results} == set(labels)


def test_digits_reach_their_stated_accuracy_through_png(
    build_example: Callable[[str], BuiltBundle], tmp_path: Path
) -> None:
    bundle = build_example("digits")
    model = _load(bundle, tmp_path)
    module = _module(bundle)
    _, x_test, _, y_test = module.split()
    items = [module.DigitImage(image=module.encode_png(img)) for img in x_test.tolist()]
    with torch.inference_mode():
        results = model.predict(items)
    accuracy = sum(r["digit"] == int(y) for r, y in zip(results, y_test, strict=True)) / len(
        results
    )
    assert accuracy >= STATED_ACCURACY["digits"]


def test_digits_refuses_what_is_not_a_base64_png(
    build_example: Callable[[str], BuiltBundle],
) -> None:
    module = _module(build_example("digits"))
    import base64

    for bad, reason in [
        ("***", "not valid base64"),
        (base64.b64encode(b"GIF89a...").decode(), "not a PNG"),
    ]:
        with pytest.raises(ValidationError, match=reason) as info:
            module.DigitImage(image=bad)
        assert info.value.errors()[0]["loc"] == ("image",)
    schema = build_example("digits").manifest.input_schema["properties"]["image"]
    assert schema["contentEncoding"] == "base64" and schema["contentMediaType"] == "image/png"


def test_minilm_embeddings(build_example: Callable[[str], BuiltBundle], tmp_path: Path) -> None:
    bundle = build_example("minilm")
    model = _load(bundle, tmp_path)
    text_in = model.input_schema
    sentences = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar on stage while the crowd sings along loudly.",
        "The stock market fell sharply today.",
    ]
    with torch.inference_mode():
        batch = [r["embedding"] for r in model.predict([text_in(text=s) for s in sentences])]
        alone = [model.predict([text_in(text=s)])[0]["embedding"] for s in sentences]
        paraphrase = model.predict([text_in(text="A person plays the guitar.")])[0]["embedding"]
    for vector, single in zip(batch, alone, strict=True):
        assert len(vector) == 384
        assert abs(sum(v * v for v in vector) - 1.0) < 1e-5
        assert (
            max(abs(a - b) for a, b in zip(vector, single, strict=True)) < 1e-5
        )  # padding is masked

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(paraphrase, batch[0]) > cosine(paraphrase, batch[2]) + 0.3
