"""Faults and call records, shared by the emulated clouds.

- :class:`CallLog`: every request an emulator received, in order, as the emulator's own
  record type (a control-plane :class:`~emulators.aws.ApiCall`, a runtime call, ...), with
  its writes; tests count write calls to prove "the same digest makes no write".
- :class:`Refusals`: scripted errors for the next matching control-plane call, answered
  instead of the cloud's work or, ``taken``, after it (the cloud did the work, the caller
  only sees an error: a lost reply).
- :class:`Faults`: scripted answers for a data-plane target's next calls (a status, a
  delay, how many times, and how likely: a fault may hit a seeded random share of calls).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

CallT = TypeVar("CallT")
AnswerT = TypeVar("AnswerT")


class CallLog(Generic[CallT]):
    """A thread-safe, ordered record of calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[CallT] = []

    def add(self, call: CallT) -> None:
        with self._lock:
            self._calls.append(call)

    def all(self) -> list[CallT]:
        """A copy of every call so far, in order."""
        with self._lock:
            return list(self._calls)

    def matching(self, keep: Callable[[CallT], bool]) -> list[CallT]:
        """The calls ``keep`` accepts, in order."""
        with self._lock:
            return [c for c in self._calls if keep(c)]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


@dataclass(frozen=True)
class Scripted(Generic[AnswerT]):
    """One scripted refusal: the call it waits for and the answer it gives."""

    service: str
    action: str
    matching: Mapping[str, Any]
    answer: AnswerT
    taken: bool = False  # the cloud carries the call out first: only the answer is an error


class Refusals(Generic[AnswerT]):
    """Scripted refusals of control-plane calls, each used once, first match first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Scripted[AnswerT]] = []

    def add(
        self,
        service: str,
        action: str,
        answer: AnswerT,
        *,
        matching: Mapping[str, Any] | None = None,
        taken: bool = False,
    ) -> None:
        """The next ``service``'s ``action`` call whose parameters include ``matching`` gets
        ``answer``."""
        with self._lock:
            self._queue.append(Scripted(service, action, dict(matching or {}), answer, taken))

    def take(
        self, service: str, action: str, params: Mapping[str, Any]
    ) -> Scripted[AnswerT] | None:
        """The first refusal waiting for this call (removed), if any."""
        with self._lock:
            for i, scripted in enumerate(self._queue):
                if (scripted.service, scripted.action) == (service, action) and all(
                    params.get(k) == v for k, v in scripted.matching.items()
                ):
                    return self._queue.pop(i)
        return None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()


@dataclass
class Fault:
    """A scripted answer for a target's next calls."""

    status: int
    times: int | None  # None: until cleared
    code: str | None  # the cloud's error code (None: the status's default)
    delay_s: float  # answered after this; status 200 with a delay answers normally, slowly
    probability: float = 1.0  # the share of calls it hits (the others are answered normally)
    rng: random.Random | None = None  # the seeded draw when probability < 1


class Faults:
    """Scripted faults by target (an endpoint, a service, a deployment)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_target: dict[str, Fault] = {}

    def set(
        self,
        target: str,
        status: int,
        *,
        times: int | None,
        code: str | None,
        delay_s: float,
        probability: float = 1.0,
        seed: int | None = None,
    ) -> None:
        """``target``'s next ``times`` faulted calls (None: until cleared) get ``status``;
        with ``probability`` < 1 each call is faulted with that probability, drawn from a
        generator seeded with ``seed`` (the same seed, the same calls)."""
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"probability must be in (0, 1], not {probability}")
        rng = random.Random(seed) if probability < 1.0 else None
        with self._lock:
            self._by_target[target] = Fault(status, times, code, delay_s, probability, rng)

    def take(self, target: str) -> Fault | None:
        """The fault for this call to ``target`` (None: answer it normally), counting it
        down."""
        with self._lock:
            fault = self._by_target.get(target)
            if fault is None:
                return None
            if fault.rng is not None and fault.rng.random() >= fault.probability:
                return None  # not this call
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._by_target[target]
            return fault

    def clear(self) -> None:
        with self._lock:
            self._by_target.clear()
