"""Durable structured concurrency: function-level retries, promise params, ``ctx.info``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest

from resonate_async import (
    CanceledError,
    Constant,
    Context,
    ContextError,
    EncodingError,
    Never,
    NotFoundError,
    RegistrationError,
    Resonate,
)
from resonate_async.testing import check_replay
from tests.runtime._waits import exists

# retries ------------------------------------------------------------------------------------


def _flaky(calls: list[int], failures: int) -> Callable[[], str]:
    def flaky() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise ConnectionError(f"failure {len(calls)}")
        return "ok"

    return flaky


async def test_registered_policy_is_the_default_of_a_ctx_run_step(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Constant(max_retries=2, wait=0.01))(
        _flaky(calls, failures=2))

    @resonate.register
    async def flow(ctx: Context) -> str:
        return str(await ctx.run(flaky))

    async with resonate:
        handle = await resonate.run(uid("reg-run"), flow)
        with anyio.fail_after(20):
            assert await handle == "ok"
    assert len(calls) == 3


async def test_registered_policy_bounds_the_retries_of_a_ctx_run_step(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Constant(max_retries=1, wait=0.01))(
        _flaky(calls, failures=5))

    @resonate.register
    async def flow(ctx: Context) -> str:
        return str(await ctx.run(flaky))

    async with resonate:
        handle = await resonate.run(uid("reg-bound"), flow)
        with anyio.fail_after(20), pytest.raises(ConnectionError, match="failure 2"):
            await handle
    assert len(calls) == 2  # not the instance default's 30 retries


async def test_call_options_override_the_registered_policy(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Constant(max_retries=5, wait=0.01))(
        _flaky(calls, failures=5))

    @resonate.register
    async def flow(ctx: Context) -> str:
        return str(await ctx.run(flaky).options(retry=Never()))

    async with resonate:
        handle = await resonate.run(uid("override"), flow)
        with anyio.fail_after(20), pytest.raises(ConnectionError, match="failure 1"):
            await handle
    assert len(calls) == 1


async def test_a_leaf_rpc_target_is_retried_per_its_registered_policy(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    resonate.register(name="flaky", retry=Constant(max_retries=3, wait=0.01))(
        _flaky(calls, failures=2))

    @resonate.register
    async def flow(ctx: Context) -> str:
        return str(await ctx.rpc("flaky"))

    async with resonate:
        handle = await resonate.run(uid("reg-rpc"), flow)
        with anyio.fail_after(20):
            assert await handle == "ok"
    assert len(calls) == 3


async def test_a_leaf_root_is_retried_per_its_registered_policy(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Constant(max_retries=3, wait=0.01))(
        _flaky(calls, failures=2))

    async with resonate:
        handle = await resonate.run(uid("reg-root"), flaky)
        with anyio.fail_after(20):
            assert await handle == "ok"
        assert (await resonate.promises.get(handle.id)).state == "resolved"
    assert len(calls) == 3


async def test_a_leaf_root_with_never_fails_on_its_first_error(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Never())(_flaky(calls, failures=1))

    async with resonate:
        handle = await resonate.run(uid("root-never"), flaky)
        with anyio.fail_after(20), pytest.raises(ConnectionError, match="failure 1"):
            await handle
        assert (await resonate.promises.get(handle.id)).state == "rejected"
    assert len(calls) == 1


async def test_a_leaf_root_uses_the_instance_policy_without_its_own(
        connect: Callable[..., Resonate], uid: Callable[[str], str]) -> None:
    resonate = connect(retry=Constant(max_retries=2, wait=0.01))
    calls: list[int] = []
    flaky = resonate.register(name="flaky")(_flaky(calls, failures=2))

    async with resonate:
        handle = await resonate.run(uid("root-instance"), flaky)
        with anyio.fail_after(20):
            assert await handle == "ok"
    assert len(calls) == 3


def test_retry_on_a_durable_function_is_refused_with_a_hint(resonate: Resonate) -> None:
    async def flow(ctx: Context) -> None:
        return None

    with pytest.raises(RegistrationError, match=r"leaf functions only.*replayed"):
        resonate.register(retry=Constant())(flow)


def test_retry_that_is_not_a_policy_is_refused(resonate: Resonate) -> None:
    def leaf() -> None:
        return None

    with pytest.raises(RegistrationError, match=r"must be a retry policy.*got int 3"):
        resonate.register(retry=3)(leaf)  # type: ignore[call-overload]


def always_down() -> None:
    raise ConnectionError("down")


async def test_registered_retries_replay_the_same_outcome_across_crashes(
        resonate: Resonate) -> None:
    resonate.register(retry=Constant(max_retries=3, wait=5))(always_down)

    @resonate.register
    async def flow(ctx: Context) -> str:
        try:
            await ctx.run(always_down)
        except ConnectionError as exc:
            return f"gave up: {exc}"
        return "unreachable"

    report = await check_replay(resonate, flow)
    assert report.value == "gave up: down"


# ctx.promise(data=...) and ctx.info ------------------------------------------------------------


async def test_promise_data_is_its_param_for_whoever_settles_it(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    published: list[str] = []

    @resonate.register
    def publish(promise_id: str) -> None:
        published.append(promise_id)

    @resonate.register
    async def expense(ctx: Context) -> object:
        decision = await ctx.promise(data={"amount": 120, "for": "train"}).spawn()
        await ctx.run(publish, decision.id)
        return await decision

    async with resonate:
        handle = await resonate.run(uid("expense"), expense)
        with anyio.fail_after(20):
            while not published:
                await anyio.sleep(0.01)
        record = await resonate.promises.get(published[0])
        assert record.param == {"amount": 120, "for": "train"}
        await resonate.promises.resolve(published[0], {"approved": record.param["amount"] < 500})
        with anyio.fail_after(20):
            assert await handle == {"approved": True}


async def test_a_promise_without_data_has_no_param(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    published: list[str] = []

    @resonate.register
    def publish(promise_id: str) -> None:
        published.append(promise_id)

    @resonate.register
    async def flow(ctx: Context) -> object:
        p = await ctx.promise().spawn()
        await ctx.run(publish, p.id)
        return await p

    async with resonate:
        handle = await resonate.run(uid("nodata"), flow)
        with anyio.fail_after(20):
            while not published:
                await anyio.sleep(0.01)
        assert (await resonate.promises.get(published[0])).param is None
        await resonate.promises.resolve(published[0], "done")
        with anyio.fail_after(20):
            assert await handle == "done"


async def test_promise_data_that_cannot_be_encoded_fails_the_call_clearly(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def flow(ctx: Context) -> str:
        try:
            await ctx.promise(data=object()).spawn()
        except EncodingError as exc:
            return str(exc)
        return "encoded"

    async with resonate:
        with anyio.fail_after(20):
            message = await (await resonate.run(uid("baddata"), flow))
    assert "data of ctx.promise()" in message


async def test_info_names_origin_branch_and_tags(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    seen: dict[str, tuple[str, str, str | None]] = {}

    def facts(ctx: Context) -> tuple[str, str, str | None]:
        info = ctx.info
        return info.origin, info.branch, info.tags.get("team")

    @resonate.register
    async def child(ctx: Context) -> None:
        seen["rpc"] = facts(ctx)

    @resonate.register
    async def nested(ctx: Context) -> None:
        seen["run"] = facts(ctx)

    @resonate.register
    async def flow(ctx: Context) -> None:
        seen["root"] = facts(ctx)
        await ctx.run(nested).options(tags={"team": "payments"})
        await ctx.rpc(child).options(tags={"team": "ledger"})

    root = uid("info")
    async with resonate:
        handle = await resonate.options(tags={"team": "ops"}).run(root, flow)
        with anyio.fail_after(20):
            await handle
    assert seen["root"] == (root, root, "ops")
    assert seen["run"] == (root, root, "payments")
    assert seen["rpc"] == (root, f"{root}:2", "ledger")


# handle.cancel() ---------------------------------------------------------------------------------


async def test_cancelling_a_running_local_step_stops_its_code_and_settles_it_canceled(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    started = anyio.Event()
    after: list[str] = []

    @resonate.register
    async def slow_mail() -> str:
        started.set()
        await anyio.sleep_forever()
        after.append("sent")  # never reached: the cancel stops the code
        return "sent"

    @resonate.register
    async def flow(ctx: Context) -> str:
        mail = await ctx.run(slow_mail).spawn()
        await started.wait()
        await mail.cancel()
        try:
            await mail
        except CanceledError:
            return f"canceled {mail.id}"
        return "not canceled"

    root = uid("cancel-local")
    async with resonate:
        with anyio.fail_after(20):
            assert await (await resonate.run(root, flow)) == f"canceled {root}:1"
        assert (await resonate.promises.get(f"{root}:1")).state == "rejected_canceled"
    assert after == []


async def test_a_local_step_cancelled_before_it_starts_is_recorded_canceled(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    ran: list[int] = []

    @resonate.register
    def side_effect() -> None:
        ran.append(1)

    @resonate.register
    async def flow(ctx: Context) -> str:
        handle = await ctx.run(side_effect).spawn()
        await handle.cancel()  # at once: its task has not run yet
        with pytest.raises(CanceledError):
            await handle
        return "ok"

    root = uid("cancel-early")
    async with resonate:
        with anyio.fail_after(20):
            assert await (await resonate.run(root, flow)) == "ok"
        assert (await resonate.promises.get(f"{root}:1")).state == "rejected_canceled"
    assert ran == []


async def test_cancelling_a_settled_child_keeps_its_outcome(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    def quick() -> int:
        return 7

    @resonate.register
    async def flow(ctx: Context) -> int:
        handle = await ctx.run(quick).spawn()
        value = await handle
        await handle.cancel()
        return value + await handle

    async with resonate:
        with anyio.fail_after(20):
            assert await (await resonate.run(uid("cancel-late"), flow)) == 14


async def test_cancelled_rpc_sleep_and_promise_children_count_as_settled(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def waits(ctx: Context) -> str:
        await ctx.promise()  # nobody settles it: only the cancel ends this child
        return "done"

    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        child = await ctx.rpc(waits).spawn()
        timer = await ctx.sleep(timedelta(days=30)).spawn()
        approval = await ctx.promise(timeout=timedelta(days=7)).spawn()
        outcomes = []
        for handle in (child, timer, approval):
            await handle.cancel()
            try:
                await handle
            except CanceledError:
                outcomes.append(f"canceled {handle.id}")
        return outcomes

    root = uid("cancel-remote")
    async with resonate:
        with anyio.fail_after(20):
            assert await (await resonate.run(root, flow)) == [
                f"canceled {root}:{i}" for i in (1, 2, 3)]
        for i in (1, 2, 3):
            assert (await resonate.promises.get(f"{root}:{i}")).state == "rejected_canceled"


async def test_a_cancelled_nested_function_cancels_its_pending_children(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def waits(ctx: Context) -> str:
        await ctx.promise()
        return "done"

    @resonate.register
    async def nested(ctx: Context) -> str:
        return str(await ctx.rpc(waits))

    @resonate.register
    async def flow(ctx: Context) -> str:
        handle = await ctx.run(nested).spawn()
        await ctx.sleep(0.05)  # the nested function has created its rpc child by then
        await handle.cancel()
        with pytest.raises(CanceledError):
            await handle
        return "ok"

    root = uid("cancel-nested")
    async with resonate:
        with anyio.fail_after(20):
            assert await (await resonate.run(root, flow)) == "ok"
        assert (await resonate.promises.get(f"{root}:1")).state == "rejected_canceled"
        assert (await resonate.promises.get(f"{root}:1.1")).state == "rejected_canceled"


async def sleeps_a_year() -> str:
    await anyio.sleep_forever()
    return "woke"


async def test_cancel_replays_the_same_outcome_across_crashes(resonate: Resonate) -> None:
    resonate.register(sleeps_a_year)

    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        local = await ctx.run(sleeps_a_year).spawn()
        timer = await ctx.sleep(timedelta(days=1)).spawn()
        approval = await ctx.promise().spawn()
        seen = []
        for handle in (local, timer, approval):
            await handle.cancel()
            try:
                await handle
                seen.append("settled")
            except CanceledError:
                seen.append("canceled")
        return seen

    report = await check_replay(resonate, flow)
    assert report.value == ["canceled", "canceled", "canceled"]


# ctx.first() -------------------------------------------------------------------------------------


async def test_first_returns_the_reminder_and_cancels_the_approval(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def expense(ctx: Context) -> str:
        approval = await ctx.promise(timeout=timedelta(hours=1)).spawn()
        reminder = await ctx.sleep(0.05).spawn()
        if await ctx.first(approval, reminder) is reminder:
            return f"reminded, {approval.id} canceled"
        return "approved"

    root = uid("first-reminder")
    async with resonate:
        with anyio.fail_after(20):  # not the approval's hour: the loser is cancelled
            assert await (await resonate.run(root, expense)) == f"reminded, {root}:1 canceled"
        assert (await resonate.promises.get(f"{root}:1")).state == "rejected_canceled"


async def test_first_returns_the_approval_settled_before_the_reminder(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    asked: list[str] = []

    @resonate.register
    def ask(promise_id: str) -> None:
        asked.append(promise_id)

    @resonate.register
    async def expense(ctx: Context) -> object:
        approval = await ctx.promise(timeout=timedelta(hours=1)).spawn()
        reminder = await ctx.sleep(timedelta(days=2)).spawn()
        await ctx.run(ask, approval.id)
        winner = await ctx.first(approval, reminder)
        return await winner if winner is approval else "reminded"

    root = uid("first-approval")
    async with resonate:
        handle = await resonate.run(root, expense)
        with anyio.fail_after(20):
            while not asked:
                await anyio.sleep(0.01)
            await resonate.promises.resolve(asked[0], "yes")
            assert await handle == "yes"
        assert (await resonate.promises.get(f"{root}:2")).state == "rejected_canceled"


async def test_first_races_local_steps_and_cancels_the_slow_one(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def fast() -> str:
        return "fast"

    @resonate.register
    async def slow() -> str:
        await anyio.sleep_forever()
        return "slow"

    @resonate.register
    async def race(ctx: Context) -> str:
        s = await ctx.run(slow).spawn()
        f = await ctx.run(fast).spawn()
        winner = await ctx.first(s, f)
        return await winner

    root = uid("first-local")
    async with resonate:
        with anyio.fail_after(20):
            assert await (await resonate.run(root, race)) == "fast"
        assert (await resonate.promises.get(f"{root}:1")).state == "rejected_canceled"


async def test_first_with_cancel_rest_false_lets_the_others_finish(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    gate = anyio.Event()

    @resonate.register
    async def fast() -> str:
        return "fast"

    @resonate.register
    async def later() -> str:
        await gate.wait()
        return "later"

    @resonate.register
    async def race(ctx: Context) -> list[str]:
        slow = await ctx.run(later).spawn()
        quick = await ctx.run(fast).spawn()
        winner = await ctx.first(slow, quick, cancel_rest=False)
        gate.set()
        return [await winner, await slow]

    async with resonate:
        with anyio.fail_after(20):
            assert await (await resonate.run(uid("first-keep"), race)) == ["fast", "later"]


async def test_first_refuses_no_handles_and_foreign_values(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        errors = []
        for args in ((), ("not a handle",)):
            try:
                await ctx.first(*args)
            except ContextError as exc:
                errors.append(str(exc))
        return errors

    async with resonate:
        with anyio.fail_after(20):
            empty, foreign = await (await resonate.run(uid("first-bad"), flow))
    assert "at least one handle" in empty
    assert "handles of calls spawned in this durable function" in foreign


async def test_first_replays_its_recorded_winner_even_when_all_have_settled(
        resonate: Resonate) -> None:
    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        soon = await ctx.sleep(timedelta(hours=1)).spawn()
        later = await ctx.sleep(timedelta(hours=2)).spawn()
        approval = await ctx.promise(timeout=timedelta(days=7)).spawn()
        reminder = await ctx.sleep(timedelta(days=2)).spawn()
        await ctx.sleep(timedelta(hours=3))  # both sleeps have fired by now
        first = await ctx.first(later, soon)
        second = await ctx.first(approval, reminder)
        return [first.id.rsplit(":", 1)[1], "reminder" if second is reminder else "approval"]

    report = await check_replay(resonate, flow)
    assert report.value == ["1", "reminder"]  # soon (call 1) settled first, passed second


# cancelling an execution from outside ------------------------------------------------------------


async def _until_created(resonate: Resonate, *ids: str) -> None:
    with anyio.fail_after(20):
        for promise_id in ids:
            while True:
                try:
                    await resonate.promises.get(promise_id)
                    break
                except NotFoundError:
                    await anyio.sleep(0.01)


async def test_cancelling_a_root_cancels_its_pending_descendants_but_not_detached_work(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def waits(ctx: Context) -> str:
        await ctx.promise()
        return "done"

    @resonate.register
    async def flow(ctx: Context) -> str:
        await ctx.rpc(waits).spawn()                         # :1, which waits on :1.1
        await ctx.sleep(timedelta(days=1)).spawn()           # :2
        await ctx.promise(timeout=timedelta(days=7)).spawn()  # :3
        detached = await ctx.detached(waits)
        await detached
        return "finished"

    root = uid("cancel-root")
    async with resonate:
        handle = await resonate.run(root, flow)
        await _until_created(resonate, f"{root}:1.1", f"{root}:3")
        detached: list[str] = []
        with anyio.fail_after(20):
            while not detached:
                detached = [p.id async for p in resonate.promises.search(
                    tags={"resonate:origin": root}) if p.id.startswith(f"{root}:d")]
                await anyio.sleep(0.01)
        detached_id = detached[0]
        await _until_created(resonate, f"{detached_id}.1")
        record = await resonate.promises.cancel(root)
        assert record.state == "rejected_canceled"
        with anyio.fail_after(20), pytest.raises(CanceledError):
            await handle
        for below in (f"{root}:1", f"{root}:1.1", f"{root}:2", f"{root}:3"):
            assert (await resonate.promises.get(below)).state == "rejected_canceled", below
        assert (await resonate.promises.get(detached_id)).state == "pending"
        assert (await resonate.promises.get(f"{detached_id}.1")).state == "pending"


async def test_the_worker_stops_a_cancelled_execution_within_a_heartbeat(
        connect: Callable[..., Resonate], uid: Callable[[str], str]) -> None:
    resonate = connect(ttl=1)
    started, stopped = anyio.Event(), anyio.Event()
    after: list[str] = []

    @resonate.register
    async def long_upload() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()
        after.append("uploaded")
        return "uploaded"

    @resonate.register
    async def flow(ctx: Context) -> str:
        await ctx.run(long_upload)
        after.append("next step")
        return "done"

    root = uid("cancel-running")
    async with resonate:
        handle = await resonate.run(root, flow)
        with anyio.fail_after(20):
            await started.wait()
            # a step shows (pending) once it has run for half a lease; from then on the
            # cancel reaches it (tests/runtime/test_step_writes.py: before then)
            while not await exists(resonate, f"{root}:1"):
                await anyio.sleep(0.02)
        await handle.cancel()  # a root handle: the same as resonate.promises.cancel(root)
        with anyio.fail_after(20):  # half a lease (0.5 s) here, bounded loosely for load
            await stopped.wait()
        with anyio.fail_after(20), pytest.raises(CanceledError):
            await handle
        assert (await resonate.promises.get(f"{root}:1")).state == "rejected_canceled"
    assert after == []
