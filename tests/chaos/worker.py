"""A chaos worker process: ``python -m tests.chaos.worker URL LOG``.

Serves ``chaos_flow`` (a local step with a side effect, then an rpc) until killed. The side
effect appends ``exec <i> <pid>`` to LOG, and the workflow appends ``settled <i> <pid>`` once
the step's settle is acknowledged; both lines are fsync'd, so the log survives SIGKILL and
shows whether a step ran again after it had settled. It also serves ``chaos_poison``, whose
step raises ``SystemExit``: that must reject the workflow, never end the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import structlog

from resonate_async import Context, Never, Resonate


def main(url: str, log_path: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    def note(line: str) -> None:
        os.write(fd, f"{line} {pid}\n".encode())
        os.fsync(fd)

    resonate = Resonate(url=url, group="chaos", ttl=2, concurrency=64)

    async def effect(i: int) -> int:
        note(f"exec {i}")
        return i

    @resonate.register
    async def chaos_leaf(ctx: Context, i: int) -> int:
        return i * 2

    @resonate.register
    async def chaos_flow(ctx: Context, i: int) -> int:
        a = await ctx.run(effect, i)
        note(f"settled {i}")
        b = await ctx.rpc(chaos_leaf, i)
        return a + b

    async def poison_step(i: int) -> int:
        raise SystemExit(f"poison {i}")

    @resonate.register
    async def chaos_poison(ctx: Context, i: int) -> int:
        return await ctx.run(poison_step, i).options(retry=Never())

    asyncio.run(resonate.serve())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
