"""Request and response payloads of every operation kind, the envelopes and the push messages.

Each request payload is the ``data`` object of one ``POST /`` request; its class variable
``KIND`` is the envelope's ``kind``. The same Structs travel through the embedded transport
(no JSON at all) and through HTTP (encoded by msgspec), so both paths speak exactly one protocol.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Generic, TypeVar

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

from resonate_async.protocol._records import (
    PROTOCOL_VERSION,
    Promise,
    PromiseState,
    Schedule,
    SettleState,
    Task,
    TaskState,
    Value,
)

# Integers on the wire are 64-bit signed, as in the Resonate server: anything larger is a 400
# at the boundary instead of an overflow deep inside a storage backend.
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
Int64 = Annotated[int, Meta(ge=I64_MIN, le=I64_MAX)]
NonNegative = Annotated[int, Meta(ge=0, le=I64_MAX)]
Positive = Annotated[int, Meta(ge=1, le=I64_MAX)]
Limit = Annotated[int, Meta(ge=1)]

T = TypeVar("T")


class ActionHead(msgspec.Struct, frozen=True, rename="camel"):
    """The head SDKs put on nested actions; the engine ignores it."""

    corr_id: str = ""
    version: str = PROTOCOL_VERSION


# ---------------------------------------------------------------------------------------------
# promise.*


class PromiseGet(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "promise.get"
    id: str


class PromiseCreate(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    KIND: ClassVar[str] = "promise.create"
    id: str
    timeout_at: NonNegative
    param: Value = Value()
    tags: dict[str, str] = {}


class PromiseSettle(msgspec.Struct, frozen=True, omit_defaults=True):
    KIND: ClassVar[str] = "promise.settle"
    id: str
    state: SettleState
    value: Value = Value()


class PromiseRegisterCallback(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "promise.register_callback"
    awaited: str
    awaiter: str


class PromiseRegisterListener(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "promise.register_listener"
    awaited: str
    address: str


class PromiseSearch(msgspec.Struct, frozen=True, omit_defaults=True):
    KIND: ClassVar[str] = "promise.search"
    state: PromiseState | None = None
    tags: dict[str, str] | None = None
    limit: Limit | None = None
    cursor: str | None = None


# ---------------------------------------------------------------------------------------------
# task.*


class Action(msgspec.Struct, Generic[T], frozen=True):
    """A nested sub-request ``{kind, head, data}``; only ``data`` is read (head must be present)."""

    kind: str
    head: Any
    data: T


class TaskGet(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.get"
    id: str


class TaskCreate(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.create"
    pid: str
    ttl: Positive
    action: Action[PromiseCreate]


class TaskAcquire(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.acquire"
    id: str
    version: NonNegative
    pid: str
    ttl: Positive


class TaskSuspend(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.suspend"
    id: str
    version: Int64
    actions: list[Action[PromiseRegisterCallback]]


class TaskFulfill(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.fulfill"
    id: str
    version: Int64
    action: Action[PromiseSettle]


class FenceCreate(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="kind",
                  tag="promise.create"):
    """``task.fence``'s inner ``promise.create`` (its head may be omitted)."""

    data: PromiseCreate
    head: Any = None


class FenceSettle(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="kind",
                  tag="promise.settle"):
    """``task.fence``'s inner ``promise.settle`` (its head may be omitted)."""

    data: PromiseSettle
    head: Any = None


class FenceRecord(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="kind",
                  tag="promise.record"):
    """``task.fence``'s inner "create ``data`` already settled as ``state`` with ``value``".

    Not part of the Resonate protocol: the in-process engines (memory, SQLite, PostgreSQL)
    take it so that a local step costs one durable write instead of two (create, then
    settle). The engine answers it as a fenced ``promise.create``: the existing promise if
    there is one (settled first if it is pending), else the new one, timed out if
    ``data.timeout_at`` has passed. An engine served over HTTP refuses it.
    """

    data: PromiseCreate
    state: SettleState
    value: Value = Value()
    head: Any = None


