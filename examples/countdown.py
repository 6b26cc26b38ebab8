"""A countdown made of durable timers.

``await ctx.sleep(...)`` is a timer kept by the engine, not by the process: the worker is free
while it waits, and the function resumes by replaying from the top. Replay skips every step
that already settled, so the ``ctx.run(tick, n)`` steps print each number exactly once even
though the loop body runs again on every resume. (A bare ``print`` in the loop would repeat.)
"""

import asyncio

from resonate_async import Context, Resonate

resonate = Resonate()


def tick(n: int) -> None:
    print(f"{n}...", flush=True)


@resonate.register
async def countdown(ctx: Context, count: int, interval: float) -> str:
    for n in range(count, 0, -1):
        await ctx.run(tick, n)
        await ctx.sleep(interval)
    return "liftoff!"


async def main() -> None:
    async with resonate:
        handle = await resonate.run("countdown-1", countdown, 3, 0.2)
        print(await handle)


if __name__ == "__main__":
    asyncio.run(main())
