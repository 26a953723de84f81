"""A controllable test model: doubles a value, and can sleep or fail on request.

Each output also reports the size of the batch it ran in, so tests can observe batching.
``PROBE_LOAD_DELAY_S`` in the environment delays ``load`` (to observe readiness).
``PROBE_BREAK=<kind>:<value>[,<kind>:<value>...]`` makes ``predict`` misbehave on items
whose value is ``<value>`` (several kinds at once, each on its own value):

- ``wrong_key``: that result says ``valeu`` instead of ``value``;
- ``nan``: its value is NaN;
- ``short``: the batch holding it gets one result fewer than its items;
- ``numpy``: a dict of numpy scalars, a numpy array ``embedding`` and a tuple ``pair``, all
  fitting the schema once encoded;
- ``big_int``: ``batch_size`` is 2**70, beyond 64 bits;
- ``int_key``: an extra key that is not a string;
- ``str_float``: ``value`` is the string ``"0.5"``;
- ``bool_int``: ``batch_size`` is ``True``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field

import aiaas

VERSION_SALT = "1"  # tests copy this project and change it to get a new digest


class ProbeIn(BaseModel):
    value: float
    sleep_ms: int = Field(default=0, ge=0, le=10_000)
    fail: bool = False


class ProbeOut(BaseModel):
    value: float
    batch_size: int
    salt: str


class Probe(aiaas.Model[ProbeIn, ProbeOut]):
    name = "probe"
    input_schema = ProbeIn
    output_schema = ProbeOut
    example_input: ClassVar[dict[str, Any]] = {"value": 1.0}
    gpu_count = 0
    memory_mb = 256

    @classmethod
    def prepare(cls, artifacts_dir: Path) -> None:
        (artifacts_dir / "scale.txt").write_text("2.0\n")

    def load(self, model_dir: Path) -> None:
        time.sleep(float(os.environ.get("PROBE_LOAD_DELAY_S", "0")))
        self.scale = torch.tensor(float((model_dir / "scale.txt").read_text()), device=self.device)

    def predict(self, batch: list[ProbeIn]) -> list[ProbeOut]:
        assert torch.is_inference_mode_enabled(), "aiaas must run predict under inference_mode"
        if any(item.fail for item in batch):
            raise RuntimeError("probe was asked to fail")
        time.sleep(max(item.sleep_ms for item in batch) / 1000.0)
        values = torch.tensor([item.value for item in batch], device=self.device) * self.scale
        results: list[Any] = [
            ProbeOut(value=v, batch_size=len(batch), salt=VERSION_SALT) for v in values.tolist()
        ]
        breaks = _breaks()
        hit = {i: breaks[item.value] for i, item in enumerate(batch) if item.value in breaks}
        if "short" in hit.values():
            return results[:-1]
        for i, kind in hit.items():
            if kind == "wrong_key":
                results[i] = {"valeu": results[i].value, "batch_size": len(batch), "salt": "x"}
            elif kind == "nan":
                results[i] = ProbeOut(value=math.nan, batch_size=len(batch), salt=VERSION_SALT)
            elif kind == "numpy":
                import numpy as np

                value = results[i].value
                results[i] = {
                    "value": np.float32(value),
                    "batch_size": np.int64(len(batch)),
                    "salt": VERSION_SALT,
                    "embedding": np.array([value, -value], dtype=np.float32),
                    "pair": (np.float64(value), 1),
                }
            elif kind in ("big_int", "int_key", "str_float", "bool_int"):
                result = results[i].model_dump()
                if kind == "big_int":
                    result["batch_size"] = 2**70
                elif kind == "int_key":
                    result[1] = "a key that is not a string"
                elif kind == "str_float":
                    result["value"] = "0.5"
                else:
                    result["batch_size"] = True
                results[i] = result
        return results


def _breaks() -> dict[float, str]:
    """``PROBE_BREAK`` as {trigger value: kind}."""
    breaks = {}
    for entry in os.environ.get("PROBE_BREAK", "").split(","):
        kind, _, trigger = entry.strip().partition(":")
        if kind and trigger:
            breaks[float(trigger)] = kind
    return breaks
