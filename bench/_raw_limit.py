"""Raw in-process limit: ``MiniLM.predict`` (tokenize + forward + pool) with no HTTP.

Run as a child of ``serve_throughput.py`` so the benchmark's own process never starts torch
threads. For each batch size: a warm-up, then as many batches as fit in the measured time.
With ``--workers N`` (the layout of ``aiaas serve --inference-workers N``), N threads each
run their own model copy with torch's threads split between them. Prints one JSON object on
its last line::

    {"rates": {"1": sentences_per_s, ...}, "ms_per_batch": {...}, "other_cores": {...},
     "torch": "2.13.0+cpu", "threads": 2, "workers": 1,
     "reference": [384 floats of CHECK_TEXT, alone]}

``other_cores`` is, per batch size, the CPU that other processes used during the measured
time (the machine's busy time from ``/proc/stat`` minus this process's own), so the parent
can tell a disturbed measurement from a slow one. ``threads`` is torch's threads per worker.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from _minilm import CHECK_TEXT, SENTENCE, load_minilm


def busy_s() -> float:
    """Seconds the whole machine has spent busy (all but idle and iowait), all cores."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def parse_argv(argv: list[str]) -> tuple[Path, float, float, list[int], int]:
    """``[--workers N] BUNDLE_DIR SECONDS WARMUP_SECONDS BS [BS ...]``."""
    workers = 1
    if argv[:1] == ["--workers"]:
        workers, argv = int(argv[1]), argv[2:]
    return Path(argv[0]), float(argv[1]), float(argv[2]), [int(a) for a in argv[3:]], workers


def main() -> None:
    """Measure each batch size; print the JSON result."""
    bundle_dir, seconds, warmup, sizes, workers = parse_argv(sys.argv[1:])
    if workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))
    models = [load_minilm(bundle_dir) for _ in range(workers)]
    text_in = models[0].input_schema
    counter = itertools.count()  # next() is atomic under the GIL: every sentence differs
    rates: dict[str, float] = {}
    ms_per_batch: dict[str, float] = {}
    other_cores: dict[str, float] = {}

    def batch(size: int) -> list[Any]:
        return [text_in(text=SENTENCE.format(next(counter))) for _ in range(size)]

    def run(model: Any, size: int, until: float, done: list[int]) -> None:
        with torch.inference_mode():
            while time.perf_counter() < until:
                model.predict(batch(size))
                done.append(size)

    def measure(size: int, duration: float) -> tuple[int, int, float]:
        """Every worker runs batches of ``size`` for ``duration``: items, batches, seconds."""
        done: list[int] = []
        started = time.perf_counter()
        threads = [
            threading.Thread(target=run, args=(m, size, started + duration, done)) for m in models
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done), len(done), time.perf_counter() - started

    with torch.inference_mode():
        reference = models[0].predict([text_in(text=CHECK_TEXT)])[0]["embedding"]
    for size in sizes:
        measure(size, warmup)
        busy_before, own_before = busy_s(), time.process_time()
        items, batches, elapsed = measure(size, seconds)
        own = time.process_time() - own_before
        rates[str(size)] = items / elapsed
        ms_per_batch[str(size)] = 1000.0 * elapsed * workers / batches
        other_cores[str(size)] = max(0.0, busy_s() - busy_before - own) / elapsed
        print(f"  bs{size}: {rates[str(size)]:.0f} sentences/s", file=sys.stderr, flush=True)
    result = {
        "rates": rates,
        "ms_per_batch": ms_per_batch,
        "other_cores": other_cores,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "workers": workers,
        "reference": reference,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
