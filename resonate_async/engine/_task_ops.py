"""``task.*`` operations of the engine (protocol.md §3.7-3.16)."""

from __future__ import annotations

import msgspec

from resonate_async.engine._core import (
    OK_EMPTY,
    not_awaitable,
    page_limit,
    refuse,
    saturated_after,
)
from resonate_async.engine._promise_ops import PromiseOps
from resonate_async.engine._rules import (
    create_problem,
    is_awaitable,
)
from resonate_async.engine._storage import TaskRow
from resonate_async.protocol import (
    TAG_DELAY,
    TAG_TARGET,
    TAG_TIMER,
    ActionResult,
    Claim,
    FenceCreate,
    FenceRecord,
    FenceResult,
    FenceSettle,
    Preload,
    Promise,
    PromiseResult,
    Response,
    ResponseHead,
    TaskAcquire,
    TaskContinue,
    TaskCreate,
    TaskFence,
    TaskFulfill,
    TaskGet,
    TaskHalt,
    TaskHeartbeat,
    TaskPage,
    TaskRelease,
    TaskResult,
    TaskSearch,
    TaskSuspend,
    origin_of,
)


class TaskOps(PromiseOps):
    """task.get, create, acquire, suspend, fulfill, fence, heartbeat, halt, continue, release,
    search (task.fence runs promise operations, hence the base class)."""

    # task.* ---------------------------------------------------------------------------------------
    def _task_get(self, req: TaskGet, now: int, _: str) -> Response:
        self._try_timeout(req.id, now)
        return Response(200, TaskResult(self._get_task(req.id).record()))

    def _task_create(self, req: TaskCreate, now: int, _: str) -> Response:
        if not req.pid:
            refuse(400, "Invalid request: 'pid' must not be empty")
        data = req.action.data
        problem = create_problem(data)
        if problem:
            refuse(400, problem)
        if TAG_TARGET not in data.tags:
            refuse(400, "task.create requires a resonate:target tag in the promise")
        if TAG_DELAY in data.tags:
            refuse(400, "task.create does not accept a resonate:delay tag")
        p = self._try_timeout(data.id, now)
        if p is None:
            p = self._create(data, now, claim=(req.pid, req.ttl))
            new = self._get_task(p.id)
            preload = self._preload(p) if new.state == "acquired" else []
            return Response(200, Claim(new.record(), p, preload))
        row = self.storage.get_task(p.id)
        if row is None:
            return Response(422, "The promise does not have a resonate:target tag")
        if row.state == "fulfilled":
            return Response(200, Claim(row.record(), p, []))
        if row.state != "pending":
            return Response(409, "Already exists")
        claimed = self._claim(row, req.pid, req.ttl, now)
        return Response(200, Claim(claimed.record(), p, self._preload(p)))

    def _task_acquire(self, req: TaskAcquire, now: int, _: str) -> Response:
        if not req.pid:
            refuse(400, "Invalid request: 'pid' must not be empty")
        self._try_timeout(req.id, now)
        row = self._get_task(req.id)
        if row.state != "pending":
            return Response(409, "Task is not pending")
        if row.version != req.version:
            return Response(409, "Version mismatch")
        claimed = self._claim(row, req.pid, req.ttl, now)
        root = self._root_of(claimed)
        return Response(200, Claim(claimed.record(), root, self._preload(root)))

    def _task_suspend(self, req: TaskSuspend, now: int, _: str) -> Response:
        if not req.actions:
            refuse(400, "Invalid request: 'actions' must not be empty")
        origin = origin_of(req.id)
        awaited_ids: list[str] = []
        for action in req.actions:
            cb = action.data
            if cb.awaiter != req.id:
                refuse(400, f"Every action's awaiter must be the task id '{req.id}'")
            if cb.awaited == req.id:
                refuse(400, "A task cannot await its own promise")
            if origin_of(cb.awaited) != origin:
                refuse(400, "Awaited promises must belong to the task's origin")
            if cb.awaited not in awaited_ids:
                awaited_ids.append(cb.awaited)
        self._try_timeout(req.id, now)
        awaited = [self._try_timeout(i, now) for i in awaited_ids]
        row = self._get_task(req.id)
        if row.state != "acquired" or row.version != req.version:
            return Response(409, "Task is not acquired or version mismatch")
        if any(p is None for p in awaited):
            return Response(422, "Awaited promise not found")
        for p in awaited:
            assert p is not None
            if not is_awaitable(p.tags):
                return Response(422, not_awaitable(p.id))
        if any(p is not None and p.state != "pending" for p in awaited):
            if row.resumes:
                self.storage.put_task(msgspec.structs.replace(row, resumes=0))
            return Response(300, Preload(self._preload(self._root_of(row))))
        for pid in awaited_ids:
            self.storage.add_callback(pid, req.id)
        self.storage.put_task(TaskRow(row.id, "suspended", row.version, 0))
        return OK_EMPTY

    def _task_fulfill(self, req: TaskFulfill, now: int, _: str) -> Response:
        settle = req.action.data
        if settle.id != req.id:
            refuse(400, "task.fulfill must settle the task's own promise: action id != id")
        self._try_timeout(req.id, now)
        row = self._get_task(req.id)
        if row.state != "acquired" or row.version != req.version:
            return Response(409, "Task version mismatch or invalid state")
        root = self._root_of(row)
        settled = self._settle(root, settle.state, settle.value, now, now)
        return Response(200, PromiseResult(settled))

    def _task_fence(self, req: TaskFence, now: int, corr_id: str) -> Response:
        action = req.action
        inner_id = action.data.id
        if inner_id == req.id:
            refuse(400, "task.fence cannot act on the task's own promise; use task.fulfill")
        if not isinstance(action, FenceSettle):
            problem = create_problem(action.data)
            if problem:
                refuse(400, problem)
            if isinstance(action, FenceRecord) and (
                    TAG_TARGET in action.data.tags or TAG_TIMER in action.data.tags):
                refuse(400, "promise.record creates a settled promise: it cannot carry "
                            "resonate:target or resonate:timer (create those pending)")
        self._try_timeout(req.id, now)
        self._try_timeout(inner_id, now)
        row = self._get_task(req.id)
        if row.state != "acquired" or row.version != req.version:
            return Response(409, "Version mismatch")
        if isinstance(action, FenceCreate):
            inner = self._get_or_create(action.data, now)
            kind = "promise.create"
        elif isinstance(action, FenceRecord):
            inner = self._record(action, now)
            kind = "promise.record"
        else:
            inner = self._promise_settle(action.data, now, corr_id)
            kind = "promise.settle"
        result = ActionResult(kind, ResponseHead(corr_id, inner.status), inner.data)
        preload = self._preload(self._root_of(row)) if self._fence_preload else []
        return Response(200, FenceResult(result, preload))

    def _record(self, action: FenceRecord, now: int) -> Response:
        """``promise.record``: the promise created already settled, in one write."""
        data = action.data
        p = self._try_timeout(data.id, now)
        if p is None:
            if now >= data.timeout_at:  # as a create past its deadline: timed out
                p = self._create(data, now)
            else:
                p = Promise(data.id, action.state, data.param, action.value, data.tags,
                            data.timeout_at, now, now)
                self.storage.insert_promise(p, armed=False)
        elif p.state == "pending":  # created by an earlier run (create, then settle)
            p = self._settle(p, action.state, action.value, now, now)
        return Response(200, PromiseResult(p))

    def _task_heartbeat(self, req: TaskHeartbeat, now: int, _: str) -> Response:
        if not req.pid:
            refuse(400, "Invalid request: 'pid' must not be empty")
        if not req.tasks:
            refuse(400, "Invalid request: 'tasks' must not be empty")
        origin = origin_of(req.tasks[0].id)
        if any(origin_of(t.id) != origin for t in req.tasks):
            refuse(400, "All tasks must belong to the same origin")
        for ref in req.tasks:
            row = self.storage.get_task(ref.id)
            if (row is not None and row.state == "acquired" and row.version == ref.version
                    and row.pid == req.pid and row.ttl is not None):
                lease = saturated_after(now, row.ttl)
                self.storage.put_task(msgspec.structs.replace(row, timer_at=lease))
        return OK_EMPTY

    def _task_halt(self, req: TaskHalt, now: int, _: str) -> Response:
        self._try_timeout(req.id, now)
        row = self._get_task(req.id)
        if row.state == "fulfilled":
            return Response(409, "Task is fulfilled")
        if row.state != "halted":
            self.storage.put_task(TaskRow(row.id, "halted", row.version, row.resumes))
        return OK_EMPTY

    def _task_continue(self, req: TaskContinue, now: int, _: str) -> Response:
        self._try_timeout(req.id, now)
        row = self._get_task(req.id)
        if row.state != "halted":
            return Response(409, "Task is not halted")
        self._redispatch(row, now)
        return OK_EMPTY

    def _task_release(self, req: TaskRelease, now: int, _: str) -> Response:
        self._try_timeout(req.id, now)
        row = self._get_task(req.id)
        if row.state != "acquired" or row.version != req.version:
            return Response(409, "Task version mismatch or invalid state")
        self._redispatch(row, now)
        return OK_EMPTY

    def _task_search(self, req: TaskSearch, now: int, _: str) -> Response:
        limit = page_limit(req.limit, 100)
        rows = self.storage.search_tasks(req.state, req.cursor, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Response(200, TaskPage([r.record() for r in rows], rows[-1].id if more else None))

