"""A resonate_async worker for the interop scenarios: ``python resonate_async_worker.py URL GROUP``.

Serves ``cube(n)``; prints ``ready`` once connected, and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

from resonate_async import Context, Resonate


async def main(url: str, group: str) -> None:
    resonate = Resonate(url=url, group=group)

    @resonate.register
    async def cube(ctx: Context, n: int) -> int:
        return n * n * n

    async with resonate:
        print("ready", flush=True)
        await resonate.serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
