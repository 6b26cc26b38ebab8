"""Durable structured concurrency across crashes and restarts (issue 14): a cancel, a race, a
registered retry policy, ``ctx.info`` and ``ctx.promise(data=...)`` give the same outcome
when the worker dies at any durable step (``check_replay``) or stops and another finishes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from resonate_async import (
    CanceledError,
    Constant,
    Context,
    NotFoundError,
    Resonate,
    TimedOutError,
)
from resonate_async._errors import TransportError
from resonate_async.protocol import Request, Response
from resonate_async.testing import VirtualClock, check_replay
from resonate_async.transport import WrappedTransport
from tests.runtime._waits import until_exists

Connect = Callable[..., Resonate]
SLACK_MS = 20


# across every crash point (check_replay) -----------------------------------------------------


async def test_cancelling_an_rpc_child_replays_the_same_outcome_across_crashes(
        resonate: Resonate) -> None:
    @resonate.register
    async def waits(ctx: Context) -> str:
        await ctx.sleep(timedelta(days=3))  # far later than the cancel
        return "woke"

    @resonate.register
    def note(what: str) -> str:
        return f"noted {what}"

    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        child = await ctx.rpc(waits).spawn()
        await ctx.sleep(timedelta(hours=1))  # the child runs, and waits on its own sleep
        await child.cancel()
        try:
            await child
            outcome = "settled"
        except CanceledError:
            outcome = "canceled"
        return [outcome, await ctx.run(note, outcome)]

    report = await check_replay(resonate, flow)
    assert report.value == ["canceled", "noted canceled"]
    assert any("task.fence settle" in w and w.endswith(":1") for w in report.descriptions)


async def test_first_of_local_steps_replays_its_winner_across_crashes(
        resonate: Resonate) -> None:
    @resonate.register
    async def quick() -> str:
        return "quick"

    @resonate.register
    async def stuck() -> str:
        await anyio.sleep_forever()  # only the race's cancel ends it
        return "stuck"

    @resonate.register
    async def race(ctx: Context) -> list[str]:
        slow = await ctx.run(stuck).spawn()
        fast = await ctx.run(quick).spawn()
        winner = await ctx.first(slow, fast)
        try:
            await slow
            loser = "settled"
        except CanceledError:
            loser = "canceled"
        return [await winner, loser]

    report = await check_replay(resonate, race)
    assert report.value == ["quick", "canceled"]


async def test_first_of_an_rpc_child_and_a_sleep_replays_its_winner_across_crashes(
        resonate: Resonate) -> None:
    @resonate.register
    def lookup(key: str) -> str:
        return f"value of {key}"

    @resonate.register
    async def race(ctx: Context) -> str:
        answer = await ctx.rpc(lookup, "k").spawn()
        deadline = await ctx.sleep(timedelta(minutes=5)).spawn()
        if await ctx.first(answer, deadline) is deadline:
            return "gave up"
        return str(await answer)

    report = await check_replay(resonate, race)
    assert report.value == "value of k"


def always_down() -> None:
    raise ConnectionError("down")


async def test_a_leaf_rpc_target_and_a_leaf_root_keep_their_policy_across_crashes(
        resonate: Resonate) -> None:
    resonate.register(retry=Constant(max_retries=2, wait=5))(always_down)

    @resonate.register
    async def flow(ctx: Context) -> str:
        try:
            await ctx.rpc(always_down)
        except ConnectionError as exc:
            return f"rpc gave up: {exc}"
        return "unreachable"

    assert (await check_replay(resonate, flow)).value == "rpc gave up: down"
    root = await check_replay(resonate, always_down)
    assert isinstance(root.error, ConnectionError)


async def test_info_is_the_same_on_every_replay_but_the_attempt(resonate: Resonate) -> None:
    @resonate.register
    async def child(ctx: Context) -> list[str]:
        info = ctx.info
        return [info.origin, info.branch, info.tags.get("team", "-")]

    @resonate.register
    def step() -> int:
        return 1

    @resonate.register
    async def flow(ctx: Context) -> list[Any]:
        mine = ctx.info
        await ctx.run(step)  # a durable write: a crash point between the two reads
        origin, branch, team = await ctx.rpc(child).options(tags={"team": "ledger"})
        again = ctx.info
        return [mine.origin == mine.id == mine.branch, mine.function,
                origin == mine.origin, branch == f"{mine.id}:2", team,
                (again.origin, again.branch, again.tags) == (mine.origin, mine.branch, mine.tags)]

    report = await check_replay(resonate, flow)
    assert report.value == [True, "flow", True, True, "ledger", True]


async def test_promise_data_is_the_same_param_after_a_crash(resonate: Resonate) -> None:
    @resonate.register
    async def expense(ctx: Context) -> str:
        decision = await ctx.promise(data={"amount": 120}, timeout=timedelta(hours=1)).spawn()
        try:
            await decision
        except TimedOutError:
            return "nobody answered"
        return "answered?"

    report = await check_replay(resonate, expense)
    assert report.value == "nobody answered"  # the same promise (same param) on every replay


# a worker that stops or dies, and another that carries on -----------------------------------


def _retrying_apps(connect: Connect, policy: Constant, timeout: float,
                   attempts: list[tuple[str, float]]) -> tuple[Resonate, Resonate, anyio.Event]:
    """Two workers of one group running ``flow``, whose step ``flaky`` always fails. The
    first worker's clock stands still, so it is between two retries until it stops (however
    loaded the machine); the second runs on real time."""
    first = connect(clock=VirtualClock(datetime.now(UTC), auto_advance=False))
    second = connect()
    failed_on_first = anyio.Event()

    for app in (first, second):
        def register(app: Resonate = app) -> None:
            @app.register(name="flaky", retry=policy)
            async def flaky() -> None:
                attempts.append((app.pid, time.time() * 1000))
                if app is first:
                    failed_on_first.set()
                raise ConnectionError(f"down for {app.pid}")

            @app.register(name="flow")
            async def flow(ctx: Context) -> str:
                try:
                    await ctx.run(flaky).options(timeout=timeout)
                except ConnectionError as exc:
                    return f"gave up: {exc}"
                except TimedOutError:  # the deadline passed during the last attempt
                    return "timed out"
                return "unreachable"

        register()
    return first, second, failed_on_first


async def _stop_first_between_retries(first: Resonate, second: Resonate, root: str,
                                      failed_on_first: anyio.Event,
                                      hold: float = 0.0) -> tuple[str, float]:
    """Run ``root`` on ``first``, stop it ``hold`` seconds after its first attempt; ``second``
    finishes it. Returns the outcome and the step's deadline (ms since the epoch)."""
    async with second:
        async with first:
            await first.run(root, "flow")
            with anyio.fail_after(20):
                await failed_on_first.wait()
            await anyio.sleep(hold)
        # the first stopped while its step waited for a retry: it released the task
        with anyio.fail_after(60):
            outcome = await (await second.get(root))
        step = await second.promises.get(f"{root}:1")
    return str(outcome), step.timeout_at.timestamp() * 1000


