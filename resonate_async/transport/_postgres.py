"""The PostgreSQL transport: the engine in this process, its state in a shared database.

Every process that points at one database (``Resonate(url="postgresql://...")``) runs the
engine's code itself; the database is what they share. ``send`` runs one engine request (one
serializable transaction, see ``PostgresStorage``) in a worker thread: psycopg's sync API
blocks, and a thread works the same under asyncio and trio (psycopg's async API and asyncpg
are asyncio-only). The thread call is not abandoned on cancellation, so a request is never
cut in half.

Push messages cross processes through the outbox table: this transport claims the rows its
subscribers want (anycast ``poll://any@group`` for the groups it has workers in, unicast
``poll://uni@group/pid`` for its own pids) with ``DELETE ... FOR UPDATE SKIP LOCKED``, so each
row reaches exactly one process. ``LISTEN resonate_outbox`` wakes it when a row is committed
(the payload is the group of an anycast, ``group/pid`` of a unicast: a process wakes for
the groups it takes work for and its own pids), with a polling fallback every
``poll_interval`` seconds. A message claimed by a process that dies before delivering it is
lost, and the task's retry timeout (or its lease) brings the work back; unblocks can be lost
the same way, so ``delivers_all`` is ``False`` and clients re-register their listeners, as
over HTTP. Rows nobody claims (a group with no live worker, a dead pid) are replaced in place
(one execute per task) and purged after ``max(2 × retry timeout, 60 s)``.

Timers run in every process: each checks the earliest deadline, and fires what is due in
transactions that take a transaction-scoped advisory lock first, so one process fires at a
time and every firing happens once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from resonate_async._clock import Clock, SystemClock
from resonate_async._errors import NotStartedError, TransportError
from resonate_async._redact import redact
from resonate_async.engine import DEFAULT_RETRY_TIMEOUT, Engine
from resonate_async.engine._cache import DEFAULT_CACHE_BYTES
from resonate_async.engine._postgres import (
    NOTIFY_CHANNEL,
    LockedCache,
    PostgresStorage,
    connect,
    import_psycopg,
)
from resonate_async.engine._rules import create_problem
from resonate_async.protocol import (
    TAG_BRANCH,
    TAG_TARGET,
    TAG_TIMER,
    ActionResult,
    Execute,
    FenceRecord,
    FenceResult,
    Message,
    Promise,
    PromiseCreate,
    PromiseGet,
    PromiseRegisterCallback,
    PromiseRegisterListener,
    PromiseResult,
    PromiseSettle,
    Request,
    Response,
    ResponseHead,
    TaskAcquire,
    TaskContinue,
    TaskCreate,
    TaskFence,
    TaskFulfill,
    TaskGet,
    TaskHalt,
    TaskRelease,
    TaskSuspend,
)

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger("resonate_async.transport")

T = TypeVar("T")

CLAIM_BATCH: Final = 256
_message = msgspec.json.Decoder(Message).decode

_CLAIM: Final = (
    "DELETE FROM resonate_outbox WHERE seq IN ("
    "SELECT seq FROM resonate_outbox WHERE grp = ANY(%(groups)s) AND ("
    "(mode = 'any' AND grp = ANY(%(work)s)) OR "
    "(mode = 'uni' AND (grp, pid) IN (SELECT * FROM unnest(%(ugroups)s::text[], "
    "%(upids)s::text[])))) "
    "ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "RETURNING seq, mode, grp, pid, message"
)
_PURGE: Final = "DELETE FROM resonate_outbox WHERE created_at < now() - make_interval(secs => %s)"


_BY_ID: Final = (PromiseGet, PromiseCreate, PromiseSettle, TaskGet, TaskAcquire, TaskFulfill,
                 TaskHalt, TaskContinue, TaskRelease)


def promises_read(request: Request) -> tuple[str, ...]:
    """The promises (and so tasks) the engine reads for ``request``, as far as it names them:
    the storage fetches them all with the transaction's first read (one round trip)."""
    if isinstance(request, TaskFence):
        return request.id, request.action.data.id
    if isinstance(request, _BY_ID):
        return (request.id,)
    if isinstance(request, TaskCreate):
        return (request.action.data.id,)
    if isinstance(request, TaskSuspend):
        return request.id, *(action.data.awaited for action in request.actions)
    if isinstance(request, PromiseRegisterCallback):
        return request.awaited, request.awaiter
    if isinstance(request, PromiseRegisterListener):
        return (request.awaited,)
    return ()


