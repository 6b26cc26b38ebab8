"""The workloads: each runs against a fresh ``Resonate`` and returns its figures.

A workload never asserts on speed: it measures (median of ``reps`` repetitions) and reports.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from resonate_async import Context, NotFoundError, Resonate
from resonate_async.protocol import TaskSearch

Connect = Callable[[], Resonate]


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``name value unit``; ``higher`` tells which way is better."""

    name: str
    value: float
    unit: str
    higher: bool


@dataclass(frozen=True)
class Sizes:
    """How big each workload is (``quick`` shrinks them to a smoke test)."""

    seq_steps: int = 1000
    fanout: int = 1000
    seq_rpc: tuple[int, ...] = (50, 200, 400, 800)
    roots: int = 500
    replay: int = 10_000
    replay_http: int = 1000
    suspended: int = 10_000
    rtt: int = 2000  # round trips per sample of the client CPU figure
    inflight: tuple[int, ...] = (1, 8, 32, 64)  # the points of the roots@http curve
    inflight_roots: int = 256  # roots per point of that curve
    counted_roots: int = 50  # roots of the counting run (requests per root)
    full_steps: tuple[int, ...] = (250, 500, 1000)  # seq_steps against full preloads
    scaling_workers: tuple[int, ...] = (1, 2, 4)  # worker processes of the scaling curve
    scaling_roots: int = 500  # roots per point of that curve
    reps: int = 3


QUICK = Sizes(seq_steps=20, fanout=20, seq_rpc=(3, 5), roots=10, replay=50, replay_http=50,
              suspended=20, rtt=20, inflight=(1, 4), inflight_roots=8, counted_roots=4,
              full_steps=(5, 10), scaling_workers=(1, 2), scaling_roots=8, reps=1)


# the functions under test --------------------------------------------------------------------
async def noop() -> None:
    return None


async def rnoop(ctx: Context) -> None:
    return None


async def seq_steps(ctx: Context, n: int) -> int:
    for _ in range(n):
        await ctx.run(noop)
    return n


async def fanout(ctx: Context, n: int) -> int:
    handles = [await ctx.run(noop).spawn() for _ in range(n)]
    for h in handles:
        await h
    return n


async def one_step(ctx: Context) -> int:
    await ctx.run(noop)
    return 1


async def seq_rpc(ctx: Context, n: int) -> int:
    for _ in range(n):
        await ctx.rpc(rnoop)
    return n


async def gated(ctx: Context, n: int) -> int:
    for _ in range(n):
        await ctx.run(noop)
    await ctx.promise().options(id="gate")
    return n


async def parked(ctx: Context) -> None:
    await ctx.promise()


FUNCTIONS = (rnoop, seq_steps, fanout, one_step, seq_rpc, gated, parked)


def register(resonate: Resonate) -> Resonate:
    for fn in FUNCTIONS:
        resonate.register(fn)
    return resonate


def _any(fn: Any) -> Any:
    """A durable function as ``run`` takes it (its overloads do not model the ctx argument)."""
    return fn


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


async def _timed(make: Callable[[], Awaitable[Any]], reps: int) -> float:
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        await make()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def _run(resonate: Resonate, fn: Any, *args: Any) -> Any:
    handle = await resonate.run(uid(fn.__name__), _any(fn), *args)
    return await handle.result()


# workloads -----------------------------------------------------------------------------------
async def bench_seq_steps(connect: Connect, sizes: Sizes) -> list[Figure]:
    n = sizes.seq_steps
    async with register(connect()) as r:
        t = await _timed(lambda: _run(r, seq_steps, n), sizes.reps)
    return [Figure("seq_steps", n / t, "steps/s", True)]


async def bench_fanout(connect: Connect, sizes: Sizes) -> list[Figure]:
    n = sizes.fanout
    async with register(connect()) as r:
        t = await _timed(lambda: _run(r, fanout, n), sizes.reps)
    return [Figure("fanout", n / t, "children/s", True)]


async def bench_seq_rpc(connect: Connect, sizes: Sizes) -> list[Figure]:
    out = []
    async with register(connect()) as r:
        for n in sizes.seq_rpc:
            t = await _timed(lambda n=n: _run(r, seq_rpc, n), sizes.reps)  # type: ignore[misc]
            out.append(Figure(f"seq_rpc.{n}", t / n * 1000, "ms/call", False))
    if len(sizes.seq_rpc) >= 2:
        # per call = a + slope * N: what each resumption's replay of the earlier calls adds
        slope = fit_slope([float(n) for n in sizes.seq_rpc], [f.value for f in out])
        out.append(Figure("seq_rpc.slope", slope * 1000, "us/N", False))
    return out


def fit_slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ``ys`` against ``xs`` (at least two distinct ``xs``)."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise ValueError(f"fit_slope needs two or more distinct x values, got {xs!r}")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            / sum((x - mx) ** 2 for x in xs))


async def bench_roots(connect: Connect, sizes: Sizes) -> list[Figure]:
    n = sizes.roots

    async def wave() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(_run, r, one_step)

    async with register(connect()) as r:
        t = await _timed(wave, sizes.reps)
    figures = [Figure("roots", n / t, "roots/s", True)]
    if r.url is not None:
        from benchmarks._http_workloads import requests_per_root

        figures.append(await requests_per_root(r.url, sizes.counted_roots))
    return figures


async def bench_replay(connect: Connect, sizes: Sizes) -> list[Figure]:
    """Resume of a function whose preload holds ``n`` settled steps: time per cached step.

    Over HTTP, building that history costs O(n^2) (every fence answer carries the whole
    preload, protocol.md §6), so the HTTP mode uses ``replay_http`` steps.
    """
    n = sizes.replay_http if connect().url is not None else sizes.replay
    samples = []
    async with register(connect()) as r:
        for _ in range(sizes.reps):
            root = uid("replay")
            handle = await r.run(root, _any(gated), n)
            gate = f"{root}:gate"
            while True:  # the first run executes the n steps, then waits on the gate
                try:
                    await r.promises.get(gate)
                    break
                except NotFoundError:
                    await anyio.sleep(0.01)
            await _wait_suspended(r, {root})
            start = time.perf_counter()
            await r.promises.resolve(gate, None)
            await handle.result()
            samples.append(time.perf_counter() - start)
    t = statistics.median(samples)
    return [Figure("replay", t / n * 1e6, "us/step", False)]


async def _wait_suspended(r: Resonate, ids: set[str]) -> None:
    """Until every task in ``ids`` is suspended (by paging through task.search)."""
    while True:
        found: set[str] = set()
        cursor: str | None = None
        while True:
            page = await r.send(TaskSearch("suspended", 1000, cursor))
            found.update(t.id for t in page.data.tasks if t.id in ids)
            cursor = page.data.cursor
            if cursor is None:
                break
        if found >= ids:
            return
        await anyio.sleep(0.05)


WORKLOADS: dict[str, Callable[[Connect, Sizes], Awaitable[list[Figure]]]] = {
    "seq_steps": bench_seq_steps,
    "fanout": bench_fanout,
    "seq_rpc": bench_seq_rpc,
    "roots": bench_roots,
    "replay": bench_replay,
}
