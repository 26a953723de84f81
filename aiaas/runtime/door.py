"""The model server's door: how many requests it holds past the point where bodies are read.

A request is let in (:meth:`Door.enter`) before its body is read, and hands its place back
(:meth:`Door.leave`) once it is answered, whatever the answer. At most ``limit`` requests are
in at once: what fills the batcher's queue and the batches in flight. A request that finds
them all taken waits at the door, unread, first come first served, for up to ``wait_s``, and
is refused after the wait (:class:`~aiaas.errors.Overloaded`, 503 with ``Retry-After``)
without its body ever being read, parsed or validated; one that finds ``max_waiting``
requests already waiting is refused at once.

Why before the body: under open-loop overload (requests arriving at 4 x capacity whatever
the answers) most requests are refused after waiting. When they waited in the batcher's
waiting room, each was read, parsed and validated first, work for nothing taken from the
forward pass on the same cores (``bench/overload.py``). Waiting is still what bounds how
often a client that ignores ``Retry-After`` can be refused (``bench/storm.py``): the door
holds as many waiting requests as the waiting room did.

Every place is accounted for by construction:

- a waiter's ticket is resolved once, in the event loop, by whichever comes first: its turn
  (:meth:`leave` hands the place over), its wait or deadline ending, or the door closing. A
  request let in at the moment its wait ends goes on;
- a request let in hands its place back exactly once, whatever happens to it (use
  :meth:`Door.entered`); one cancelled just after being let in hands it back too;
- a request never waits while a place is free: each place handed back goes to the oldest
  request still waiting, so a free place means nobody waits, and :meth:`enter` takes it;
- a ticket whose wait ended holds a code, not an exception (whose traceback would keep the
  refused request's frames alive), and is dropped from the queue as waits end.

Gap: a client that goes away while its request waits at the door is not noticed until the
wait ends (its body, where the disconnect would show, is not read yet); its place at the door
is held that long.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Final

from aiaas.errors import DeadlineExceeded, NotReady, Overloaded
from aiaas.runtime.batcher import OVERLOADED

#: The message of the :class:`~aiaas.errors.DeadlineExceeded` raised at the door.
LATE_AT_THE_DOOR: Final = "the request's deadline passed while it waited for room"
_CLOSED: Final = "server is shutting down"


#: What a waiter's ticket ends with (a code, not an exception: a ticket left in the queue
#: must not keep a refused request's frames alive through its exception's traceback).
_LET_IN: Final = 0
_WAITED: Final = 1  # its wait ended: 503 overloaded
_LATE: Final = 2  # its deadline passed first: 504
_CLOSING: Final = 3  # the door closed: 503 not_ready


class Door:
    """A first-come-first-served limit on the requests in, with a bounded wait at the door.

    Args:
        limit: most requests let in at once (at least 1).
        max_waiting: most requests waiting at the door; one more is refused at once.
        wait_s: how long a request waits at the door before it is refused; 0 refuses at once.
    """

    def __init__(self, limit: int, *, max_waiting: int, wait_s: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self._inside = 0
        # Tickets of the requests waiting, oldest first. One whose wait ended stays behind,
        # done, until it reaches the front (no O(n) removal under a storm); the queue is
        # compacted should those pile up behind a live one.
        self._queue: collections.deque[asyncio.Future[int]] = collections.deque()
        self._waiting = 0  # live tickets in _queue
        self._closed = False

    @property
    def inside(self) -> int:
        """Requests let in and not yet gone."""
        return self._inside

    @property
    def waiting(self) -> int:
        """Requests waiting at the door."""
        return self._waiting

    async def enter(self, deadline: float = math.inf) -> None:
        """Return once the request is let in (it then must call :meth:`leave` once).

        Args:
            deadline: a :func:`time.monotonic` instant past which nobody waits for the
                request: the wait at the door ends there if it comes first.

        Raises:
            Overloaded: at once when ``max_waiting`` requests wait (or waiting is off and no
                place is free); after ``wait_s`` at the door.
            DeadlineExceeded: ``deadline`` passed at the door.
            NotReady: the door is closed (the server is stopping).
        """
        if self._closed:
            raise NotReady(_CLOSED)
        # A free place means nobody waits: each place handed back goes to a waiter first.
        if self._inside < self.limit:
            self._inside += 1
            return
        if self.wait_s <= 0 or self._waiting >= self.max_waiting:
            raise Overloaded(OVERLOADED, retry_after=1.0)
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(LATE_AT_THE_DOOR)
        loop = asyncio.get_running_loop()
        ticket: asyncio.Future[int] = loop.create_future()
        ending = _WAITED if self.wait_s <= left else _LATE
        timer = loop.call_later(min(self.wait_s, left), self._end_wait, ticket, ending)
        self._queue.append(ticket)
        self._waiting += 1
        try:
            outcome = await ticket
        except BaseException:  # cancelled: the caller gave up
            timer.cancel()
            if ticket.cancelled():  # before its turn
                self._waiting -= 1
                self._prune()
            elif ticket.result() == _LET_IN:  # let in as it was cancelled: hand the place on
                self.leave()
            raise
        timer.cancel()
        if outcome == _WAITED:
            raise Overloaded(OVERLOADED, retry_after=1.0)
        if outcome == _LATE:
            raise DeadlineExceeded(LATE_AT_THE_DOOR)
        if outcome == _CLOSING:
            raise NotReady(_CLOSED)

    def _end_wait(self, ticket: asyncio.Future[int], ending: int) -> None:
        """In the event loop: a waiter's wait (or deadline) is over before its turn came."""
        if not ticket.done():
            ticket.set_result(ending)
            self._waiting -= 1
            self._prune()

    def _prune(self) -> None:
        """Drop the done tickets at the front; compact the queue when they pile up behind a
        live one (a waiter with a later deadline, a place not handed back for long)."""
        queue = self._queue
        while queue and queue[0].done():
            queue.popleft()
        if len(queue) > 2 * self._waiting + 64:
            self._queue = collections.deque(t for t in queue if not t.done())

    def leave(self) -> None:
        """Hand a place back: the oldest request still waiting takes it."""
        if self._inside <= 0:
            raise RuntimeError("Door.leave() without a matching enter()")
        self._inside -= 1
        queue = self._queue
        while queue and self._inside < self.limit:
            ticket = queue.popleft()
            if ticket.done():  # gave up, refused after its wait or closed out: uncounted
                continue
            ticket.set_result(_LET_IN)
            self._waiting -= 1
            self._inside += 1

    @contextlib.asynccontextmanager
    async def entered(self, deadline: float = math.inf) -> AsyncIterator[None]:
        """:meth:`enter`, then :meth:`leave` however the block ends."""
        await self.enter(deadline)
        try:
            yield
        finally:
            self.leave()

    def close(self) -> None:
        """Refuse every request waiting (:class:`~aiaas.errors.NotReady`) and every new one;
        those already in go on and leave as usual."""
        self._closed = True
        while self._queue:
            ticket = self._queue.popleft()
            if not ticket.done():
                ticket.set_result(_CLOSING)
                self._waiting -= 1
