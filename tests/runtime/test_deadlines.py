"""Deadlines that must fire on the Resonate server: durable sleeps and ``ctx.promise`` timeouts.

The Resonate server arms a deadline only for a promise that carries ``resonate:target``; the
embedded engine and the dev server do the same, so a timer without a target would hang here
exactly as it would in production. Every test runs on memory, SQLite and HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from resonate_async import Context, Resonate, TimedOutError
from resonate_async.protocol import (
    TAG_EXTERNAL,
    TAG_ORIGIN,
    TAG_PARENT,
    TAG_TARGET,
    TAG_TIMER,
    PromiseCreate,
    PromiseGet,
    TaskGet,
)
from resonate_async.protocol._records import TIMER_TARGET
from tests.runtime.conftest import Connect

HOUR_MS = 3_600_000


async def record(resonate: Resonate, promise_id: str) -> Any:
    response = await resonate.send(PromiseGet(promise_id))
    assert response.status == 200, response
    return response.data.promise


async def test_a_short_durable_sleep_wakes_at_its_deadline_and_its_timer_has_a_target(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def nap(ctx: Context) -> str:
        await ctx.sleep(0.3)
        return "awake"

    root = uid("nap")
    async with resonate:
        started = time.monotonic()
        handle = await resonate.run(root, nap)
        with anyio.fail_after(20):  # the deadline fires in the background: nobody polls it
            assert await handle == "awake"
        assert time.monotonic() - started >= 0.3
        timer = await record(resonate, f"{root}:1")
    assert timer.state == "resolved"
    assert timer.tags[TAG_TIMER] == "true"
    assert timer.tags[TAG_TARGET] == TIMER_TARGET


async def test_an_unsettled_promise_rejects_its_awaiter_with_timed_out_error_at_its_deadline(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def wait_for_approval(ctx: Context) -> str:
        try:
            await ctx.promise(timeout=0.3)
        except TimedOutError as exc:
            return f"gave up: {type(exc).__name__}"
        return "approved"

    root = uid("hitl")
    async with resonate:
        started = time.monotonic()
        handle = await resonate.run(root, wait_for_approval)
        with anyio.fail_after(20):
            assert await handle == "gave up: TimedOutError"
        assert time.monotonic() - started >= 0.3
        promise = await record(resonate, f"{root}:1")
    assert promise.state == "rejected_timedout"
    assert promise.tags[TAG_EXTERNAL] == "true"
    assert promise.tags[TAG_TARGET] == TIMER_TARGET


async def test_the_task_of_a_pending_timer_is_halted_so_it_is_never_dispatched_again(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    # The timer's target only makes servers arm its deadline; halted, its task is not re-sent
    # every retry timeout (nothing to drop, nothing for a server to log).
    @resonate.register
    async def long_nap(ctx: Context) -> None:
        await ctx.sleep(3600)

    root = uid("longnap")
    async with resonate:
        await resonate.run(root, long_nap)
        with anyio.fail_after(20):
            while (await resonate.send(TaskGet(root))).data.task.state != "suspended":
                await anyio.sleep(0.02)
        timer_task = (await resonate.send(TaskGet(f"{root}:1"))).data.task
    assert timer_task.state == "halted"


async def test_a_worker_never_runs_a_timer_sent_to_its_group_and_asks_for_it_once(
        connect: Connect, uid: Callable[[str], str]) -> None:
    # The official SDK targets its timers at the workers' group: our worker gets ``execute``
    # for them. It must not run them, nor acquire them again every lease: it halts the
    # timer's task, which the deadline still settles.
    log: list[tuple[str, int]] = []
    worker = connect(spy=log)
    root = uid("foreign")
    timer = f"{root}:1"
    async with worker:
        far = worker.clock.now_ms() + HOUR_MS
        parent_tags = {TAG_TARGET: f"poll://any@{uid('nobody')}", TAG_ORIGIN: root}
        assert (await worker.send(PromiseCreate(root, far, tags=parent_tags))).status == 200
        due = worker.clock.now_ms() + 1500
        tags = {TAG_TIMER: "true", TAG_TARGET: worker.target(), TAG_PARENT: root,
                TAG_ORIGIN: root}
        assert (await worker.send(PromiseCreate(timer, due, tags=tags))).status == 200
        with anyio.fail_after(20):
            while (await worker.send(TaskGet(timer))).data.task.state != "halted":
                await anyio.sleep(0.02)
        assert (await record(worker, timer)).state == "pending"  # not run, not settled
        with anyio.fail_after(20):
            while (await worker.send(TaskGet(timer))).data.task.state != "fulfilled":
                await anyio.sleep(0.05)
        settled = await record(worker, timer)
    assert (settled.state, settled.value.data) == ("resolved", None)
    kinds = [kind for kind, _ in log]
    assert kinds.count("task.acquire") == 1
    assert ("task.halt", 200) in log
    assert "task.fulfill" not in kinds


async def test_a_client_that_takes_no_work_is_never_sent_any(
        connect: Connect, uid: Callable[[str], str]) -> None:
    # The Resonate server sends a group's work to any of its streams; a client in the
    # workers' group would be handed rpcs, drop them and leave each waiting for the server's
    # retry timeout (30 s here). It streams in a group of its own instead.
    worker = connect()
    ran: list[str] = []

    @worker.register
    async def double(ctx: Context, x: int) -> int:
        ran.append(ctx.info.id)
        return 2 * x

    client = connect(worker=False)
    async with worker, client:
        ids = [uid("rpc") for _ in range(12)]
        started = time.monotonic()
        with anyio.fail_after(15):  # well below one retry timeout of the server (30 s)
            handles = [await client.rpc(i, "double", n) for n, i in enumerate(ids)]
            results = [await h.result() for h in handles]
        elapsed = time.monotonic() - started
    assert results == [2 * n for n in range(12)]
    assert sorted(ran) == sorted(ids)
    assert elapsed < 15
