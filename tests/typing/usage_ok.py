"""Typed usage of the public API: must pass ``mypy --strict`` (checked by test_typing.py)."""

from __future__ import annotations

from datetime import timedelta

from resonate_async import Context, Handle, Resonate

resonate = Resonate()


@resonate.register
def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


@resonate.register
async def fetch(url: str) -> bytes:
    return url.encode()


@resonate.register
async def workflow(ctx: Context, n: int) -> str:
    total: int = await ctx.run(add, n, 1, scale=2)
    body: bytes = await ctx.run(fetch, "https://example.com")
    handle: Handle[int] = await ctx.run(add, 1, 2).spawn()
    later: int = await handle
    await ctx.sleep(timedelta(seconds=1))
    return f"{total} {len(body)} {later}"


async def main() -> str:
    async with resonate:
        handle: Handle[str] = await resonate.run("typed-1", workflow, 3)
        result: str = await handle.result(timeout=5)
        return result
