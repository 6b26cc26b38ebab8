"""Typed usage of the public API: must pass ``mypy --strict`` (checked by test_typing.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from resonate_async import Context, Handle, PromiseRecord, Resonate

resonate = Resonate()


@resonate.register
def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


@resonate.register
async def fetch(url: str) -> bytes:
    return url.encode()


@dataclass
class Approval:
    approved: bool


@resonate.register
async def approve(ctx: Context) -> bool:
    pending: Handle[Approval] = await ctx.promise(type=Approval).spawn()
    approval: Approval = await pending
    anything = await ctx.promise(timeout=60)
    ctx.log.info("approval_received", approved=approval.approved, other=anything)
    return approval.approved


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


async def with_options() -> int:
    async with resonate:
        handle: Handle[int] = await resonate.options(timeout=60).run("typed-2", add, 1, 2)
        remote: Handle[str] = await resonate.options(target="poll://any@other").rpc(
            "typed-3", workflow, 4)
        print(await remote)
        return await handle


def read_record(record: PromiseRecord) -> int:
    count: int = record.result(int)
    approval: Approval = record.result(Approval)
    print(approval.approved, record.result())
    return count


async def configured() -> None:
    remote = Resonate(url="http://localhost:8001", request_timeout=2.5,
                      retry_for=timedelta(seconds=5))
    async with remote:
        pass
