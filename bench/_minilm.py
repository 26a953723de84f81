"""Load the MiniLM example from an unpacked bundle: the same model code for every system."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiaas.bundle import ARTIFACTS_DIR, CODE_DIR, load_model_class
from aiaas.manifest import read_manifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCE = "The quick brown fox jumps over the lazy dog, number {} in a sentence of moderate length"


def load_minilm(bundle_dir: Path) -> Any:
    """An instance of the bundle's model class, loaded on the CPU."""
    manifest = read_manifest(bundle_dir)
    model = load_model_class(bundle_dir / CODE_DIR, manifest.entrypoint)()
    model.device = "cpu"
    model.load(bundle_dir / ARTIFACTS_DIR)
    return model
