"""A worker keeps a suspended execution's settled records for its resumption; resumed again
and again, the records it keeps are only settled ones, sized as if counted afresh."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from resonate_async import Context
from tests.runtime.conftest import Connect
from tests.runtime.test_kept_bytes import _suspended


async def test_kept_records_of_a_resumed_execution_are_settled_and_sized_as_if_counted_afresh(
        connect: Connect, uid: Callable[[str], str]) -> None:
    r = connect()

    @r.register
    async def value(i: int) -> str:
        return "v" * (100 * (i + 1))

    @r.register
    async def stages(ctx: Context, n: int) -> int:
        for i in range(n):
            await ctx.run(value, i)
            await ctx.promise().options(id=f"gate{i}")
        return n

    async with r:
        root = uid("stages")
        handle = await r.run(root, stages, 3)
        for i in range(3):
            with anyio.fail_after(60):  # a hang guard, not a speed check
                await _suspended(r, {root})
                # kept once the worker has the suspend's answer (and holds this run's step)
                while f"{root}:{2 * i + 1}" not in r.worker._kept.get(root, ({}, 0))[0]:
                    await anyio.sleep(0.01)
            kept, size = r.worker._kept[root]
            assert f"{root}:gate{i}" not in kept  # pending when it suspended: not kept
            assert all(p.state != "pending" for p in kept.values())
            assert size == sum(512 + len(p.id) + len(p.param.data or "")
                               + len(p.value.data or "") for p in kept.values())
            assert r.worker._kept_bytes == sum(s for _, s in r.worker._kept.values())
            await r.promises.resolve(f"{root}:gate{i}", None)
        with anyio.fail_after(60):
            assert await handle.result() == 3
