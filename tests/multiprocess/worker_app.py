"""A worker process, written the way the docs tell users to write one.

``python -m tests.multiprocess.worker_app URL GROUP LOGFILE [TTL]``: registers the functions
below and serves them until SIGINT/SIGTERM (``asyncio.run(main())`` around
``await resonate.serve()``). Every execution of a function appends ``start|end NAME ID PID``
to LOGFILE (fsynced), so tests can count who ran what, and how often.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import structlog

from resonate_async import Context, Resonate


def note(log_path: str, line: str) -> None:
    with open(log_path, "a") as f:
        f.write(f"{line} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


def build(url: str, group: str, log_path: str, ttl: float) -> Resonate:
    resonate = Resonate(url=url, group=group, ttl=ttl)

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


async def main(url: str, group: str, log_path: str, ttl: float) -> None:
    resonate = build(url, group, log_path, ttl)
    async with resonate:  # connected (bounded wait) when the body starts
        note(log_path, "ready worker -")
        await resonate.serve()  # until SIGINT/SIGTERM; held tasks are released on exit
    note(log_path, "stopped worker -")


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3],
                     float(sys.argv[4]) if len(sys.argv) > 4 else 2.0))
