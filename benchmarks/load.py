"""Load: 10,000 workflows through the development server with 4 worker processes.

``python -m benchmarks.load [--workflows N] [--workers W] [--limit SECONDS] [--db]`` starts
``python -m resonate_async dev`` (in memory, or on a SQLite file with ``--db``), W worker
processes (this module with ``--worker URL``) and submits N workflows (``rpc``: any worker
claims each; a workflow is one local step and one rpc), at most ``--concurrency`` in flight.
It prints throughput and submit-to-result latency percentiles as ``name value unit`` lines.
A benchmark, not a test: it never fails on speed; everything is bounded by ``--limit``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

import anyio
import structlog

from resonate_async import Context, Resonate

_PREFIX = "resonate_async dev server listening on "


def _app(url: str | None, *, worker: bool) -> Resonate:
    app = Resonate(url=url, group="load", worker=worker, ttl=10)

    async def double(i: int) -> int:
        return 2 * i

    @app.register
    async def load_leaf(ctx: Context, i: int) -> int:
        return i + 1

    @app.register
    async def load_flow(ctx: Context, i: int) -> int:
        a = await ctx.run(double, i)
        b = await ctx.rpc(load_leaf, i)
        return a + b

    return app


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def _worker(url: str) -> None:
    _quiet()

    async def serve() -> None:
        app = _app(url, worker=True)
        async with app:  # connected: work dispatched from now on reaches this worker
            print("ready", flush=True)
            await app.serve()

    asyncio.run(serve())


def _start_server(db: str | None) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "resonate_async", "dev", "--host", "127.0.0.1", "--port", "0"]
    if db is not None:
        cmd += ["--db", db]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    line = lines.get(timeout=20)
    if not line.startswith(_PREFIX):
        proc.kill()
        raise SystemExit(f"the dev server did not start: {line!r}")
    return proc, line[len(_PREFIX):].strip()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(url: str, count: int, concurrency: int, limit: float) -> None:
    client = _app(url, worker=False)
    latencies: list[float] = []
    failed = 0
    gate = anyio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal failed
        async with gate:
            began = time.perf_counter()
            try:
                handle = await client.rpc(f"load-{os.getpid()}-{i}", "load_flow", i)
                if await handle != 3 * i + 1:
                    failed += 1
                    return
            except Exception:  # a benchmark reports failures, it does not stop on them
                failed += 1
                return
            latencies.append(time.perf_counter() - began)

    async with client:
        began = time.perf_counter()
        with anyio.move_on_after(limit) as scope:
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(one, i)
        elapsed = time.perf_counter() - began
    done = len(latencies)
    print(f"load.workflows_submitted {count} workflows")
    print(f"load.workflows_completed {done} workflows")
    print(f"load.workflows_failed {failed} workflows")
    print(f"load.timed_out {int(scope.cancelled_caught)} bool")
    print(f"load.elapsed {elapsed:.2f} s")
    print(f"load.throughput {done / elapsed:.1f} workflows/s")
    if latencies:
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            print(f"load.latency_{name} {_percentile(latencies, q) * 1000:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load")
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=200,
                        help="workflows in flight at once")
    parser.add_argument("--limit", type=float, default=300.0, help="seconds, at most")
    parser.add_argument("--db", action="store_true", help="the server on a SQLite file")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker)
        return 0
    _quiet()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = _start_server(os.path.join(tmp, "load.db") if args.db else None)
        workers = [subprocess.Popen([sys.executable, "-m", "benchmarks.load", "--worker", url],
                                    stdout=subprocess.PIPE, text=True)
                   for _ in range(args.workers)]
        try:
            for proc in workers:  # submit only once every worker listens
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise SystemExit("a worker did not start")
            print(f"# {args.workflows} workflows, {args.workers} workers, dev server "
                  f"({'sqlite' if args.db else 'memory'}) at {url}")
            anyio.run(_load, url, args.workflows, args.concurrency, args.limit)
        finally:
            procs: list[subprocess.Popen[str]] = [*workers, server]
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
