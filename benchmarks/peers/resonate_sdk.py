"""The official Resonate Python SDK (``resonate-sdk``) on the shared workloads.

Run in its own environment (Python >= 3.12): ``python resonate_sdk.py --mode local|http
[--url URL] [--quick] [names...]``. Prints ``name value unit`` lines like the main benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from typing import Any

from resonate.context import Context  # type: ignore[import-not-found, unused-ignore]
from resonate.resonate import Resonate  # type: ignore[import-not-found, unused-ignore]


def noop(ctx: Context) -> None:
    return None


async def seq_steps(ctx: Context, n: int) -> int:
    for _ in range(n):
        await ctx.run(noop)
    return n


async def fanout(ctx: Context, n: int) -> int:
    futures = [ctx.run(noop) for _ in range(n)]
    for f in futures:
        await f
    return n


async def one_step(ctx: Context) -> int:
    await ctx.run(noop)
    return 1


async def seq_rpc(ctx: Context, n: int) -> int:
    for _ in range(n):
        await ctx.rpc(noop)
    return n


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*")
    parser.add_argument("--mode", default="local", choices=["local", "http"])
    parser.add_argument("--url", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--roots", type=int, default=500)
    parser.add_argument("--rpc", type=int, default=50)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    reps = args.reps
    group = f"peer{uuid.uuid4().hex[:8]}"
    resonate = Resonate(url=args.url, group=group) if args.mode == "http" else Resonate(
        group=group)
    for fn in (noop, seq_steps, fanout, one_step, seq_rpc):
        resonate.register(fn)
    names = args.names or ["seq_steps", "fanout", "roots", "seq_rpc"]
    tag = f"resonate-sdk.{args.mode}"

    async def timed(fn: Any, *fargs: Any) -> float:
        start = time.perf_counter()
        handle = resonate.run(f"r{uuid.uuid4().hex}", fn, *fargs)
        await handle.result()
        return time.perf_counter() - start

    if "seq_steps" in names:
        n = args.steps
        t = _median([await timed(seq_steps, n) for _ in range(reps)])
        print(f"seq_steps {n / t:.1f} steps/s {tag}", flush=True)
    if "fanout" in names:
        n = args.fanout
        t = _median([await timed(fanout, n) for _ in range(reps)])
        print(f"fanout {n / t:.1f} children/s {tag}", flush=True)
    if "roots" in names:
        n = args.roots
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            handles = [resonate.run(f"r{uuid.uuid4().hex}", one_step) for _ in range(n)]
            await asyncio.gather(*(h.result() for h in handles))
            samples.append(time.perf_counter() - start)
        print(f"roots {n / _median(samples):.1f} roots/s {tag}", flush=True)
    if "seq_rpc" in names:
        n = args.rpc
        t = _median([await timed(seq_rpc, n) for _ in range(reps)])
        print(f"seq_rpc.{n} {t / n * 1000:.3f} ms/call {tag}", flush=True)
    await resonate.stop()


if __name__ == "__main__":
    asyncio.run(main())
