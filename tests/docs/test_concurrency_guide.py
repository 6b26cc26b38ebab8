"""The README's sections on retries and durable structured concurrency, as code that runs
(test_readme.py checks that each python snippet there stands in a file like this one)."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from resonate_async import CanceledError, Constant, Context, NotFoundError, Resonate

RATES = {"EUR": 1.08}


async def test_a_function_registered_with_a_policy_is_retried_wherever_it_runs(
        resonate: Resonate) -> None:
    attempts: list[str] = []

    def rates_service(currency: str) -> float:
        attempts.append(currency)
        if len(attempts) % 3:                   # fails twice out of three
            raise ConnectionError("rates service unavailable")
        return RATES[currency]

    @resonate.register(retry=Constant(wait=2, max_retries=3))
    def fetch_rate(currency: str) -> float:
        return rates_service(currency)          # flaky: may raise ConnectionError

    @resonate.register
    async def quote(ctx: Context, amount: float) -> float:
        rate = await ctx.run(fetch_rate, "EUR")        # a local step: fetch_rate's policy
        again = await ctx.rpc(fetch_rate, "EUR")       # on any worker: the same policy
        return amount * min(rate, again)

    with anyio.fail_after(10):
        handle = await resonate.run("rate-eur", fetch_rate, "EUR")  # a root: the same too
        assert await handle == 1.08
        assert await (await resonate.run("quote-1", quote, 100.0)) == 108.0
    assert len(attempts) == 9                   # each of the three runs failed twice first


async def test_an_approval_carries_what_it_is_about(resonate: Resonate) -> None:
    asked: list[str] = []

    @resonate.register
    def send_approval_request(promise_id: str) -> None:
        asked.append(promise_id)

    @resonate.register
    async def expense(ctx: Context, amount: int) -> object:
        decision = await ctx.promise(data={"amount": amount}, timeout=timedelta(days=7)).spawn()
        await ctx.run(send_approval_request, decision.id)
        return await decision

    handle = await resonate.run("expense-7", expense, 120)
    with anyio.fail_after(10):
        while not asked:
            await anyio.sleep(0.01)
    promise_id = asked[0]
    request = await resonate.promises.get(promise_id)   # the approver reads the request...
    await resonate.promises.resolve(promise_id, {"approved": request.param["amount"] < 500})
    with anyio.fail_after(10):
        assert await handle == {"approved": True}


async def test_info_tells_where_a_function_runs(resonate: Resonate) -> None:
    @resonate.register
    async def audit(ctx: Context) -> str:
        info = ctx.info
        return f"{info.function} in {info.origin} (branch {info.branch}, team {info.tags['team']})"

    handle = await resonate.options(tags={"team": "ops"}).run("audit-1", audit)
    assert await handle == "audit in audit-1 (branch audit-1, team ops)"


async def test_a_deadline_on_an_approval_is_a_durable_race(resonate: Resonate) -> None:
    reminded: list[str] = []

    @resonate.register
    def send_reminder(promise_id: str) -> None:
        reminded.append(promise_id)

    @resonate.register
    async def expense(ctx: Context) -> str:
        approval = await ctx.promise(timeout=timedelta(days=7)).spawn()
        reminder = await ctx.sleep(timedelta(days=2)).spawn()
        if await ctx.first(approval, reminder) is reminder:
            await ctx.run(send_reminder, approval.id)   # the approval was cancelled
            return "reminded"
        return str(await approval)

    with anyio.fail_after(10):
        assert await (await resonate.run("expense-9", expense)) == "reminded"
    assert reminded == ["expense-9:1"]
    assert (await resonate.promises.get("expense-9:1")).state == "rejected_canceled"


async def test_a_spawned_child_can_be_cancelled(resonate: Resonate) -> None:
    @resonate.register
    async def send_mail(order: str) -> None:
        await anyio.sleep_forever()                 # stands for a slow mail server

    @resonate.register
    async def checkout(ctx: Context, order: str) -> str:
        mail = await ctx.run(send_mail, order).spawn()
        await mail.cancel()          # its code is cancelled, its promise settled as canceled
        try:
            await mail
        except CanceledError:
            return "mail canceled"
        return "mail sent"

    with anyio.fail_after(10):
        assert await (await resonate.run("checkout-9", checkout, "o9")) == "mail canceled"


async def test_cancelling_an_execution_cancels_its_descendants_not_its_detached_work(
        resonate: Resonate) -> None:
    reports: list[str] = []

    @resonate.register
    def send_report(month: str) -> None:
        reports.append(month)

    @resonate.register
    async def report_later(ctx: Context, month: str) -> None:
        await ctx.sleep(timedelta(hours=1))
        await ctx.run(send_report, month)

    @resonate.register
    async def collect_rows(ctx: Context, month: str) -> list[str]:
        return list(await ctx.promise(timeout=timedelta(days=1)))   # a slow source

    @resonate.register
    async def export(ctx: Context, month: str) -> str:
        await ctx.detached(report_later, month)         # not a descendant: keeps running
        rows = await ctx.rpc(collect_rows, month)       # cancelled with the export
        return f"{len(rows)} rows"

    handle = await resonate.run("export-march", export, "march")
    with anyio.fail_after(10):
        while True:   # until the slow source waits
            try:
                await resonate.promises.get("export-march:2.1")
                break
            except NotFoundError:
                await anyio.sleep(0.01)
    await resonate.promises.cancel("export-march")   # and collect_rows, and its promise
    with pytest.raises(CanceledError):
        await handle
    for below in ("export-march:2", "export-march:2.1"):
        assert (await resonate.promises.get(below)).state == "rejected_canceled"
    detached = [p.id async for p in resonate.promises.search(
        tags={"resonate:origin": "export-march"}) if p.id.startswith("export-march:d")]
    with anyio.fail_after(10):
        await (await resonate.get(detached[0]))   # an hour passes: the report goes out
    assert reports == ["march"]
