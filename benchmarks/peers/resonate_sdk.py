"""The official Resonate Python SDK (``resonate-sdk``) on the shared workloads.

Run in its own environment (Python >= 3.12): ``python resonate_sdk.py --mode local|http
[--url URL] [--raw-url URL] [--quick] [names...]``. Prints ``name value unit tag`` lines like
the main benchmark.

One root is one ``resonate.run`` awaited to its result (each result is checked), as in ours.
``rtt`` (HTTP only) is the client CPU (``time.process_time`` of this process) per ``POST /``
round trip of the SDK's own ``HttpConnection``, to ``--url`` (``rtt.dev``) and to the trivial
server at ``--raw-url`` (``rtt.raw``), measured before any ``Resonate`` runs in the process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from typing import Any

from resonate.connections.http import (  # type: ignore[import-not-found, unused-ignore]
    HttpConnection,
)
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


async def _samples(name: str, measure: Any, reps: int, budget: float) -> list[float]:
    """Up to ``reps`` timings of ``measure()``, fewer once they took ``budget`` seconds, none
    if one repetition takes longer than that (it is cancelled): the SDK is slow at the shared
    sizes (its local mode's sequential steps grow faster than linearly), a run must stay
    bounded. Says so when it cuts."""
    samples: list[float] = []
    for _ in range(reps):
        try:
            samples.append(await asyncio.wait_for(measure(), budget))
        except TimeoutError:
            print(f"# {name}: a repetition did not finish within the {budget:g} s budget; "
                  "no figure", flush=True)
            return []
        if sum(samples) > budget and len(samples) < reps:
            print(f"# {name}: {len(samples)} of {reps} repetitions (over the {budget:g} s "
                  "budget)", flush=True)
            break
    return samples


async def rtt(url: str, n: int, reps: int) -> float:
    """Client CPU (µs) per ``promise.get`` round trip through the SDK's ``HttpConnection``."""
    connection = HttpConnection(url)
    await connection.start()
    body = ('{"kind":"promise.get","head":{"corrId":"c1","version":"2026-04-01"},'
            '"data":{"id":"bench-rtt-missing"}}')
    try:
        for _ in range(min(n, 50)):
            await connection.send(body)
        samples = []
        for _ in range(reps):
            start = time.process_time()
            for _ in range(n):
                await connection.send(body)
            samples.append((time.process_time() - start) / n * 1e6)
    finally:
        await connection.stop()
    return _median(samples)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*")
    parser.add_argument("--mode", default="local", choices=["local", "http"])
    parser.add_argument("--url", default=None)
    parser.add_argument("--raw-url", default=None)
    parser.add_argument("--rtt", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds per workload: no repetition starts after, and one that "
                             "takes longer is cancelled (no figure)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--roots", type=int, default=500)
    parser.add_argument("--rpc", type=int, default=50)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    reps = args.reps
    names = args.names or ["seq_steps", "fanout", "roots", "seq_rpc"]
    tag = f"resonate-sdk.{args.mode}"
    if "rtt" in names and args.mode == "http":
        print(f"rtt.dev {await rtt(args.url, args.rtt, reps):.1f} us/req {tag}", flush=True)
        if args.raw_url is not None:
            print(f"rtt.raw {await rtt(args.raw_url, args.rtt, reps):.1f} us/req {tag}",
                  flush=True)
    group = f"peer{uuid.uuid4().hex[:8]}"
    resonate = Resonate(url=args.url, group=group) if args.mode == "http" else Resonate(
        group=group)
    for fn in (noop, seq_steps, fanout, one_step, seq_rpc):
        resonate.register(fn)

    def timed(fn: Any, *fargs: Any) -> Any:
        async def measure() -> float:
            start = time.perf_counter()
            handle = resonate.run(f"r{uuid.uuid4().hex}", fn, *fargs)
            await handle.result()
            return time.perf_counter() - start
        return measure

    async def roots(n: int) -> float:
        start = time.perf_counter()
        handles = [resonate.run(f"r{uuid.uuid4().hex}", one_step) for _ in range(n)]
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - start
        if results != [1] * n:  # every root ran to its result
            raise SystemExit(f"roots: {sum(r == 1 for r in results)} of {n} returned 1")
        return elapsed

    budget = args.budget
    if "seq_steps" in names:
        n = args.steps
        if samples := await _samples("seq_steps", timed(seq_steps, n), reps, budget):
            print(f"seq_steps {n / _median(samples):.1f} steps/s {tag}", flush=True)
    if "fanout" in names:
        n = args.fanout
        if samples := await _samples("fanout", timed(fanout, n), reps, budget):
            print(f"fanout {n / _median(samples):.1f} children/s {tag}", flush=True)
    if "roots" in names:
        n = args.roots
        if samples := await _samples("roots", lambda: roots(n), reps, budget):
            print(f"roots {n / _median(samples):.1f} roots/s {tag}", flush=True)
    if "seq_rpc" in names:
        n = args.rpc
        if samples := await _samples("seq_rpc", timed(seq_rpc, n), reps, budget):
            print(f"seq_rpc.{n} {_median(samples) / n * 1000:.3f} ms/call {tag}", flush=True)
    await resonate.stop()


if __name__ == "__main__":
    asyncio.run(main())
