"""The workflows the simulator runs: every kind of durable step, with counted side effects."""

from __future__ import annotations

import random
from datetime import timedelta

import anyio

from resonate_async import Context, Never, Resonate, TimedOutError
from resonate_async.testing import SKIP_TAG, Faults, Workflow, busy, side_effect


class Declined(Exception):
    """A business error that crosses durable boundaries (registered with the app)."""


def build_app() -> Resonate:
    """An application (never entered itself: the simulator runs copies of it)."""
    app = Resonate()
    app.register_error(Declined)

    @app.register
    async def step(ctx: Context, tag: str, n: int) -> str:
        side_effect(ctx)
        return f"{tag}{n}"

    async def square(n: int) -> int:
        return n * n

    async def boom(what: str) -> str:
        raise ValueError(f"boom {what}")

    async def decline(what: str) -> str:
        raise Declined(what)

    @app.register
    async def local_chain(ctx: Context, n: int) -> list[str]:
        out = []
        for i in range(n):
            out.append(await ctx.run(step, "s", i))
        out.append(str(await ctx.run(square, n)))
        return out

    @app.register
    async def rpc_chain(ctx: Context, depth: int) -> str:
        mark = await ctx.run(step, "r", depth)
        if depth == 0:
            return mark
        below = await ctx.rpc(rpc_chain, depth - 1)
        return f"{mark}>{below}"

    @app.register
    async def fan_out(ctx: Context, n: int) -> list[str]:
        handles = [await ctx.run(step, "f", i).spawn() for i in range(n)]
        remote = [await ctx.rpc(rpc_chain, i % 2).spawn() for i in range(n)]
        results: dict[int, str] = {}

        async def collect(i: int, h: object) -> None:
            results[i] = await h  # type: ignore[misc]

        async with anyio.create_task_group() as tg:
            for i, h in enumerate(handles + remote):
                tg.start_soon(collect, i, h)
        return [results[i] for i in sorted(results)]

    @app.register
    async def sleeper(ctx: Context, seconds: int) -> str:
        a = await ctx.run(step, "before", seconds)
        await ctx.sleep(timedelta(seconds=seconds))
        b = await ctx.run(step, "after", seconds)
        await ctx.sleep(seconds / 2)
        return f"{a}/{b}"

    @app.register
    async def approval(ctx: Context, who: str) -> str:
        ask = await ctx.run(step, f"ask-{who}-", 1)
        handle = await ctx.promise().spawn()
        answer = await handle
        done = await ctx.run(step, "done", 2)
        return f"{ask} {answer} {done}"

    @app.register
    async def approval_times_out(ctx: Context) -> str:
        handle = await ctx.promise(timeout=timedelta(seconds=20)).options(
            tags={SKIP_TAG: "ignore"}).spawn()
        try:
            await handle
        except TimedOutError:
            return await ctx.run(step, "timed-out", 0)
        return "answered?"

    @app.register
    async def failing(ctx: Context, what: str) -> str:
        await ctx.run(step, "failing", 0)
        return await ctx.run(boom, what).options(retry=Never())

    @app.register
    async def errors_caught(ctx: Context) -> list[str]:
        out = []
        try:
            await ctx.run(boom, "local").options(retry=Never())
        except ValueError as exc:
            out.append(f"caught {exc}")
        try:
            await ctx.rpc(failing, "remote")
        except ValueError as exc:
            out.append(f"caught {exc}")
        try:
            await ctx.run(decline, "no").options(retry=Never())
        except Declined as exc:
            out.append(f"declined {exc}")
        out.append(await ctx.run(step, "after-errors", 0))
        return out

    @app.register
    async def errors_uncaught(ctx: Context) -> str:
        await ctx.run(step, "doomed", 0)
        await ctx.rpc(failing, "uncaught")
        return "unreachable"

    @app.register
    async def detached_child(ctx: Context, n: int) -> str:
        await ctx.sleep(n)
        return await ctx.run(step, "detached", n)

    @app.register
    async def detaches(ctx: Context, n: int) -> str:
        await ctx.detached(detached_child, n)
        return await ctx.run(step, "parent", n)

    @app.register
    async def inner(ctx: Context, n: int) -> str:
        side_effect(ctx)
        a = await ctx.run(step, "in", n)
        b = await ctx.rpc(rpc_chain, 0)
        c = await ctx.run(square, n)
        return f"{a}+{b}+{c}"

    @app.register
    async def slow_step(ctx: Context, seconds: int) -> str:
        side_effect(ctx)
        await busy(seconds)  # longer than the lease: only heartbeats keep the task
        return f"slow{seconds}"

    @app.register
    async def slow(ctx: Context, seconds: int) -> list[str]:
        return [await ctx.run(slow_step, seconds), await ctx.run(slow_step, seconds + 1)]

    @app.register
    async def nested(ctx: Context, n: int) -> str:
        first = await ctx.run(inner, n)
        second = await ctx.run(inner, n + 1)
        coin = await ctx.random()  # recorded: the same on every replay
        return f"{first}|{second}|{coin >= 0}"

    return app


KINDS = ["local_chain", "rpc_chain", "fan_out", "sleeper", "approval", "approval_times_out",
         "errors_caught", "errors_uncaught", "detaches", "nested", "slow"]


def workload(seed: int, count: int = 6) -> list[Workflow]:
    """``count`` workflows of varied kinds, with arguments drawn from ``seed``."""
    rng = random.Random(seed * 7919 + 1)
    out = []
    for i in range(count):
        kind = KINDS[(seed + i) % len(KINDS)] if i < len(KINDS) else rng.choice(KINDS)
        args: tuple[object, ...]
        if kind in ("local_chain", "fan_out"):
            args = (rng.randint(1, 4),)
        elif kind in ("rpc_chain", "nested", "detaches"):
            args = (rng.randint(0, 3),)
        elif kind == "slow":
            args = (rng.randint(3, 12),)
        elif kind == "sleeper":
            args = (rng.randint(1, 60),)
        elif kind == "approval":
            args = (f"u{i}",)
        else:
            args = ()
        out.append(Workflow(f"{kind}-{i}", kind, args, via="rpc" if rng.random() < 0.3 else "run"))
    return out


PROFILES = {
    "default": Faults(),
    "aggressive": Faults(drop=0.15, duplicate=0.15, delay=0.2, fail_before=0.05,
                         fail_after=0.05, heartbeat_lost=0.5, crash_on_send=0.03, crash=0.04,
                         stop=0.02, stall=0.04, engine_restart=0.02),
}
