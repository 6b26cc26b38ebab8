"""The Resonate server's semantics as a deterministic, synchronous state machine.

``Engine`` is driven from outside: requests (typed, or JSON bodies), ``tick(now)`` for
background work and ``drain()`` for the push messages it queued. It never reads a clock, never
sleeps and never performs I/O except through its ``Storage``. It is synchronous on purpose:
an embedded request costs a function call, not a thread hop or a task switch, and SQLite
transactions are short enough to run on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NoReturn

import msgspec
import structlog

from resonate_async.engine._memory import MemoryStorage
from resonate_async.engine._rules import (
    create_problem,
    cron_problem,
    is_awaitable,
    is_timer,
    next_cron_time,
    valid_address,
)
from resonate_async.engine._storage import LEASE_TIMER, RETRY_TIMER, Storage, TaskRow
from resonate_async.protocol import (
    EMPTY_VALUE,
    REQUEST_TYPES,
    TAG_BRANCH,
    TAG_DELAY,
    TAG_ORIGIN,
    TAG_PARENT,
    TAG_PREFIX,
    TAG_SCHEDULE,
    TAG_TARGET,
    ActionResult,
    Claim,
    Empty,
    FenceCreate,
    FenceResult,
    Message,
    Preload,
    Promise,
    PromiseCreate,
    PromiseGet,
    PromisePage,
    PromiseRegisterCallback,
    PromiseRegisterListener,
    PromiseResult,
    PromiseSearch,
    PromiseSettle,
    PromiseState,
    Request,
    Response,
    ResponseHead,
    Schedule,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleGet,
    SchedulePage,
    ScheduleResult,
    ScheduleSearch,
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
    Value,
    decode_data,
    encode,
    encode_response,
    execute_message,
    origin_of,
    parse_envelope,
    unblock_message,
)

log = structlog.get_logger(__name__)

DEFAULT_RETRY_TIMEOUT: Final = 30_000
_EMPTY: Final = Empty()
_OK_EMPTY: Final = Response(200, _EMPTY)
_BATCH: Final = 1000
_I64_MAX: Final = 2**63 - 1
_MAX_FIRINGS_PER_TICK: Final = 10_000


class _Refused(Exception):
    """Raised inside a handler, before any write, to answer with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _refuse(status: int, message: str) -> NoReturn:
    raise _Refused(status, message)


def _after(now: int, duration: int) -> int:
    """``now + duration``, saturated to the 64-bit range every storage can hold."""
    return min(now + duration, _I64_MAX)


def _limit(limit: int | None, default: int) -> int:
    if limit is None:
        return default
    if limit > 1000:
        _refuse(400, "Invalid 'limit' — must be between 1 and 1000")
    return limit


