"""Deterministic torch for ``Model.prepare``: same inputs, same weights, same bundle digest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def deterministic_training(seed: int) -> Iterator[None]:
    """Seeded, single-threaded, deterministic torch; the caller's settings come back after.

    Use it around training in ``prepare`` so every build writes byte-identical weights. The
    global RNG state is forked, so training does not disturb the building process.
    """
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=warn_only)
            torch.set_num_threads(threads)