_COMMAND_OK: Final = 1  # psycopg.pq.ExecStatus and ConnStatus / TransactionStatus values
_TUPLES_OK: Final = 2
_FATAL_ERROR: Final = 7
_CONN_OK: Final = 0
_IN_ERROR: Final = 3


async def _simple_query(pgconn: Any, query: bytes) -> list[Any]:
    """Send ``query`` (a simple query, maybe several statements) on the idle nonblocking
    libpq connection ``pgconn`` and collect its results, waiting for the socket on the event
    loop (asyncio or trio) instead of in a thread. psycopg errors (a broken connection)
    propagate."""
    fd = pgconn.socket
    pgconn.send_query(query)
    while pgconn.flush():
        await anyio.wait_writable(fd)
    results: list[Any] = []
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            res = pgconn.get_result()
            if res is None:
                return results
            results.append(res)
        await anyio.wait_readable(fd)


def branch_read(request: Request) -> str | None:
    """The branch whose promises the engine likely reads for ``request`` (a claim's preload:
    a root's branch is its own id), fetched with the transaction's first read; a wrong guess
    costs the branch's own query, as without it."""
    if isinstance(request, TaskCreate):
        return request.action.data.tags.get(TAG_BRANCH)
    if isinstance(request, TaskAcquire):
        return request.id
    return None


def _reason(exc: BaseException) -> str:
    """A driver error's text on one line, credentials hidden."""
    return redact(" ".join(str(exc).split()))


class _Subscriber:
    __slots__ = ("accepts_work", "group", "on_connect", "pid", "stream")

    def __init__(self, group: str, pid: str, accepts_work: bool,
                 stream: MemoryObjectSendStream[Message],
                 on_connect: Callable[[], None] | None) -> None:
        self.group = group
        self.pid = pid
        self.accepts_work = accepts_work
        self.stream = stream
        self.on_connect = on_connect