class Engine:
    """One Resonate engine over one storage.

    Build it with ``Engine.memory()`` or ``Engine.sqlite(path)``. Entry points:

    * ``execute(request, now)``: a typed request payload in, a ``Response`` out (no JSON);
    * ``handle(body, now)``: one ``POST /`` body in, the response envelope out (JSON bytes);
    * ``tick(now)``: fire due promise timeouts, task retries, lease expiries and schedules;
    * ``drain()`` / ``drain_messages()``: the push messages queued since the last drain.

    ``now`` is Unix time in milliseconds; the engine clamps it so that it never goes backwards.
    No entry point raises: a broken request gets a 4xx answer, a storage failure a 500.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        retry_timeout: int = DEFAULT_RETRY_TIMEOUT,
        server_url: str = "",
    ) -> None:
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.retry_timeout = retry_timeout
        self.server_url = server_url
        self._now = 0
        self._fence_preload = True
        # Whether the outbox may hold messages (it may, on a reopened file): lets a drain
        # after a request that queued nothing skip the storage round trip.
        self._queued = True
        self._handlers: dict[type[Any], Callable[[Any, int, str], Response]] = {
            PromiseGet: self._promise_get,
            PromiseCreate: self._promise_create,
            PromiseSettle: self._promise_settle,
            PromiseRegisterCallback: self._register_callback,
            PromiseRegisterListener: self._register_listener,
            PromiseSearch: self._promise_search,
            TaskGet: self._task_get,
            TaskCreate: self._task_create,
            TaskAcquire: self._task_acquire,
            TaskSuspend: self._task_suspend,
            TaskFulfill: self._task_fulfill,
            TaskFence: self._task_fence,
            TaskHeartbeat: self._task_heartbeat,
            TaskHalt: self._task_halt,
            TaskContinue: self._task_continue,
            TaskRelease: self._task_release,
            TaskSearch: self._task_search,
            ScheduleCreate: self._schedule_create,
            ScheduleGet: self._schedule_get,
            ScheduleDelete: self._schedule_delete,
            ScheduleSearch: self._schedule_search,
        }

    # construction -----------------------------------------------------------------------------
    @classmethod
    def memory(cls, **options: Any) -> Engine:
        """An engine whose state lives in process memory."""
        return cls(MemoryStorage(), **options)

    @classmethod
    def sqlite(cls, path: str, **options: Any) -> Engine:
        """An engine whose state lives in the SQLite file ``path`` (created if missing)."""
        from resonate_async.engine._sqlite import SqliteStorage

        return cls(SqliteStorage(path), **options)

    def close(self) -> None:
        self.storage.close()

    # entry points -----------------------------------------------------------------------------
    def execute(
        self, request: Request, now: int, corr_id: str = "", *, fence_preload: bool = True
    ) -> Response:
        """Run one typed request at time ``now`` (ms) in one storage transaction.

        ``fence_preload=False`` leaves the preload out of ``task.fence`` answers (an
        in-process caller that never reads it saves O(branch size) work per step).
        """
        self._fence_preload = fence_preload
        handler = self._handlers.get(type(request))
        if handler is None:
            return Response(400, f"Unknown operation: {type(request).__name__}")
        now = self._clamp(now)
        try:
            with self.storage.transaction():
                try:
                    return handler(request, now, corr_id)
                except _Refused as refused:  # an answer, not a failure: what was done stays
                    return Response(refused.status, refused.message)
        except Exception as exc:
            log.exception("engine_request_failed", kind=request.KIND)
            return Response(500, f"Internal error: {exc}")

    def handle(self, body: bytes, now: int, *, fence_preload: bool = True) -> bytes:
        """Answer one ``POST /`` body with its response envelope (HTTP status = head.status).

        Never raises: whatever the bytes, the answer is an envelope (4xx for a broken request,
        500 for a failure of the engine itself). ``fence_preload=False`` leaves the preload
        out of ``task.fence`` answers (for a client that said it keeps its own cache).
        """
        try:
            return self._handle(body, now, fence_preload)
        except Exception as exc:
            log.exception("engine_handle_failed")
            return encode_response("unknown", "0", Response(500, f"Internal error: {exc}"))

    def _handle(self, body: bytes, now: int, fence_preload: bool) -> bytes:
        env = parse_envelope(body)
        if not hasattr(env, "data"):
            return encode_response(env.kind, env.corr_id, Response(env.status, env.message))
        kind, corr_id = env.kind, env.corr_id
        if kind.startswith("debug."):
            return encode_response(kind, corr_id, Response(403, "Debug operations are disabled"))
        if kind not in REQUEST_TYPES:
            return encode_response(kind, corr_id, Response(400, f"Unknown operation: {kind}"))
        try:
            request = decode_data(kind, env.data)
        except msgspec.ValidationError as exc:
            return encode_response(kind, corr_id, Response(400, self._invalid(kind, env.data, exc)))
        return encode_response(kind, corr_id, self.execute(request, now, corr_id,
                                                           fence_preload=fence_preload))

    @staticmethod
    def _invalid(kind: str, data: bytes, exc: msgspec.ValidationError) -> str:
        if kind == "task.fence":
            try:
                action = msgspec.json.decode(data, type=dict[str, Any]).get("action")
            except (msgspec.DecodeError, UnicodeDecodeError):
                action = None
            inner_kind = action.get("kind") if isinstance(action, dict) else None
            if isinstance(action, dict) and inner_kind not in ("promise.create", "promise.settle"):
                return "Invalid fence action kind"
            if "$.action.data" in str(exc):
                return f"Invalid action data: {exc}"
        if kind in ("promise.search", "task.search", "schedule.search") and "$.limit" in str(exc):
            return "Invalid 'limit' — must be between 1 and 1000"
        return f"Invalid request: {exc}"

    def tick(self, now: int) -> None:
        """Fire everything due at ``now``: promise timeouts, task retries and leases, schedules."""
        now = self._clamp(now)
        try:
            self._tick(now)
        except Exception:
            log.exception("engine_tick_failed", now=now)

    def next_due(self) -> int | None:
        """The earliest time (ms) at which ``tick`` would do something, or ``None``."""
        return self.storage.next_due()

    def drain_messages(self) -> list[tuple[str, Message]]:
        """The push messages queued since the last drain, as ``(address, message)``."""
        if not self._queued:
            return []
        with self.storage.transaction():
            messages = self.storage.take_outbox()
        self._queued = False
        return messages

    def drain(self) -> list[tuple[str, bytes]]:
        """The push messages queued since the last drain, as ``(address, message JSON)``."""
        return [(address, encode(message)) for address, message in self.drain_messages()]

    def release_leases(self, now: int, *, keep_pid: str | None = None) -> int:
        """Release every acquired task (but those held by ``keep_pid``), as if its lease expired.

        Used when an engine file is reopened: the processes that held those leases are gone.
        Returns how many tasks were released.
        """
        now = self._clamp(now)
        released = 0
        with self.storage.transaction():
            for row in self.storage.acquired_tasks():
                if row.pid != keep_pid:
                    self._redispatch(row, now)
                    released += 1
        return released

    def _clamp(self, now: int) -> int:
        if now > self._now:
            self._now = now
        return self._now

    # shared mechanics -------------------------------------------------------------------------
    def _try_timeout(self, promise_id: str, now: int) -> Promise | None:
        p = self.storage.get_promise(promise_id)
        if p is not None and p.state == "pending" and p.timeout_at <= now:
            return self._time_out(p, now)
        return p

    def _time_out(self, p: Promise, now: int) -> Promise:
        return self._settle(p, _expired_state(p.tags), EMPTY_VALUE, p.timeout_at, now)

    def _settle(
        self, p: Promise, state: PromiseState, value: Value, settled_at: int, now: int
    ) -> Promise:
        """Settle ``p`` and run the settlement cascade (protocol.md §4.3)."""
        storage = self.storage
        settled = msgspec.structs.replace(p, state=state, value=value, settled_at=settled_at)
        storage.update_promise(settled)
        task = storage.get_task(p.id)
        if task is not None and task.state != "fulfilled":
            storage.put_task(TaskRow(task.id, "fulfilled", task.version, task.resumes))
            storage.drop_callbacks_of(p.id)
        for awaiter in storage.take_callbacks(p.id):
            self._wake(awaiter, now)
        listeners = storage.take_listeners(p.id)
        if listeners:
            message = unblock_message(settled)
            self._queued = True
            for address in listeners:
                storage.push_unblock(p.id, address, message)
        return settled

    def _wake(self, awaiter: str, now: int) -> None:
        """An awaited promise settled: count it, and resume the awaiter if it is suspended."""
        task = self.storage.get_task(awaiter)
        if task is None or task.state == "fulfilled":
            return
        if task.state == "suspended":
            self._dispatch(TaskRow(task.id, "pending", task.version, task.resumes + 1), now)
        else:
            self.storage.put_task(msgspec.structs.replace(task, resumes=task.resumes + 1))

    def _dispatch(self, row: TaskRow, now: int, *, at: int | None = None) -> None:
        """Store ``row`` as pending with a retry timer and queue its execute message."""
        row = msgspec.structs.replace(
            row, state="pending", ttl=None, pid=None, timer=RETRY_TIMER,
            timer_at=(at if at is not None else _after(now, self.retry_timeout)),
        )
        self.storage.put_task(row)
        if at is None:
            self._send_execute(row)

    def _send_execute(self, row: TaskRow) -> None:
        p = self.storage.get_promise(row.id)
        target = p.tags.get(TAG_TARGET) if p is not None else None
        if target is not None:
            self._queued = True
            self.storage.push_execute(
                row.id, target, execute_message(row.id, row.version, self.server_url)
            )

    def _redispatch(self, row: TaskRow, now: int) -> None:
        self._dispatch(TaskRow(row.id, "pending", row.version, row.resumes), now)

    def _claim(self, row: TaskRow, pid: str, ttl: int, now: int) -> TaskRow:
        claimed = TaskRow(row.id, "acquired", row.version + 1, 0, ttl, pid, LEASE_TIMER,
                          _after(now, ttl))
        self.storage.put_task(claimed)
        return claimed

    def _preload(self, root: Promise) -> list[Promise]:
        branch = root.tags.get(TAG_BRANCH)
        if branch is None:
            return []
        return [p for p in self.storage.branch_promises(branch) if p.id != root.id]

    def _create(
        self, data: PromiseCreate, now: int, claim: tuple[str, int] | None = None
    ) -> Promise:
        """Create a new promise (the caller checked that it does not exist) and its task.

        With ``claim=(pid, ttl)`` a pending task is created already acquired by ``pid``, and no
        execute message is sent (``task.create``).
        """
        tags = data.tags
        target = tags.get(TAG_TARGET)
        if now >= data.timeout_at:
            p = Promise(data.id, _expired_state(tags), data.param, EMPTY_VALUE, tags,
                        data.timeout_at, data.timeout_at, data.timeout_at)
            self.storage.insert_promise(p, armed=False)
            if target is not None:
                self.storage.put_task(TaskRow(data.id, "fulfilled", 0))
            return p
        p = Promise(data.id, "pending", data.param, EMPTY_VALUE, tags, data.timeout_at, now)
        self.storage.insert_promise(p, armed=is_awaitable(tags))
        if target is not None:
            if claim is not None:
                self._claim(TaskRow(data.id, "pending", 0), claim[0], claim[1], now)
            else:
                delay = tags.get(TAG_DELAY)
                at = int(delay) if delay is not None and int(delay) > now else None
                self._dispatch(TaskRow(data.id, "pending", 0), now, at=at)
        return p

    def _get_task(self, task_id: str) -> TaskRow:
        row = self.storage.get_task(task_id)
        if row is None:
            _refuse(404, "Task not found")
        return row

    def _root_of(self, row: TaskRow) -> Promise:
        p = self.storage.get_promise(row.id)
        if p is None:  # a task never outlives its promise; guard against a damaged store
            _refuse(500, f"Internal error: task {row.id!r} has no promise")
        return p

    # promise.* ------------------------------------------------------------------------------------
    def _promise_get(self, req: PromiseGet, now: int, _: str) -> Response:
        p = self._try_timeout(req.id, now)
        if p is None:
            return Response(404, "Promise not found")
        return Response(200, PromiseResult(p))

    def _promise_create(self, req: PromiseCreate, now: int, _: str) -> Response:
        problem = create_problem(req)
        if problem:
            _refuse(400, problem)
        return self._get_or_create(req, now)

    def _get_or_create(self, req: PromiseCreate, now: int) -> Response:
        """``promise.create`` of a payload already validated."""
        p = self._try_timeout(req.id, now)
        if p is None:
            p = self._create(req, now)
        return Response(200, PromiseResult(p))

    def _promise_settle(self, req: PromiseSettle, now: int, _: str) -> Response:
        p = self._try_timeout(req.id, now)
        if p is None:
            return Response(404, "Promise not found")
        if p.state == "pending":
            p = self._settle(p, req.state, req.value, now, now)
        return Response(200, PromiseResult(p))

    def _register_callback(self, req: PromiseRegisterCallback, now: int, _: str) -> Response:
        if req.awaited == req.awaiter:
            _refuse(400, "A promise cannot await itself")
        if origin_of(req.awaited) != origin_of(req.awaiter):
            _refuse(400, "Awaited and awaiter must belong to the same origin")
        awaited = self._try_timeout(req.awaited, now)
        awaiter = self._try_timeout(req.awaiter, now)
        if awaited is None:
            return Response(404, "Awaited promise not found")
        if awaiter is None:
            return Response(422, "Awaiter promise not found")
        if TAG_TARGET not in awaiter.tags:
            return Response(422, "Awaiter promise has no resonate:target tag")
        if not is_awaitable(awaited.tags):
            return Response(422, _not_awaitable(awaited.id))
        if awaiter.state == "pending":
            if awaited.state == "pending":
                self.storage.add_callback(awaited.id, awaiter.id)
            else:
                task = self.storage.get_task(awaiter.id)
                if task is not None and task.state != "halted":
                    self._wake(awaiter.id, now)
        return Response(200, PromiseResult(awaited))

    def _register_listener(self, req: PromiseRegisterListener, now: int, _: str) -> Response:
        if not valid_address(req.address):
            _refuse(400, "Invalid listener address")
        p = self._try_timeout(req.awaited, now)
        if p is None:
            return Response(404, "Awaited promise not found")
        if not is_awaitable(p.tags):
            return Response(422, _not_awaitable(p.id))
        if p.state == "pending":
            self.storage.add_listener(p.id, req.address)
        return Response(200, PromiseResult(p))

    def _promise_search(self, req: PromiseSearch, now: int, _: str) -> Response:
        limit = _limit(req.limit, 100)
        found = self.storage.search_promises(req.state, req.tags, req.cursor, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return Response(200, PromisePage(found, found[-1].id if more else None))

    # task.* ---------------------------------------------------------------------------------------
    def _task_get(self, req: TaskGet, now: int, _: str) -> Response:
        self._try_timeout(req.id, now)
        return Response(200, TaskResult(self._get_task(req.id).record()))

    def _task_create(self, req: TaskCreate, now: int, _: str) -> Response:
        if not req.pid:
            _refuse(400, "Invalid request: 'pid' must not be empty")
        data = req.action.data
        problem = create_problem(data)
        if problem:
            _refuse(400, problem)
        if TAG_TARGET not in data.tags:
            _refuse(400, "task.create requires a resonate:target tag in the promise")
        if TAG_DELAY in data.tags:
            _refuse(400, "task.create does not accept a resonate:delay tag")
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
            _refuse(400, "Invalid request: 'pid' must not be empty")
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
            _refuse(400, "Invalid request: 'actions' must not be empty")
        origin = origin_of(req.id)
        awaited_ids: list[str] = []
        for action in req.actions:
            cb = action.data
            if cb.awaiter != req.id:
                _refuse(400, f"Every action's awaiter must be the task id '{req.id}'")
            if cb.awaited == req.id:
                _refuse(400, "A task cannot await its own promise")
            if origin_of(cb.awaited) != origin:
                _refuse(400, "Awaited promises must belong to the task's origin")
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
                return Response(422, _not_awaitable(p.id))
        if any(p is not None and p.state != "pending" for p in awaited):
            if row.resumes:
                self.storage.put_task(msgspec.structs.replace(row, resumes=0))
            return Response(300, Preload(self._preload(self._root_of(row))))
        for pid in awaited_ids:
            self.storage.add_callback(pid, req.id)
        self.storage.put_task(TaskRow(row.id, "suspended", row.version, 0))
        return _OK_EMPTY

    def _task_fulfill(self, req: TaskFulfill, now: int, _: str) -> Response:
        settle = req.action.data
        if settle.id != req.id:
            _refuse(400, "task.fulfill must settle the task's own promise: action id != id")
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
            _refuse(400, "task.fence cannot act on the task's own promise; use task.fulfill")
        if isinstance(action, FenceCreate):
            problem = create_problem(action.data)
            if problem:
                _refuse(400, problem)
        self._try_timeout(req.id, now)
        self._try_timeout(inner_id, now)
        row = self._get_task(req.id)
        if row.state != "acquired" or row.version != req.version:
            return Response(409, "Version mismatch")
        if isinstance(action, FenceCreate):
            inner = self._get_or_create(action.data, now)
            kind = "promise.create"
        else:
            inner = self._promise_settle(action.data, now, corr_id)
            kind = "promise.settle"
        result = ActionResult(kind, ResponseHead(corr_id, inner.status), inner.data)
        preload = self._preload(self._root_of(row)) if self._fence_preload else []
        return Response(200, FenceResult(result, preload))

    def _task_heartbeat(self, req: TaskHeartbeat, now: int, _: str) -> Response:
        if not req.pid:
            _refuse(400, "Invalid request: 'pid' must not be empty")
        if not req.tasks:
            _refuse(400, "Invalid request: 'tasks' must not be empty")
        origin = origin_of(req.tasks[0].id)
        if any(origin_of(t.id) != origin for t in req.tasks):
            _refuse(400, "All tasks must belong to the same origin")
        for ref in req.tasks:
            row = self.storage.get_task(ref.id)
            if (row is not None and row.state == "acquired" and row.version == ref.version
                    and row.pid == req.pid and row.ttl is not None):
                self.storage.put_task(msgspec.structs.replace(row, timer_at=_after(now, row.ttl)))
        return _OK_EMPTY

    def _task_halt(self, req: TaskHalt, now: int, _: str) -> Response:
        self._try_timeout(req.id, now)
        row = self._get_task(req.id)
        if row.state == "fulfilled":
            return Response(409, "Task is fulfilled")
        if row.state != "halted":
            self.storage.put_task(TaskRow(row.id, "halted", row.version, row.resumes))
        return _OK_EMPTY

    def _task_continue(self, req: TaskContinue, now: int, _: str) -> Response:
        self._try_timeout(req.id, now)
        row = self._get_task(req.id)
        if row.state != "halted":
            return Response(409, "Task is not halted")
        self._redispatch(row, now)
        return _OK_EMPTY

    def _task_release(self, req: TaskRelease, now: int, _: str) -> Response:
        self._try_timeout(req.id, now)
        row = self._get_task(req.id)
        if row.state != "acquired" or row.version != req.version:
            return Response(409, "Task version mismatch or invalid state")
        self._redispatch(row, now)
        return _OK_EMPTY

    def _task_search(self, req: TaskSearch, now: int, _: str) -> Response:
        limit = _limit(req.limit, 100)
        rows = self.storage.search_tasks(req.state, req.cursor, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Response(200, TaskPage([r.record() for r in rows], rows[-1].id if more else None))

    # schedule.* -----------------------------------------------------------------------------------
    def _schedule_create(self, req: ScheduleCreate, now: int, _: str) -> Response:
        if not req.id:
            _refuse(400, "Invalid request: 'id' must not be empty")
        if ":" in req.id:
            _refuse(400, "Schedule id must not contain ':'")
        if "\x00" in req.id or "\x00" in req.promise_id:
            _refuse(400, "Invalid request: schedule ids and promiseId must not contain NUL")
        if not req.promise_id:
            _refuse(400, "Invalid request: 'promiseId' must not be empty")
        if ":" in req.promise_id:
            _refuse(400, "promiseId template must not contain ':' (fired ids are roots)")
        target = req.promise_tags.get(TAG_TARGET)
        if target is None:
            _refuse(400, "promiseTags must contain resonate:target")
        if not valid_address(target):
            _refuse(400, "Invalid resonate:target address")
        if cron_problem(req.cron):
            _refuse(400, "Invalid cron expression")
        existing = self.storage.get_schedule(req.id)
        if existing is not None:
            return Response(200, ScheduleResult(existing))
        schedule = Schedule(req.id, req.cron, req.promise_id, req.promise_timeout,
                            req.promise_param, req.promise_tags, now,
                            next_cron_time(req.cron, now))
        self.storage.put_schedule(schedule)
        return Response(200, ScheduleResult(schedule))

    def _schedule_get(self, req: ScheduleGet, now: int, _: str) -> Response:
        s = self.storage.get_schedule(req.id)
        if s is None:
            return Response(404, "Schedule not found")
        return Response(200, ScheduleResult(s))

    def _schedule_delete(self, req: ScheduleDelete, now: int, _: str) -> Response:
        if self.storage.get_schedule(req.id) is None:
            return Response(404, "Schedule not found")
        self.storage.delete_schedule(req.id)
        return _OK_EMPTY

    def _schedule_search(self, req: ScheduleSearch, now: int, _: str) -> Response:
        limit = _limit(req.limit, 10)
        found = self.storage.search_schedules(req.tags, req.cursor, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return Response(200, SchedulePage(found, found[-1].id if more else None))

    # background -----------------------------------------------------------------------------------
    def _tick(self, now: int) -> None:
        storage = self.storage
        while True:
            with storage.transaction():
                due = storage.due_promises(now, _BATCH)
                for p in due:
                    self._time_out(p, now)
            if len(due) < _BATCH:
                break
        while True:
            with storage.transaction():
                rows = storage.due_tasks(now, _BATCH)
                for row in rows:
                    if row.timer == LEASE_TIMER:
                        self._redispatch(row, now)
                    else:
                        self._dispatch(row, now)
            if len(rows) < _BATCH:
                break
        fired = 0
        while fired < _MAX_FIRINGS_PER_TICK:  # a long downtime catches up over several ticks
            with storage.transaction():
                schedules = storage.due_schedules(now, _BATCH)
                for s in schedules:
                    self._fire(s, now)
            if not schedules:
                break
            fired += len(schedules)

    def _fire(self, s: Schedule, now: int) -> None:
        """Fire one occurrence of a schedule (protocol.md §4.5) and move it to the next."""
        at = s.next_run_at
        pid = s.promise_id.replace("{{.id}}", s.id).replace("{{.timestamp}}", str(at))
        if self.storage.get_promise(pid) is None:
            tags = {**s.promise_tags, TAG_SCHEDULE: s.id, TAG_ORIGIN: pid, TAG_BRANCH: pid,
                    TAG_PARENT: pid, TAG_PREFIX: pid}
            timeout_at = _after(at, s.promise_timeout)
            if now >= timeout_at:
                p = Promise(pid, _expired_state(tags), s.promise_param, EMPTY_VALUE, tags,
                            timeout_at, at, timeout_at)
                self.storage.insert_promise(p, armed=False)
                self.storage.put_task(TaskRow(pid, "fulfilled", 0))
            else:
                p = Promise(pid, "pending", s.promise_param, EMPTY_VALUE, tags, timeout_at, at)
                self.storage.insert_promise(p, armed=True)
                self._dispatch(TaskRow(pid, "pending", 0), now)
        self.storage.put_schedule(msgspec.structs.replace(
            s, last_run_at=at, next_run_at=next_cron_time(s.cron, at)))


def _expired_state(tags: dict[str, str]) -> PromiseState:
    """What a promise becomes at its deadline: a timer resolves, anything else times out."""
    return "resolved" if is_timer(tags) else "rejected_timedout"


def _not_awaitable(promise_id: str) -> str:
    return (
        f"Promise '{promise_id}' cannot be awaited: only promises with resonate:target, "
        "resonate:timer or resonate:external can be awaited or listened to"
    )
