"""The storage seam of the engine: what it keeps, never what it means.

The engine owns the semantics; a ``Storage`` only keeps records and answers indexed queries.
Every query that returns several rows returns them in one defined order, so that
``MemoryStorage`` and ``SqliteStorage`` give byte-identical answers to one sequence of
requests (the property test checks it).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import msgspec

from resonate_async.protocol import Message, Promise, PromiseState, Schedule, Task, TaskState

RETRY_TIMER = 0
LEASE_TIMER = 1


class TaskRow(msgspec.Struct, frozen=True):
    """A task as the engine stores it: the wire record plus its one timer.

    ``timer`` is ``RETRY_TIMER`` (pending: re-send execute at ``timer_at``), ``LEASE_TIMER``
    (acquired: release at ``timer_at``) or ``None``.
    """

    id: str
    state: TaskState
    version: int
    resumes: int = 0
    ttl: int | None = None
    pid: str | None = None
    timer: int | None = None
    timer_at: int | None = None

    def record(self) -> Task:
        return Task(self.id, self.state, self.version, self.resumes, self.ttl, self.pid)


class Storage(Protocol):
    """Records and indexes for one engine. Orders: ids ascending byte-wise; due items by time."""

    def transaction(self) -> AbstractContextManager[None]:
        """One request's writes: all of them become durable together, or none."""
        ...

    def close(self) -> None: ...

    # promises
    def get_promise(self, promise_id: str) -> Promise | None: ...

    def insert_promise(self, promise: Promise, *, armed: bool) -> None:
        """Add a new promise; ``armed`` pending promises are returned by ``due_promises``."""
        ...

    def update_promise(self, promise: Promise) -> None:
        """Replace a promise (settlement); a settled promise is no longer armed."""
        ...

    def branch_promises(self, branch: str) -> list[Promise]:
        """Promises whose ``resonate:branch`` tag is ``branch``, by id."""
        ...

    def due_promises(self, now: int, limit: int) -> list[Promise]:
        """Armed pending promises with ``timeout_at <= now``, by (timeout_at, id)."""
        ...

    def search_promises(
        self, state: PromiseState | None, tags: dict[str, str] | None, cursor: str | None,
        limit: int,
    ) -> list[Promise]: ...

    # tasks
    def get_task(self, task_id: str) -> TaskRow | None: ...

    def put_task(self, row: TaskRow) -> None: ...

    def due_tasks(self, now: int, limit: int) -> list[TaskRow]:
        """Tasks whose timer is due, by (timer_at, id)."""
        ...

    def search_tasks(self, state: TaskState | None, cursor: str | None,
                     limit: int) -> list[TaskRow]: ...

    def acquired_tasks(self) -> list[TaskRow]:
        """Every task currently ``acquired``, by id."""
        ...

    # callbacks: "when awaited settles, resume awaiter"
    def add_callback(self, awaited: str, awaiter: str) -> None: ...

    def take_callbacks(self, awaited: str) -> list[str]:
        """Remove and return the awaiters of ``awaited``, sorted."""
        ...

    def drop_callbacks_of(self, awaiter: str) -> None: ...

    # listeners: "when promise settles, send unblock to address"
    def add_listener(self, promise_id: str, address: str) -> None: ...

    def take_listeners(self, promise_id: str) -> list[str]:
        """Remove and return the addresses listening on ``promise_id``, in registration order."""
        ...

    # schedules
    def get_schedule(self, schedule_id: str) -> Schedule | None: ...

    def put_schedule(self, schedule: Schedule) -> None: ...

    def delete_schedule(self, schedule_id: str) -> None: ...

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        """Schedules with ``next_run_at <= now``, by (next_run_at, id)."""
        ...

    def search_schedules(self, tags: dict[str, str] | None, cursor: str | None,
                         limit: int) -> list[Schedule]: ...

    # outbox
    def push_execute(self, task_id: str, address: str, message: Message) -> None:
        """Queue an execute; a queued execute for the same task is replaced in place."""
        ...

    def push_unblock(self, promise_id: str, address: str, message: Message) -> None:
        """Queue an unblock, at most once per (promise, address)."""
        ...

    def take_outbox(self) -> list[tuple[str, Message]]:
        """Remove and return every queued message, in queue order."""
        ...

    def next_due(self) -> int | None:
        """The earliest time at which ``tick`` has something to do, if any."""
        ...

    def next_written_deadline(self) -> int | None:
        """The earliest deadline written since the last call (and forget it), if any.

        Lets a timer loop learn cheaply that it must wake earlier than it planned.
        """
        ...


def tags_match(tags: dict[str, str], wanted: dict[str, str] | None) -> bool:
    return not wanted or all(tags.get(k) == v for k, v in wanted.items())
