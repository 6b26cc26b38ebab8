"""EmbeddedTransport's routing of work to groups that nobody subscribed to yet."""

from __future__ import annotations

import anyio

from resonate_async.protocol import TAG_TARGET, Execute, PromiseCreate
from resonate_async.protocol._records import TIMER_TARGET
from resonate_async.transport import EmbeddedTransport

FAR = 4_102_444_800_000


async def test_work_for_a_group_is_kept_until_a_worker_of_it_subscribes() -> None:
    async with EmbeddedTransport() as t:
        await t.send(PromiseCreate("w1", FAR, tags={TAG_TARGET: "poll://any@late"}))
        stream = t.subscribe("late", "p1")
        with anyio.fail_after(5):
            message = await stream.receive()
    assert isinstance(message, Execute)
    assert message.task_id == "w1"


async def test_timer_tasks_are_dropped_not_kept_for_a_subscriber_that_never_comes() -> None:
    # Timers target a reserved group where no process listens: their execute messages are
    # dropped (as a server drops them), not piled up for years of retry timeouts.
    async with EmbeddedTransport() as t:
        for i in range(3):
            await t.send(PromiseCreate(f"t{i}", FAR, tags={TAG_TARGET: TIMER_TARGET}))
        stream = t.subscribe("resonate-timers", "intruder")
        with anyio.move_on_after(0.1):
            message = await stream.receive()
            raise AssertionError(f"a timer's execute was kept and delivered: {message}")
