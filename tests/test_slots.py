"""``take``: a free limiter slot at once, else a wait, on asyncio and trio (anyio 4.11 on trio
lets trio's own WouldBlock out of ``acquire_nowait``)."""

from __future__ import annotations

import anyio

from resonate_async._slots import take


async def test_a_free_slot_is_taken_and_a_full_limiter_waits_for_one() -> None:
    limiter = anyio.CapacityLimiter(1)
    order: list[str] = []
    await take(limiter)
    assert limiter.borrowed_tokens == 1

    async def second() -> None:
        await take(limiter)
        order.append("second took it")
        limiter.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.sleep(0.05)
        order.append("first releases")
        limiter.release()
    assert order == ["first releases", "second took it"]
    assert limiter.borrowed_tokens == 0


async def test_a_slot_promised_to_a_waiter_is_waited_for_not_an_error() -> None:
    limiter = anyio.CapacityLimiter(1)
    await take(limiter)
    got: list[str] = []

    async def waiter(name: str) -> None:
        await take(limiter)
        got.append(name)
        await anyio.sleep(0.01)
        limiter.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "a")
        await anyio.sleep(0.05)
        limiter.release()  # promised to "a", which has not run yet
        tg.start_soon(waiter, "b")  # finds the slot looking free: must wait, not fail
    assert sorted(got) == ["a", "b"]
