"""The workflows the simulator runs: every kind of durable step, with counted side effects,
and the hostile ones of issue 11 (BaseExceptions from steps, a step that never returns before
its timeout, results over the request size limit); ``environment`` gives each seed its
server and workers (size limit, few slots, a worker with the wrong key)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import anyio

from resonate_async import (
    ApplicationError,
    CanceledError,
    Context,
    Never,
    Resonate,
    TimedOutError,
)
from resonate_async.testing import SKIP_TAG, Faults, Workflow, busy, side_effect

REQUEST_LIMIT = 16 * 1024
"""The simulated server's request size limit (bytes) in every seed's environment."""
BIG = 40_000
"""The length of the ``oversized`` workflows' result: well over ``REQUEST_LIMIT`` (and over
the 4 KiB encoded below which the SDK takes a 413 to a settle for garbage, a platform failure
retried with back-off, rather than a refusal of the value). Once 64 KiB: a 40,000-character
result behind an undeclared 16 KiB limit was then retried forever."""


class Declined(Exception):
    """A business error that crosses durable boundaries (registered with the app)."""


class Meltdown(BaseException):
    """A BaseException of the user's own."""


def stray_cancellation() -> BaseException:
    """The running backend's cancellation exception, raised by user code, not by a scope."""
    if anyio.get_cancelled_exc_class() is asyncio.CancelledError:
        return asyncio.CancelledError("raised by user code")
    import trio

    made: BaseException = trio.Cancelled._create()
    return made


BASE_EXCEPTIONS: dict[str, Callable[[], BaseException]] = {
    "SystemExit": lambda: SystemExit(3),
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "Meltdown": lambda: Meltdown("the core is melting"),
    "cancellation": stray_cancellation,
}


