"""The test kit users get: the ``resonate`` fixture, the virtual clock and check_replay."""

from __future__ import annotations

import random
from datetime import timedelta

import anyio
import pytest

from resonate_async import Constant, Context, Resonate
from resonate_async.testing import (
    ReplayCheckError,
    VirtualClock,
    check_replay,
    execution_tree,
    render_execution,
)


async def test_a_workflow_that_sleeps_a_week_finishes_on_the_virtual_clock(
        resonate: Resonate) -> None:
    clock = resonate.clock
    assert isinstance(clock, VirtualClock)
    start = clock.now()

    @resonate.register
    async def reminder(ctx: Context, who: str) -> str:
        for _ in range(7):
            await ctx.sleep(timedelta(days=1))
        return f"ping {who}"

    handle = await resonate.options(timeout=timedelta(days=30)).run("reminder", reminder, "ana")
    with anyio.fail_after(20):
        assert await handle == "ping ana"
    assert clock.now() - start >= timedelta(days=7)


async def test_time_moves_only_when_advanced_without_auto_advance() -> None:
    clock = VirtualClock(auto_advance=False)
    resonate = Resonate(clock=clock)
    woke = anyio.Event()

    @resonate.register
    def mark() -> None:
        woke.set()

    @resonate.register
    async def nap(ctx: Context) -> str:
        await ctx.sleep(timedelta(hours=1))
        await ctx.run(mark)
        return "rested"

    async with resonate:
        handle = await resonate.run("nap", nap)
        await clock.advance(timedelta(minutes=59))
        assert not await handle.done()
        assert not woke.is_set()
        await clock.advance(timedelta(minutes=1))
        with anyio.fail_after(10):
            assert await handle == "rested"


async def test_retry_back_offs_and_promise_timeouts_pass_instantly(resonate: Resonate) -> None:
    attempts: list[int] = []

    @resonate.register
    def flaky() -> str:
        attempts.append(resonate.clock.now_ms())
        if len(attempts) < 3:
            raise ConnectionError("try later")
        return "ok"

    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        first = await ctx.run(flaky).options(retry=Constant(max_retries=5, wait=3600))
        try:
            await ctx.promise(timeout=timedelta(hours=2))
            second = "approved"
        except Exception as exc:
            second = type(exc).__name__
        return [first, second]

    with anyio.fail_after(20):
        assert await (await resonate.run("flow", flow)) == ["ok", "TimedOutError"]
    assert attempts[1] - attempts[0] >= 3_600_000
    assert attempts[2] - attempts[1] >= 3_600_000


async def test_schedules_fire_on_the_virtual_clock() -> None:
    clock = VirtualClock(auto_advance=False)
    resonate = Resonate(clock=clock)
    fired: list[str] = []

    @resonate.register
    async def tick(ctx: Context) -> None:
        fired.append(ctx.info.id)

    async with resonate:
        await resonate.schedules.create("minutely", "* * * * *", tick)
        await clock.advance(timedelta(minutes=3))
        with anyio.fail_after(10):
            while len(fired) < 3:
                await anyio.sleep(0.01)
    assert len(fired) == 3
    assert all(i.startswith("minutely-") for i in fired)


async def test_check_replay_passes_for_a_deterministic_workflow(resonate: Resonate) -> None:
    effects: list[str] = []

    @resonate.register
    def charge(amount: int) -> int:
        effects.append("charge")
        return amount

    @resonate.register
    async def ship(ctx: Context, item: str) -> str:
        return f"shipped {item}"

    @resonate.register
    async def order(ctx: Context, amount: int) -> str:
        paid = await ctx.run(charge, amount)
        await ctx.sleep(timedelta(hours=1))
        shipped = await ctx.rpc(ship, "book")
        handles = [await ctx.run(charge, i).spawn() for i in range(3)]
        total = sum([await h for h in handles])
        return f"{paid} {shipped} {total}"

    with anyio.fail_after(60):
        report = await check_replay(resonate, order, 10)
    assert report.boundaries >= 10
    assert any("task.fulfill" in w for w in report.descriptions)
    assert "resolved" in report.outcome


async def test_check_replay_reports_the_crash_point_of_a_non_durable_side_effect(
        resonate: Resonate) -> None:
    @resonate.register
    def step() -> int:
        return 1

    @resonate.register
    async def leaky(ctx: Context) -> int:
        pick = random.randint(1, 10**9)  # not a durable step: a replay draws another value
        first = await ctx.run(step)
        await ctx.run(step)
        return first + pick

    with anyio.fail_after(60), pytest.raises(ReplayCheckError) as info:
        await check_replay(resonate, leaky)
    message = str(info.value)
    assert "crash after durable write #" in message
    assert "outcome differs" in message
    assert info.value.crash_point is not None and info.value.crash_point in message


async def test_execution_tree_shows_each_promise_with_its_call_state_and_value(
        resonate: Resonate) -> None:
    @resonate.register
    def price(item: str) -> int:
        return len(item)

    @resonate.register
    async def reserve(ctx: Context, item: str) -> str:
        return f"held {item}"

    @resonate.register
    async def order(ctx: Context, item: str) -> str:
        cost = await ctx.run(price, item)
        held = await ctx.rpc(reserve, item)
        await ctx.sleep(timedelta(minutes=5))
        return f"{held} for {cost}"

    with anyio.fail_after(20):
        assert await (await resonate.run("order-1", order, "lamp")) == "held lamp for 4"
    tree = await execution_tree(resonate, "order-1")
    assert (tree.id, tree.call, tree.state, tree.value) == (
        "order-1", "root order", "resolved", "held lamp for 4")
    assert [(s.id, s.call, s.state, s.value) for s in tree.children] == [
        ("order-1:1", "run price", "resolved", 4),
        ("order-1:2", "rpc reserve", "resolved", "held lamp"),
        ("order-1:3", "sleep", "resolved", None),
    ]
    assert tree.find("order-1:2") is tree.children[1]
    text = await render_execution(resonate, "order-1")
    assert text.splitlines()[1].startswith("├── order-1:1")
    assert "rpc reserve" in text
