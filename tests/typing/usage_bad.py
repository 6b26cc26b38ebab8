"""Mistakes the type checker must catch (checked by test_typing.py; never imported)."""

from __future__ import annotations

from dataclasses import dataclass

from resonate_async import Context, PromiseRecord, Resonate

resonate = Resonate()


def add(a: int, b: int) -> int:
    return a + b


@dataclass
class Approval:
    approved: bool


async def human(ctx: Context) -> None:
    flag: int = await ctx.promise(type=Approval)  # E: Approval is not int
    print(flag)


def read_record(record: PromiseRecord) -> None:
    text: str = record.result(int)  # E: int is not str
    print(text)


async def workflow(ctx: Context, n: int) -> str:
    wrong_arg = await ctx.run(add, "one", 2)  # E: str is not int
    missing = await ctx.run(add, 1)  # E: missing b
    text: str = await ctx.run(add, 1, 2)  # E: int is not str
    return f"{wrong_arg} {missing} {text}"


async def main() -> None:
    async with resonate:
        await resonate.run("bad-1", workflow, "three")  # E: str is not int
        handle = await resonate.run("bad-2", workflow, 3)
        number: int = await handle  # E: str is not int
        print(number)
        opts = resonate.options(timeout=5)
        # one line: mypy versions differ on which line of a wrapped call they report
        optioned: int = await (await opts.run("bad-3", workflow, 3))  # E: str is not int
        print(optioned)
        await resonate.options(timeout=5).run("bad-4", workflow, "x")  # E: str is not int
