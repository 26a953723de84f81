"""What every measured system shares: the MiniLM class loaded from one unpacked bundle.

The raw limit, the naive server and the LitServe server all load the bundle's own model code
(``examples/minilm/model.py`` as packaged by ``aiaas bundle build``) with its weights, so the
only difference between the systems is how requests reach ``MiniLM.predict``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiaas.bundle import ARTIFACTS_DIR, CODE_DIR, load_model_class
from aiaas.manifest import read_manifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The load's sentence: 20 tokens with CLS/SEP for most numbers (21 for some 4-digit ones).
SENTENCE = "The quick brown fox jumps over the lazy dog, number {} in a sentence of moderate length"
#: The sentence each server must embed like the raw forward before it is measured.
CHECK_TEXT = SENTENCE.format(42)


def load_minilm(bundle_dir: Path) -> Any:
    """The bundle's model class, instantiated and loaded on the CPU (torch's default threads)."""
    manifest = read_manifest(bundle_dir)
    model = load_model_class(bundle_dir / CODE_DIR, manifest.entrypoint)()
    model.device = "cpu"
    model.load(bundle_dir / ARTIFACTS_DIR)
    return model
