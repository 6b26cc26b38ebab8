"""A worker keeps the settled children of suspended executions within a byte bound.

They spare a resumption its re-fences; with large step results a count bound alone let a
worker hold gigabytes (issue 11, item 7). Resumptions whose records were let go are still right.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from resonate_async import Context, Resonate
from resonate_async.core import _driver
from resonate_async.protocol import TaskSearch

BOUND = 1024 * 1024
SIZE = 100 * 1024  # about 133 KiB once encoded: twelve of them are over the bound


async def _suspended(r: Resonate, ids: set[str]) -> None:
    while True:
        found: set[str] = set()
        cursor: str | None = None
        while True:
            page = await r.send(TaskSearch("suspended", 1000, cursor))
            found.update(t.id for t in page.data.tasks if t.id in ids)
            cursor = page.data.cursor
            if cursor is None:
                break
        if found == ids:
            return
        await anyio.sleep(0.01)


async def test_settled_children_kept_for_resumption_stay_within_a_byte_bound(
        resonate: Resonate, uid: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_driver, "KEPT_BYTES", BOUND)

    @resonate.register
    async def big(i: int) -> str:
        return chr(ord("a") + i) * SIZE

    @resonate.register
    async def parked(ctx: Context, i: int) -> bool:
        value = await ctx.run(big, i)
        await ctx.promise().options(id="gate")
        return value == chr(ord("a") + i) * SIZE

    async with resonate:
        handles = [await resonate.run(uid("kept"), parked, i) for i in range(12)]
        with anyio.fail_after(120):  # a hang guard, not a speed check
            await _suspended(resonate, {h.id for h in handles})
        worker = resonate.worker
        kept = worker._kept
        assert 0 < worker._kept_bytes <= BOUND
        assert worker._kept_bytes == sum(size for _, size in kept.values())
        assert 0 < len(kept) < len(handles)  # some were let go, the latest are kept
        for h in handles:
            await resonate.promises.resolve(f"{h.id}:gate", None)
        with anyio.fail_after(120):
            assert [await h.result() for h in handles] == [True] * len(handles)
        assert worker._kept_bytes == sum(size for _, size in kept.values())
