"""Dynamic batching: items from concurrent requests run as one forward pass.

Requests put their items on a bounded asyncio queue; one collector coroutine takes up to
``max_batch_size`` items (waiting at most ``max_delay_ms`` after the first) and runs the
batch in a single inference thread, so the event loop never blocks. A full queue is refused
at once (:class:`~aiaas.errors.Overloaded`) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiaas.errors import ModelError, NotReady, Overloaded, PayloadTooLarge

log = logging.getLogger("aiaas.batcher")

BatchFn = Callable[[list[Any]], Sequence[Any]]


@dataclass(slots=True)
class _Pending:
    item: Any
    future: asyncio.Future[Any]
    request_id: str = field(default="")


class Batcher:
    """Queue items, run them in batches on one inference thread, hand results back in order.

    Args:
        run_batch: called in the inference thread with 1..max_batch_size items; must return
            one result per item, in order.
        on_batch: called (in the event loop) with each batch's size, e.g. for metrics.
    """

    def __init__(
        self,
        run_batch: BatchFn,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue_size: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self._max_delay_s = max_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiaas-infer")
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch (not counting the batch in flight)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The inference thread; model loading runs here too, so torch sees one thread."""
        return self._executor

    def start(self) -> None:
        """Start the collector; call from inside the running event loop."""
        self._queue = asyncio.Queue(self.max_queue_size)
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="aiaas-batcher")

    async def stop(self) -> None:
        """Stop collecting; queued items fail with NotReady. Waits for the batch in flight."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(NotReady("server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, items: Sequence[Any], request_id: str = "") -> list[Any]:
        """Queue ``items`` and wait for their results, in order.

        Raises:
            Overloaded: the queue cannot take all items now (retry later).
            PayloadTooLarge: more items than the queue can ever hold.
            ModelError: the model failed on an item of this request.
        """
        assert self._queue is not None, "Batcher.start() was not called"
        n = len(items)
        if n > self.max_queue_size:
            raise PayloadTooLarge(
                f"request has {n} items; this server takes at most "
                f"{self.max_queue_size} per request"
            )
        if self._queue.qsize() + n > self.max_queue_size:
            raise Overloaded("model server queue is full; retry later", retry_after=1.0)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(n)]
        for item, fut in zip(items, futures, strict=True):
            self._queue.put_nowait(_Pending(item, fut, request_id))
        try:
            if n == 1:
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self._max_delay_s
            while len(batch) < self.max_batch_size:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    # asyncio.timeout, not wait_for: no extra task, and a cancelled
                    # Queue.get leaves its item in the queue, so nothing is lost.
                    async with asyncio.timeout(remaining):
                        batch.append(await queue.get())
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]  # callers that gave up are skipped
            if not live:
                continue
            started = loop.time()
            outcomes = await loop.run_in_executor(
                self._executor, self._run_isolated, [p.item for p in live]
            )
            if self._on_batch is not None:
                self._on_batch(len(live), loop.time() - started)
            for pending, outcome in zip(live, outcomes, strict=True):
                if pending.future.done():
                    continue
                if isinstance(outcome, _Failure):
                    log.error(
                        "model raised on an item (request_id=%s)",
                        pending.request_id,
                        exc_info=outcome.exc,
                    )
                    pending.future.set_exception(ModelError(f"model error: {outcome.exc!r}"))
                else:
                    pending.future.set_result(outcome)

    def _run_isolated(self, items: list[Any]) -> list[Any]:
        """Run a batch; if it raises, run its items one by one so one bad item fails alone."""
        try:
            return self._checked(items)
        except Exception as exc:
            if len(items) == 1:
                return [_Failure(exc)]
        outcomes: list[Any] = []
        for item in items:
            try:
                outcomes.extend(self._checked([item]))
            except Exception as exc:
                outcomes.append(_Failure(exc))
        return outcomes

    def _checked(self, items: list[Any]) -> list[Any]:
        results = list(self._run_batch(items))
        if len(results) != len(items):
            raise ValueError(f"predict returned {len(results)} results for {len(items)} inputs")
        return results


@dataclass(slots=True)
class _Failure:
    exc: BaseException
