"""The hostile conditions of issue 11 under the simulator: what each must end in, and proof
that each new invariant catches the defect it stands for (the old behaviour, patched back in).
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import anyio
import pytest

from resonate_async import Context, Never, Resonate, TimedOutError
from resonate_async.core._driver import Worker
from resonate_async.core._execution import Outcome
from resonate_async.core._failures import TaskFailures
from resonate_async.protocol import TaskAcquire
from resonate_async.testing import Faults, Workflow, busy, side_effect, simulate
from tests.simulation.corpus import (
    BASE_EXCEPTIONS,
    PROFILES,
    REQUEST_LIMIT,
    KeyedCipher,
    Meltdown,
    build_app,
)

pytestmark = pytest.mark.anyio

QUIET = Faults.none()


def only(**rates: float) -> Faults:
    """No faults but the ones named."""
    return Faults(**{**{n: 0.0 for n in Faults.__dataclass_fields__}, **rates})


def error_of(outcome: str) -> dict[str, Any]:
    """The error a root was rejected with (the outcome of an unencrypted run)."""
    state, _, data = outcome.partition(" ")
    assert state == "rejected", outcome
    decoded: dict[str, Any] = json.loads(base64.b64decode(data))
    return decoded


# BaseExceptions from user code ---------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BASE_EXCEPTIONS))
async def test_a_base_exception_from_a_step_rejects_only_its_workflow(kind: str) -> None:
    app = build_app()
    flows = [Workflow("poison", "poison", (kind,)),
             Workflow("bystander", "local_chain", (3,), via="rpc")]
    report = await simulate(app, flows, seed=4, faults=QUIET)
    error = error_of(report.outcomes["poison"])
    expected = kind if kind != "cancellation" else anyio.get_cancelled_exc_class().__name__
    assert error["type"] == expected, error
    assert report.outcomes["bystander"].startswith("resolved"), report.outcomes
    # and under faults: no worker dies of it (an invariant), every root settles the same way
    faulty = await simulate(app, flows, seed=4, faults=PROFILES["aggressive"])
    assert faulty.ok


async def test_a_worker_killed_by_user_code_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    async def escapes(self: Worker, task_id: str, version: int) -> None:
        # what a worker without the fix let through (not SystemExit: asyncio re-raises that
        # out of the event loop itself, ending the whole simulation, not just one worker)
        raise Meltdown("the core is melting")

    monkeypatch.setattr(Worker, "on_execute", escapes)
    report = await simulate(build_app(), [Workflow("r", "local_chain", (1,), via="rpc")],
                            seed=1, faults=QUIET, expected={}, check=False, fault_window=10,
                            deadline=20)
    assert any("died of" in v and "Meltdown" in v and "never the worker" in v
               for v in report.violations), report.violations


# a step that never returns before its timeout ------------------------------------------------
async def test_a_hung_step_ends_in_timed_out_error_at_its_deadline() -> None:
    app = Resonate()

    @app.register
    async def hangs(ctx: Context) -> str:
        side_effect(ctx)
        await busy(10**6)
        return "returned?"

    @app.register
    async def timed(ctx: Context) -> list[float | str]:
        before = await ctx.now()
        try:
            await ctx.run(hangs).options(timeout=timedelta(seconds=7), retry=Never())
        except TimedOutError as exc:
            what = type(exc).__name__
        else:
            what = "not cut off"
        after = await ctx.now()
        return [what, (after - before).total_seconds()]

    report = await simulate(app, [Workflow("timed", timed)], seed=2, faults=QUIET,
                            expected={})
    state, _, data = report.outcomes["timed"].partition(" ")
    what, elapsed = json.loads(base64.b64decode(data))
    assert (state, what) == ("resolved", "TimedOutError")
    assert 7.0 <= elapsed <= 8.0, elapsed  # simulated seconds: the deadline, not later
    assert report.events["steps_timed_out"] == 1


# results over the request size limit ---------------------------------------------------------
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "learnt-from-413"])
@pytest.mark.parametrize("where", ["step", "root"])
async def test_a_result_over_the_size_limit_rejects_with_encoding_error_once(
        where: str, declared: bool) -> None:
    app = build_app()
    report = await simulate(app, [Workflow("big", "oversized", (where,))], seed=3,
                            faults=QUIET, max_request_bytes=REQUEST_LIMIT,
                            declare_limit=declared)
    error = error_of(report.outcomes["big"])
    assert error["type"] == "EncodingError", error
    assert "elsewhere and return a reference" in error["message"], error
    # each side effect once: the step before it, and the big step itself (when a step)
    assert report.executions == (2 if where == "step" else 1)
    assert report.events["refused_too_large"] == (0 if declared else 1)


async def test_oversized_results_under_faults_keep_every_invariant() -> None:
    app = build_app()
    flows = [Workflow("big-step", "oversized", ("step",)),
             Workflow("big-root", "oversized", ("root",), via="rpc")]
    for seed in range(3):
        report = await simulate(app, flows, seed=seed, faults=PROFILES["aggressive"],
                                max_request_bytes=REQUEST_LIMIT, declare_limit=seed % 2 == 0)
        assert {error_of(o)["type"] for o in report.outcomes.values()} == {"EncodingError"}


# repeated platform failures of one task ------------------------------------------------------
@pytest.mark.parametrize("backoff", [True, False], ids=["back-off", "no-back-off"])
async def test_a_task_outage_backs_off_instead_of_looping(
        monkeypatch: pytest.MonkeyPatch, backoff: bool) -> None:
    if not backoff:
        monkeypatch.setattr(TaskFailures, "wait_s", lambda self, task_id: 0.0)
    flows = [Workflow(f"chain-{i}", "local_chain", (3,), via="rpc") for i in range(3)]
    report = await simulate(build_app(), flows, seed=8, faults=only(task_outage=0.2),
                            expected={}, check=False, fault_window=60)
    assert report.faults["task_outage"] > 0 and report.events["task_outage_failed_write"] > 0
    loops = [v for v in report.violations if "tight release/re-acquire loop" in v]
    if backoff:
        assert report.violations == []
    else:
        assert loops, report.violations


# duplicate execute storms ----------------------------------------------------------------------
async def _undeduplicated(self: Worker, task_id: str, version: int) -> None:
    """``on_execute`` as it was before issue 11: every duplicate waits for a slot."""
    async with self.limiter:
        if self._holds_newer(task_id, version):
            return
        response = await self.send(TaskAcquire(task_id, version, self.pid, self.ttl_ms))
        if response.status == 200:
            await self.run_claim(response.data)


@pytest.mark.parametrize("dedup", [True, False], ids=["dropped", "queued"])
async def test_execute_storms_keep_waiting_claims_per_task_bounded(
        monkeypatch: pytest.MonkeyPatch, dedup: bool) -> None:
    if not dedup:
        monkeypatch.setattr(Worker, "on_execute", _undeduplicated)
    flows = [Workflow(f"slow-{i}", "slow", (8,), via="rpc") for i in range(4)]
    report = await simulate(build_app(), flows, seed=5, faults=only(duplicate_burst=0.2),
                            concurrency=1, expected={}, check=False, fault_window=60)
    assert report.faults["duplicate_burst"] > 0
    if dedup:
        assert report.violations == [] and report.peak_claims == 1
    else:
        assert any("execute messages for it waiting at once" in v for v in report.violations), (
            report.violations)


# a worker with the wrong key --------------------------------------------------------------------
async def _rejects_for_good(self: Worker, tid: str, version: int, exc: Exception,
                            tlog: Any) -> None:
    """What a worker did before issue 11: reject the execution under its own key."""
    await self._fulfill(tid, version, Outcome("failed", error=exc), tlog)


@pytest.mark.parametrize("fixed", [True, False], ids=["releases", "rejects"])
async def test_a_worker_with_the_wrong_key_never_writes(
        monkeypatch: pytest.MonkeyPatch, fixed: bool) -> None:
    if not fixed:
        monkeypatch.setattr(Worker, "_cannot_decrypt", _rejects_for_good)
    app = build_app(KeyedCipher(b"right"))
    flows = [Workflow(f"chain-{i}", "local_chain", (2,), via="rpc") for i in range(6)]
    report = await simulate(app, flows, seed=7, faults=QUIET, miskeyed=KeyedCipher(b"wrong"),
                            expected={} if not fixed else None, check=False)
    if fixed:
        assert report.violations == []
        assert report.events["miskeyed_released"] > 0  # it was handed work, and gave it back
        assert all(o.startswith("resolved") for o in report.outcomes.values())
    else:
        assert any("a worker with the wrong key" in v for v in report.violations), (
            report.violations)


async def test_simulate_refuses_a_miskeyed_run_without_another_worker() -> None:
    with pytest.raises(ValueError, match="miskeyed needs workers >= 2"):
        await simulate(build_app(), [], seed=0, workers=1, miskeyed=KeyedCipher(b"k"))
