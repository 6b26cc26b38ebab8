"""The invariants ``simulate`` checks while it runs and at its end, and what they observe:
every request a worker's request got answered (``observe``), every step execution counted by
``side_effect`` (``executed``), the claims each worker has waiting (``watch_claims``)."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

from resonate_async._client import Resonate
from resonate_async._errors import TimedOutError
from resonate_async.protocol import (
    TAG_TARGET,
    Claim,
    FenceRecord,
    FenceSettle,
    Request,
    Response,
    TaskAcquire,
    TaskFence,
    TaskFulfill,
    TaskRelease,
    TaskState,
    TaskSuspend,
)
from resonate_async.testing._simulation_network import Process

if TYPE_CHECKING:
    from resonate_async.testing._simulation import _Simulator

# A worker's back-off lets it take back a task it gave back after a failure this many times
# within a second of giving it back (0.1 s doubling: 4); more means a tight loop.
QUICK_REACQUIRES = 8
# Claims one worker may have waiting (for a slot or a back-off) for one task: every further
# ``execute`` message for it is a duplicate, dropped before it queues.
CLAIMS_PER_TASK = 1
# the claim of the execute message the current task handles (see watch_claims)
_CLAIM: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "resonate_async_simulation_claim", default=None)


class Checks:
    """The invariants of one simulation run; violations go to the simulator's list."""

    def __init__(self, sim: _Simulator) -> None:
        self.sim = sim
        self.reported: set[tuple[str, ...]] = set()
        # (task id, pid) -> [when pid last released it (or -1), quick re-acquires in a row]
        self.reacquires: dict[tuple[str, str], list[int]] = {}
        self.peak_claims = 0
        self.executions: dict[str, list[int]] = {}
        self.settled_seq: dict[str, int] = {}
        self.claims: dict[tuple[str, int], str] = {}
        self.top_version: dict[str, int] = {}
        self.seen: dict[str, tuple[str, str | None, int | None]] = {}

    def violation(self, key: tuple[str, ...], text: str) -> None:
        """Report ``text`` once per ``key`` (a loop would otherwise report itself forever)."""
        if key not in self.reported:
            self.reported.add(key)
            self.sim.violations.append(text)

    # observation -----------------------------------------------------------------------------
    def executed(self, step_id: str) -> None:
        self.sim.seq += 1
        self.executions.setdefault(step_id, []).append(self.sim.seq)
        settled = self.settled_seq.get(step_id)
        if settled is not None:
            self.sim.violations.append(
                f"step {step_id} executed again after it was settled (execution #"
                f"{len(self.executions[step_id])})")

    def observe(self, proc: Process, request: Request, response: Response) -> None:
        self.sim.seq += 1
        if isinstance(request, TaskAcquire | TaskRelease) and response.status == 200:
            self.observe_claim(proc, request)
        if isinstance(request, TaskFence | TaskFulfill | TaskSuspend):
            if response.status not in (200, 300):
                return
            if proc.miskeyed:
                self.violation(("miskeyed", request.id), (
                    f"task {request.id}: the engine accepted {request.KIND} from {proc.pid}, "
                    "a worker with the wrong key (it must give the task back, writing nothing)"))
            if isinstance(request, TaskFulfill | TaskSuspend):
                self.reacquires.pop((request.id, proc.pid), None)  # progress: back-off resets
            key = (request.id, request.version)
            holder = self.claims.setdefault(key, proc.pid)
            if holder != proc.pid:
                self.sim.violations.append(
                    f"task {request.id} version {request.version}: the engine accepted "
                    f"{request.KIND} from {proc.pid} while {holder} held that claim")
            top = self.top_version.get(request.id, 0)
            if request.version < top:
                self.sim.violations.append(
                    f"task {request.id}: the engine accepted {request.KIND} from {proc.pid} "
                    f"with version {request.version} after version {top} had written")
            self.top_version[request.id] = max(top, request.version)
            if (isinstance(request, TaskFence)
                    and isinstance(request.action, FenceSettle | FenceRecord)
                    and response.data.action.head.status == 200):
                self.settled_seq.setdefault(request.action.data.id, self.sim.seq)
                self.check_timeout(request.action.data.id)

    def observe_claim(self, proc: Process, request: TaskAcquire | TaskRelease) -> None:
        """Track re-acquires of a task by the process that just gave it back."""
        now = self.sim.clock.now_ms()
        key = (request.id, proc.pid)
        state = self.reacquires.setdefault(key, [-1, 0])
        if isinstance(request, TaskRelease):
            state[0] = now
            if proc.miskeyed:
                self.sim.events["miskeyed_released"] += 1
            return
        if self.sim.outage_until.get(request.id, 0) > now:
            self.sim.events["task_outage_acquires"] += 1
        if state[0] >= 0 and now - state[0] < 1000:
            state[1] += 1
            if state[1] > QUICK_REACQUIRES:
                self.violation(("loop", request.id, proc.pid), (
                    f"task {request.id}: {proc.pid} took it back within a second of giving it "
                    f"back {state[1]} times in a row (a tight release/re-acquire loop; "
                    "repeated failures must back off)"))
        else:
            state[1] = 0
        state[0] = -1

    def check_timeout(self, promise_id: str) -> None:
        """A step settled as timed out must have reached its deadline first."""
        p = self.sim.network.engine.storage.get_promise(promise_id)
        if p is None or p.state not in ("rejected", "rejected_timedout"):
            return
        if p.state == "rejected":
            try:
                self.sim.app.codec.outcome(p, what=promise_id)
            except TimedOutError as exc:
                # only the SDK's own cut-off at this step's deadline (user code may raise or
                # pass on a TimedOutError of something else whenever it likes)
                if f"[{promise_id}] did not finish before its deadline" not in str(exc):
                    return
            except BaseException:  # any other rejection is not a timeout
                return
            else:
                return
        if p.settled_at is not None and p.settled_at < p.timeout_at:
            self.sim.violations.append(
                f"step {promise_id} was settled as timed out at {p.settled_at}, "
                f"{p.timeout_at - p.settled_at} ms before its deadline {p.timeout_at}")
        else:
            self.sim.events["steps_timed_out"] += 1

    def watch_claims(self, proc: Process, app: Resonate) -> None:
        """Count the claims ``proc``'s worker has waiting (an ``execute`` message in hand, its
        task not yet acquired: waiting for a slot or a back-off), per task and in all."""
        worker = app.worker
        on_execute, run_claim = worker.on_execute, worker.run_claim
        waiting = proc.waiting

        def done_waiting(task_id: str) -> None:
            waiting[task_id] -= 1
            if not waiting[task_id]:
                del waiting[task_id]

        async def counted_on_execute(task_id: str, version: int) -> None:
            waiting[task_id] += 1
            mine = [task_id]  # emptied once this message's claim runs
            _CLAIM.set(mine)  # this task's own context (the worker starts one per message)
            try:
                await on_execute(task_id, version)
            finally:
                if mine:
                    done_waiting(task_id)

        async def counted_run_claim(claim: Claim) -> None:
            mine = _CLAIM.get()
            if mine and mine[0] == claim.task.id:
                mine.clear()
                done_waiting(claim.task.id)
            await run_claim(claim)

        worker.on_execute = counted_on_execute  # type: ignore[method-assign]
        worker.run_claim = counted_run_claim  # type: ignore[method-assign]

    def check_claims(self) -> None:
        """Once every task is blocked (a duplicate the worker drops has returned by then),
        no worker has more than ``CLAIMS_PER_TASK`` claim of one task waiting, nor more
        waiting claims than its queue bound."""
        for proc in self.sim.alive():
            waiting = proc.waiting
            for task_id, n in waiting.items():
                self.peak_claims = max(self.peak_claims, n)
                if n > CLAIMS_PER_TASK:
                    self.violation(("claims", proc.pid, task_id), (
                        f"task {task_id}: {proc.pid} had {n} execute messages for it waiting "
                        f"at once (at most {CLAIMS_PER_TASK}: duplicates must be dropped before "
                        "they wait for a slot)"))
            bound = getattr(proc.app.worker, "max_queued", 256) if proc.app else 256
            if waiting.total() > bound:
                self.violation(("claims", proc.pid), (
                    f"{proc.pid} had {waiting.total()} execute messages waiting at once, over "
                    f"its bound of {bound} (waiting messages must be bounded)"))

    def check_settled(self) -> None:
        """A settled promise never changes, nor disappears."""
        if self.sim.engine_down:
            return
        storage = self.sim.network.engine.storage
        found = {p.id: p for p in storage.search_promises(None, None, None, 1 << 30)}
        for pid, before in self.seen.items():
            p = found.get(pid)
            now = None if p is None else (p.state, p.value.data, p.settled_at)
            if now != before:
                self.sim.violations.append(f"settled promise {pid} changed: {before} -> {now}")
                self.seen[pid] = now  # type: ignore[assignment]
        for pid, p in found.items():
            if p.state != "pending" and pid not in self.seen:
                self.seen[pid] = (p.state, p.value.data, p.settled_at)

    def liveness(self) -> None:
        storage = self.sim.network.engine.storage
        for wf in self.sim.workflows:
            p = storage.get_promise(wf.id)
            if wf.id not in self.sim.started:
                self.sim.violations.append(f"root {wf.id} could not be started before the deadline")
            elif p is None or p.state == "pending":
                self.sim.violations.append(f"root {wf.id} is still pending at the deadline")
        states: tuple[TaskState, ...] = ("pending", "acquired", "suspended")
        for state in states:
            for row in storage.search_tasks(state, None, 1 << 30):
                p = storage.get_promise(row.id)
                if p is not None and p.tags.get(TAG_TARGET) is not None:
                    self.sim.violations.append(
                        f"task {row.id} is still {state} (version {row.version}) at the "
                        "deadline: an execution waits forever")
