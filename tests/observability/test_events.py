"""structlog events for every state change of an execution, with its ids bound."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from resonate_async import Context, Never, Resonate


async def test_every_state_change_is_an_event_with_ids(events: list[dict[str, Any]]) -> None:
    resonate = Resonate()
    gate = anyio.Event()

    @resonate.register
    def step() -> int:
        return 1

    @resonate.register
    def broken() -> None:
        raise ValueError("no")

    @resonate.register
    async def child(ctx: Context) -> None:
        await gate.wait()

    @resonate.register
    async def flow(ctx: Context) -> int:
        value = await ctx.run(step)
        await ctx.rpc(child)
        await ctx.run(broken).options(retry=Never())
        return value

    async with resonate:
        handle = await resonate.run("events-1", flow)
        await anyio.sleep(0.05)
        gate.set()
        with anyio.fail_after(10), pytest.raises(ValueError, match="no"):
            await handle

    mine = [e for e in events if e.get("task_id") == "events-1"]
    names = [e["event"] for e in mine]
    for expected in ("execution_started", "step_completed", "execution_suspended",
                     "execution_resumed", "step_failed", "execution_failed"):
        assert expected in names, names
    assert all(e.get("promise_id") and "attempt" in e for e in mine)
    settled = [e for e in mine if e["event"] == "step_completed"]
    assert any(e.get("step_id") == "events-1:1" for e in settled), settled
    assert any(e["event"] == "execution_completed" and e.get("task_id") == "events-1:2"
               for e in events)


async def test_a_released_task_is_an_event(events: list[dict[str, Any]]) -> None:
    resonate = Resonate()
    started = anyio.Event()

    @resonate.register
    async def forever(ctx: Context) -> None:
        started.set()
        await anyio.sleep_forever()

    async with resonate:
        await resonate.run("events-2", forever)
        with anyio.fail_after(10):
            await started.wait()
    released = [e for e in events if e["event"] == "task_released"]
    assert released
    assert released[0]["task_id"] == "events-2"
