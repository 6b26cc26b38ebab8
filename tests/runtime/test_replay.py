"""Replay: completed steps never run twice, and a changed function is caught."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio
import pytest

from resonate_async import Context, NonDeterminismError, Resonate, Suspended
from tests.runtime.conftest import Connect


async def test_each_completed_step_runs_once_across_suspensions(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    effects: Counter[str] = Counter()
    published: list[str] = []

    @resonate.register
    def charge(amount: int) -> int:
        effects["charge"] += 1
        return amount * 2

    @resonate.register
    async def reserve(ctx: Context, item: str) -> str:
        effects["reserve"] += 1
        return f"reserved {item}"

    @resonate.register
    def publish(promise_id: str) -> None:
        effects["publish"] += 1
        published.append(promise_id)

    @resonate.register
    async def checkout(ctx: Context, amount: int) -> list[object]:
        charged = await ctx.run(charge, amount)
        reserved = await ctx.rpc(reserve, "book")
        await ctx.sleep(0.05)
        approval = await ctx.promise().spawn()
        await ctx.run(publish, approval.id)
        approved = await approval
        return [charged, reserved, approved]

    async with resonate:
        handle = await resonate.run(uid("checkout"), checkout, 21)
        with anyio.fail_after(10):
            while not published:
                await anyio.sleep(0.01)
        await resonate.promises.resolve(published[0], "yes")
        with anyio.fail_after(10):
            result = await handle
    assert result == [42, "reserved book", "yes"]
    assert effects == Counter(charge=1, reserve=1, publish=1)


async def test_a_changed_function_body_fails_with_non_determinism_error(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    gate = anyio.Event()
    version = {"changed": False}

    @resonate.register
    def step_a() -> str:
        return "a"

    @resonate.register
    def step_b() -> str:
        return "b"

    @resonate.register
    async def waiter(ctx: Context) -> None:
        await gate.wait()

    @resonate.register
    async def flow(ctx: Context) -> str:
        first = await ctx.run(step_b if version["changed"] else step_a)
        await ctx.rpc(waiter)
        return first

    async with resonate:
        handle = await resonate.run(uid("flow"), flow)
        await anyio.sleep(0.1)
        version["changed"] = True
        gate.set()
        with anyio.fail_after(10), pytest.raises(NonDeterminismError) as info:
            await handle
    message = str(info.value)
    assert "run step_a" in message and "run step_b" in message
    assert handle.id in message


async def test_except_exception_cannot_swallow_a_suspension(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    swallowed: list[BaseException] = []
    gate = anyio.Event()

    @resonate.register
    async def slow(ctx: Context) -> int:
        await gate.wait()
        return 7

    @resonate.register
    async def careless(ctx: Context) -> int:
        try:
            return await ctx.rpc(slow)
        except Exception as exc:  # the user's catch-all must not see Suspended
            swallowed.append(exc)
            return -1

    async with resonate:
        handle = await resonate.run(uid("careless"), careless)
        await anyio.sleep(0.05)
        gate.set()
        with anyio.fail_after(10):
            assert await handle == 7
    assert swallowed == []
    assert issubclass(Suspended, BaseException) and not issubclass(Suspended, Exception)


async def test_now_and_random_are_identical_on_replay(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    seen: list[tuple[object, float]] = []
    gate = anyio.Event()

    @resonate.register
    async def wait(ctx: Context) -> None:
        await gate.wait()

    @resonate.register
    async def flow(ctx: Context) -> bool:
        now = await ctx.now()
        rnd = await ctx.random()
        seen.append((now, rnd))
        await ctx.rpc(wait)
        return True

    async with resonate:
        handle = await resonate.run(uid("flow"), flow)
        await anyio.sleep(0.05)
        gate.set()
        with anyio.fail_after(10):
            assert await handle
    assert len(seen) == 2
    assert seen[0] == seen[1]


async def test_an_already_settled_dependency_resumes_without_suspending(
        connect: Connect, uid: Callable[[str], str]) -> None:
    log: list[tuple[str, int]] = []
    resonate = connect(spy=log)

    @resonate.register
    async def quick(ctx: Context) -> int:
        return 5

    @resonate.register
    async def flow(ctx: Context) -> int:
        handle = await ctx.rpc(quick).spawn()
        await ctx.run(anyio.sleep, 0.3)  # the child settles meanwhile
        return await handle

    async with resonate:
        handle = await resonate.run(uid("flow"), flow)
        with anyio.fail_after(10):
            assert await handle == 5
    assert ("task.suspend", 300) in log
