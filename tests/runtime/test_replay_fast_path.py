"""A remote call a replay finds settled returns straight from the cache (``Call.__await__``
asks ``Execution.replayed`` before it makes any coroutine): it must give exactly what the
live path gave, and still catch a history that no longer matches the code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from resonate_async import Context, NonDeterminismError, NotFoundError
from tests.runtime.conftest import Connect


@dataclass
class Point:
    x: int
    y: int


async def _open_gate(r: Any, gate: str) -> None:
    with anyio.fail_after(60):  # a hang guard, not a speed check
        while True:
            try:
                await r.promises.resolve(gate, None)
                return
            except NotFoundError:  # not created yet
                await anyio.sleep(0.01)


async def test_replayed_rpc_calls_give_the_live_values_none_and_errors(
        connect: Connect, uid: Callable[[str], str]) -> None:
    r = connect()
    runs: list[list[Any]] = []

    @r.register
    async def point(ctx: Context, x: int) -> Point:
        return Point(x, x + 1)

    @r.register
    async def nothing(ctx: Context) -> None:
        return None

    @r.register
    async def fails(ctx: Context) -> int:
        raise ValueError("no such item")

    @r.register
    async def parent(ctx: Context) -> list[Any]:
        seen: list[Any] = [await ctx.rpc(point, 2), await ctx.rpc(nothing)]
        try:
            await ctx.rpc(fails)
        except ValueError as exc:
            seen.append(("ValueError", str(exc)))
        runs.append(seen)
        await ctx.promise().options(id="gate")
        return seen

    async with r:
        root = uid("parent")
        handle = await r.run(root, parent)
        await _open_gate(r, f"{root}:gate")
        with anyio.fail_after(60):
            result = await handle.result()
    expected = [Point(2, 3), None, ("ValueError", "no such item")]
    # every run that reached the gate saw the same values, typed, on the replay path too
    # (the last run replayed all three from the cache)
    assert runs and all(seen == expected for seen in runs)
    assert all(type(seen[0]) is Point for seen in runs)
    assert result == [{"x": 2, "y": 3}, None, ["ValueError", "no such item"]]  # list[Any]


async def test_a_replayed_rpc_whose_target_changed_fails_the_execution(
        connect: Connect, uid: Callable[[str], str]) -> None:
    r = connect()
    changed = {"now": False}

    @r.register
    async def first(ctx: Context) -> int:
        return 1

    @r.register
    async def second(ctx: Context) -> int:
        return 2

    @r.register
    async def flow(ctx: Context) -> int:
        value: int = await ctx.rpc(second if changed["now"] else first)
        await ctx.promise().options(id="gate")
        return value

    async with r:
        root = uid("flow")
        handle = await r.run(root, flow)
        with anyio.fail_after(60):
            while True:  # the rpc settled and the run waits on the gate
                try:
                    await r.promises.get(f"{root}:gate")
                    break
                except NotFoundError:
                    await anyio.sleep(0.01)
        changed["now"] = True
        await _open_gate(r, f"{root}:gate")
        with anyio.fail_after(60), pytest.raises(NonDeterminismError) as info:
            await handle.result()
    message = str(info.value)
    assert "rpc first" in message and "rpc second" in message and f"{root}:1" in message
