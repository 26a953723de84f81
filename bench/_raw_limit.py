"""Raw in-process limit: tokenize + forward + pool with no HTTP, per batch size.

Prints one JSON object ``{"1": sentences_per_s, "8": ..., ...}`` on its last line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from _minilm import SENTENCE, load_minilm


def main() -> None:
    """``_raw_limit.py BUNDLE_DIR SECONDS BS [BS ...]``."""
    bundle_dir, seconds, sizes = (
        Path(sys.argv[1]),
        float(sys.argv[2]),
        [int(a) for a in sys.argv[3:]],
    )
    model = load_minilm(bundle_dir)
    text_in = model.input_schema
    rates: dict[str, float] = {}
    counter = 0
    with torch.inference_mode():
        for size in sizes:
            batch = [text_in(text=SENTENCE.format(counter + i)) for i in range(size)]
            model.predict(batch)  # warm-up at this shape
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                counter += size
                model.predict([text_in(text=SENTENCE.format(counter + i)) for i in range(size)])
                done += size
            rates[str(size)] = done / (time.perf_counter() - started)
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
