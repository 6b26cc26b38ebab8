"""The engine's shared mechanics: timeouts, the settlement cascade, dispatch, claims, preload.

``Core`` holds what every operation needs; the operations themselves live in
``_promise_ops``, ``_task_ops`` and ``_schedule_ops``, and ``Engine`` puts them together.
"""

from __future__ import annotations

from typing import Final, NoReturn

import msgspec
import structlog

from resonate_async.engine._rules import is_timer
from resonate_async.engine._storage import LEASE_TIMER, RETRY_TIMER, Storage, TaskRow
from resonate_async.protocol import (
    EMPTY_VALUE,
    TAG_BRANCH,
    TAG_DELAY,
    TAG_TARGET,
    Empty,
    Promise,
    PromiseCreate,
    PromiseState,
    Response,
    Value,
    execute_message,
    unblock_message,
)

log = structlog.get_logger("resonate_async.engine")

DEFAULT_RETRY_TIMEOUT: Final = 30_000
EMPTY: Final = Empty()
OK_EMPTY: Final = Response(200, EMPTY)
BATCH: Final = 1000
I64_MAX: Final = 2**63 - 1
MAX_FIRINGS_PER_TICK: Final = 10_000


class Refused(Exception):
    """Raised inside a handler, before any write, to answer with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def refuse(status: int, message: str) -> NoReturn:
    raise Refused(status, message)


def saturated_after(now: int, duration: int) -> int:
    """``now + duration``, saturated to the 64-bit range every storage can hold."""
    return min(now + duration, I64_MAX)


def page_limit(limit: int | None, default: int) -> int:
    if limit is None:
        return default
    if limit > 1000:
        refuse(400, "Invalid 'limit' — must be between 1 and 1000")
    return limit


class Core:
    """State and mechanics shared by every operation of the engine (see ``Engine``)."""

    storage: Storage
    retry_timeout: int
    server_url: str
    _now: int
    _fence_preload: bool
    _queued: bool

    # shared mechanics -------------------------------------------------------------------------
    def _try_timeout(self, promise_id: str, now: int) -> Promise | None:
        p = self.storage.get_promise(promise_id)
        if p is not None and p.state == "pending" and p.timeout_at <= now:
            return self._time_out(p, now)
        return p

    def _time_out(self, p: Promise, now: int) -> Promise:
        return self._settle(p, expired_state(p.tags), EMPTY_VALUE, p.timeout_at, now)

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
            timer_at=(at if at is not None else saturated_after(now, self.retry_timeout)),
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
                          saturated_after(now, ttl))
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
            p = Promise(data.id, expired_state(tags), data.param, EMPTY_VALUE, tags,
                        data.timeout_at, data.timeout_at, data.timeout_at)
            self.storage.insert_promise(p, armed=False)
            if target is not None:
                self.storage.put_task(TaskRow(data.id, "fulfilled", 0))
            return p
        p = Promise(data.id, "pending", data.param, EMPTY_VALUE, tags, data.timeout_at, now)
        # As the Resonate server does, only a targeted promise's deadline is armed (fired in
        # the background); any other promise times out lazily, when a request names it.
        self.storage.insert_promise(p, armed=target is not None)
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
            refuse(404, "Task not found")
        return row

    def _root_of(self, row: TaskRow) -> Promise:
        p = self.storage.get_promise(row.id)
        if p is None:  # a task never outlives its promise; guard against a damaged store
            refuse(500, f"Internal error: task {row.id!r} has no promise")
        return p


def expired_state(tags: dict[str, str]) -> PromiseState:
    """What a promise becomes at its deadline: a timer resolves, anything else times out."""
    return "resolved" if is_timer(tags) else "rejected_timedout"


def not_awaitable(promise_id: str) -> str:
    return (
        f"Promise '{promise_id}' cannot be awaited: only promises with resonate:target, "
        "resonate:timer or resonate:external can be awaited or listened to"
    )

