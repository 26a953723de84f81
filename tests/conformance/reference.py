"""The model's own answer to its example request, computed with no server and no provider.

``python reference.py <cache dir> <bundle archive>...`` prints one JSON line per bundle:
``{"version": ..., "outputs": [...]}``, from the bundle's model class loaded and called
directly (``load`` then ``predict`` under ``torch.inference_mode``). The suite runs it in a
fresh interpreter so importing the bundle's code leaves the test process untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def own_outputs(bundle: Path, cache_dir: Path) -> dict[str, Any]:
    """``{"version", "outputs"}`` of ``bundle``'s model for its example request."""
    import torch

    from aiaas.bundle import ARTIFACTS_DIR, CODE_DIR, load_model_class, open_bundle

    bundle_dir, manifest = open_bundle(bundle, cache_dir=cache_dir)
    cls = load_model_class(bundle_dir / CODE_DIR, manifest.entrypoint)
    model = cls()
    model.device = "cpu"
    model.load(bundle_dir / ARTIFACTS_DIR)
    items = [cls.input_schema.model_validate(i) for i in manifest.example_request["inputs"]]
    with torch.inference_mode():
        results = model.predict(items)
    outputs = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in results]
    return {"version": manifest.version, "outputs": outputs}


def main(argv: list[str]) -> None:
    """Print :func:`own_outputs` of each bundle archive named on the command line."""
    cache_dir = Path(argv[0])
    for bundle in argv[1:]:
        print(json.dumps(own_outputs(Path(bundle), cache_dir)))


if __name__ == "__main__":
    main(sys.argv[1:])
