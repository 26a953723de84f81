"""The emulators' scripted data-plane faults (emulators/faults.py): a fault may hit a seeded
random share of calls (bench/storm_function.py's half-throttled phase uses it)."""

from __future__ import annotations

import pytest

from emulators.faults import Faults


def _hits(faults: Faults, calls: int) -> list[bool]:
    return [faults.take("ep") is not None for _ in range(calls)]


def test_a_fault_with_a_probability_hits_a_seeded_share_of_calls() -> None:
    first, again, other = Faults(), Faults(), Faults()
    for faults, seed in ((first, 16), (again, 16), (other, 17)):
        faults.set("ep", 400, times=None, code="ThrottlingException", delay_s=0.0,
                   probability=0.5, seed=seed)  # fmt: skip
    hits = _hits(first, 400)
    assert hits == _hits(again, 400)  # the same seed, the same calls
    assert hits != _hits(other, 400)
    assert 150 <= sum(hits) <= 250  # about half (binomial, 400 draws: 5 sigma either side)
    assert first.take("other-endpoint") is None


def test_times_counts_the_calls_it_hit_and_a_certain_fault_hits_every_call() -> None:
    faults = Faults()
    faults.set("ep", 503, times=3, code=None, delay_s=0.0, probability=0.5, seed=1)
    assert sum(_hits(faults, 100)) == 3  # three hits, then gone
    faults.set("ep", 503, times=None, code=None, delay_s=0.0)
    assert all(_hits(faults, 20))


@pytest.mark.parametrize("probability", [0.0, -0.1, 1.5])
def test_a_probability_outside_0_to_1_is_refused(probability: float) -> None:
    with pytest.raises(ValueError, match="probability must be in"):
        Faults().set("ep", 503, times=None, code=None, delay_s=0.0, probability=probability)
