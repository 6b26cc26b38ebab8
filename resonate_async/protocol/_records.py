"""The records of the Resonate protocol: values, promises, tasks and schedules.

Every record is a frozen msgspec ``Struct``: camelCase on the wire, snake_case in Python.
Fields that the server omits when unset (``settledAt``, a task's ``ttl``/``pid``, a schedule's
``lastRunAt``) default to ``None`` and are left out of the encoded JSON.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

PROTOCOL_VERSION: Final = "2026-04-01"

PromiseState = Literal["pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"]
SettleState = Literal["resolved", "rejected", "rejected_canceled"]
TaskState = Literal["pending", "acquired", "suspended", "halted", "fulfilled"]

PROMISE_STATES: Final = frozenset(
    ("pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout")
)
TASK_STATES: Final = frozenset(("pending", "acquired", "suspended", "halted", "fulfilled"))

# The tags the engine gives meaning to (protocol.md §5).
TAG_TARGET: Final = "resonate:target"
TAG_TIMER: Final = "resonate:timer"
TAG_EXTERNAL: Final = "resonate:external"
TAG_DELAY: Final = "resonate:delay"
TAG_ORIGIN: Final = "resonate:origin"
TAG_BRANCH: Final = "resonate:branch"
TAG_PARENT: Final = "resonate:parent"
TAG_PREFIX: Final = "resonate:prefix"
TAG_SCOPE: Final = "resonate:scope"
TAG_SCHEDULE: Final = "resonate:schedule"


class Value(msgspec.Struct, frozen=True, omit_defaults=True):
    """A promise's ``param`` or ``value``: opaque ``data`` (base64 by convention) and headers.

    ``Value()`` encodes as ``{}``: no value.
    """

    headers: dict[str, str] | None = None
    data: str | None = None


EMPTY_VALUE: Final = Value()


class Promise(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """A durable promise record (protocol.md §2.2)."""

    id: str
    state: PromiseState
    param: Value
    value: Value
    tags: dict[str, str]
    timeout_at: int
    created_at: int
    settled_at: int | None = None

    @property
    def pending(self) -> bool:
        return self.state == "pending"


class Task(msgspec.Struct, frozen=True, omit_defaults=True):
    """A task record as the wire shows it (protocol.md §2.3).

    ``ttl`` and ``pid`` are present only while the task is ``acquired``.
    """

    id: str
    state: TaskState
    version: int
    resumes: int
    ttl: int | None = None
    pid: str | None = None


class Schedule(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """A schedule record (protocol.md §2.4)."""

    id: str
    cron: str
    promise_id: str
    promise_timeout: int
    promise_param: Value
    promise_tags: dict[str, str]
    created_at: int
    next_run_at: int
    last_run_at: int | None = None
