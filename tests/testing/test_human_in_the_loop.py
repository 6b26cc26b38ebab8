"""Human-in-the-loop tests on the virtual clock: time passes only while the test awaits the SDK.

The test polls, sleeps for real and resolves promises as a webhook would, with no
monkeypatching; durable time moves only while it awaits a handle or a kit helper.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from resonate_async import Context, NotFoundError, Resonate, TimedOutError
from resonate_async.testing import VirtualClock, wait_for_promise

WEEK = timedelta(days=7)


def _approval_flow(resonate: Resonate, inbox: dict[str, str]) -> object:
    def publish(order: str, promise_id: str) -> None:
        inbox[order] = promise_id  # e.g. a link posted to a chat channel

    @resonate.register
    async def approve_order(ctx: Context, order: str) -> str:
        decision = await ctx.promise(timeout=WEEK).spawn()
        await ctx.run(publish, order, decision.id)
        try:
            answer = await decision
        except TimedOutError:
            return f"{order} escalated"
        return f"{order} {'approved' if answer['approved'] else 'rejected'} by {answer['by']}"

    return approve_order


async def test_time_stands_still_while_the_test_polls_and_sleeps_for_real(
        resonate: Resonate) -> None:
    clock = resonate.clock
    assert isinstance(clock, VirtualClock)
    inbox: dict[str, str] = {}
    flow = _approval_flow(resonate, inbox)
    start = clock.now()
    handle = await resonate.run("order-1", flow, "order-1")
    with anyio.fail_after(20):
        while "order-1" not in inbox:  # the natural poll, on real time
            await anyio.sleep(0.01)
        for _ in range(5):  # keep polling well after the promise exists
            await anyio.sleep(0.01)
    record = await resonate.promises.get(inbox["order-1"])
    assert record.pending
    assert clock.now() == start  # no week passed while the test looked away
    await resonate.promises.resolve(record.id, {"approved": True, "by": "maria"})
    with anyio.fail_after(20):
        assert await handle.result(timeout=20) == "order-1 approved by maria"


async def test_a_week_passes_in_milliseconds_while_the_test_awaits_the_result(
        resonate: Resonate) -> None:
    clock = resonate.clock
    assert isinstance(clock, VirtualClock)
    flow = _approval_flow(resonate, {})
    start = clock.now()
    handle = await resonate.run("order-2", flow, "order-2")
    with anyio.fail_after(20):
        assert await handle.result(timeout=20) == "order-2 escalated"
    assert clock.now() - start >= WEEK


async def test_wait_for_promise_lets_time_pass_only_until_the_promise_exists(
        resonate: Resonate) -> None:
    clock = resonate.clock
    assert isinstance(clock, VirtualClock)

    @resonate.register
    async def review(ctx: Context, doc: str) -> str:
        await ctx.sleep(timedelta(days=1))  # the review opens a day later
        decision = await ctx.promise(timeout=timedelta(days=2))
        return f"{doc}: {decision}"

    start = clock.now()
    handle = await resonate.run("review-1", review, "spec")
    with anyio.fail_after(20):
        record = await wait_for_promise(resonate, execution="review-1")
    assert record.pending
    assert record.id.startswith("review-1:")
    waited = clock.now() - start
    assert timedelta(days=1) <= waited < timedelta(days=2)  # its own timeout is still ahead
    for _ in range(3):
        await anyio.sleep(0.01)
    assert clock.now() - start == waited  # and time stands still again after the helper
    await resonate.promises.resolve(record.id, "lgtm")
    with anyio.fail_after(20):
        assert await handle == "spec: lgtm"
    assert clock.now() - start < timedelta(days=2)


async def test_wait_for_promise_by_id_returns_the_record(resonate: Resonate) -> None:
    inbox: dict[str, str] = {}
    flow = _approval_flow(resonate, inbox)
    handle = await resonate.run("order-3", flow, "order-3")
    with anyio.fail_after(20):
        record = await wait_for_promise(resonate, "order-3:1")
    assert (record.id, record.state) == ("order-3:1", "pending")
    await resonate.promises.reject(record.id, "no")
    with anyio.fail_after(20), pytest.raises(Exception, match="no"):
        await handle


async def test_wait_for_promise_says_what_never_appeared_and_shows_the_execution(
        resonate: Resonate) -> None:
    @resonate.register
    async def quick(ctx: Context) -> str:
        return "done"

    with anyio.fail_after(20):
        assert await (await resonate.run("quick-1", quick)) == "done"
        with pytest.raises(TimeoutError) as info:
            await wait_for_promise(resonate, execution="quick-1", timeout=0.2)
    message = str(info.value)
    assert "a pending ctx.promise of execution 'quick-1' did not appear" in message
    assert "quick-1" in message.splitlines()[1] and "root quick" in message


@pytest.mark.parametrize("kwargs", [{}, {"promise_id": "a:1", "execution": "a"}])
async def test_wait_for_promise_needs_exactly_one_of_an_id_and_an_execution(
        resonate: Resonate, kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="one of"):
        await wait_for_promise(resonate, **kwargs)


async def test_wait_for_promise_refuses_a_timeout_that_is_not_positive(
        resonate: Resonate) -> None:
    with pytest.raises(ValueError, match="positive, finite"):
        await wait_for_promise(resonate, "x:1", timeout=0)


async def test_the_clock_moves_only_while_someone_is_awaiting() -> None:
    clock = VirtualClock()
    woke = anyio.Event()

    async def sleeper() -> None:
        await clock.sleep(3600)
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.background)
        tg.start_soon(sleeper)
        for _ in range(5):
            await anyio.sleep(0.01)  # real waiting: not waiting for the SDK
        assert not woke.is_set()
        assert not clock.awaited
        with anyio.fail_after(20), clock.awaiting():
            assert clock.awaited
            await woke.wait()
        assert clock.now_ms() - VirtualClock().now_ms() == 3_600_000
        tg.cancel_scope.cancel()


async def test_a_handle_of_get_also_lets_time_pass(resonate: Resonate) -> None:
    @resonate.register
    async def nap(ctx: Context) -> str:
        await ctx.sleep(timedelta(hours=5))
        return "rested"

    await resonate.run("nap-1", nap)
    with anyio.fail_after(20):
        assert await (await resonate.get("nap-1")) == "rested"
    with pytest.raises(NotFoundError):
        await resonate.get("nap-unknown")


async def test_wait_for_promise_polls_on_a_real_clock() -> None:
    resonate = Resonate()  # the system clock: what a test against a real server has
    inbox: dict[str, str] = {}
    flow = _approval_flow(resonate, inbox)
    async with resonate:
        handle = await resonate.run("real-1", flow, "real-1")
        with anyio.fail_after(20):
            record = await wait_for_promise(resonate, execution="real-1")
            assert record.id == "real-1:1" and record.pending
            await resonate.promises.resolve(record.id, {"approved": False, "by": "ops"})
            assert await handle == "real-1 rejected by ops"
