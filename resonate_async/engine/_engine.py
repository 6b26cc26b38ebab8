"""The Resonate server's semantics as a deterministic, synchronous state machine.

``Engine`` is driven from outside: requests (typed, or JSON bodies), ``tick(now)`` for
background work and ``drain()`` for the push messages it queued. It never reads a clock, never
sleeps and never performs I/O except through its ``Storage``. It is synchronous on purpose:
an embedded request costs a function call, not a thread hop or a task switch, and SQLite
transactions are short enough to run on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from resonate_async._errors import TransportError
from resonate_async.engine._cache import DEFAULT_CACHE_BYTES
from resonate_async.engine._core import (
    DEFAULT_RETRY_TIMEOUT,
    Refused,
    log,
)
from resonate_async.engine._memory import MemoryStorage
from resonate_async.engine._schedule_ops import ScheduleOps
from resonate_async.engine._storage import Storage
from resonate_async.engine._task_ops import TaskOps
from resonate_async.protocol import (
    REQUEST_TYPES,
    FenceRecord,
    Message,
    PromiseCreate,
    PromiseGet,
    PromiseRegisterCallback,
    PromiseRegisterListener,
    PromiseSearch,
    PromiseSettle,
    Request,
    Response,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleGet,
    ScheduleSearch,
    TaskAcquire,
    TaskContinue,
    TaskCreate,
    TaskFence,
    TaskFulfill,
    TaskGet,
    TaskHalt,
    TaskHeartbeat,
    TaskRelease,
    TaskSearch,
    TaskSuspend,
    decode_data,
    encode,
    encode_response,
    parse_envelope,
)

MAX_CONFLICT_RETRIES = 100


class TransactionConflict(Exception):
    """Raised by a storage's ``transaction()`` when it lost a race with another process (a
    serialization failure) and rolled back: the engine runs the request again from the top.

    A storage shared by several processes raises it; a storage of one process never does.
    """


class Engine(TaskOps, ScheduleOps):
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
        self._failures = 0  # numbers the internal errors, so an answer can point at its log
        self._unreachable = False  # tick found the storage's database unreachable (said once)
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
    def sqlite(cls, path: str, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
               **options: Any) -> Engine:
        """An engine whose state lives in the SQLite file ``path`` (created if missing).

        ``cache_bytes`` bounds the memory kept for decoded settled records (32 MiB by default;
        see ``SqliteStorage``).
        """
        from resonate_async.engine._sqlite import SqliteStorage

        return cls(SqliteStorage(path, cache_bytes=cache_bytes), **options)

    def close(self) -> None:
        self.storage.close()

    # entry points -----------------------------------------------------------------------------
    def execute(
        self, request: Request, now: int, corr_id: str = "", *, fence_preload: bool = True,
        remote: bool = False,
    ) -> Response:
        """Run one typed request at time ``now`` (ms) in one storage transaction.

        ``fence_preload=False`` leaves the preload out of ``task.fence`` answers (an
        in-process caller that never reads it saves O(branch size) work per step).
        ``remote=True`` (a caller in another process) keeps the text of an internal failure
        out of the 500 answer: it is logged with its traceback under the answer's reference.
        """
        self._fence_preload = fence_preload
        handler = self._handlers.get(type(request))
        if handler is None:
            return Response(400, f"Unknown operation: {type(request).__name__}")
        now = self._clamp(now)
        try:
            for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
                try:
                    with self.storage.transaction():
                        try:
                            return handler(request, now, corr_id)
                        except Refused as refused:  # an answer, not a failure: what was done
                            return Response(refused.status, refused.message)  # stays
                except TransactionConflict:
                    if attempt == MAX_CONFLICT_RETRIES:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover
        except Exception as exc:
            ref = self._failure_ref(now)
            log.exception("engine_request_failed", kind=request.KIND, corr_id=corr_id,
                          error_ref=ref)
            return Response(500, _internal_error(ref) if remote else f"Internal error: {exc}")

    def handle(self, body: bytes, now: int, *, fence_preload: bool = True) -> bytes:
        """Answer one ``POST /`` body with its response envelope (HTTP status = head.status).

        Never raises: whatever the bytes, the answer is an envelope (4xx for a broken request,
        500 for a failure of the engine itself). ``fence_preload=False`` leaves the preload
        out of ``task.fence`` answers (for a client that said it keeps its own cache).
        """
        try:
            return self._handle(body, now, fence_preload)
        except Exception:
            ref = self._failure_ref(now)
            log.exception("engine_handle_failed", error_ref=ref)
            return encode_response("unknown", "0", Response(500, _internal_error(ref)))

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
        if isinstance(request, TaskFence) and isinstance(request.action, FenceRecord):
            return encode_response(kind, corr_id, Response(
                400, "Invalid request: task.fence action 'promise.record' is not part of the "
                     "Resonate protocol (use promise.create, then promise.settle)"))
        return encode_response(kind, corr_id, self.execute(request, now, corr_id,
                                                           fence_preload=fence_preload,
                                                           remote=True))

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
            for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
                try:
                    self._tick(now)  # each batch is its own transaction: safe to run again
                    break
                except TransactionConflict:
                    if attempt == MAX_CONFLICT_RETRIES:
                        raise
        except TransportError as exc:  # the storage's database is unreachable (it retried)
            if not self._unreachable:  # said once, not once per tick, until it recovers
                self._unreachable = True
                log.warning("engine_tick_unreachable", error=str(exc))
            return
        except Exception:
            log.exception("engine_tick_failed", now=now)
            return
        if self._unreachable:
            self._unreachable = False
            log.info("engine_tick_recovered")

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
        Returns how many tasks were released. Refused (``RuntimeError``) on a storage that
        several live processes share (``storage.shared``): their leases are live.
        """
        if getattr(self.storage, "shared", False):
            raise RuntimeError("release_leases on a storage shared by several processes would "
                               "take live leases away; leases there expire on their own")
        now = self._clamp(now)
        released = 0
        with self.storage.transaction():
            for row in self.storage.acquired_tasks():
                if row.pid != keep_pid:
                    self._redispatch(row, now)
                    released += 1
        return released

    def _failure_ref(self, now: int) -> str:
        self._failures += 1
        return f"{now}-{self._failures}"

    def _clamp(self, now: int) -> int:
        if now > self._now:
            self._now = now
        return self._now


def _internal_error(ref: str) -> str:
    """The 500 text for a remote client: no exception text (it may hold paths, SQL or data
    of other users), only the reference under which the server logged it."""
    return f"Internal error: the server failed on this request (see error_ref={ref} in its log)"
