"""How an embedded SQLite ``Resonate(path=...)`` behaves as its database grows.

``python -m benchmarks.sqlite_growth [--only rss|steps|long] [--workflows N] [--value-mb M]
[--steps-small N] [--steps-large N] [--long N] [--long-steps N]`` runs three measurements, each
on a fresh database file in a temporary directory, and prints ``# ...`` progress lines and
figures (times as wall and CPU time: CPU time is the steadier on a loaded machine):

* ``rss``: ``--workflows`` workflows (default 600), each one step whose result is a
  ``--value-mb`` MB string (default 1); the process RSS and the database size every 100
  workflows. With bounded caches the RSS stays flat while the database grows.
* ``steps``: the cost of one step (``ctx.run`` of a no-op) measured on a workflow of 1,000 steps
  when the database holds ``--steps-small`` steps (default 1,000), then again once it holds
  ``--steps-large`` (default 50,000); then the cost per step of one workflow of
  ``--steps-small`` steps and of one of ``--steps-large`` steps (its own branch grows).
* ``long``: ``--long`` workflows (default 2,000) of ``--long-steps`` steps (default 10) run
  one after the other by one worker; throughput of the first and of the last 500.

No figure is checked: this prints, a person reads.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import anyio

from benchmarks._modes import quiet_logs
from resonate_async import Context, Resonate


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _db_mb(path: str) -> float:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)) / 2**20


async def _noop() -> None:
    return None


def _register(r: Resonate) -> dict[str, Any]:
    async def big(size: int) -> str:
        return "x" * size

    async def big_workflow(ctx: Context, size: int) -> int:
        value = await ctx.run(big, size)
        return len(value)

    async def steps(ctx: Context, n: int) -> int:
        for _ in range(n):
            await ctx.run(_noop)
        return n

    return {f.__name__: r.register(f) for f in (big, big_workflow, steps)}


async def _result(r: Resonate, id: str, fn: Callable[..., Any], *args: Any) -> Any:
    handle = await r.run(id, fn, *args)
    return await handle.result()


class _Timed:
    """Wall and CPU time per item of a block (CPU time is the steadier on a loaded machine)."""

    def __init__(self, items: int) -> None:
        self.items = items
        self.wall = self.cpu = 0.0

    def __enter__(self) -> _Timed:
        gc.collect()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def __str__(self) -> str:
        return (f"{self.wall / self.items * 1e6:.0f} us/step "
                f"(cpu {self.cpu / self.items * 1e6:.0f} us/step)")


async def rss(tmp: str, workflows: int, value_mb: float) -> None:
    path = os.path.join(tmp, "rss.db")
    size = int(value_mb * 2**20)
    r = Resonate(path=path)
    fns = _register(r)
    async with r:
        gc.collect()
        print(f"# rss: {workflows} workflows, one {value_mb:g} MB step result each", flush=True)
        print(f"rss.start {_rss_mb():.1f} MB db {_db_mb(path):.1f} MB", flush=True)
        for i in range(1, workflows + 1):
            assert await _result(r, f"big-{i}", fns["big_workflow"], size) == size
            if i % 100 == 0 or i == workflows:
                gc.collect()
                print(f"rss.after_{i} {_rss_mb():.1f} MB db {_db_mb(path):.1f} MB", flush=True)


async def steps(tmp: str, small: int, large: int) -> None:
    """Per-step cost on a batch of 1,000 steps, with ``small`` then ``large`` in the database."""
    path = os.path.join(tmp, "steps.db")
    r = Resonate(path=path)
    fns = _register(r)
    batch, chunk = min(1000, max(small, 1)), 1000
    held = 0
    print(f"# steps: per-step cost of {batch} steps with {small:,} then {large:,} in the "
          "database", flush=True)
    async with r:
        for target in (small, large):
            while held < target:
                n = min(chunk, target - held)
                await _result(r, f"fill-{held}", fns["steps"], n)
                held += n + 1
            with _Timed(batch) as t:
                await _result(r, f"measure-{target}", fns["steps"], batch)
            held += batch + 1
            print(f"steps.at_{target} {t}", flush=True)
        for n in (small, large):  # one workflow of n steps: its own branch grows to n
            with _Timed(n) as t:
                await _result(r, f"single-{n}", fns["steps"], n)
            print(f"steps.single_{n} {t}", flush=True)


async def long(tmp: str, workflows: int, n_steps: int) -> None:
    path = os.path.join(tmp, "long.db")
    r = Resonate(path=path)
    fns = _register(r)
    window = min(500, workflows // 2)
    print(f"# long: {workflows} workflows of {n_steps} steps in one worker", flush=True)
    times: list[tuple[float, float]] = []
    async with r:
        for i in range(workflows):
            start, cpu = time.perf_counter(), time.process_time()
            await _result(r, f"long-{i}", fns["steps"], n_steps)
            times.append((time.perf_counter() - start, time.process_time() - cpu))
    for name, part in (("first", times[:window]), ("last", times[-window:])):
        wall, cpu = sum(t[0] for t in part), sum(t[1] for t in part)
        print(f"long.{name}_{window} {window / wall:.0f} workflows/s "
              f"(cpu {window / cpu:.0f} workflows/s)", flush=True)


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sqlite-growth-") as tmp:
        if args.only in (None, "rss"):
            await rss(tmp, args.workflows, args.value_mb)
        if args.only in (None, "steps"):
            await steps(tmp, args.steps_small, args.steps_large)
        if args.only in (None, "long"):
            await long(tmp, args.long, args.long_steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sqlite_growth")
    parser.add_argument("--only", choices=("rss", "steps", "long"), default=None)
    parser.add_argument("--workflows", type=int, default=600)
    parser.add_argument("--value-mb", type=float, default=1.0)
    parser.add_argument("--steps-small", type=int, default=1000)
    parser.add_argument("--steps-large", type=int, default=50_000)
    parser.add_argument("--long", type=int, default=2000)
    parser.add_argument("--long-steps", type=int, default=10)
    args = parser.parse_args(argv)
    quiet_logs()
    anyio.run(_main, args)


if __name__ == "__main__":
    main()
