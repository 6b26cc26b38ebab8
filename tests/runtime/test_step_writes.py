"""How many durable writes a local step costs, and when a running step becomes visible.

On an in-process engine (memory, SQLite, PostgreSQL) a leaf step is recorded in one write when
it ends (``promise.record``: created already settled); a step with a timeout of its own, or a
durable function run with ``ctx.run`` (its children name it), is created first and settled at
the end, as it always is against a Resonate server. A leaf still running after half a lease is
created, pending, at the next heartbeat: it shows in the tree and in searches while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from resonate_async import CanceledError, Context, Never, NotFoundError, Resonate
from resonate_async.protocol import (
    FenceCreate,
    FenceRecord,
    FenceSettle,
    Request,
    Response,
    TaskFence,
)
from resonate_async.transport import WrappedTransport
from tests.runtime._waits import until_exists

Connect = Callable[..., Resonate]


class _Fences(WrappedTransport):
    """Records each accepted ``task.fence`` as (inner kind, promise id)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.fences: list[tuple[str, str]] = []

    async def send(self, request: Request) -> Response:
        response = await self.inner.send(request)
        if isinstance(request, TaskFence) and response.status == 200:
            action = request.action
            kind = ("create" if isinstance(action, FenceCreate) else
                    "record" if isinstance(action, FenceRecord) else "settle")
            assert isinstance(action, FenceCreate | FenceRecord | FenceSettle)
            self.fences.append((kind, action.data.id))
        return response


def _writes(fences: list[tuple[str, str]], step: str) -> list[str]:
    return [kind for kind, pid in fences if pid == step]


async def test_a_leaf_step_is_one_write_where_the_engine_records_steps(
        connect: Connect, uid: Callable[[str], str]) -> None:
    spies: list[_Fences] = []

    def wrap(transport: Any) -> _Fences:
        spies.append(_Fences(transport))
        return spies[-1]

    resonate = connect(wrap=wrap)

    @resonate.register
    def double(x: int) -> int:
        return 2 * x

    @resonate.register
    def fails() -> None:
        raise ValueError("no")

    @resonate.register
    async def inner(ctx: Context, x: int) -> int:
        return await ctx.run(double, x)

    @resonate.register
    async def flow(ctx: Context) -> list[Any]:
        a = await ctx.run(double, 1)                       # :1
        b = await ctx.run(double, 2).options(timeout=60)   # :2, a timeout of its own
        c = await ctx.run(inner, 3)                        # :3, a durable function (:3.1)
        try:
            await ctx.run(fails).options(retry=Never())    # :4
        except ValueError as exc:
            d = str(exc)
        return [a, b, c, d]

    root = uid("writes")
    async with resonate:
        assert await (await resonate.run(root, flow)) == [2, 4, 6, "no"]
        records = spies[0].inner.records_steps
        fences = spies[0].fences
        one = ["record"] if records else ["create", "settle"]
        assert _writes(fences, f"{root}:1") == one
        assert _writes(fences, f"{root}:2") == ["create", "settle"]
        assert _writes(fences, f"{root}:3") == ["create", "settle"]
        assert _writes(fences, f"{root}:3.1") == one
        assert _writes(fences, f"{root}:4") == one
        for step, state in ((":1", "resolved"), (":2", "resolved"), (":3.1", "resolved"),
                            (":4", "rejected")):
            p = await resonate.promises.get(root + step)
            assert p.state == state, step
            assert p.tags["resonate:branch"] == root


async def test_a_long_running_step_shows_pending_while_it_runs(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(ttl=1)
    release = anyio.Event()

    @resonate.register
    async def slow() -> str:
        await release.wait()
        return "done"

    @resonate.register
    async def flow(ctx: Context) -> str:
        return await ctx.run(slow)

    root = uid("visible")
    async with resonate:
        handle = await resonate.run(root, flow)
        await until_exists(resonate, f"{root}:1")  # within a lease and a half (ttl 1 s)
        p = await resonate.promises.get(f"{root}:1")
        assert p.state == "pending"
        assert p.tags["resonate:parent"] == root
        release.set()
        with anyio.fail_after(20):
            assert await handle == "done"
        assert (await resonate.promises.get(f"{root}:1")).state == "resolved"


async def test_a_cancel_while_a_short_step_runs_leaves_no_trace_of_it(
        connect: Connect, uid: Callable[[str], str]) -> None:
    """Cancelled before it shows (pending), a running leaf stops, and since it was never
    recorded nothing of it remains pending; against a server it was pending, and is
    cancelled with the rest. Either way the step never completes and nothing runs after."""
    resonate = connect(ttl=1)
    started, stopped = anyio.Event(), anyio.Event()
    after: list[str] = []

    @resonate.register
    async def upload() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()
        return "uploaded"

    @resonate.register
    async def flow(ctx: Context) -> str:
        await ctx.run(upload)
        after.append("next step")
        return "done"

    root = uid("cancel-short")
    async with resonate:
        handle = await resonate.run(root, flow)
        with anyio.fail_after(20):
            await started.wait()
        await handle.cancel()
        with anyio.fail_after(20):  # the worker stops it within half a lease
            await stopped.wait()
        with anyio.fail_after(20), pytest.raises(CanceledError):
            await handle
        try:
            step = await resonate.promises.get(f"{root}:1")
        except NotFoundError:  # cancelled before it showed: only a recorded step can be
            assert getattr(resonate.transport, "records_steps", False) is True
        else:
            assert step.state == "rejected_canceled"
        pending = [p.id async for p in resonate.promises.search(
            state="pending", tags={"resonate:origin": root})]
        assert pending == []
    assert after == []
