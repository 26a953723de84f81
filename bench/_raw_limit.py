"""Raw in-process limit: ``MiniLM.predict`` (tokenize + forward + pool) with no HTTP.

Run as a child of ``serve_throughput.py`` so the benchmark's own process never starts torch
threads. For each batch size: a warm-up, then as many batches as fit in the measured time.
Prints one JSON object on its last line::

    {"rates": {"1": sentences_per_s, ...}, "ms_per_batch": {...}, "other_cores": {...},
     "torch": "2.13.0+cpu", "threads": 2, "reference": [384 floats of CHECK_TEXT, alone]}

``other_cores`` is, per batch size, the CPU that other processes used during the measured
time (the machine's busy time from ``/proc/stat`` minus this process's own), so the parent
can tell a disturbed measurement from a slow one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from _minilm import CHECK_TEXT, SENTENCE, load_minilm


def busy_s() -> float:
    """Seconds the whole machine has spent busy (all but idle and iowait), all cores."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    """``_raw_limit.py BUNDLE_DIR SECONDS WARMUP_SECONDS BS [BS ...]``."""
    bundle_dir, seconds, warmup = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    sizes = [int(a) for a in sys.argv[4:]]
    model = load_minilm(bundle_dir)
    text_in = model.input_schema
    rates: dict[str, float] = {}
    ms_per_batch: dict[str, float] = {}
    other_cores: dict[str, float] = {}
    counter = 0

    def batch(size: int) -> list[object]:
        nonlocal counter
        counter += size
        return [text_in(text=SENTENCE.format(counter - i)) for i in range(size)]

    with torch.inference_mode():
        reference = model.predict([text_in(text=CHECK_TEXT)])[0]["embedding"]
        for size in sizes:
            started = time.perf_counter()
            while time.perf_counter() - started < warmup:
                model.predict(batch(size))
            busy_before, own_before = busy_s(), time.process_time()
            done, batches, started = 0, 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                model.predict(batch(size))
                done += size
                batches += 1
            elapsed = time.perf_counter() - started
            own = time.process_time() - own_before
            rates[str(size)] = done / elapsed
            ms_per_batch[str(size)] = 1000.0 * elapsed / batches
            other_cores[str(size)] = max(0.0, busy_s() - busy_before - own) / elapsed
            print(f"  bs{size}: {rates[str(size)]:.0f} sentences/s", file=sys.stderr, flush=True)
    result = {
        "rates": rates,
        "ms_per_batch": ms_per_batch,
        "other_cores": other_cores,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "reference": reference,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
