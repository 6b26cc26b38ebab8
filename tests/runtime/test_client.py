"""The Resonate client: idempotent ids, handles, promises, schedules, workers and serve()."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest

from resonate_async import (
    CanceledError,
    Context,
    NotFoundError,
    Resonate,
    TimedOutError,
)
from resonate_async.transport import EmbeddedTransport, WrappedTransport
from tests.runtime.conftest import Connect
from tests.runtime.spy import FailingTransport


async def test_running_an_id_again_returns_the_first_outcome(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []

    @resonate.register
    async def once(ctx: Context, x: int) -> int:
        calls.append(x)
        return x

    async with resonate:
        root = uid("idem")
        first = await resonate.run(root, once, 1)
        with anyio.fail_after(10):
            assert await first == 1
            again = await resonate.run(root, once, 2)
            assert await again == 1
            via_rpc = await resonate.rpc(root, once, 3)
            assert await via_rpc == 1
            got = await resonate.get(root)
            assert await got.result(timeout=5) == 1
            assert await got.done()
    assert calls == [1]


async def test_rpc_runs_on_a_worker_of_the_target_group(
        connect: Connect, uid: Callable[[str], str]) -> None:
    client = connect(worker=False)
    workers = uid("workers")
    worker = connect(group=workers)
    where: list[str] = []

    @worker.register
    async def job(ctx: Context, x: int) -> int:
        where.append(worker.pid)
        return x + 1

    async with worker, client:
        handle = await client.options(target=workers).rpc(uid("job"), "job", 41)
        with anyio.fail_after(10):
            assert await handle == 42
    assert where == [worker.pid]


async def test_rpc_children_spread_over_two_workers(
        connect: Connect, uid: Callable[[str], str]) -> None:
    a, b = connect(), connect()
    seen: set[str] = set()

    def register(r: Resonate) -> None:
        @r.register(name="leaf")
        async def leaf(ctx: Context, i: int) -> int:
            seen.add(r.pid)
            await anyio.sleep(0.01)
            return i

        @r.register(name="root")
        async def root(ctx: Context, n: int) -> int:
            handles = [await ctx.rpc("leaf", i).spawn() for i in range(n)]
            return sum([await h for h in handles])

    register(a)
    register(b)
    async with a, b:
        handle = await a.run(uid("spread"), "root", 20)
        with anyio.fail_after(20):
            assert await handle == sum(range(20))
    assert seen == {a.pid, b.pid}


async def test_handle_result_timeout_leaves_the_work_running(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    gate = anyio.Event()

    @resonate.register
    async def slow(ctx: Context) -> str:
        await ctx.run(gate.wait)
        return "finished"

    async with resonate:
        handle = await resonate.run(uid("slow"), slow)
        with pytest.raises(TimeoutError):
            await handle.result(timeout=timedelta(milliseconds=50))
        assert not await handle.done()
        gate.set()
        with anyio.fail_after(10):
            assert await handle.result() == "finished"


async def test_get_of_an_unknown_id_raises_not_found(resonate: Resonate,
                                                     uid: Callable[[str], str]) -> None:
    async with resonate:
        with pytest.raises(NotFoundError, match="no promise"):
            await resonate.get(uid("nothing"))


async def test_promises_can_be_created_settled_searched_and_awaited(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    async with resonate:
        tag = uid("batch")
        a, b, c = uid("pa"), uid("pb"), uid("pc")
        created = await resonate.promises.create(a, timeout=60, param={"n": 1},
                                                 tags={"batch": tag})
        assert created.pending and created.param == {"n": 1}
        await resonate.promises.create(b, timeout=60, tags={"batch": tag})
        await resonate.promises.create(c, timeout=60, tags={"batch": tag})
        again = await resonate.promises.create(a, timeout=1, param="ignored")
        assert again.param == {"n": 1}  # creation is idempotent by id

        waiting = await resonate.get(a)
        resolved = await resonate.promises.resolve(a, {"ok": True})
        assert resolved.state == "resolved" and resolved.result() == {"ok": True}
        with anyio.fail_after(10):
            assert await waiting == {"ok": True}
        # first writer wins: settling again returns the record as it is
        assert (await resonate.promises.reject(a, "too late")).state == "resolved"

        await resonate.promises.reject(b, ValueError("no"))
        with pytest.raises(ValueError, match="no"):
            await (await resonate.get(b))
        await resonate.promises.cancel(c)
        with pytest.raises(CanceledError):
            await (await resonate.get(c))

        found = [p.id async for p in resonate.promises.search(tags={"batch": tag},
                                                              page_size=2)]
        assert found == sorted([a, b, c])
        rejected = [p.id async for p in resonate.promises.search(state="rejected",
                                                                 tags={"batch": tag})]
        assert rejected == [b]
        with pytest.raises(NotFoundError):
            await resonate.promises.resolve(uid("missing"), 1)


async def test_a_promise_that_times_out_rejects_its_awaiters(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    async with resonate:
        pid = uid("short")
        await resonate.promises.create(pid, timeout=0.1)
        with anyio.fail_after(10), pytest.raises(TimedOutError):
            await (await resonate.get(pid))


async def test_a_workflow_promise_past_its_timeout_raises_timed_out(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def impatient(ctx: Context) -> str:
        try:
            await ctx.promise(timeout=0.1)
        except TimedOutError:
            return "gave up"
        return "approved"

    async with resonate:
        handle = await resonate.run(uid("impatient"), impatient)
        with anyio.fail_after(10):
            assert await handle == "gave up"


async def test_a_schedule_fires_its_function_until_deleted(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    fired: list[str] = []

    @resonate.register
    async def tick(ctx: Context, label: str) -> None:
        fired.append(f"{label}@{ctx.info.id}")

    async with resonate:
        sid = uid("every-second")
        record = await resonate.schedules.create(sid, "* * * * * *", tick, "beat")
        assert record.function == "tick" and record.cron == "* * * * * *"
        assert (await resonate.schedules.get(sid)).id == sid
        assert sid in [s.id async for s in resonate.schedules.search()]
        with anyio.fail_after(10):
            while not fired:
                await anyio.sleep(0.05)
        await resonate.schedules.delete(sid)
        with pytest.raises(NotFoundError):
            await resonate.schedules.get(sid)
        count = len(fired)
        await anyio.sleep(1.5)
    assert fired[0].startswith(f"beat@{sid}-")
    assert len(fired) <= count + 1  # at most one firing was already under way


async def test_stopping_releases_held_tasks_and_another_worker_finishes_them(
        connect: Connect, uid: Callable[[str], str]) -> None:
    first, second = connect(), connect()
    started = anyio.Event()
    runs: list[str] = []

    def register(r: Resonate, block: bool) -> None:
        @r.register(name="long")
        async def long(ctx: Context) -> str:
            await ctx.run(record, r.pid)
            if block:
                started.set()
                await anyio.sleep_forever()
            return "done"

    def record(pid: str) -> None:
        runs.append(pid)

    register(first, block=True)
    register(second, block=False)
    root = uid("long")
    async with second:
        async with first:
            await first.run(root, "long")
            with anyio.fail_after(10):
                await started.wait()
        # first stopped: its task was released and goes to the second worker. Over HTTP a
        # server that has not yet seen first's stream close may route the re-dispatch there
        # (lost, then re-sent after the 30 s retry timeout): 45 s covers that and still
        # tells a release from a lease expiry (ttl 60 s)
        with anyio.fail_after(45):
            assert await (await second.get(root)) == "done"
    assert runs[0] == first.pid


async def test_serve_runs_until_cancelled(connect: Connect, uid: Callable[[str], str]) -> None:
    worker = connect()
    client = connect(worker=False)

    @worker.register
    async def job(ctx: Context) -> str:
        return "served"

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.serve)
        async with client:
            with anyio.fail_after(10):
                while not worker.running:
                    await anyio.sleep(0.01)
                handle = await client.rpc(uid("served"), "job")
                assert await handle == "served"
        tg.cancel_scope.cancel()
    assert not worker.running


async def test_the_concurrency_cap_bounds_running_executions(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(concurrency=2)
    active = 0
    peak = 0

    @resonate.register
    async def busy(ctx: Context) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await anyio.sleep(0.05)
        active -= 1

    async with resonate:
        handles = [await resonate.rpc(uid("busy"), busy) for _ in range(6)]
        with anyio.fail_after(20):
            for h in handles:
                await h
    assert peak == 2


async def test_heartbeats_keep_a_long_step_from_being_taken_over(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(ttl=1.0)
    runs: list[int] = []

    @resonate.register
    async def long_step() -> None:
        runs.append(1)
        await anyio.sleep(2.2)  # two lease lengths: renewed by heartbeats (every ttl/2)

    @resonate.register
    async def flow(ctx: Context) -> str:
        await ctx.run(long_step)
        return "ok"

    async with resonate:
        handle = await resonate.run(uid("hb"), flow)
        with anyio.fail_after(10):
            assert await handle == "ok"
    assert runs == [1]


async def test_a_platform_failure_releases_the_task_and_the_replay_finishes_it(
        connect: Connect, uid: Callable[[str], str]) -> None:
    failing: list[FailingTransport] = []

    def wrap(transport: object) -> FailingTransport:
        # the settle of step 2: the 2nd fence where a step is one write (in-process
        # engines record it settled), else the 4th (create, settle, create, settle)
        nth = 2 if getattr(transport, "records_steps", False) else 4
        failing.append(FailingTransport(transport, "task.fence", nth))
        return failing[0]

    resonate = connect(wrap=wrap)
    runs: list[int] = []

    @resonate.register
    def step(i: int) -> int:
        runs.append(i)
        return i

    @resonate.register
    async def flow(ctx: Context) -> int:
        return await ctx.run(step, 1) + await ctx.run(step, 2)

    async with resonate:
        handle = await resonate.run(uid("platform"), flow)
        with anyio.fail_after(40):
            assert await handle == 3
    log = failing[0].log
    assert ("task.release", 200) in log
    assert log.count(("task.fulfill", 200)) == 1
    assert runs == [1, 2, 2]  # step 1 had settled; step 2 never had, so it ran again


class _LossyTransport(WrappedTransport):
    """An embedded engine whose unicast messages (unblocks) never arrive, as during a break of
    a server's event stream, and whose stream "reconnects" when the test says so."""

    delivers_all = False

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.on_connect: Callable[[], None] | None = None

    def subscribe(self, group: str, pid: str, *, accepts_work: bool = True,
                  on_connect: Callable[[], None] | None = None) -> Any:
        self.on_connect = on_connect
        if on_connect is not None:
            on_connect()  # the first connection
        return self.inner.subscribe(group, f"{pid}-elsewhere", accepts_work=accepts_work)

    def reconnect(self) -> None:
        assert self.on_connect is not None
        self.on_connect()


async def test_listeners_are_registered_again_as_soon_as_the_stream_reconnects() -> None:
    shared = EmbeddedTransport()
    lossy = _LossyTransport(shared)
    waiting = Resonate(transport=lossy, worker=False, listen_interval=3600)
    other = Resonate(transport=shared, worker=False)
    async with waiting, other:
        await other.promises.create("approval-7", timeout=60)
        handle = await waiting.get("approval-7")
        result: list[object] = []

        async def wait() -> None:
            result.append(await handle)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.05)
            await other.promises.resolve("approval-7", "yes")  # its unblock is lost
            await anyio.sleep(0.2)
            assert result == []  # nothing arrived; the periodic refresh is an hour away
            lossy.reconnect()
            with anyio.fail_after(5):
                while not result:
                    await anyio.sleep(0.01)
    assert result == ["yes"]
