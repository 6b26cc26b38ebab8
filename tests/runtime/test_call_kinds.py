"""Each kind of durable call records what it is, and a replay finds it settled without a
request (the replay fast path of remote calls), on every transport."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio

from resonate_async import Call, Context, NotFoundError
from resonate_async.protocol import PromiseGet
from tests.runtime.conftest import Connect

CALL_TAG = "resonate_async:call"


async def leaf(x: int) -> int:
    return x + 1


async def test_each_kind_of_call_records_its_kind_and_the_function_it_names(
        connect: Connect, uid: Callable[[str], str]) -> None:
    r = connect()
    kinds: list[str] = []

    @r.register
    async def child(ctx: Context, x: int) -> int:
        return x * 2

    @r.register
    async def every_kind(ctx: Context) -> list[Any]:
        calls: list[Call[Any]] = [ctx.run(leaf, 1), ctx.rpc(child, 2), ctx.sleep(0),
                                  ctx.promise()]
        kinds[:] = [c.kind for c in calls]  # each run (replays too) makes the same calls
        run, rpc, sleep, promise = calls
        handles = [await run.spawn(), await rpc.spawn(), await sleep.spawn(),
                   await promise.spawn()]
        detached = await ctx.detached(child, 3)
        await handles[-1].cancel()  # the external promise: nobody settles it here
        return [await handles[0], await handles[1], await handles[2], detached.id]

    async with r:
        root = uid("kinds")
        handle = await r.run(root, every_kind)
        with anyio.fail_after(60):  # a hang guard, not a speed check
            one, four, slept, detached_id = await handle.result()
        assert (one, four, slept) == (2, 4, None)
        assert kinds == ["run", "rpc", "sleep", "promise"]
        recorded = {}
        for pid in (f"{root}:1", f"{root}:2", f"{root}:3", f"{root}:4", detached_id):
            p = (await r.send(PromiseGet(pid))).data.promise
            recorded[pid] = p.tags[CALL_TAG]
        assert recorded == {f"{root}:1": "run leaf", f"{root}:2": "rpc child",
                            f"{root}:3": "sleep", f"{root}:4": "promise",
                            detached_id: "detached child"}


async def test_replayed_settled_remote_calls_send_no_request_and_give_the_same_values(
        connect: Connect, uid: Callable[[str], str]) -> None:
    log: list[tuple[str, int]] = []
    r = connect(spy=log)
    runs: list[tuple[list[Any], int]] = []  # each run: what it saw, fences its replay sent

    @r.register
    async def child(ctx: Context, x: int) -> dict[str, int]:
        return {"x": x}

    @r.register
    async def chain(ctx: Context) -> list[Any]:
        before = len(log)
        seen: list[Any] = [await ctx.rpc(child, 1)]
        await ctx.sleep(timedelta(0))
        seen.append(None)
        runs.append((list(seen), sum(1 for kind, _ in log[before:] if kind == "task.fence")))
        seen.append(await ctx.promise().options(id="gate"))
        return seen

    async with r:
        root = uid("chain")
        handle = await r.run(root, chain)
        with anyio.fail_after(60):  # a hang guard, not a speed check
            while True:
                try:
                    await r.promises.resolve(f"{root}:gate", "open")
                    break
                except NotFoundError:  # not created yet
                    await anyio.sleep(0.01)
            assert await handle.result() == [{"x": 1}, None, "open"]
    # The first run to pass both calls created the timer (and the rpc child, unless an
    # earlier run suspended on it), then waited on the gate; the last replayed both without
    # a request, with the values typed as on the live path.
    assert len(runs) >= 2
    assert runs[0][0] == [{"x": 1}, None] and runs[0][1] >= 1
    assert runs[-1] == ([{"x": 1}, None], 0)
