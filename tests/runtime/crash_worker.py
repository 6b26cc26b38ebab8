"""A process that runs a multi-step durable workflow on an embedded SQLite engine.

``python -m tests.runtime.crash_worker DB LOG [STEP_SECONDS]``: each step appends
``start <n> <pid>`` and ``end <n> <pid>`` lines to LOG; the result is printed as ``result=...``.
The crash-safety tests kill it mid-way and start it again on the same DB.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import structlog

from resonate_async import Context, Resonate

STEPS = 8


def main(db: str, log_path: str, step_seconds: float) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    resonate = Resonate(path=db)

    def note(line: str) -> None:
        with open(log_path, "a") as f:
            f.write(f"{line} {os.getpid()}\n")
            f.flush()
            os.fsync(f.fileno())

    @resonate.register
    async def step(n: int) -> int:
        note(f"start {n}")
        await asyncio.sleep(step_seconds)
        note(f"end {n}")
        return n * n

    @resonate.register
    async def workflow(ctx: Context, steps: int) -> int:
        total = 0
        for n in range(steps):
            total += await ctx.run(step, n)
        return total

    async def run() -> None:
        async with resonate:
            handle = await resonate.run("crash-workflow", workflow, STEPS)
            print(f"result={await handle}", flush=True)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.2)