async def test_a_restart_between_retries_starts_a_fresh_count_within_the_same_deadline(
        connect: Connect, uid: Callable[[str], str]) -> None:
    """What the README says of crashes and retries: the count lives in the worker, the
    deadline in the promise. The worker that resumes the task runs the step from a fresh
    count (1 + max_retries attempts of its own, whatever the first spent)."""
    attempts: list[tuple[str, float]] = []
    first, second, failed = _retrying_apps(connect, Constant(max_retries=2, wait=0.05), 600,
                                           attempts)
    outcome, deadline = await _stop_first_between_retries(first, second, uid("fresh"), failed)
    assert outcome == f"gave up: down for {second.pid}"
    assert [pid for pid, _ in attempts] == [first.pid] + [second.pid] * 3
    assert all(at < deadline for _, at in attempts)


async def test_the_step_deadline_bounds_retries_across_a_restart(
        connect: Connect, uid: Callable[[str], str]) -> None:
    """The deadline lives in the step's promise: the worker that resumes the task retries
    only until then, however late it resumes (here: half the step's timeout later)."""
    attempts: list[tuple[str, float]] = []
    first, second, failed = _retrying_apps(connect, Constant(max_retries=100_000, wait=0.1), 2,
                                           attempts)
    outcome, deadline = await _stop_first_between_retries(first, second, uid("bound"), failed,
                                                          hold=1.0)
    # at the deadline, not after max_retries: the last attempt's error, or TimedOutError if
    # the deadline passed first (the promise's record is authoritative)
    assert outcome in (f"gave up: down for {second.pid}", "timed out")
    assert attempts[0][0] == first.pid
    # no attempt at or past the deadline that the restart did not move (a few ms of slack:
    # this test's clock and the SDK's are read at different instants)
    late = [round(at - deadline) for _, at in attempts if at >= deadline + SLACK_MS]
    assert not late, f"attempts made this many ms past the step's deadline: {late}"


class _Killable(WrappedTransport):
    """A process's connection that can die (a SIGKILL): nothing it sends reaches the engine."""

    dead = False

    async def send(self, request: Request) -> Response:
        if self.dead:
            raise TransportError("simulated crash: this process is gone")
        return await self.inner.send(request)


async def test_an_execution_cancelled_while_its_worker_is_dead_never_runs_again(
        connect: Connect, uid: Callable[[str], str]) -> None:
    killable: list[_Killable] = []

    def wrap(transport: Any) -> _Killable:
        killable.append(_Killable(transport))
        return killable[-1]

    first = connect(wrap=wrap, ttl=1)
    second, client = connect(ttl=1), connect(worker=False)
    ran: list[str] = []
    entered = anyio.Event()

    def register(app: Resonate) -> None:
        @app.register(name="upload")
        async def upload(part: int) -> int:
            ran.append(f"upload {part} on {app.pid}")
            if part == 1:
                entered.set()
                await anyio.sleep_forever()  # the first worker dies in the middle of it
            return part

        @app.register(name="waits")
        async def waits(ctx: Context) -> None:
            await ctx.promise()

        @app.register(name="flow")
        async def flow(ctx: Context) -> str:
            await ctx.rpc("waits").spawn()
            await ctx.run(upload, 1)
            await ctx.run(upload, 2)
            return "uploaded"

    register(first)
    register(second)
    root = uid("cancel-dead")
    async with client:
        with anyio.CancelScope() as crashed:
            async with first:
                await first.run(root, "flow")
                with anyio.fail_after(20):
                    await entered.wait()
                # :2 is the running upload: it shows (pending) after half a lease
                await until_exists(client, f"{root}:1.1", f"{root}:2")
                killable[0].dead = True  # the crash: no release, no more writes
                record = await client.promises.cancel(root)
                assert record.state == "rejected_canceled"
                crashed.cancel()
        async with second:  # a new worker: nothing of the cancelled execution is left to run
            with anyio.fail_after(20), pytest.raises(CanceledError):
                await (await second.get(root))
            await anyio.sleep(1.5)  # more than a lease: the dead worker's claim has expired
        for below in (f"{root}:1", f"{root}:1.1", f"{root}:2"):
            assert (await client.promises.get(below)).state == "rejected_canceled", below
        with pytest.raises(NotFoundError):
            await client.promises.get(f"{root}:3")
    assert ran == [f"upload 1 on {first.pid}"]
