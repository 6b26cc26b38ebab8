"""Root cancellation from outside under the simulator (issue 14): what it must end in, and
proof that each of its invariants catches the defect it stands for (patched in)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from resonate_async import Context, Resonate
from resonate_async.core._driver import Worker
from resonate_async.protocol import TAG_ORIGIN, PromiseSearch, Response, origin_of
from resonate_async.testing import Faults, Workflow, busy, side_effect, simulate
from tests.simulation.corpus import PROFILES, build_app

pytestmark = pytest.mark.anyio

QUIET = Faults.none()


def _flows() -> list[Workflow]:
    return [Workflow("early", "canceled", (4,), cancel_after=1),
            Workflow("late", "canceled", (6,), via="rpc", cancel_after=25),
            Workflow("bystander", "local_chain", (2,))]


@pytest.mark.parametrize("profile", ["quiet", "aggressive"])
async def test_a_root_cancelled_mid_run_ends_canceled_and_its_detached_work_runs_on(
        profile: str) -> None:
    faults = QUIET if profile == "quiet" else PROFILES["aggressive"]
    report = await simulate(build_app(), _flows(), seed=6, faults=faults)
    assert report.outcomes["early"] == "rejected_canceled"
    assert report.outcomes["late"] == "rejected_canceled"
    assert report.outcomes["bystander"].startswith("resolved")
    assert report.events["roots_canceled"] == 2
    # and no invariant broke: their pending descendants were cancelled, nothing of them ran
    # after the cancel, their detached work finished (every task fulfilled by the end)


def _loops_app() -> Resonate:
    """A root whose rpc child does slow steps one after another, until it is stopped."""
    app = Resonate()

    @app.register
    async def work(ctx: Context, seconds: int) -> int:
        side_effect(ctx)
        await busy(seconds, ctx)
        return seconds

    @app.register
    async def child(ctx: Context) -> str:
        for _ in range(1000):
            await ctx.run(work, 3)
        return "not canceled?"

    @app.register
    async def parent(ctx: Context) -> str:
        return str(await ctx.rpc(child))

    return app


async def _nothing_below(send: Callable[..., Awaitable[Response]], promise_id: str) -> list[str]:
    return []


async def test_a_cancel_that_settles_the_root_only_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the behaviour before issue 14: the descendants stay pending, and the child runs on
    monkeypatch.setattr("resonate_async._promises.pending_descendants", _nothing_below)
    report = await simulate(_loops_app(), [Workflow("p", "parent", cancel_after=10)], seed=2,
                            faults=QUIET, expected={}, check=False, deadline=40)
    text = "\n".join(report.violations)
    assert "p:1 is still pending after the cancel of its root p returned" in text, text
    assert "executed after the cancel of its root p had returned" in text, text
    assert "was created under p after the cancel of that root had returned" in text, text


async def test_a_worker_that_never_notices_the_cancel_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the behaviour before issue 14: a running step finishes its work after the cancel
    monkeypatch.setattr(Worker, "watch", lambda self, watch: None)
    app = Resonate()

    @app.register
    async def upload(ctx: Context) -> str:
        side_effect(ctx)
        await busy(60, ctx)  # heartbeats keep the task meanwhile
        return "uploaded"

    @app.register
    async def flow(ctx: Context) -> str:
        return await ctx.run(upload)

    @app.register
    async def keeps_the_run_going(ctx: Context) -> None:
        await ctx.sleep(120)  # the simulation ends once nothing is left: not before this

    flows = [Workflow("u", "flow", cancel_after=5), Workflow("k", "keeps_the_run_going")]
    report = await simulate(app, flows, seed=3, faults=QUIET, expected={}, check=False)
    assert any("step u:1 finished its work 55 s after the cancel of its root u" in v
               and "must notice the cancel and stop it" in v for v in report.violations), (
        report.violations)


async def _everything_below(send: Callable[..., Awaitable[Response]],
                            promise_id: str) -> list[str]:
    response = await send(PromiseSearch("pending", {TAG_ORIGIN: origin_of(promise_id)}, 100,
                                        None))
    return [p.id for p in response.data.promises if p.id != promise_id]


async def test_a_cancel_that_reaches_detached_work_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("resonate_async._promises.pending_descendants", _everything_below)
    report = await simulate(build_app(), [Workflow("c", "canceled", (3,), cancel_after=1)],
                            seed=4, faults=QUIET, expected={}, check=False)
    assert any("detached work c:d" in v and "was cancelled with its root c" in v
               for v in report.violations), report.violations


@pytest.mark.parametrize("after", [-1, "soon", True, float("nan")])
async def test_a_cancel_time_that_is_not_a_duration_is_refused(after: Any) -> None:
    with pytest.raises(ValueError, match=r"workflow 'x' has cancel_after=.*number >= 0"):
        await simulate(build_app(), [Workflow("x", "canceled", (3,), cancel_after=after)],
                       seed=1)
