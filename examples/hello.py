"""Hello, durable world.

``hello`` is a durable function: an ordinary ``async def`` whose first parameter is a
``Context``. Each ``await ctx.run(...)`` is a step whose result is stored before it is returned,
so if the process crashed after ``greet`` ran, a replay would reuse the stored greeting instead
of running ``greet`` again. The id ``"hello-1"`` names the execution: running it twice is safe.
"""

import asyncio

from resonate_async import Context, Resonate

resonate = Resonate()  # an embedded engine, in memory


async def greet(name: str) -> str:
    return f"Hello, {name}!"


@resonate.register
async def hello(ctx: Context, name: str) -> str:
    return await ctx.run(greet, name)


async def main() -> None:
    async with resonate:
        handle = await resonate.run("hello-1", hello, "world")
        print(await handle)


if __name__ == "__main__":
    asyncio.run(main())
