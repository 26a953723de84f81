"""Dynamic batching: items from concurrent requests run as one forward pass.

Requests put their items on a bounded, thread-safe queue. Each inference thread (one by
default; ``workers`` of them run batches side by side) takes up to ``max_batch_size`` items
itself (waiting at most ``max_delay_ms`` after the first), runs them as one batch and posts
all results back to the event loop in a single callback. It then takes the next batch at
once, without waiting for the event loop to hand it over: the forward pass never idles at a
batch boundary while the loop is busy answering the previous batch's callers.

A request that finds the queue full waits up to ``queue_wait_ms`` for room, first come first
served, and is refused (:class:`~aiaas.errors.Overloaded`, 503 with ``Retry-After``) only
then, or at once if requests holding ``max_queue_size`` items already wait (each holds its
body: the waiting room is bounded like the queue). Refusing at once let clients that ignore
``Retry-After`` come straight back: the event loop spent its time (and the GIL) answering
thousands of 503s a second and starved the forward pass (7 % of capacity under 1,024 such
connections). Waiting costs a parked coroutine, no CPU, and bounds how often each
connection can be refused.

Work nobody waits for is not computed: a request may carry a deadline (:meth:`Batcher.submit`),
and fails with :class:`~aiaas.errors.DeadlineExceeded` when it passes; its items still queued
are then skipped by the inference thread, which also skips, on its own clock, any item whose
deadline passed while the event loop was too busy to say so. A request whose caller gave up
(its task was cancelled: the client went away) is skipped the same way.

When the waiting room is full too, every request is refused at once whatever it holds, and
:meth:`Batcher.refuses_now` says so before the request's body is read: under open-loop
overload (new requests at 4 x capacity, whatever the answers) reading, parsing and
validating the bodies of requests refused anyway took the event loop's time and the GIL from
the forward pass (goodput 0.74 x capacity at best; ``bench/overload.py``). In the model
server most waiting happens before that, unread: :mod:`aiaas.runtime.door` lets in only the
requests that fill the queue and the batches in flight; the waiting room then holds what a
request of several items finds no room for once read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from aiaas.errors import DeadlineExceeded, ModelError, NotReady, Overloaded, PayloadTooLarge

log = logging.getLogger("aiaas.batcher")

BatchFn = Callable[[list[Any]], Sequence[Any]]


@dataclass(slots=True)
class _Pending:
    item: Any
    future: asyncio.Future[Any]
    request_id: str = field(default="")
    index: int = 0  # the item's position in its request
    deadline: float = math.inf  # time.monotonic() past which nobody waits for it


@dataclass(slots=True)
class _Failure:
    exc: BaseException
    logged: bool = False  # already logged once for the whole batch


@dataclass(frozen=True, slots=True)
class BadResult:
    """What ``run_batch`` returns in place of a result that must not be served (e.g. one
    that breaks the output schema): that item alone fails with
    :class:`~aiaas.errors.ModelError` ``outputs[<index in its request>]<path>: <message>``,
    logged once, without a traceback."""

    path: str
    message: str


#: The message of every :class:`~aiaas.errors.Overloaded` refusal.
OVERLOADED: Final = "model server queue is full; retry later"
#: The message of a :class:`~aiaas.errors.DeadlineExceeded` raised by :meth:`Batcher.submit`.
LATE: Final = "the request's deadline passed before its result was ready"

_STOP: Final = object()
"""Put on the queue by :meth:`Batcher.stop` to wake an idle inference thread."""


class Batcher:
    """Queue items, run them in batches on inference threads, hand results back in order.

    Args:
        run_batch: called in an inference thread with 1..max_batch_size items; must return
            one result per item, in order (a :class:`BadResult` fails its item alone). With
            ``workers > 1`` it is called from several threads at once. If it raises, each
            item is run alone so that one bad item fails alone (but every item fails with a
            :class:`~aiaas.errors.NotReady` it raises: nothing can run); if it returns the
            wrong number of results, the whole batch fails (a model bug, logged once with
            the counts).
        max_batch_size: most items in one call of ``run_batch``.
        max_delay_ms: how long a batch may wait for more items after its first.
        max_queue_size: most items waiting (not counting the batch in flight); more are
            refused with :class:`~aiaas.errors.Overloaded`. Also the most items of the
            requests waiting for room in the queue; beyond that, refused at once.
        on_batch: called in the event loop with each batch's size and its run time in
            seconds, e.g. for metrics.
        workers: inference threads, each running one batch at a time.
        queue_wait_ms: how long a request that finds the queue full waits for room before
            it is refused; 0 refuses at once.
    """

    def __init__(
        self,
        run_batch: BatchFn,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue_size: int,
        on_batch: Callable[[int, float], None] | None = None,
        workers: int = 1,
        queue_wait_ms: float = 0.0,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self._max_delay_s = max_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aiaas-infer")
        self._workers: list[asyncio.Future[list[_Pending]]] = []
        self._stopping = False
        self._queue_wait_s = queue_wait_ms / 1000.0
        # Requests waiting for room, oldest first, as (items, ticket). A waiter that gives up
        # leaves its entry behind (its ticket is done) and _admit drops it when it comes to
        # the front: no O(n) removal per timeout under a storm.
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._waiting_items = 0  # items of the requests waiting now (not admitted, not gone)
        self._reserved = 0  # room promised to admitted waiters that have not queued yet

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch (not counting the batch in flight)."""
        return self._queue.qsize()

    @property
    def waiting_items(self) -> int:
        """Items of the requests waiting for room in the queue (the waiting room)."""
        return self._waiting_items

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The inference threads' pool. Work submitted here before :meth:`start` (model
        loading) runs before the batches, so torch only ever sees these threads."""
        return self._executor

    def start(self) -> None:
        """Start batching on the inference threads; call from inside the running event loop."""
        loop = asyncio.get_running_loop()
        for _ in range(self.workers):
            worker = loop.run_in_executor(self._executor, self._work, loop)
            worker.add_done_callback(self._worker_ended)
            self._workers.append(worker)

    def _worker_ended(self, worker: asyncio.Future[list[_Pending]]) -> None:
        if not worker.cancelled() and worker.exception() is not None:
            log.critical("an inference thread died", exc_info=worker.exception())

    async def stop(self, *, abandon: bool = False) -> None:
        """Stop batching: the batches in flight finish and are answered; items still queued
        fail with :class:`~aiaas.errors.NotReady`.

        ``abandon``: the inference threads are busy with something that cannot be
        interrupted (the model still loading) and no batch can be in flight: return at once,
        without waiting for them. Workers that have not started never start.
        """
        self._stopping = True
        leftovers: list[_Pending] = []
        for _ in self._workers:
            self._queue.put(_STOP)  # one each: wakes every idle inference thread
        if abandon:
            for worker in self._workers:
                worker.cancel()  # one queued behind the load is never run
            self._workers = []
        for worker in self._workers:
            with contextlib.suppress(Exception):  # logged by _worker_ended
                leftovers += await worker
        self._workers = []
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not _STOP:
                leftovers.append(entry)
        for pending in leftovers:
            if not pending.future.done():
                pending.future.set_exception(NotReady("server is shutting down"))
        while self._waiting:
            _, ticket = self._waiting.popleft()
            if not ticket.done():
                ticket.set_exception(NotReady("server is shutting down"))
        self._waiting_items = 0
        self._executor.shutdown(wait=not abandon, cancel_futures=abandon)

    def refuses_now(self) -> bool:
        """True when a request would be refused at once, whatever its items: the queue is
        full (or others already wait for room) and the waiting room cannot take one more item
        (or waiting is off). A transport may then answer 503 before reading the request's
        body: under open-loop overload most requests are refused, and reading, parsing and
        validating each of them took the event loop's time (and the GIL) from the forward
        pass. Advisory, like :meth:`submit`'s own check: room may come a moment later."""
        if self._stopping:
            return False  # submit answers that (NotReady)
        waiting = self._waiting_items
        if not waiting and self._queue.qsize() + self._reserved < self.max_queue_size:
            return False
        return self._queue_wait_s <= 0 or waiting >= self.max_queue_size

    async def submit(
        self, items: Sequence[Any], request_id: str = "", deadline: float | None = None
    ) -> list[Any]:
        """Queue ``items`` and wait for their results, in order, until ``deadline`` (a
        :func:`time.monotonic` instant; None: no limit). Items still queued when it passes,
        or when the caller is cancelled, are never run.

        Raises:
            Overloaded: the queue cannot take all items now (retry later).
            PayloadTooLarge: more items than the queue can ever hold.
            ModelError: the model failed on an item of this request.
            NotReady: the batcher is stopping.
            DeadlineExceeded: ``deadline`` passed before the results were ready.
        """
        if self._stopping:
            raise NotReady("server is shutting down")
        assert self._workers, "Batcher.start() was not called"
        n = len(items)
        if n > self.max_queue_size:
            raise PayloadTooLarge(
                f"request has {n} items; this server takes at most "
                f"{self.max_queue_size} per request"
            )
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise DeadlineExceeded(LATE)
        try:
            async with asyncio.timeout(left):
                return await self._queued(
                    items, request_id, math.inf if deadline is None else deadline
                )
        except TimeoutError:
            raise DeadlineExceeded(LATE) from None

    async def _queued(self, items: Sequence[Any], request_id: str, deadline: float) -> list[Any]:
        """:meth:`submit`'s work once checked: wait for room, queue, wait for the results."""
        n = len(items)
        if self._waiting_items or self._queue.qsize() + self._reserved + n > self.max_queue_size:
            await self._wait_for_room(n)
            self._reserved -= n
            if self._stopping:
                raise NotReady("server is shutting down")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(n)]
        for index, (item, fut) in enumerate(zip(items, futures, strict=True)):
            self._queue.put(_Pending(item, fut, request_id, index, deadline))
        try:
            if n == 1:
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
        except BaseException:
            for fut in futures:
                fut.cancel()  # the inference thread skips items whose caller gave up
            raise

    async def _wait_for_room(self, n: int) -> None:
        """Wait, behind earlier waiters, until ``n`` items fit in the queue; the room is then
        reserved (the caller queues its items and releases the reservation). Raises
        :class:`~aiaas.errors.Overloaded` after ``queue_wait_ms``, or at once when waiting is
        off or the waiting requests would hold more than ``max_queue_size`` items (parked
        requests hold their bodies: they are bounded like the queue)."""
        if self._queue_wait_s <= 0 or self._waiting_items + n > self.max_queue_size:
            raise Overloaded(OVERLOADED, retry_after=1.0)
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((n, ticket))
        self._waiting_items += n
        # The inference thread may have emptied the queue between our "full" and the append,
        # seeing no waiter: nobody else would admit us (nor anyone queued behind us).
        self._admit()
        if ticket.done():
            return
        try:
            async with asyncio.timeout(self._queue_wait_s):
                await ticket
        except BaseException as exc:
            if not ticket.done():
                ticket.cancel()
            if ticket.cancelled():  # gave up unadmitted: those behind may fit now
                self._waiting_items -= n
                self._admit()
            elif ticket.exception() is None:
                self._reserved -= n  # admitted just as it gave up: hand the room on
                self._admit()
            if isinstance(exc, TimeoutError):
                raise Overloaded(OVERLOADED, retry_after=1.0) from None
            raise

    def _admit(self) -> None:
        """In the event loop: admit waiters, oldest first, while their items fit."""
        room = self.max_queue_size - self._queue.qsize() - self._reserved
        waiting = self._waiting
        while waiting:
            n, ticket = waiting[0]
            if ticket.done():  # its caller gave up (already uncounted)
                waiting.popleft()
                continue
            if n > room:
                break
            waiting.popleft()
            ticket.set_result(None)
            self._waiting_items -= n
            self._reserved += n
            room -= n

    # -- the inference thread -------------------------------------------------------------

    def _work(self, loop: asyncio.AbstractEventLoop) -> list[_Pending]:
        """Take batches and run them until stopped; return items taken but not run."""
        while True:
            batch = self._take_batch()
            if self._stopping:
                return batch
            if self._waiting_items:  # taking the batch made room in the queue: let waiters in
                loop.call_soon_threadsafe(self._admit)
            live = self._live(batch, loop)
            if not live:
                continue
            started = time.perf_counter()
            outcomes = self._run_isolated([p.item for p in live])
            elapsed = time.perf_counter() - started
            loop.call_soon_threadsafe(self._deliver, live, outcomes, elapsed)

    def _live(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> list[_Pending]:
        """The items of ``batch`` someone still waits for. Those whose caller gave up are
        dropped; those whose deadline has passed too (their callers are told, should the
        event loop not have done so yet)."""
        now = time.monotonic()
        live: list[_Pending] = []
        late: list[_Pending] = []
        for pending in batch:
            if not pending.future.done():
                (live if pending.deadline > now else late).append(pending)
        if late:
            loop.call_soon_threadsafe(self._expire, late)
        return live

    @staticmethod
    def _expire(late: list[_Pending]) -> None:
        """In the event loop: fail items dropped because their deadline passed."""
        for pending in late:
            if not pending.future.done():
                pending.future.set_exception(DeadlineExceeded(LATE))

    def _take_batch(self) -> list[_Pending]:
        """Block for one item, then take more until the batch is full or the delay is up.
        Returns early (possibly empty) once :meth:`stop` has been called."""
        get = self._queue.get
        first = get()
        if first is _STOP:
            return []
        batch: list[_Pending] = [first]
        deadline = time.monotonic() + self._max_delay_s
        while len(batch) < self.max_batch_size and not self._stopping:
            try:
                entry = get(block=False)
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    entry = get(timeout=remaining)
                except queue.Empty:
                    break
            if entry is _STOP:
                self._queue.put(_STOP)  # another idle inference thread may need it
                break
            batch.append(entry)
        return batch

    def _deliver(self, live: list[_Pending], outcomes: list[Any], elapsed: float) -> None:
        """In the event loop: resolve one batch's futures."""
        if self._on_batch is not None:
            self._on_batch(len(live), elapsed)
        for pending, outcome in zip(live, outcomes, strict=True):
            if pending.future.done():
                continue
            if isinstance(outcome, _Failure):
                if isinstance(outcome.exc, NotReady):  # nothing can run: 503, as it says
                    pending.future.set_exception(NotReady(**_not_ready_args(outcome.exc)))
                    continue
                if outcome.logged:  # one line for the whole batch, already written
                    pending.future.set_exception(ModelError(str(outcome.exc)))
                    continue
                log.error(
                    "model raised on an item (request_id=%s)",
                    pending.request_id,
                    exc_info=outcome.exc,
                )
                pending.future.set_exception(ModelError(f"model error: {outcome.exc!r}"))
            elif isinstance(outcome, BadResult):
                message = (
                    f"model returned an invalid result: outputs[{pending.index}]"
                    f"{outcome.path}: {outcome.message}"
                )
                log.error("%s (request_id=%s)", message, pending.request_id)
                pending.future.set_exception(ModelError(message))
            else:
                pending.future.set_result(outcome)

    def _run_isolated(self, items: list[Any]) -> list[Any]:
        """Run a batch; if it raises, run its items one by one so one bad item fails alone.

        A wrong number of results is not retried item by item: it is a bug in ``predict``
        (not in an input), so every item of the batch fails, with one log line."""
        try:
            results = list(self._run_batch(items))
        except NotReady as exc:  # no item's fault (an inference process died): all fail
            return [_Failure(exc, logged=True)] * len(items)
        except Exception as exc:
            if len(items) == 1:
                return [_Failure(exc)]
        else:
            return self._counted(results, len(items))
        outcomes: list[Any] = []
        for item in items:
            try:
                outcomes.extend(self._counted(list(self._run_batch([item])), 1))
            except Exception as exc:
                outcomes.append(_Failure(exc))
        return outcomes

    @staticmethod
    def _counted(results: list[Any], expected: int) -> list[Any]:
        """``results`` if there is one per item, else a logged failure for every item."""
        if len(results) == expected:
            return results
        message = (
            f"model error: predict returned {len(results)} results for {expected} inputs "
            "(it must return one result per input, in order)"
        )
        log.error(message)
        failure = _Failure(ModelError(message), logged=True)
        return [failure] * expected


def _not_ready_args(exc: NotReady) -> dict[str, Any]:
    """What a fresh copy of ``exc`` for each waiting request is built from."""
    return {"message": exc.message, "retry_after": exc.retry_after}