class KeyedCipher:
    """A toy ``Encryptor``: XOR with a key, tagged so that another key's data is refused."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.tag = hashlib.sha256(key).digest()[:8]

    def _xor(self, data: bytes) -> bytes:
        stream = (self.key * (len(data) // len(self.key) + 1))[:len(data)]
        return bytes(a ^ b for a, b in zip(data, stream, strict=True))

    def encrypt(self, data: bytes) -> bytes:
        return self.tag + self._xor(data)

    def decrypt(self, data: bytes) -> bytes:
        if data[:8] != self.tag:
            raise ValueError("not encrypted with this key")
        return self._xor(data[8:])


def build_app(encryptor: KeyedCipher | None = None) -> Resonate:
    """An application (never entered itself: the simulator runs copies of it)."""
    app = Resonate(encryptor=encryptor)
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
        await busy(seconds, ctx)  # longer than the lease: only heartbeats keep the task
        return f"slow{seconds}"

    @app.register
    async def slow(ctx: Context, seconds: int) -> list[str]:
        return [await ctx.run(slow_step, seconds), await ctx.run(slow_step, seconds + 1)]

    async def explode(kind: str) -> str:
        raise BASE_EXCEPTIONS[kind]()

    @app.register
    async def explodes(ctx: Context, kind: str) -> str:
        side_effect(ctx)
        raise BASE_EXCEPTIONS[kind]()

    @app.register
    async def poison(ctx: Context, kind: str) -> str:
        """A step and an rpc target raise a BaseException: both fail as ApplicationErrors
        the caller sees (the first caught, the second rejecting the root)."""
        await ctx.run(step, "poison", 0)
        try:
            await ctx.run(explode, kind).options(retry=Never())
        except ApplicationError as exc:
            caught = f"caught {exc}"
        else:
            caught = "not raised?"
        await ctx.run(step, caught[:40], 1)
        await ctx.rpc(explodes, kind).options(retry=Never())
        return "unreachable"

    @app.register
    async def never_returns(ctx: Context) -> str:
        side_effect(ctx)
        await busy(10**6)  # simulated time: only the step's deadline ends it
        return "returned?"

    @app.register
    async def deadline_step(ctx: Context, seconds: int) -> str:
        try:
            await ctx.run(never_returns).options(timeout=seconds, retry=Never())
        except TimedOutError:
            return await ctx.run(step, "cut-off", seconds)
        return "not cut off?"

    @app.register
    async def big_step(ctx: Context) -> str:
        side_effect(ctx)
        return "x" * BIG

    @app.register
    async def oversized(ctx: Context, where: str) -> str:
        """A result over the server's limit: from a step (the step fails with EncodingError,
        uncaught) or from the root itself (rejected with EncodingError)."""
        await ctx.run(step, f"big-{where}", 0)
        if where == "root":
            return "y" * BIG
        return await ctx.run(big_step).options(retry=Never())

    @app.register
    async def nested(ctx: Context, n: int) -> str:
        first = await ctx.run(inner, n)
        second = await ctx.run(inner, n + 1)
        coin = await ctx.random()  # recorded: the same on every replay
        return f"{first}|{second}|{coin >= 0}"

    # durable structured concurrency (issue 14): races and cancellations whose outcome does
    # not depend on timing, so a faulty run must end as the run without faults does
    @app.register
    async def races(ctx: Context, seconds: int) -> str:
        approval = await ctx.promise(timeout=timedelta(hours=1)).options(
            tags={SKIP_TAG: "ignore"}).spawn()  # nobody answers: the reminder always wins
        reminder = await ctx.sleep(seconds).spawn()
        quick = await ctx.run(step, "quick", seconds).spawn()
        never = await ctx.sleep(timedelta(days=1)).spawn()  # far past the simulated end
        local = await ctx.first(quick, never)
        timer = await ctx.first(approval, reminder)
        try:
            await approval
            answer = "answered?"
        except CanceledError:
            answer = "canceled"
        tail = await ctx.run(step, "after-race", seconds)
        won = "reminder" if timer is reminder else timer.id
        return f"{await local} {won} {answer} {tail}"

    @app.register
    async def holds(ctx: Context, seconds: int) -> str:
        side_effect(ctx)
        await ctx.sleep(timedelta(days=1)).spawn()
        await ctx.promise().options(tags={SKIP_TAG: "ignore"}).spawn()
        await ctx.run(step, "held", seconds)
        return "released?"

    @app.register
    async def cancels(ctx: Context, seconds: int) -> list[str]:
        child = await ctx.rpc(holds, seconds).spawn()      # its children are cancelled too
        timer = await ctx.sleep(timedelta(days=2)).spawn()
        await ctx.sleep(seconds)  # by now the child has started (or will never need to)
        out = []
        for handle in (child, timer):
            await handle.cancel()
            try:
                await handle
                out.append("settled?")
            except CanceledError:
                out.append("canceled")
        out.append(await ctx.run(step, "after-cancel", seconds))
        return out

    @app.register
    async def canceled(ctx: Context, seconds: int) -> str:
        """Cancelled from outside (its workflow's ``cancel_after``) while it works: it never
        ends on its own, so every run ends ``rejected_canceled``. Its rpc child holds a timer
        and a promise (descendants to cancel), its detached work must keep running, and slow
        steps run one after another until the cancel stops them."""
        await ctx.detached(detached_child, seconds)
        await ctx.rpc(holds, seconds).spawn()
        await ctx.sleep(timedelta(days=1)).spawn()
        for _ in range(1000):  # far more simulated time than any run has
            await ctx.run(slow_step, seconds)
        return "not canceled?"

    return app


KINDS = ["local_chain", "rpc_chain", "fan_out", "sleeper", "approval", "approval_times_out",
         "errors_caught", "errors_uncaught", "detaches", "nested", "slow", "poison",
         "deadline_step", "oversized", "races", "cancels", "canceled"]


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
        elif kind == "poison":
            args = (rng.choice(sorted(BASE_EXCEPTIONS)),)
        elif kind == "deadline_step":
            args = (rng.randint(2, 30),)
        elif kind == "oversized":
            args = (rng.choice(["step", "root"]),)
        elif kind in ("races", "cancels"):
            args = (rng.randint(1, 20),)
        elif kind == "canceled":
            args = (rng.randint(2, 12),)
        else:
            args = ()
        via: Literal["run", "rpc"] = "rpc" if rng.random() < 0.3 else "run"
        # the root is cancelled from outside mid-run (its steps run one after another)
        after = rng.randint(1, 60) if kind == "canceled" else None
        out.append(Workflow(f"{kind}-{i}", kind, args, via=via, cancel_after=after))
    return out


def environment(seed: int) -> tuple[Resonate, dict[str, Any]]:
    """The application and ``simulate`` arguments of ``seed``: every seed has the request size
    limit (declared to the workers or learnt from refusals), some run the workers with few
    slots, and every third runs encrypted with one worker holding the wrong key."""
    rng = random.Random(seed * 104_729 + 3)
    encrypted = seed % 3 == 2
    app = build_app(KeyedCipher(b"the right key") if encrypted else None)
    return app, {
        "max_request_bytes": REQUEST_LIMIT,
        "declare_limit": rng.random() < 0.5,
        "concurrency": rng.choice([None, None, 2, 4]),
        "miskeyed": KeyedCipher(b"a wrong key") if encrypted else None,
    }


PROFILES = {
    "default": Faults(),
    "aggressive": Faults(drop=0.15, duplicate=0.15, delay=0.2, fail_before=0.05,
                         fail_after=0.05, heartbeat_lost=0.5, crash_on_send=0.03, crash=0.04,
                         stop=0.02, stall=0.04, engine_restart=0.02, duplicate_burst=0.03,
                         task_outage=0.01),
}
