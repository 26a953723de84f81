"""Retries that do not multiply load: one budget per caller process, one retrying layer.

- :class:`RetryBudget`: a retry is allowed only while the upstream calls of the last
  ``window_s`` seconds stay within ``ratio`` times the calls that succeeded (plus
  ``allowance``). It is Google SRE's adaptive throttling (requests <= K x accepts) applied to
  retries, deterministically, in the spirit of gRPC's retry throttling and Envoy's retry
  budgets: while a callee fails every call, retries stop after the first few, so each call
  costs one upstream call; while it fails half of them, each call may retry until it succeeds
  (about 2 upstream calls per success, within K = 3). With no history (a new Lambda
  instance), the allowance of 2 lets a first failure be retried once.
- :data:`CALLER_RETRIES_HEADER`: a caller that retries by itself (``aiaas.Client``) says so,
  and the function tier then makes one upstream attempt and hands the back-off to it in
  ``Retry-After``: two layers never retry for the same caller.
- :data:`TIMEOUT_HEADER`: the caller's deadline (milliseconds left), so the function answers
  within it; the invoke path sends it on to the model server (in SageMaker's custom
  attributes where the header cannot travel), which drops work whose deadline has passed.
  :func:`timeout_ms` reads it.
- :data:`caller_retries`: the context variable through which the function tier tells the
  invoke loop (:mod:`adapters.http_invoker`) that its caller retries, without widening the
  invoker's interface.

Stdlib only (and :mod:`aiaas.errors`): the client, the function tier, the adapters and the
model server all import it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar

from aiaas.errors import BadRequest

CALLER_RETRIES_HEADER = "x-aiaas-caller-retries"
TIMEOUT_HEADER = "x-aiaas-timeout-ms"

_MILLISECONDS = re.compile(r"[0-9]{1,12}")


def timeout_ms(value: str | None, where: str = TIMEOUT_HEADER) -> int | None:
    """A deadline's milliseconds left as :data:`TIMEOUT_HEADER` carries them (ASCII digits);
    ``None`` when absent. Anything else raises :class:`~aiaas.errors.BadRequest` (400) naming
    ``where`` (the header, or the attribute that carried it)."""
    if value is None:
        return None
    text = value.strip()
    if _MILLISECONDS.fullmatch(text) is None:
        raise BadRequest(f"{where} {text[:20]!r} is not a number of milliseconds (ASCII digits)")
    return int(text)


#: True while the call being served comes from a caller that retries by itself.
caller_retries: ContextVar[bool] = ContextVar("aiaas_caller_retries", default=False)


class RetryBudget:
    """Whether one more retry fits: upstream calls within ``ratio`` x successes (+
    ``allowance``) over the last ``window_s`` seconds, counted in one-second slots.
    Thread-safe (one budget may serve every thread of a client process)."""

    def __init__(
        self,
        *,
        ratio: float = 3.0,
        allowance: int = 2,
        window_s: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.allowance = allowance
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: deque[list[int]] = deque()  # [second, calls, successes]

    def _slot(self) -> list[int]:
        second = int(self._clock())
        while self._slots and self._slots[0][0] <= second - self.window_s:
            self._slots.popleft()
        if not self._slots or self._slots[-1][0] != second:
            self._slots.append([second, 0, 0])
        return self._slots[-1]

    def record(self, ok: bool) -> None:
        """Count one upstream call; ``ok`` when it was answered (anything but a failure
        worth retrying)."""
        with self._lock:
            slot = self._slot()
            slot[1] += 1
            slot[2] += int(ok)

    def can_retry(self) -> bool:
        """True when one more upstream call stays within the budget."""
        with self._lock:
            self._slot()
            calls = sum(s[1] for s in self._slots)
            successes = sum(s[2] for s in self._slots)
            return calls + 1 <= self.ratio * successes + self.allowance


#: The allowance of a client process's budget: 20 calls in 10 s beyond 3 x the answered ones
#: (Finagle's floor of retries per second, 2/s). Larger than a function instance's 2: one
#: client process has many calls in flight at once, and when it starts, or after an outage,
#: the first answers to come back may all be failures although half the calls succeed; a
#: small allowance would fail those calls unretried. Under a callee failing every call it
#: costs at most 20 extra calls per 10 s.
CLIENT_ALLOWANCE = 20


def client_budget() -> RetryBudget:
    """A new budget sized for a client process (:data:`CLIENT_ALLOWANCE`)."""
    return RetryBudget(allowance=CLIENT_ALLOWANCE)


_shared: dict[str, RetryBudget] = {}
_shared_lock = threading.Lock()


def shared_budget(origin: str) -> RetryBudget:
    """The budget of every client of this process calling ``origin`` (a base URL): they
    share its condition, so they share its budget."""
    with _shared_lock:
        budget = _shared.get(origin)
        if budget is None:
            budget = _shared[origin] = client_budget()
        return budget