class TaskFence(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.fence"
    id: str
    version: Int64
    action: FenceCreate | FenceSettle | FenceRecord


class TaskRef(msgspec.Struct, frozen=True):
    id: str
    version: Int64


class TaskHeartbeat(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.heartbeat"
    pid: str
    tasks: list[TaskRef]


class TaskHalt(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.halt"
    id: str


class TaskContinue(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.continue"
    id: str


class TaskRelease(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "task.release"
    id: str
    version: Int64


class TaskSearch(msgspec.Struct, frozen=True, omit_defaults=True):
    KIND: ClassVar[str] = "task.search"
    state: TaskState | None = None
    limit: Limit | None = None
    cursor: str | None = None


# ---------------------------------------------------------------------------------------------
# schedule.*


class ScheduleCreate(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    KIND: ClassVar[str] = "schedule.create"
    id: str
    cron: str
    promise_id: str
    promise_timeout: NonNegative
    promise_param: Value = Value()
    promise_tags: dict[str, str] = {}


class ScheduleGet(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "schedule.get"
    id: str


class ScheduleDelete(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "schedule.delete"
    id: str


class ScheduleSearch(msgspec.Struct, frozen=True, omit_defaults=True):
    KIND: ClassVar[str] = "schedule.search"
    tags: dict[str, str] | None = None
    limit: Limit | None = None
    cursor: str | None = None


Request = (
    PromiseGet
    | PromiseCreate
    | PromiseSettle
    | PromiseRegisterCallback
    | PromiseRegisterListener
    | PromiseSearch
    | TaskGet
    | TaskCreate
    | TaskAcquire
    | TaskSuspend
    | TaskFulfill
    | TaskFence
    | TaskHeartbeat
    | TaskHalt
    | TaskContinue
    | TaskRelease
    | TaskSearch
    | ScheduleCreate
    | ScheduleGet
    | ScheduleDelete
    | ScheduleSearch
)

REQUEST_TYPES: dict[str, type[Request]] = {
    cls.KIND: cls
    for cls in (
        PromiseGet, PromiseCreate, PromiseSettle, PromiseRegisterCallback,
        PromiseRegisterListener, PromiseSearch, TaskGet, TaskCreate, TaskAcquire, TaskSuspend,
        TaskFulfill, TaskFence, TaskHeartbeat, TaskHalt, TaskContinue, TaskRelease, TaskSearch,
        ScheduleCreate, ScheduleGet, ScheduleDelete, ScheduleSearch,
    )
}


# ---------------------------------------------------------------------------------------------
# Response payloads


class Empty(msgspec.Struct, frozen=True):
    """``data: {}``."""


class PromiseResult(msgspec.Struct, frozen=True):
    promise: Promise


class PromisePage(msgspec.Struct, frozen=True, omit_defaults=True):
    promises: list[Promise]
    cursor: str | None = None


class TaskResult(msgspec.Struct, frozen=True):
    task: Task


class TaskPage(msgspec.Struct, frozen=True, omit_defaults=True):
    tasks: list[Task]
    cursor: str | None = None


class Claim(msgspec.Struct, frozen=True):
    """``task.create`` / ``task.acquire``: the task, its root promise and the preload."""

    task: Task
    promise: Promise
    preload: list[Promise] = []


class Preload(msgspec.Struct, frozen=True):
    """``task.suspend`` answered ``300``: something awaited has settled already."""

    preload: list[Promise] = []


class ResponseHead(msgspec.Struct, frozen=True, rename="camel"):
    """A response's head. Read leniently: a missing ``corrId`` is ``""`` and a missing
    ``status`` is ``0``, which no check accepts (an envelope's head needs both)."""

    corr_id: str = ""
    status: int = 0
    version: str = PROTOCOL_VERSION


_NO_HEAD: Final = ResponseHead()


class ActionResult(msgspec.Struct, frozen=True):
    """The inner response of ``task.fence``: data is ``PromiseResult`` or an error string.

    Read leniently: an answer without ``kind`` or ``head`` (or without ``head.status``) that
    carries the promise is a success, and a ``201`` is read as ``200``; one that carries
    neither a status nor a promise cannot be used and fails decoding (``ProtocolError``).
    """

    kind: str = ""
    head: ResponseHead = _NO_HEAD
    data: PromiseResult | str = ""

    def __post_init__(self) -> None:
        status = self.head.status
        if status == 0 or status == 201:
            if not isinstance(self.data, PromiseResult):
                raise ValueError("the fenced action's answer has neither a status nor a promise")
            force_setattr(self, "head", ResponseHead(self.head.corr_id, 200, self.head.version))


class FenceResult(msgspec.Struct, frozen=True):
    action: ActionResult
    preload: list[Promise] = []


class ScheduleResult(msgspec.Struct, frozen=True):
    schedule: Schedule


class SchedulePage(msgspec.Struct, frozen=True, omit_defaults=True):
    schedules: list[Schedule]
    cursor: str | None = None


ResponseData = (
    Empty | PromiseResult | PromisePage | TaskResult | TaskPage | Claim | Preload | FenceResult
    | ScheduleResult | SchedulePage
)

# What a successful (200) answer to each kind carries; task.suspend's 300 carries ``Preload``.
RESPONSE_TYPES: dict[str, type[ResponseData]] = {
    "promise.get": PromiseResult,
    "promise.create": PromiseResult,
    "promise.settle": PromiseResult,
    "promise.register_callback": PromiseResult,
    "promise.register_listener": PromiseResult,
    "promise.search": PromisePage,
    "task.get": TaskResult,
    "task.create": Claim,
    "task.acquire": Claim,
    "task.suspend": Empty,
    "task.fulfill": PromiseResult,
    "task.fence": FenceResult,
    "task.heartbeat": Empty,
    "task.halt": Empty,
    "task.continue": Empty,
    "task.release": Empty,
    "task.search": TaskPage,
    "schedule.create": ScheduleResult,
    "schedule.get": ScheduleResult,
    "schedule.delete": Empty,
    "schedule.search": SchedulePage,
}


class Response(msgspec.Struct, frozen=True):
    """An answer as the engine gives it: the status and either a payload or an error message."""

    status: int
    data: Any

    @property
    def ok(self) -> bool:
        return self.status < 400


# ---------------------------------------------------------------------------------------------
# Envelopes


class RequestHead(msgspec.Struct, frozen=True, omit_defaults=True,
                  rename={"corr_id": "corrId", "debug_time": "resonate:debug_time"}):
    corr_id: str
    version: str
    auth: str | None = None
    debug_time: int | None = None


class RequestEnvelope(msgspec.Struct, frozen=True):
    kind: str
    head: RequestHead
    data: Any


class ResponseEnvelope(msgspec.Struct, frozen=True):
    kind: str
    head: ResponseHead
    data: Any


# ---------------------------------------------------------------------------------------------
# Push messages (server -> worker)


class ExecuteHead(msgspec.Struct, frozen=True, rename="camel"):
    server_url: str = ""


class ExecuteData(msgspec.Struct, frozen=True):
    task: TaskRef


class Execute(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="execute"):
    """"A task is ready to be (re)claimed": acquire it with ``data.task.version``.

    ``head`` may be absent (the official SDK's in-process server sends none): read as empty.
    """

    head: ExecuteHead = ExecuteHead()
    data: ExecuteData

    @property
    def task_id(self) -> str:
        return self.data.task.id

    @property
    def version(self) -> int:
        return self.data.task.version


class UnblockHead(msgspec.Struct, frozen=True):
    pass


class UnblockData(msgspec.Struct, frozen=True):
    promise: Promise


class Unblock(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="unblock"):
    """"A promise you listen to has settled": carries the whole settled record (``head`` may
    be absent, as for ``Execute``)."""

    head: UnblockHead = UnblockHead()
    data: UnblockData

    @property
    def promise(self) -> Promise:
        return self.data.promise


Message = Execute | Unblock


def execute_message(task_id: str, version: int, server_url: str = "") -> Execute:
    return Execute(head=ExecuteHead(server_url), data=ExecuteData(TaskRef(task_id, version)))


def unblock_message(promise: Promise) -> Unblock:
    return Unblock(head=UnblockHead(), data=UnblockData(promise))
