"""A worker process, written the way the docs tell users to write one.

``python -m tests.multiprocess.worker_app URL GROUP LOGFILE [TTL [GRACE]]``: registers the
functions below and serves them until SIGINT/SIGTERM (``asyncio.run(main())`` around
``await resonate.serve()``), with ``shutdown_grace=GRACE`` when given. Every execution of a
function appends ``start|end NAME ID PID`` to LOGFILE (fsynced), so tests can count who ran
what, and how often.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import structlog

from resonate_async import Context, Resonate


def note(log_path: str, line: str) -> None:
    with open(log_path, "a") as f:
        f.write(f"{line} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


def started_before(log_path: str, name: str, id: str) -> bool:
    with open(log_path) as f:
        return any(line.split()[:3] == ["start", name, id] for line in f)


def build(url: str, group: str, log_path: str, ttl: float,
          grace: float | None = None) -> Resonate:
    resonate = (Resonate(url=url, group=group, ttl=ttl) if grace is None
                else Resonate(url=url, group=group, ttl=ttl, shutdown_grace=grace))

    def nap(id: str) -> str:
        """A sync step that blocks its thread for ten minutes the first time it runs."""
        first = not started_before(log_path, "nap", id)
        note(log_path, f"start nap {id}")
        if first:
            time.sleep(600)
        note(log_path, f"end nap {id}")
        return "rested"

    resonate.register(nap)

    @resonate.register
    async def sleepy(ctx: Context, count: int, seconds: float) -> int:
        note(log_path, f"start sleepy {ctx.info.id}")
        await ctx.run(nap, ctx.info.id)
        note(log_path, f"end sleepy {ctx.info.id}")
        return 0

    @resonate.register
    async def leaf(ctx: Context, n: int, seconds: float) -> int:
        note(log_path, f"start leaf {ctx.info.id}")
        await asyncio.sleep(seconds)
        note(log_path, f"end leaf {ctx.info.id}")
        return n * n

    @resonate.register
    async def fanout(ctx: Context, count: int, seconds: float) -> int:
        note(log_path, f"start fanout {ctx.info.id}")
        handles = [await ctx.rpc("leaf", n, seconds).spawn() for n in range(count)]
        squares: list[int] = [await h for h in handles]
        total = sum(squares)
        note(log_path, f"end fanout {ctx.info.id}")
        return total

    return resonate


async def main(url: str, group: str, log_path: str, ttl: float,
               grace: float | None = None) -> None:
    resonate = build(url, group, log_path, ttl, grace)
    async with resonate:  # connected (bounded wait) when the body starts
        note(log_path, "ready worker -")
        await resonate.serve()  # until SIGINT/SIGTERM; held tasks are released on exit
    note(log_path, "stopped worker -")


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3],
                     float(sys.argv[4]) if len(sys.argv) > 4 else 2.0,
                     float(sys.argv[5]) if len(sys.argv) > 5 else None))
