"""Fan-out: durable functions that start children and await them.

``await ctx.rpc(fib, n - 1).spawn()`` starts a child execution (on any worker of the group;
here, this process) and returns a ``Handle`` at once; awaiting the handle gives the child's
value. Handles compose with anyio: ``table`` spawns several children and collects them inside
an ``anyio.create_task_group()``. Every child is its own promise, so a crash never recomputes
a finished subtree.
"""

import asyncio

import anyio

from resonate_async import Context, Handle, Resonate

resonate = Resonate()


@resonate.register
async def fib(ctx: Context, n: int) -> int:
    if n <= 1:
        return n
    a = await ctx.rpc(fib, n - 1).spawn()  # both children start now...
    b = await ctx.rpc(fib, n - 2).spawn()
    return await a + await b  # ...and run while we wait for them


@resonate.register
async def table(ctx: Context, ns: list[int]) -> dict[int, int]:
    handles = {n: await ctx.run(fib, n).spawn() for n in ns}
    results: dict[int, int] = {}

    async def collect(n: int, handle: Handle[int]) -> None:
        results[n] = await handle

    async with anyio.create_task_group() as tg:
        for n, handle in handles.items():
            tg.start_soon(collect, n, handle)
    return dict(sorted(results.items()))


async def main() -> None:
    async with resonate:
        handle = await resonate.run("fib-10", fib, 10)
        print("fib(10) =", await handle)
        handle = await resonate.run("fib-table", table, [1, 2, 3, 4, 5, 6, 7, 8])
        print("table:", await handle)


if __name__ == "__main__":
    asyncio.run(main())
