"""The model server's door (aiaas.runtime.door): places handed on, waits bounded, none stranded.

The Door runs on a real event loop with real (short) timers: nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from aiaas.errors import DeadlineExceeded, NotReady, Overloaded
from aiaas.runtime.door import Door


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


async def parked(door: Door, count: int) -> list[asyncio.Task[None]]:
    """``count`` requests waiting at ``door`` (asserted)."""
    before = door.waiting
    tasks = [asyncio.create_task(door.enter()) for _ in range(count)]
    await asyncio.sleep(0)
    assert door.waiting == before + count
    return tasks


def test_places_go_at_once_then_to_the_oldest_waiter_as_they_are_handed_back() -> None:
    async def test() -> None:
        door = Door(2, max_waiting=10, wait_s=30)
        await door.enter()
        await door.enter()
        assert (door.inside, door.waiting) == (2, 0)
        first, second, third = await parked(door, 3)
        door.leave()
        await asyncio.sleep(0)
        assert first.done() and not second.done() and not third.done()
        door.leave()
        door.leave()
        await asyncio.sleep(0)
        assert second.done() and third.done()
        assert (door.inside, door.waiting) == (2, 0)
        door.leave()
        door.leave()
        assert door.inside == 0

    run(test)


def test_a_waiter_is_refused_after_its_wait_and_the_next_request_takes_a_free_place_at_once() -> (
    None
):
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=0.05)
        await door.enter()
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused:
            await door.enter()
        assert time.monotonic() - started >= 0.05
        assert refused.value.retry_after == 1.0
        assert "queue is full" in refused.value.message
        assert (door.inside, door.waiting) == (1, 0)
        door.leave()
        # The refused waiter took nothing: the place is free, and the next goes in at once
        # (a place used up by a request gone before its turn stranded everyone behind it).
        await asyncio.wait_for(door.enter(), timeout=0.01)
        assert door.inside == 1

    run(test)


def test_refused_at_once_when_the_door_is_full_or_waiting_is_off() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=2, wait_s=30)
        await door.enter()
        waiters = await parked(door, 2)
        with pytest.raises(Overloaded):
            await asyncio.wait_for(door.enter(), timeout=0.01)  # at once: no wait
        door.leave()
        door.leave()
        await asyncio.gather(*waiters)
        assert (door.inside, door.waiting) == (1, 0)  # nothing lost: both were let in in turn

        off = Door(1, max_waiting=10, wait_s=0)
        await off.enter()
        with pytest.raises(Overloaded):
            await asyncio.wait_for(off.enter(), timeout=0.01)
        off.leave()
        await asyncio.wait_for(off.enter(), timeout=0.01)

    run(test)


def test_the_callers_deadline_ends_the_wait_first() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=30)
        await door.enter()
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await door.enter(time.monotonic() + 0.05)
        assert 0.05 <= time.monotonic() - started < 5  # not the 30 s wait
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(door.enter(time.monotonic() - 1), timeout=0.01)  # past
        assert (door.inside, door.waiting) == (1, 0)
        # a wait shorter than the deadline is an overload refusal, as before
        short = Door(1, max_waiting=10, wait_s=0.02)
        await short.enter()
        with pytest.raises(Overloaded):
            await short.enter(time.monotonic() + 30)

    run(test)


def test_a_waiter_that_gives_up_before_its_turn_leaves_its_place_to_the_next() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=30)
        await door.enter()
        gone, next_one = await parked(door, 2)
        gone.cancel()
        await asyncio.sleep(0)
        assert door.waiting == 1
        door.leave()
        await asyncio.sleep(0)
        assert next_one.done() and not next_one.cancelled()
        assert (door.inside, door.waiting) == (1, 0)

    run(test)


def test_a_waiter_cancelled_as_it_is_let_in_hands_its_place_on() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=30)
        await door.enter()
        (cancelled,) = await parked(door, 1)
        (behind,) = await parked(door, 1)
        door.leave()  # the place goes to `cancelled`...
        cancelled.cancel()  # ...which is cancelled before it runs again
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert cancelled.cancelled()
        assert behind.done() and not behind.cancelled()  # the place was handed on, not lost
        assert (door.inside, door.waiting) == (1, 0)

    run(test)


def test_a_waiter_let_in_as_its_wait_ends_goes_on() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=0.05)
        await door.enter()
        (waiter,) = await parked(door, 1)
        time.sleep(0.1)  # its wait's end is due...
        asyncio.get_running_loop().call_soon(door.leave)  # ...and its turn runs first
        await waiter  # let in, not refused (nor its place lost)
        assert (door.inside, door.waiting) == (1, 0)

    run(test)


def test_a_request_arriving_as_a_waiter_is_cancelled_takes_the_free_place() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=30)
        await door.enter()
        (gone,) = await parked(door, 1)
        arriving = asyncio.create_task(door.enter())  # its first step runs next turn
        gone.cancel()  # ...before the cancelled waiter's own step
        door.leave()  # the place is free: the cancelled waiter cannot take it
        await asyncio.wait_for(arriving, timeout=1)  # in at once, not after the 30 s wait
        assert (door.inside, door.waiting) == (1, 0)

    run(test)


def test_waits_that_end_while_nobody_leaves_do_not_pile_up() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=100, wait_s=0.001)
        await door.enter()  # and never leaves: a hung batch
        for _ in range(50):
            refused = await asyncio.gather(
                *(door.enter() for _ in range(40)), return_exceptions=True
            )
            assert all(isinstance(r, Overloaded) for r in refused)
        # 2,000 refused; the queue holds at most a bounded number of ended tickets
        assert len(door._queue) <= 64, len(door._queue)
        assert door.waiting == 0

    run(test)


def test_a_wait_ended_before_a_place_came_keeps_nothing() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=0.02)
        await door.enter()
        (waiter,) = await parked(door, 1)
        time.sleep(0.05)
        await asyncio.sleep(0.01)  # the timer runs: the wait is over
        door.leave()  # nobody takes the place: the refused waiter is gone
        with pytest.raises(Overloaded):
            await waiter
        assert (door.inside, door.waiting) == (0, 0)

    run(test)


def test_entered_hands_the_place_back_however_the_block_ends() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=30)
        with pytest.raises(ValueError):
            async with door.entered():
                assert door.inside == 1
                raise ValueError("a 400 after the body was read")
        assert door.inside == 0
        async with door.entered():
            pass
        assert door.inside == 0

    run(test)


def test_closing_refuses_the_waiters_and_new_requests_while_those_in_finish() -> None:
    async def test() -> None:
        door = Door(1, max_waiting=10, wait_s=30)
        await door.enter()
        waiters = await parked(door, 2)
        door.close()
        for waiter in waiters:
            with pytest.raises(NotReady):
                await waiter
        with pytest.raises(NotReady):
            await door.enter()
        door.leave()
        assert (door.inside, door.waiting) == (0, 0)

    run(test)


def test_nobody_waits_while_a_place_is_free_whatever_the_order_of_events() -> None:
    """Random arrivals, holds, give-ups, deadlines and waits that end: after every step a
    request waits only while every place is taken, and the counts match the requests."""

    async def test() -> None:
        rng = random.Random(15)
        door = Door(3, max_waiting=8, wait_s=0.02)
        inside = 0
        outcomes: dict[str, int] = {}

        async def request() -> None:
            nonlocal inside
            try:
                await door.enter(time.monotonic() + rng.choice([0.005, 0.05, 1.0]))
            except (Overloaded, DeadlineExceeded) as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                return
            inside += 1
            try:
                await asyncio.sleep(rng.random() * 0.03)
            finally:
                inside -= 1
                door.leave()
            outcomes["in"] = outcomes.get("in", 0) + 1

        tasks: list[asyncio.Task[None]] = []
        for _ in range(300):
            tasks.append(asyncio.create_task(request()))
            if rng.random() < 0.1:
                rng.choice(tasks).cancel()
            await asyncio.sleep(rng.random() * 0.003)
            # the door counts those let in that have not run yet too
            assert inside <= door.inside <= door.limit
            if door.waiting:
                assert door.inside == door.limit, (door.inside, door.waiting)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert (door.inside, door.waiting) == (0, 0)
        assert outcomes.get("in", 0) > 0 and outcomes.get("Overloaded", 0) > 0, outcomes

    run(test)