class PostgresTransport:
    """A ``Transport`` whose engine state lives in PostgreSQL, shared by every process on it.

    ``dsn``: a libpq URL (``postgresql://user:password@host:5432/db?sslmode=require``; every
    libpq option passes through; credentials are never logged or shown). ``migrate=True``
    (the default) creates or upgrades the schema when the transport opens; with
    ``migrate=False`` it only checks the version and refuses an old one with a message that
    says to run ``python -m resonate_async db migrate``. ``pool_size`` connections serve
    requests in parallel (one more listens for notifications); ``poll_interval`` (seconds)
    bounds how long a message or a deadline written by another process can go unnoticed when
    a notification is missed. ``retry_timeout`` (ms) is the engine's task retry timeout:
    give every process on one database the same value. ``retry_for`` (seconds, default 30;
    0 tries once) is how long opening the transport keeps trying to reach PostgreSQL.
    """

    delivers_all = False  # a message claimed by a process that dies is lost (see module doc)
    max_request_bytes: int | None = None  # no wire between the SDK and the engine
    records_steps = True  # the engine takes task.fence's promise.record (one write per step)

    def __init__(self, dsn: str, *, clock: Clock | None = None, migrate: bool = True,
                 pool_size: int = 4, poll_interval: float = 1.0,
                 retry_timeout: int = DEFAULT_RETRY_TIMEOUT,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, retry_for: float = 30.0) -> None:
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1 (connections that serve "
                             f"requests), got {pool_size!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        if isinstance(retry_for, bool) or not isinstance(retry_for, (int, float)) \
                or not retry_for >= 0:
            raise ValueError(f"retry_for must be >= 0 seconds (0: try to connect once), got "
                             f"{retry_for!r}")
        import_psycopg()  # fail here, with the install hint, not at the first request
        self.dsn = dsn
        self.shown = redact(dsn)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.migrate = migrate
        self.pool_size = pool_size
        self.poll_interval = poll_interval
        self.retry_for = float(retry_for)
        self.retry_timeout = retry_timeout
        self.purge_after = max(2 * retry_timeout / 1000, 60.0)
        self.fence_preload = False  # the SDK keeps its own cache of a branch
        self._cache = LockedCache(cache_bytes)
        self._engines: list[Engine] = []
        self._free: list[Engine] = []
        self._slots: anyio.Semaphore | None = None
        self._subscribers: dict[tuple[str, str], _Subscriber] = {}
        self._rr: dict[str, int] = {}
        self._owners = 0
        self._tg: TaskGroup | None = None
        self._listen: psycopg.Connection[Any] | None = None
        self._listening: anyio.Event | None = None
        self._wake_delivery: anyio.Event | None = None
        self._notified = False
        # The notification payloads this process claims for (read by the notify handler):
        # the groups it takes work for (anycast) and "group/pid" of its subscribers (unicast).
        self._groups: frozenset[str] = frozenset()
        self._wake_timers: anyio.Event | None = None
        self._timers_at = math.inf
        self._timers_failing = False  # warned that the timer loop cannot reach PostgreSQL
        self._listen_failing = False  # warned that the listening connection failed

    # lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> PostgresTransport:
        self._owners += 1
        if self._owners > 1:
            return self
        try:
            first = await self._first_engine()
            self._engines = [first]
            self._free = [first]
            self._slots = anyio.Semaphore(self.pool_size)
            self._listening = anyio.Event()
            self._wake_delivery = anyio.Event()
            self._wake_timers = anyio.Event()
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
            tg.start_soon(self._deliver_forever)
            tg.start_soon(self._timers_forever)
        except BaseException:
            self._owners -= 1
            self._close_engines()
            raise
        log.info("postgres_opened", url=self.shown)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._owners -= 1
        if self._owners > 0:
            return
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        for sub in self._subscribers.values():
            sub.stream.close()
        self._subscribers.clear()
        self._close_engines()

    async def _first_engine(self) -> Engine:
        """The pool's first engine: its connection retried with backoff for ``retry_for``
        seconds while PostgreSQL cannot be reached (a database that starts with the app,
        or restarts), then ``TransportError`` saying for how long it tried."""
        deadline = anyio.current_time() + self.retry_for
        delay, attempt = 0.05, 0
        while True:
            attempt += 1
            try:
                return await anyio.to_thread.run_sync(self._new_engine)
            except TransportError as exc:
                left = deadline - anyio.current_time()
                if left <= 0:
                    raise TransportError(
                        f"{exc} (tried {attempt} times for {self.retry_for:g} s; allow longer "
                        "with PostgresTransport(retry_for=...))") from None
                if attempt == 1:
                    log.warning("postgres_connect_retrying", url=self.shown,
                                error=_reason(exc), retry_for_s=self.retry_for)
                await anyio.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    def _close_engines(self) -> None:
        for engine in self._engines:
            engine.close()
        self._engines, self._free = [], []
        listen, self._listen = self._listen, None
        if listen is not None:
            listen.close()

    def _new_engine(self) -> Engine:
        try:
            storage = PostgresStorage(self.dsn, migrate=self.migrate and not self._engines,
                                      cache=self._cache)
        except import_psycopg().Error as exc:
            # connected, then lost while checking the schema (a restart): as unreachable,
            # so the caller sees a platform failure, not a driver error out of a worker
            raise TransportError(f"PostgreSQL at {self.shown} failed while opening a "
                                 f"connection: {_reason(exc)}") from None
        return Engine(storage, retry_timeout=self.retry_timeout)

    def _pool(self) -> anyio.Semaphore:
        slots = self._slots
        if slots is None or self._tg is None:
            raise NotStartedError(f"the PostgresTransport to {self.shown} is not open; enter "
                                  "it first with `async with transport:`")
        return slots

    async def _engine(self) -> Engine:
        """A free engine of the pool (the caller holds a slot), opened if none is free."""
        if self._free:
            return self._free.pop()
        engine = await anyio.to_thread.run_sync(self._new_engine)
        self._engines.append(engine)
        return engine

    async def _run(self, work: Callable[[Engine], T]) -> T:
        """Run ``work`` on a free engine of the pool, in a worker thread (never abandoned)."""
        async with self._pool():
            engine = await self._engine()
            try:
                return await anyio.to_thread.run_sync(work, engine)
            finally:
                self._free.append(engine)

    # requests ---------------------------------------------------------------------------------
    async def send(self, request: Request) -> Response:
        """Run ``request`` as one engine request (one transaction) and wake what it touched."""
        clock, preload = self.clock, self.fence_preload
        if type(request) is TaskFence and type(request.action) is FenceRecord and not preload:
            recorded = await self._record(request)
            if recorded is not None:
                return recorded

        ahead = promises_read(request)
        branch = branch_read(request)

        def execute(engine: Engine) -> tuple[Response, bool, int | None]:
            storage: PostgresStorage = engine.storage  # type: ignore[assignment]
            storage.read_ahead(ahead, branch)
            try:
                response = engine.execute(request, clock.now_ms(), fence_preload=preload)
            finally:
                storage.read_ahead(())
            pushed, storage.pushed = storage.pushed, False
            return response, pushed, storage.next_written_deadline()

        response, pushed, deadline = await self._run(execute)
        if pushed and self._wake_delivery is not None:
            self._wake_delivery.set()
        if deadline is not None and deadline < self._timers_at and self._wake_timers is not None:
            self._wake_timers.set()
        return response

    async def _record(self, request: TaskFence) -> Response | None:
        """A local step's ``task.fence`` + ``promise.record`` in one round trip, sent from
        the event loop (no worker thread): one statement inserts the settled promise if the
        fence holds (see ``PostgresStorage.record_query``). ``None`` when it inserted nothing
        (the promise exists, the fence fails, the task's promise is due), failed or could not
        be tried: the engine's general path then answers, so every answer is the engine's.
        Never cut in half by a cancellation (shielded, as a worker thread is never
        abandoned)."""
        action = request.action
        assert isinstance(action, FenceRecord)
        data = action.data
        if (data.id == request.id or TAG_TARGET in data.tags or TAG_TIMER in data.tags
                or create_problem(data)):
            return None  # the engine refuses it: its answer says why
        async with self._pool():
            engine = await self._engine()
            try:
                with anyio.CancelScope(shield=True):
                    recorded = await self._record_on(engine, request, action)
            finally:
                self._free.append(engine)
        return recorded

    async def _record_on(self, engine: Engine, request: TaskFence,
                         action: FenceRecord) -> Response | None:
        storage: PostgresStorage = engine.storage  # type: ignore[assignment]
        now = engine._clamp(self.clock.now_ms())
        data = action.data
        if now >= data.timeout_at:
            return None  # created timed out: the engine's path (rare)
        promise = Promise(data.id, action.state, data.param, action.value, data.tags,
                          data.timeout_at, now, now)  # exactly as the engine records it
        query = storage.record_query(request.id, request.version, promise, now)
        conn = storage.connection()
        if query is None or conn is None:
            return None
        text, size = query
        psycopg = import_psycopg()
        pgconn = conn.pgconn
        try:
            results = await _simple_query(pgconn, text)
            if any(r.status == _FATAL_ERROR for r in results) and \
                    pgconn.transaction_status == _IN_ERROR:
                await _simple_query(pgconn, b"ROLLBACK")
        except psycopg.Error:  # the connection broke (at COMMIT: the engine's path finds out)
            storage.record_failed(lost=True)
            return None
        inserted = len(results) == 3 and results[2].status == _COMMAND_OK and \
            results[1].status == _TUPLES_OK and results[1].ntuples == 1
        if not inserted:
            storage.record_failed(lost=pgconn.status != _CONN_OK)
            return None
        storage.record_done(promise, size)
        prepare = storage.prepare_query()
        if prepare is not None:  # the first time on this connection: EXECUTE it from now on
            statements, text = prepare
            try:
                done = await _simple_query(pgconn, text)
                ok = all(r.status == _COMMAND_OK for r in done)
            except psycopg.Error:
                ok = False
            storage.prepared(statements, ok)
            if pgconn.status != _CONN_OK:
                storage.record_failed(lost=True)
        result = ActionResult("promise.record", ResponseHead("", 200), PromiseResult(promise))
        return Response(200, FenceResult(result, []))

    async def call(self, work: Callable[[Engine], T]) -> T:
        """Run ``work(engine)`` on an engine of the pool in a worker thread (never abandoned),
        then wake delivery and the timers for what it wrote, as ``send`` does. The development
        server answers raw ``POST /`` bodies through it (``Engine.handle``)."""

        def run(engine: Engine) -> tuple[T, bool, int | None]:
            result = work(engine)
            storage: PostgresStorage = engine.storage  # type: ignore[assignment]
            pushed, storage.pushed = storage.pushed, False
            return result, pushed, storage.next_written_deadline()

        result, pushed, deadline = await self._run(run)
        if pushed and self._wake_delivery is not None:
            self._wake_delivery.set()
        if deadline is not None and deadline < self._timers_at and self._wake_timers is not None:
            self._wake_timers.set()
        return result

    async def background(self) -> None:
        """Nothing to run in the owner's task group: delivery and timers live in the
        transport's own task group, entered and left with it."""
        await anyio.sleep_forever()

    # subscriptions ----------------------------------------------------------------------------
    def subscribe(self, group: str, pid: str, *, accepts_work: bool = True,
                  on_connect: Callable[[], None] | None = None,
                  ) -> MemoryObjectReceiveStream[Message]:
        """Receive the messages for ``pid`` in ``group``: unicast ``poll://uni@group/pid`` and,
        with ``accepts_work``, a share of the group's anycast work (each message reaches one
        process). ``on_connect`` is called when the stream is live and after each
        reconnection of the listening connection."""
        if self._tg is None:
            raise NotStartedError(f"subscribe({group!r}, {pid!r}): the PostgresTransport to "
                                  f"{self.shown} is not open; enter it first")
        self.unsubscribe(group, pid)
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        self._subscribers[(group, pid)] = _Subscriber(group, pid, accepts_work, send,
                                                      on_connect)
        self._groups = self._payloads()
        if self._listening is not None and self._listening.is_set() and on_connect is not None:
            on_connect()
        if self._wake_delivery is not None:
            self._wake_delivery.set()  # rows may already wait for it
        return receive

    async def wait_subscribed(self, group: str, pid: str) -> None:
        """Wait until this transport listens for notifications (messages for ``pid`` written
        before then wait in the table, so none is missed)."""
        if (group, pid) not in self._subscribers:
            raise NotStartedError(
                f"no subscription for {group}/{pid}: call subscribe({group!r}, {pid!r}) first")
        if self._listening is not None:
            await self._listening.wait()

    def unsubscribe(self, group: str, pid: str) -> None:
        """Stop claiming messages for ``pid`` in ``group`` and close its stream."""
        sub = self._subscribers.pop((group, pid), None)
        if sub is not None:
            sub.stream.close()
            self._groups = self._payloads()

    def _payloads(self) -> frozenset[str]:
        subs = self._subscribers.values()
        return frozenset([*(s.group for s in subs if s.accepts_work),
                          *(f"{s.group}/{s.pid}" for s in subs)])

    # delivery ---------------------------------------------------------------------------------
    async def _deliver_forever(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._listen_and_deliver()
            except (import_psycopg().Error, OSError, TransportError) as exc:
                # the socket went away, or PostgreSQL cannot be reached: said once, then
                # quiet until the listening connection is back
                (log.debug if self._listen_failing else log.warning)(
                    "postgres_listen_failed", url=self.shown, error=_reason(exc),
                    retry_in_s=delay)
                self._listen_failing = True
            listen, self._listen = self._listen, None
            if listen is not None:  # it was connected: a new failure, start the backoff again
                listen.close()
                delay = 0.05
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _listen_and_deliver(self) -> None:
        def open_listen() -> psycopg.Connection[Any]:
            conn = connect(self.dsn)
            conn.add_notify_handler(self._on_notify)
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            return conn

        conn = await anyio.to_thread.run_sync(open_listen)
        self._listen = conn
        if self._listen_failing:
            self._listen_failing = False
            log.info("postgres_listen_recovered", url=self.shown)
        listening = self._listening
        assert listening is not None
        if listening.is_set():  # a reconnection: messages claimed meanwhile may be lost
            for sub in list(self._subscribers.values()):
                if sub.on_connect is not None:
                    sub.on_connect()
        else:
            listening.set()
            for sub in list(self._subscribers.values()):
                if sub.on_connect is not None:
                    sub.on_connect()
        fd = conn.fileno()
        last_purge = -math.inf
        while True:
            self._notified = False
            assert self._wake_delivery is not None
            self._wake_delivery = anyio.Event()
            claimed = await anyio.to_thread.run_sync(self._claim, conn, self._claim_args())
            if claimed:
                self._deliver(claimed)
            now = anyio.current_time()
            if now - last_purge > self.purge_after / 4:
                last_purge = now
                await anyio.to_thread.run_sync(self._purge, conn)
            if len(claimed) == CLAIM_BATCH or self._notified:
                await anyio.lowlevel.checkpoint()
                continue
            # Until a notification names what this process claims for, it wrote or
            # subscribed (wake), or the poll is due: other notifications are read and let go.
            wake = self._wake_delivery
            poll_at = anyio.current_time() + self.poll_interval
            while True:
                await self._wait_for_work(fd, wake, poll_at - anyio.current_time())
                self._consume_notifies(conn)
                if self._notified or wake.is_set() or anyio.current_time() >= poll_at:
                    break

    async def _wait_for_work(self, fd: int, wake: anyio.Event, seconds: float) -> None:
        """Until the listening socket has input (a notification), ``wake`` is set (this
        process wrote or subscribed) or ``seconds`` pass."""
        with anyio.move_on_after(seconds):
            async with anyio.create_task_group() as waiters:
                async def readable() -> None:
                    await anyio.wait_readable(fd)
                    waiters.cancel_scope.cancel()

                async def woken() -> None:
                    await wake.wait()
                    waiters.cancel_scope.cancel()

                waiters.start_soon(readable)
                waiters.start_soon(woken)

    def _on_notify(self, notify: Any) -> None:  # called in the thread that runs a query
        if notify.payload in self._groups:
            self._notified = True

    def _consume_notifies(self, conn: psycopg.Connection[Any]) -> None:
        pgconn = conn.pgconn
        pgconn.consume_input()
        while (n := pgconn.notifies()) is not None:
            if n.extra.decode(errors="replace") in self._groups:
                self._notified = True

    def _claim_args(self) -> dict[str, Any] | None:
        """The claim query's arguments for the subscribers of now (``None``: there are none)."""
        subs = list(self._subscribers.values())
        if not subs:
            return None
        return {"groups": sorted({s.group for s in subs}),
                "work": sorted({s.group for s in subs if s.accepts_work}),
                "ugroups": [s.group for s in subs], "upids": [s.pid for s in subs],
                "limit": CLAIM_BATCH}

    @staticmethod
    def _claim(conn: psycopg.Connection[Any], args: dict[str, Any] | None,
               ) -> list[tuple[int, str, str, str | None, bytes]]:
        if args is None:
            return []
        rows: list[tuple[int, str, str, str | None, bytes]] = \
            conn.execute(_CLAIM, args).fetchall()
        rows.sort()
        return rows

    def _purge(self, conn: psycopg.Connection[Any]) -> None:
        cur = conn.execute(_PURGE, (self.purge_after,))
        if cur.rowcount:
            log.info("outbox_purged", rows=cur.rowcount, older_than_s=self.purge_after)

    def _deliver(self, rows: list[tuple[int, str, str, str | None, bytes]]) -> None:
        for _, mode, group, pid, blob in rows:
            message = _message(blob)
            sub = self._route(mode, group, pid)
            if sub is None:
                log.debug("message_dropped", group=group, pid=pid, kind=type(message).__name__)
                continue
            if not sub.accepts_work and isinstance(message, Execute):
                continue
            try:
                sub.stream.send_nowait(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.pop((sub.group, sub.pid), None)

    def _route(self, mode: str, group: str, pid: str | None) -> _Subscriber | None:
        if mode == "uni":
            return self._subscribers.get((group, pid or ""))
        if pid:
            sub = self._subscribers.get((group, pid))
            if sub is not None and sub.accepts_work:
                return sub
        workers = [s for s in self._subscribers.values() if s.group == group and s.accepts_work]
        if not workers:
            return None
        i = self._rr.get(group, 0)
        self._rr[group] = i + 1
        return workers[i % len(workers)]

    # timers -----------------------------------------------------------------------------------
    async def _timers_forever(self) -> None:
        clock = self.clock
        while True:
            try:
                due = await self._run(lambda engine: engine.next_due())
                now = clock.now_ms()
                if self._timers_failing:
                    self._timers_failing = False
                    log.info("postgres_timers_recovered", url=self.shown)
                if due is not None and due <= now:
                    await self._run(lambda engine: engine.tick(clock.now_ms()))
                    await anyio.lowlevel.checkpoint()
                    continue
            except (import_psycopg().Error, TransportError) as exc:
                # said once, then quiet until PostgreSQL answers again (a restart)
                (log.debug if self._timers_failing else log.warning)(
                    "postgres_timers_failed", url=self.shown, error=_reason(exc))
                self._timers_failing = True
                due, now = None, clock.now_ms()
            except NotStartedError:
                return
            self._wake_timers = anyio.Event()
            # Deadlines written by other processes are seen at the next poll at the latest.
            wait = self.poll_interval if due is None else \
                min(self.poll_interval, (due - now) / 1000)
            # When it looks next: only a deadline this process writes before then wakes it
            # (a lease or retry timer further out is found by that look, at no cost now).
            self._timers_at = now + wait * 1000
            await clock.wait(self._wake_timers, wait)

    def counters(self) -> dict[str, int]:
        """What this transport's connections did so far, for measurements: ``round_trips``
        (waits for the server), ``statements`` and ``conflicts`` (transactions run again
        after a serialization failure)."""
        storages: list[PostgresStorage] = [e.storage for e in self._engines]  # type: ignore[misc]
        return {"round_trips": sum(s.round_trips for s in storages),
                "statements": sum(s.statements for s in storages),
                "conflicts": sum(s.conflicts for s in storages)}

    def __repr__(self) -> str:
        return f"PostgresTransport({self.shown!r})"
