"""Durable structured concurrency with rpc children (issue 14), on every transport: a parent's
``handle.cancel()`` reaches a child running as a task of its own and that child's own
children (also one created while the cancel is under way), and ``ctx.first`` races an rpc
child against a durable timer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest

from resonate_async import CanceledError, Context, NotFoundError, Resonate
from resonate_async.protocol import PromiseGet, PromiseSearch, PromiseSettle, Request, Response
from resonate_async.transport import WrappedTransport
from tests.runtime._waits import until_exists

Connect = Callable[..., Resonate]


async def test_a_cancelled_rpc_child_that_is_running_stops_within_a_heartbeat(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(ttl=1)
    started, stopped = anyio.Event(), anyio.Event()
    after: list[str] = []

    @resonate.register
    async def encode_video() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()
        return "encoded"

    @resonate.register
    async def child(ctx: Context) -> str:
        await ctx.run(encode_video)
        after.append("child went on")
        return "done"

    @resonate.register
    async def parent(ctx: Context) -> str:
        handle = await ctx.rpc(child).spawn()
        await ctx.run(wait_started)
        await handle.cancel()
        try:
            await handle
        except CanceledError:
            return "child canceled"
        return "child finished"

    async def wait_started() -> None:
        with anyio.fail_after(20):
            await started.wait()
        # A step runs without a promise until it has run for half a lease (one write when
        # it ends); from then on it is pending, where the cancel reaches it.
        await until_exists(resonate, f"{root}:1.1")

    resonate.register(wait_started)
    root = uid("cancel-rpc-running")
    async with resonate:
        handle = await resonate.run(root, parent)
        with anyio.fail_after(20):
            assert await handle == "child canceled"
        with anyio.fail_after(20):  # its worker notices within half a lease (0.5 s here)
            await stopped.wait()
        assert (await resonate.promises.get(f"{root}:1")).state == "rejected_canceled"
        assert (await resonate.promises.get(f"{root}:1.1")).state == "rejected_canceled"
    assert after == []


async def test_cancelling_an_rpc_child_cancels_its_own_pending_children(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def holds(ctx: Context) -> str:
        await ctx.sleep(timedelta(days=1)).spawn()            # :1.1
        await ctx.promise(timeout=timedelta(days=7)).spawn()  # :1.2
        return "joined?"  # waits for both: only the cancel ends it

    @resonate.register
    async def parent(ctx: Context, ready: str) -> str:
        child = await ctx.rpc(holds).spawn()
        await ctx.promise().options(id=ready)  # the test settles it once the grandchildren exist
        await child.cancel()
        try:
            await child
        except CanceledError:
            return "canceled"
        return "settled"

    root = uid("cancel-rpc-tree")
    async with resonate:
        handle = await resonate.run(root, parent, "ready")
        await until_exists(resonate, f"{root}:1.1", f"{root}:1.2", f"{root}:ready")
        await resonate.promises.resolve(f"{root}:ready")
        with anyio.fail_after(20):
            assert await handle == "canceled"
        for below in (f"{root}:1", f"{root}:1.1", f"{root}:1.2"):
            assert (await resonate.promises.get(below)).state == "rejected_canceled", below


async def test_first_returns_an_rpc_child_that_beats_its_deadline_and_cancels_the_timer(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    def lookup(key: str) -> str:
        return f"value of {key}"

    @resonate.register
    async def race(ctx: Context) -> str:
        answer = await ctx.rpc(lookup, "k").spawn()
        deadline = await ctx.sleep(timedelta(hours=1)).spawn()
        if await ctx.first(answer, deadline) is deadline:
            return "gave up"
        return str(await answer)

    root = uid("first-rpc")
    async with resonate:
        with anyio.fail_after(20):  # not the hour: the timer lost and was cancelled
            assert await (await resonate.run(root, race)) == "value of k"
        assert (await resonate.promises.get(f"{root}:2")).state == "rejected_canceled"


async def test_first_returns_the_timer_when_an_rpc_child_is_too_slow_and_cancels_it(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def slow_lookup(ctx: Context, key: str) -> str:
        await ctx.sleep(timedelta(days=1))
        return f"value of {key}"

    async def child_sleeps(child_id: str) -> None:
        # the child's own timer exists only once the child ran (on a loaded machine, it may
        # not have before a short deadline): the race starts when it does
        with anyio.fail_after(20):
            while True:
                try:
                    await resonate.promises.get(f"{child_id}.1")
                    return
                except NotFoundError:
                    await anyio.sleep(0.01)

    @resonate.register
    async def race(ctx: Context) -> str:
        answer = await ctx.rpc(slow_lookup, "k").spawn()
        await ctx.run(child_sleeps, answer.id)
        deadline = await ctx.sleep(0.2).spawn()
        if await ctx.first(answer, deadline) is deadline:
            return "gave up"
        return str(await answer)

    root = uid("first-rpc-slow")
    async with resonate:
        with anyio.fail_after(20):
            assert await (await resonate.run(root, race)) == "gave up"
        # the losing child is cancelled with its own timer
        for below in (f"{root}:1", f"{root}:1.1"):
            assert (await resonate.promises.get(below)).state == "rejected_canceled", below


class _PausedAfterSearch(WrappedTransport):
    """A client connection that, once it has searched for a cancelled root's descendants,
    waits until ``late_id`` exists before going on: a child running elsewhere creates a
    promise between the search and its own cancel (what a slow network makes likely)."""

    def __init__(self, inner: Any, searched: anyio.Event) -> None:
        super().__init__(inner)
        self.searched = searched
        self.late_id = ""

    async def send(self, request: Request) -> Response:
        response = await self.inner.send(request)
        if isinstance(request, PromiseSearch) and not self.searched.is_set():
            self.searched.set()
            with anyio.fail_after(20):
                while (await self.inner.send(PromiseGet(self.late_id))).status != 200:
                    await anyio.sleep(0.01)
        return response


async def test_a_cancel_reaches_what_a_running_child_creates_while_it_is_cancelled(
        connect: Connect, uid: Callable[[str], str]) -> None:
    searched = anyio.Event()
    paused: list[_PausedAfterSearch] = []

    def wrap(transport: Any) -> _PausedAfterSearch:
        paused.append(_PausedAfterSearch(transport, searched))
        return paused[0]

    # ttl 1 s: the running step :1.2 shows (pending) after half a lease, and the test
    # waits for it before it cancels
    worker, client = connect(ttl=1), connect(worker=False, wrap=wrap)

    @worker.register
    async def until_searched() -> None:
        with anyio.fail_after(20):
            await searched.wait()

    @worker.register
    async def child(ctx: Context) -> None:
        await ctx.sleep(timedelta(days=1)).spawn()  # :1.1, found by the cancel's search
        await ctx.run(until_searched)               # :1.2
        await ctx.sleep(timedelta(days=1)).spawn()  # :1.3, created after that search
        await ctx.promise()                         # :1.4, if it gets that far

    @worker.register
    async def parent(ctx: Context) -> None:
        await ctx.rpc(child)

    root = uid("cancel-late-child")
    paused[0].late_id = f"{root}:1.3"
    async with worker, client:
        handle = await worker.run(root, parent)
        await until_exists(client, f"{root}:1.2")
        await client.promises.cancel(root)
        with anyio.fail_after(20), pytest.raises(CanceledError):
            await handle
        for below in (f"{root}:1", f"{root}:1.1", f"{root}:1.3"):
            assert (await client.promises.get(below)).state == "rejected_canceled", below


class _SlowSettles(WrappedTransport):
    """A client connection that is slow after each settle: the workers act in between."""

    async def send(self, request: Request) -> Response:
        response = await self.inner.send(request)
        if isinstance(request, PromiseSettle):
            await anyio.sleep(0.3)
        return response


async def test_a_cancelled_child_ends_canceled_not_failed_by_its_own_cancelled_wait(
        connect: Connect, uid: Callable[[str], str]) -> None:
    """Were the child's promise cancelled after its own (deeper) one, the child would wake up
    in between, see its wait cancelled and fail first: ``rejected``, not ``rejected_canceled``."""
    worker, client = connect(), connect(worker=False, wrap=_SlowSettles)

    @worker.register
    async def waits(ctx: Context) -> str:
        await ctx.promise()  # :1.1: only the cancel ends it
        return "answered"

    @worker.register
    async def parent(ctx: Context) -> str:
        return str(await ctx.rpc(waits))

    root = uid("cancel-order")
    async with worker, client:
        handle = await worker.run(root, parent)
        await until_exists(client, f"{root}:1.1")
        await client.promises.cancel(root)
        with anyio.fail_after(20), pytest.raises(CanceledError):
            await handle
        for below in (f"{root}:1", f"{root}:1.1"):
            assert (await client.promises.get(below)).state == "rejected_canceled", below
