"""``check_replay`` reports: decoded values and their difference, the kind of divergence, the
decoded result, and no noise from the crashes it simulates."""

from __future__ import annotations

import io
import random
import uuid
from dataclasses import dataclass

import anyio
import pytest
import structlog

from resonate_async import Context, Resonate, configure_logging
from resonate_async.testing import ReplayCheckError, check_replay


@dataclass
class Receipt:
    order: str
    total: int


class Declined(Exception):
    pass


async def test_a_uuid_in_the_body_differs_even_without_a_crash(resonate: Resonate) -> None:
    @resonate.register
    def price(item: str) -> int:
        return len(item)

    @resonate.register
    async def order(ctx: Context, item: str) -> dict[str, object]:
        total = await ctx.run(price, item)
        return {"order": str(uuid.uuid4()), "total": total}

    with anyio.fail_after(60), pytest.raises(ReplayCheckError) as info:
        await check_replay(resonate, order, "lamp")
    message = str(info.value)
    assert info.value.crash_point is None
    assert message.startswith("order differs even without a crash")
    assert "crash after durable write" not in message
    assert '"total": 4' in message  # decoded JSON, not base64
    assert "eyJ" not in message
    assert "difference: value['order']: " in message
    assert "order's own code outside any step" in message


async def test_a_step_that_differs_on_every_run_is_named(resonate: Resonate) -> None:
    @resonate.register
    def make_id() -> str:
        return uuid.uuid4().hex

    @resonate.register
    async def signup(ctx: Context) -> str:
        return await ctx.run(make_id)

    with anyio.fail_after(60), pytest.raises(ReplayCheckError) as info:
        await check_replay(resonate, signup)
    message = str(info.value)
    assert info.value.crash_point is None
    assert ":1 (run make_id) gave resolved" in message
    assert "make that step deterministic" in message


async def test_a_crash_caused_divergence_shows_both_outcomes_decoded(resonate: Resonate) -> None:
    @resonate.register
    def step() -> int:
        return 1

    @resonate.register
    async def draw(ctx: Context) -> dict[str, int]:
        ticket = random.randint(1, 10**9)  # seeded per run, but redrawn on replay
        await ctx.run(step)
        return {"ticket": ticket, "steps": 1}

    with anyio.fail_after(60), pytest.raises(ReplayCheckError) as info:
        await check_replay(resonate, draw)
    message = str(info.value)
    point = info.value.crash_point
    assert point is not None and point.startswith("crash after durable write #")
    assert message.startswith(point)
    assert "expected resolved {\"steps\": 1, \"ticket\": " in message
    assert "difference: value['ticket']: " in message
    assert "eyJ" not in message


async def test_the_report_carries_the_decoded_result(resonate: Resonate) -> None:
    @resonate.register
    def total(items: list[int]) -> int:
        return sum(items)

    @resonate.register
    async def bill(ctx: Context, order: str, items: list[int]) -> Receipt:
        return Receipt(order, await ctx.run(total, items))

    with anyio.fail_after(60):
        report = await check_replay(resonate, bill, "o-1", [2, 3])
    assert report.value == Receipt("o-1", 5)
    assert report.error is None
    assert report.outcome == 'resolved {"order": "o-1", "total": 5}'


async def test_the_report_carries_the_error_of_a_failing_function(resonate: Resonate) -> None:
    resonate.register_error(Declined)

    @resonate.register
    def charge(amount: int) -> None:
        raise Declined(f"card declined for {amount}")

    @resonate.register
    async def pay(ctx: Context, amount: int) -> None:
        await ctx.run(charge, amount).options(retry=None)

    with anyio.fail_after(60):
        report = await check_replay(resonate, pay, 30)
    assert isinstance(report.error, Declined)
    assert str(report.error) == "card declined for 30"
    assert report.value is None
    assert report.outcome.startswith("rejected ")


async def test_simulated_crashes_log_nothing_but_real_warnings_still_show(
        resonate: Resonate) -> None:
    out = io.StringIO()
    configure_logging("WARNING", stream=out)
    try:
        @resonate.register
        def audit(n: int) -> int:
            structlog.get_logger("shop").warning("audit_slow", n=n)
            return n

        @resonate.register
        async def flow(ctx: Context) -> int:
            return await ctx.run(audit, 1) + await ctx.run(audit, 2)

        with anyio.fail_after(60):
            report = await check_replay(resonate, flow)
        assert report.value == 3
        structlog.get_logger("shop").warning("after_check", note="simulated crash")
    finally:
        configure_logging("WARNING")
    logged = out.getvalue()
    assert "audit_slow" in logged  # the application's own warnings are kept
    assert "after_check" in logged  # and nothing is dropped outside check_replay
    assert "task_release" not in logged
    assert logged.count("simulated crash") == 1  # only the line logged outside
