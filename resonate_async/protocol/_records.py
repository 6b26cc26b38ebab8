"""The records of the Resonate protocol: values, promises, tasks and schedules.

Every record is a frozen msgspec ``Struct``: camelCase on the wire, snake_case in Python.
Fields that the server omits when unset (``settledAt``, a task's ``ttl``/``pid``, a schedule's
``lastRunAt``) default to ``None`` and are left out of the encoded JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

import msgspec
from msgspec.structs import force_setattr

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

# Group names the SDK keeps for itself (``Resonate(group=...)`` refuses them). Timers and
# awaited-from-outside promises target TIMER_GROUP, where no process listens: the Resonate
# server arms a deadline only for a promise with ``resonate:target``. The task that the target
# also creates is halted by the SDK right away (its first ``execute``, sent to an empty group,
# is dropped). A client that runs no work streams in a private group of its own.
RESERVED_GROUP_PREFIX: Final = "resonate-"
TIMER_GROUP: Final = "resonate-timers"
TIMER_TARGET: Final = f"poll://any@{TIMER_GROUP}"
CLIENT_GROUP_PREFIX: Final = "resonate-client-"


class Value(msgspec.Struct, frozen=True, omit_defaults=True):
    """A promise's ``param`` or ``value``: opaque ``data`` (base64 by convention) and headers.

    ``Value()`` encodes as ``{}``: no value.
    """

    headers: dict[str, str] | None = None
    data: str | None = None


EMPTY_VALUE: Final = Value()


class Promise(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """A durable promise record (protocol.md §2.2).

    Read leniently: a ``param``, ``value`` or ``tags`` of ``null`` (other Resonate
    implementations send them for "none") is read as empty, so code past the boundary always
    sees a ``Value`` and a dict. Unknown fields are ignored.
    """

    id: str
    state: PromiseState
    if TYPE_CHECKING:
        param: Value
        value: Value
        tags: dict[str, str]
    else:  # what the wire may hold; __post_init__ makes it the declared type
        param: Value | None
        value: Value | None
        tags: dict[str, str] | None
    timeout_at: int
    created_at: int
    settled_at: int | None = None

    def __post_init__(self) -> None:
        # Cheap (three identity checks) on the engine's hot path, where nothing is ever None.
        if self.param is None:
            force_setattr(self, "param", EMPTY_VALUE)
        if self.value is None:
            force_setattr(self, "value", EMPTY_VALUE)
        if self.tags is None:
            force_setattr(self, "tags", {})

    @property
    def pending(self) -> bool:
        return self.state == "pending"


class Task(msgspec.Struct, frozen=True, omit_defaults=True):
    """A task record as the wire shows it (protocol.md §2.3).

    ``ttl`` and ``pid`` are present only while the task is ``acquired``. ``resumes`` may be
    absent (read as 0), a count, a list of promise ids (read as their number) or a flag.
    """

    id: str
    state: TaskState
    version: int
    if TYPE_CHECKING:
        resumes: int = 0
    else:  # the Resonate server sends a count; older specs allow a list of ids or a flag
        resumes: int | bool | list[str] | msgspec.UnsetType = msgspec.UNSET
    ttl: int | None = None
    pid: str | None = None

    def __post_init__(self) -> None:
        resumes: object = self.resumes
        if type(resumes) is not int:  # UNSET (absent: 0 and still encoded), a list, a flag
            force_setattr(self, "resumes", len(resumes) if isinstance(resumes, list)
                          else int(resumes) if isinstance(resumes, bool) else 0)


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
