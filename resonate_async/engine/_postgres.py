"""PostgreSQL storage (psycopg 3, sync API): one engine state shared by many processes.

Every engine request is one ``SERIALIZABLE`` transaction. PostgreSQL's serializable snapshot
isolation aborts a transaction that could not have run in some serial order (SQLSTATE 40001,
or a deadlock, 40P01); the storage then rolls back, waits a short jittered moment and raises
``TransactionConflict``, and the engine runs the whole request again. The request handlers
are deterministic functions of what they read, so a re-run is invisible to the caller. Why
not explicit row locks: an engine request reads a handful of rows it finds through each
other (task → promise → callbacks → awaiters), inserts rows that may not exist yet (a
``promise.create`` race), and scans indexes (due timers); locking all of that by hand is
easy to get subtly wrong, and ``SELECT ... FOR UPDATE`` cannot lock a row that is not there.
SSI gives the same answers as the single-process engines for any interleaving, and its cost
is paid only when two processes really touch the same records.

Records are msgspec JSON in ``bytea`` next to the columns the indexes need, as in
``SqliteStorage``; text columns use the ``"C"`` collation so that every order is byte-wise,
as the other storages' are. Settled promises never change, so their decoded records are kept
in a per-process cache (shared by every connection of the process) once the transaction that
wrote or read them committed; pending records are always read from the database.

The outbox is a table (``resonate_outbox``) with routing columns (mode, group, pid): a
``PostgresTransport`` claims rows for its subscribers with ``FOR UPDATE SKIP LOCKED``, and
every insert notifies channel ``resonate_outbox`` with the group (anycast) or ``group/pid``
(unicast) as payload (delivered at commit). ``take_outbox`` (the single-consumer drain of
the ``Storage`` protocol) empties the whole table, for a host that is the only consumer
(tests, one process).

Round trips. A request's promises (``read_ahead``: the ids the transport finds in it) are
read with their tasks, and with whether they have callbacks and listeners, in one query that
travels with BEGIN (with a branch's promises too, for a claim's preload); the writes are
queued and go with COMMIT (or with the next read), as one simple query of statements whose
values the storage binds itself (``_bind``) and sends with libpq directly (``run_query``:
psycopg's per-query parsing and adaptation cost as much as the rest); each connection
prepares the statements it runs (``PREPARE``, between transactions) and then sends
``EXECUTE``. A request is 2 round trips: read, then writes + COMMIT. A local step
(``task.fence`` with ``promise.record``) is 1: ``record_query`` gives its one statement, which
the transport sends from the event loop. Every statement still runs inside the one
serializable transaction, so nothing changes in what it can see.

The timer queries (``due_*``) first take ``pg_try_advisory_xact_lock``: one process fires
timers at a time, the others find nothing due and skip, so tickers do not conflict with each
other; serializable transactions make every firing happen exactly once in any case.

The schema is versioned (``resonate_schema``) and created or migrated under
``pg_advisory_lock``, so that many processes may start at once; with ``migrate=False`` the
storage only checks the version (see ``migrate_schema``).
"""

from __future__ import annotations

import binascii
import contextlib
import random
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import msgspec

from resonate_async._errors import ResonateError, SchemaVersionError, TransportError
from resonate_async._redact import redact
from resonate_async.engine._cache import DEFAULT_CACHE_BYTES, SettledCache
from resonate_async.engine._engine import TransactionConflict
from resonate_async.engine._storage import TaskRow, tags_match
from resonate_async.protocol import (
    TAG_BRANCH,
    Message,
    Promise,
    PromiseState,
    Schedule,
    TaskState,
)

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION: Final = 1
NOTIFY_CHANNEL: Final = "resonate_outbox"
# Advisory lock keys (arbitrary 64-bit constants, "resonate" in ASCII and a kind).
MIGRATE_LOCK: Final = 0x7265736F6E617401
TICK_LOCK: Final = 0x7265736F6E617402
CONFLICT_BACKOFF_MAX: Final = 0.05  # seconds, the cap of the jittered wait before a re-run
RECONNECT_FOR: Final = 30.0  # seconds a lost connection is retried before a request fails
INSTALL_HINT: Final = "pip install 'resonate-async[postgres]'"
MIGRATE_HINT: Final = "run `python -m resonate_async db migrate --url postgresql://...`"

_DDL: Final = [
    """CREATE TABLE resonate_promises (
        id TEXT COLLATE "C" PRIMARY KEY,
        state TEXT NOT NULL,
        branch TEXT COLLATE "C",
        armed_at BIGINT,
        record BYTEA NOT NULL)""",
    "CREATE INDEX resonate_promises_branch ON resonate_promises (branch, id) "
    "WHERE branch IS NOT NULL",
    "CREATE INDEX resonate_promises_armed ON resonate_promises (armed_at, id) "
    "WHERE armed_at IS NOT NULL",
    "CREATE INDEX resonate_promises_state ON resonate_promises (state, id)",
    """CREATE TABLE resonate_tasks (
        id TEXT COLLATE "C" PRIMARY KEY,
        state TEXT NOT NULL,
        timer_at BIGINT,
        record BYTEA NOT NULL)""",
    "CREATE INDEX resonate_tasks_timer ON resonate_tasks (timer_at, id) "
    "WHERE timer_at IS NOT NULL",
    "CREATE INDEX resonate_tasks_state ON resonate_tasks (state, id)",
    """CREATE TABLE resonate_callbacks (
        awaited TEXT COLLATE "C" NOT NULL,
        awaiter TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (awaited, awaiter))""",
    "CREATE INDEX resonate_callbacks_awaiter ON resonate_callbacks (awaiter)",
    """CREATE TABLE resonate_listeners (
        seq BIGSERIAL PRIMARY KEY,
        promise_id TEXT COLLATE "C" NOT NULL,
        address TEXT COLLATE "C" NOT NULL,
        UNIQUE (promise_id, address))""",
    """CREATE TABLE resonate_schedules (
        id TEXT COLLATE "C" PRIMARY KEY,
        next_run_at BIGINT NOT NULL,
        record BYTEA NOT NULL)""",
    "CREATE INDEX resonate_schedules_next ON resonate_schedules (next_run_at, id)",
    # kind 'e' (execute, one per task: ref = task id, dest = '') or 'u' (unblock, one per
    # promise and address: dest = address); mode/grp/pid route it (NULL: not routable).
    """CREATE TABLE resonate_outbox (
        seq BIGSERIAL PRIMARY KEY,
        kind CHAR(1) NOT NULL,
        ref TEXT COLLATE "C" NOT NULL,
        dest TEXT COLLATE "C" NOT NULL,
        address TEXT NOT NULL,
        mode TEXT,
        grp TEXT COLLATE "C",
        pid TEXT COLLATE "C",
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        message BYTEA NOT NULL,
        UNIQUE (kind, ref, dest))""",
    "CREATE INDEX resonate_outbox_group ON resonate_outbox (grp, seq)",
    "CREATE INDEX resonate_outbox_age ON resonate_outbox (created_at)",
]
# Migrations from version v to v + 1 go here as MIGRATIONS[v] = [statements].
MIGRATIONS: Final[dict[int, list[str]]] = {}

_encode = msgspec.json.Encoder().encode
_promise = msgspec.json.Decoder(Promise).decode
_task = msgspec.json.Decoder(TaskRow).decode
_schedule = msgspec.json.Decoder(Schedule).decode
_message = msgspec.json.Decoder(Message).decode

_CONFLICT_STATES: Final = frozenset({"40001", "40P01"})
_BEGIN: Final = "BEGIN ISOLATION LEVEL SERIALIZABLE"
# Server-side prepared statements: one name per SQL text (the same on every connection).
_NAMES: dict[str, str] = {}
_NAMES_LOCK = threading.Lock()
_UNPREPARABLE: set[str] = set()  # statements PostgreSQL could not prepare (types unknown)
_EXECUTE: dict[str, str] = {}


def _name_of(sql: str) -> str:
    name = _NAMES.get(sql)
    if name is None:
        with _NAMES_LOCK:
            name = _NAMES.setdefault(sql, f"resonate_{len(_NAMES)}")
    return name


def _prepare_of(sql: str) -> str:
    """``PREPARE name AS sql`` with psycopg's ``%s`` placeholders as ``$1, $2, ...``."""
    parts = sql.split("%s")
    text = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
    return f"PREPARE {_name_of(sql)} AS {text}"


def _execute_of(sql: str) -> str:
    """``EXECUTE name (%s, ...)``: the prepared form of ``sql``, to bind its arguments in."""
    found = _EXECUTE.get(sql)
    if found is None:
        n = sql.count("%s")
        found = f"EXECUTE {_name_of(sql)}" + (f" ({', '.join(['%s'] * n)})" if n else "")
        _EXECUTE[sql] = found
    return found
def _literal(value: Any) -> str:
    """``value`` as an SQL literal, for a connection with ``standard_conforming_strings``
    on (the storage sets it): the storage binds its statements' values client-side, into one
    simple query per round trip, without psycopg's per-query parsing and adaptation."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        if "\x00" in value:
            raise _psycopg_module().DataError(
                "PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return "'" + value.replace("'", "''") + "'" if "'" in value else "'" + value + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "'\\x" + bytes(value).hex() + "'::bytea"
    if isinstance(value, (list, tuple)):
        return _literal("{" + ",".join(_array_item(v) for v in value) + "}")
    raise TypeError(f"cannot bind a {type(value).__name__} into a statement: {value!r}")


def _array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot bind an array of {type(value).__name__}: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PARTS: dict[str, list[str]] = {}


def _bind(sql: str, args: tuple[Any, ...] | list[Any]) -> str:
    """``sql`` with its ``%s`` placeholders replaced by ``args`` as literals."""
    parts = _PARTS.get(sql)
    if parts is None:
        parts = _PARTS[sql] = sql.split("%s")
    if len(parts) != len(args) + 1:
        raise TypeError(f"{len(parts) - 1} placeholders, {len(args)} values: {sql}")
    if not args:
        return sql
    out = [parts[0]]
    for value, part in zip(args, parts[1:], strict=True):
        out.append(_literal(value))
        out.append(part)
    return "".join(out)


def _psycopg_module() -> Any:
    import psycopg

    return psycopg


def _decode_bytea(v: bytes) -> bytes:
    return binascii.unhexlify(v[2:])  # text format: \x and hex digits


def _decode_bool(v: bytes) -> bool:
    return v == b"t"


def _decode_text(v: bytes) -> str:
    return v.decode()


# Text-format result columns by type oid (anything else is read as text).
_DECODERS: Final[dict[int, Any]] = {16: _decode_bool, 17: _decode_bytea, 20: int, 21: int,
                                    23: int}


class _Rows:
    """The rows of one statement's result, decoded (the part of a cursor the storage uses)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


def _rows_of(result: Any) -> _Rows:
    ncols = result.nfields
    if not ncols:
        return _Rows([])
    decoders = [_DECODERS.get(result.ftype(i), _decode_text) for i in range(ncols)]
    get = result.get_value
    rows = []
    for r in range(result.ntuples):
        row = []
        for c, decode in enumerate(decoders):
            v = get(r, c)
            row.append(None if v is None else decode(v))
        rows.append(tuple(row))
    return _Rows(rows)


def run_query(conn: psycopg.Connection[Any], query: str) -> _Rows:
    """Send ``query`` (one simple query: one statement or several) on ``conn``'s libpq
    connection, wait for its results in this thread and return the last one's rows; the
    first failed statement raises psycopg's error for it (with its SQLSTATE), a broken
    connection ``psycopg.OperationalError``."""
    psycopg = _psycopg_module()
    pgconn = conn.pgconn
    pgconn.send_query(query.encode())
    fd = pgconn.socket
    poller = None
    while pgconn.flush():
        poller = poller or select.poll()
        poller.register(fd, select.POLLOUT)
        poller.poll()
        poller.unregister(fd)
    error = last = None
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            res = pgconn.get_result()
            if res is None:
                if error is not None:
                    raise psycopg.errors.error_from_result(error, encoding="utf-8")
                return _Rows([]) if last is None else _rows_of(last)
            if res.status == _FATAL_ERROR:
                error = error or res
            else:
                last = res
        if poller is None:
            poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll()
        poller.unregister(fd)


_FATAL_ERROR: Final = 7  # psycopg.pq.ExecStatus.FATAL_ERROR


# Promises by id, each with its task and whether it has callbacks and listeners.
_READ: Final = (
    "SELECT p.id, p.record, t.record, "
    "EXISTS (SELECT 1 FROM resonate_callbacks c WHERE c.awaited = p.id), "
    "EXISTS (SELECT 1 FROM resonate_listeners l WHERE l.promise_id = p.id), NULL::text "
    "FROM resonate_promises p LEFT JOIN resonate_tasks t ON t.id = p.id "
    "WHERE p.id = ANY(%s::text[])"
)
# The same, and the promises of one branch (``read_ahead``'s ``branch``: a claim's preload),
# told apart by their last column (the state, NULL for the first part's rows).
_READ_BRANCH: Final = (
    _READ + " UNION ALL SELECT id, record, NULL, false, false, state "
    "FROM resonate_promises WHERE branch = %s::text"
)


# ``task.fence`` + ``promise.record`` in one statement (``PostgresStorage.record_query``):
# insert the settled promise if the task is acquired at that version and its own promise is
# pending and not past its deadline; no row back (it exists, the fence fails, or the task's
# promise is due) and the engine's general path answers instead.
_RECORD: Final = (
    "INSERT INTO resonate_promises (id, state, branch, armed_at, record) "
    "SELECT %s::text, %s::text, %s::text, NULL::bigint, %s::bytea WHERE EXISTS ("
    "SELECT 1 FROM resonate_tasks t JOIN resonate_promises r ON r.id = t.id "
    "WHERE t.id = %s::text AND t.state = 'acquired' "
    "AND (convert_from(t.record, 'UTF8')::jsonb ->> 'version')::bigint = %s::bigint "
    "AND r.state = 'pending' AND r.armed_at > %s::bigint) "
    "ON CONFLICT (id) DO NOTHING RETURNING 1"
)


def import_psycopg() -> Any:
    """The ``psycopg`` module, or an error that says how to install it."""
    try:
        import psycopg
    except ImportError:
        raise ResonateError(
            f"a postgresql:// URL needs the PostgreSQL driver, which is not installed: "
            f"{INSTALL_HINT}") from None
    return psycopg


def connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A psycopg connection to ``dsn`` (every libpq option, ``sslmode=`` included, passes
    through); ``TransportError`` with the DSN's credentials hidden when it cannot connect."""
    driver = import_psycopg()
    try:
        conn: psycopg.Connection[Any] = driver.connect(dsn, autocommit=autocommit)
    except driver.Error as exc:
        reason = redact(" ".join(str(exc).split()))
        raise TransportError(
            f"cannot connect to PostgreSQL at {redact(dsn)} ({reason}); check that the server "
            "is running and that the URL is right") from None
    return conn


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version of the database ``conn`` reaches (its ``search_path``); 0: none."""
    row = conn.execute("SELECT to_regclass('resonate_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT max(version) FROM resonate_schema").fetchone()
    return int(found[0]) if found is not None and found[0] is not None else 0


def migrate_schema(conn: psycopg.Connection[Any], *, allow_ddl: bool = True,
                   shown: str = "") -> int:
    """Create or upgrade the schema to ``SCHEMA_VERSION``; return the version found before.

    Runs under ``pg_advisory_lock``, so processes that start at once migrate one at a time
    (the later ones find the work done). With ``allow_ddl=False`` nothing is changed: an old
    or missing schema raises ``SchemaVersionError`` that says to run ``db migrate``. A schema
    newer than this version of resonate_async raises ``SchemaVersionError`` either way.
    ``conn`` must be in autocommit mode.
    """
    where = shown or "the database"
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    try:
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{where} uses storage schema {found}, newer than this version of "
                f"resonate_async understands ({SCHEMA_VERSION}); upgrade resonate_async")
        if found == SCHEMA_VERSION:
            return found
        if not allow_ddl:
            state = "has no resonate_async schema" if found == 0 else \
                f"has storage schema {found}, older than {SCHEMA_VERSION}"
            raise SchemaVersionError(f"{where} {state}, and this process may not change it "
                                     f"(migrate=False): {MIGRATE_HINT}")
        with conn.transaction():
            if found == 0:  # one round trip (a simple query of several statements)
                conn.execute(";\n".join(
                    ["CREATE TABLE resonate_schema (version INTEGER NOT NULL)", *_DDL]))
            else:
                for version in range(found, SCHEMA_VERSION):
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement)
            conn.execute("DELETE FROM resonate_schema")
            conn.execute("INSERT INTO resonate_schema VALUES (%s)", (SCHEMA_VERSION,))
        return found
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


class LockedCache:
    """A ``SettledCache`` shared by the threads of one process (one lock around it)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._cache = SettledCache(max_bytes)
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Bytes held now."""
        return self._cache.bytes

    def get(self, promise_id: str) -> Promise | None:
        """The kept settled record of ``promise_id``, or ``None``."""
        with self._lock:
            return self._cache.get(promise_id)

    def put_all(self, records: list[tuple[Promise, int]]) -> None:
        """Keep these settled records (each with its encoded size)."""
        with self._lock:
            for promise, size in records:
                self._cache.put(promise, size)


def route(address: str) -> tuple[str | None, str | None, str | None]:
    """``(mode, group, pid)`` of a ``poll://`` address; ``(None, None, None)`` otherwise."""
    if not address.startswith("poll://"):
        return None, None, None
    mode, _, rest = address[7:].partition("@")
    group, _, pid = rest.partition("/")
    if mode not in ("any", "uni") or not group:
        return None, None, None
    return mode, group, pid or None


class PostgresStorage:
    """Engine state in a PostgreSQL database that many processes share (``shared = True``).

    ``dsn`` is a libpq URL (``postgresql://user@host:5432/db?sslmode=require``); the tables
    live in the first schema of its ``search_path``. ``migrate=True`` creates or upgrades the
    schema at open (see ``migrate_schema``); ``migrate=False`` only checks it. ``cache`` is the
    process's settled-record cache, to share it between the connections of one process.
    Not thread-safe: one storage (one connection) serves one thread at a time.
    """

    shared = True  # several live processes use it: leases are never released on open

    def __init__(self, dsn: str, *, migrate: bool = True, cache: LockedCache | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.dsn = dsn
        self.shown = redact(dsn)
        self._psycopg = import_psycopg()
        self._settled = cache if cache is not None else LockedCache(cache_bytes)
        self._depth = 0
        self._written: int | None = None
        self._seen: dict[str, Promise | None] = {}
        # Tasks read with their promise in the open transaction (None: known not to exist),
        # and listeners taken together with a settled promise's callbacks (one statement).
        self._tasks: dict[str, TaskRow | None] = {}
        self._taken_listeners: dict[str, list[tuple[int, str]]] = {}
        self._begin = False  # BEGIN is still to be sent, with the transaction's first statement
        # The open transaction's statements not sent yet (SQL text with literal values): they
        # go with the next read, or with COMMIT, in one simple query.
        self._queued: list[str] = []
        self._bound_to: psycopg.Connection[Any] | None = None  # the connection bound for
        self._sent = False  # whether the open transaction's BEGIN went to the server
        self._prepared: set[str] = set()  # statements prepared on the current connection
        self._to_prepare: list[str] = []  # run unprepared in this transaction: prepare next
        # Promise ids the coming request reads (``read_ahead``): the transaction's first read
        # fetches them all in one round trip; ``_ahead_used`` once it did.
        self._ahead: tuple[str, ...] = ()
        self._ahead_used = False
        # The branch whose promises come with that read too (``read_ahead``), and the open
        # transaction's copy of it as read (``_branch_read`` names it once it was read).
        self._ahead_branch: str | None = None
        self._branch_read: str | None = None
        self._branch_rows: dict[str, Promise] = {}
        # Promises read in the open transaction that have no callbacks / no listeners (a
        # settlement then takes none without a statement).
        self._no_callbacks: set[str] = set()
        self._no_listeners: set[str] = set()
        self._fresh: list[tuple[Promise, int]] = []  # settled records to cache at commit
        self._conflicts = 0
        self.statements = 0  # SQL statements sent, for measurements
        self.round_trips = 0  # waits for the server (a pipelined write costs none), likewise
        self.conflicts = 0  # transactions rolled back by a serialization failure, likewise
        self.pushed = False  # whether a transaction committed outbox rows since last reset
        self._pushing = False
        self._conn: psycopg.Connection[Any] | None = self._connect()
        try:
            migrate_schema(self._conn, allow_ddl=migrate, shown=self.shown)
        except BaseException:
            self.close()
            raise

    # connection and transactions --------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        deadline = time.monotonic() + RECONNECT_FOR
        delay = 0.05
        while True:
            try:
                self._conn = self._connect()
                return self._conn
            except TransportError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = connect(self.dsn)
        # The storage prepares its statements itself (``_bound``). psycopg's own automatic
        # preparation is off: psycopg answers a ROLLBACK with DEALLOCATE ALL when it holds
        # prepared statements, which would drop the storage's as well.
        conn.prepare_threshold = None
        if conn.info.parameter_status("standard_conforming_strings") != "on":
            conn.execute("SET standard_conforming_strings = on")  # as _literal writes them
        if conn.info.encoding not in ("utf-8", "utf8"):
            conn.execute("SET client_encoding = 'UTF8'")  # as run_query encodes
        return conn

    def _x(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        """Run a statement whose rows the caller reads: one round trip. In a transaction the
        statements queued before it (BEGIN, writes) travel with it in one simple query, and
        the cursor returned holds its own rows (the last result)."""
        self.statements += 1
        self.round_trips += 1
        conn = self._connection()
        if not self._depth:
            return run_query(conn, _bind(sql, args))
        queued = self._queued
        queued.append(self._bound(conn, sql, args))
        self._begin = False
        self._sending()
        query = "; ".join(queued)
        queued.clear()
        return run_query(conn, query)

    def _w(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> None:
        """Run a write whose result nobody reads. In a transaction it is queued: it goes with
        the next read or with COMMIT (its error, if any, is raised there)."""
        self.statements += 1
        conn = self._connection()
        if not self._depth:
            self.round_trips += 1
            run_query(conn, _bind(sql, args))
            return
        self._queued.append(self._bound(conn, sql, args))
        self._begin = False

    def _sending(self) -> None:
        """The queued statements go to the server now (BEGIN with them, the first time)."""
        if not self._sent:
            self._sent = True
            self.statements += 1  # BEGIN

    def _bound(self, conn: psycopg.Connection[Any], sql: str,
               args: tuple[Any, ...] | list[Any]) -> str:
        """``sql`` with ``args`` bound as SQL literals (client-side binding): as ``EXECUTE``
        of the statement prepared on this connection, once it is."""
        if self._bound_to is not conn:
            self._bound_to = conn
            self._prepared = set()
        if sql in self._prepared:
            return _bind(_execute_of(sql), args)
        if sql not in _UNPREPARABLE and sql not in self._to_prepare:
            self._to_prepare.append(sql)
        return _bind(sql, args)

    def _prepare_pending(self) -> None:
        """Prepare (server side) the statements this connection ran for the first time, so
        that later transactions send ``EXECUTE`` and the server plans each once. Runs
        between transactions; one round trip, a few times per connection."""
        pending, self._to_prepare = self._to_prepare, []
        conn = self._conn
        if not pending or conn is None or conn.closed or self._bound_to is not conn:
            return
        psycopg = self._psycopg
        self.round_trips += 1
        try:
            run_query(conn, "; ".join(_prepare_of(sql) for sql in pending))
            self._prepared.update(pending)
            return
        except psycopg.OperationalError:
            self._drop_connection()
            return
        except psycopg.Error:
            pass
        for sql in pending:  # one of them cannot be prepared: find which, one at a time
            try:
                run_query(conn, _prepare_of(sql))
            except psycopg.OperationalError:
                self._drop_connection()
                return
            except psycopg.Error as exc:
                if getattr(exc, "sqlstate", None) != "42P05":  # not "already prepared"
                    _UNPREPARABLE.add(sql)
                    continue
            self._prepared.add(sql)

    def record_query(self, task_id: str, version: int, promise: Promise,
                     now: int) -> tuple[bytes, int] | None:
        """The one-round-trip form of ``task.fence`` (``task_id`` at ``version``) with a
        ``promise.record`` of ``promise`` (settled, not armed, with no task) at ``now``:
        ``BEGIN; INSERT ... WHERE <fence holds> ON CONFLICT DO NOTHING RETURNING; COMMIT`` as
        one simple query, with the record's encoded size; ``None`` when it cannot be used
        (no connection now, a transaction open, or the promise known to exist). The caller
        sends it on ``connection()`` and reports with ``record_done`` (a row came back: the
        engine would have answered exactly ``promise``) or ``record_failed``."""
        conn = self._conn
        if self._depth or conn is None or conn.closed or \
                self._settled.get(promise.id) is not None:
            return None
        blob = _encode(promise)
        statement = self._bound(conn, _RECORD, (
            promise.id, promise.state, promise.tags.get(TAG_BRANCH), blob, task_id, version,
            now))
        self.statements += 3  # BEGIN, the insert, COMMIT
        self.round_trips += 1
        return f"{_BEGIN}; {statement}; COMMIT".encode(), len(blob)

    def connection(self) -> psycopg.Connection[Any] | None:
        """The open connection, if any (``None`` after it was lost)."""
        conn = self._conn
        return conn if conn is not None and not conn.closed else None

    def record_done(self, promise: Promise, size: int) -> None:
        """``record_query``'s statement inserted ``promise`` and committed: keep it cached."""
        self._settled.put_all([(promise, size)])

    def prepare_query(self) -> tuple[list[str], bytes] | None:
        """The statements this connection ran unprepared so far and the ``PREPARE`` query
        for them (``None``: nothing to prepare), for a caller that sends it itself between
        transactions; it reports with ``prepared``."""
        conn = self._conn
        if not self._to_prepare or self._depth or conn is None or conn.closed or \
                self._bound_to is not conn:
            return None
        pending, self._to_prepare = self._to_prepare, []
        self.round_trips += 1
        text = "; ".join(_prepare_of(sql) for sql in pending)
        return pending, text.encode()

    def prepared(self, statements: list[str], ok: bool) -> None:
        """``prepare_query``'s statements are prepared (``ok``), or are to be prepared again
        one at a time by the next transaction (it finds which one PostgreSQL refuses)."""
        if ok:
            self._prepared.update(statements)
        else:
            self._to_prepare.extend(s for s in statements if s not in self._to_prepare)

    def record_failed(self, *, lost: bool) -> None:
        """``record_query``'s statement inserted nothing or failed (``lost``: the connection
        broke): forget what was bound to this connection, so the engine's path starts clean
        (and reconnects)."""
        if lost:
            self._drop_connection()

    def read_ahead(self, promise_ids: tuple[str, ...], branch: str | None = None) -> None:
        """Promise ids the next requests read: each transaction's first promise read fetches
        them (with their tasks) in the same round trip, and with ``branch`` the promises of
        that branch too (``branch_promises`` answers it from them in that transaction).
        ``()`` forgets them."""
        self._ahead = promise_ids
        self._ahead_branch = branch

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One serializable transaction; ``TransactionConflict`` when it must be run again."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        psycopg = self._psycopg
        self._depth = 1
        self._begin = True
        self._queued = [_BEGIN]
        self._ahead_used = False
        committing = False
        try:
            yield
            if not self._begin:  # a transaction that did nothing has nothing to commit
                self.statements += 1
                self.round_trips += 1
                self._sending()
                committing = True
                queued, self._queued = self._queued, []
                queued.append("COMMIT")  # with the queued writes: one round trip
                run_query(self._connection(), "; ".join(queued))
        except psycopg.Error as exc:
            self._end_failed()
            state = getattr(exc, "sqlstate", None)
            if state in _CONFLICT_STATES:
                self._conflicts += 1
                self.conflicts += 1
                time.sleep(random.uniform(0, min(CONFLICT_BACKOFF_MAX,
                                                 0.001 * 2 ** min(self._conflicts, 6))))
                raise TransactionConflict(f"serialization failure ({state})") from None
            if isinstance(exc, psycopg.OperationalError):
                self._drop_connection()
                if not committing:  # nothing was committed: safe to run again, reconnected
                    raise TransactionConflict("connection lost during the transaction") from None
            raise
        except BaseException:
            self._end_failed()
            raise
        self._depth = 0
        self._begin = False
        self._sent = False
        self._conflicts = 0
        self._seen.clear()
        self._tasks.clear()
        self._taken_listeners.clear()
        self._branch_read = None
        self._branch_rows = {}
        self._no_callbacks.clear()
        self._no_listeners.clear()
        if self._fresh:
            self._settled.put_all(self._fresh)
            self._fresh = []
        if self._pushing:
            self._pushing = False
            self.pushed = True
        if self._to_prepare:
            self._prepare_pending()

    def _end_failed(self) -> None:
        self._depth = 0
        began, self._sent, self._begin = self._sent, False, False
        self._seen.clear()
        self._tasks.clear()
        self._taken_listeners.clear()
        self._branch_read = None
        self._branch_rows = {}
        self._no_callbacks.clear()
        self._no_listeners.clear()
        self._fresh = []
        self._pushing = False
        self._queued = []
        conn = self._conn
        if began and conn is not None and not conn.closed:
            try:
                run_query(conn, "ROLLBACK")
            except self._psycopg.Error:
                self._drop_connection()
        if self._to_prepare:
            self._prepare_pending()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(self._psycopg.Error):  # closing a broken connection
                conn.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._drop_connection()

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        row = self._x(sql, args).fetchone()
        return None if row is None else row[0]

    # promises ---------------------------------------------------------------------------------
    def get_promise(self, promise_id: str) -> Promise | None:
        found = self._settled.get(promise_id)
        if found is not None:
            return found
        seen = self._seen
        if not self._depth:
            blob = self._one("SELECT record FROM resonate_promises WHERE id = %s", (promise_id,))
            return None if blob is None else self._decoded(blob)
        if promise_id in seen:
            return seen[promise_id]
        ids = [promise_id]
        branch = None
        if not self._ahead_used:  # the request's other promises come in the same round trip
            self._ahead_used = True
            settled = self._settled
            ids += [other for other in self._ahead
                    if other not in seen and other not in ids and settled.get(other) is None]
            branch = self._ahead_branch
        tasks = self._tasks
        rows = self._x(_READ, (ids,)).fetchall() if branch is None else \
            self._x(_READ_BRANCH, (ids, branch)).fetchall()
        if branch is not None:
            self._branch_read = branch
            self._branch_rows = members = {}
            settled = self._settled
            for pid, blob, _, _, _, state in rows:
                if state is not None:
                    kept = settled.get(pid) if state != "pending" else None
                    members[pid] = kept if kept is not None else self._decoded(blob)
            rows = [row for row in rows if row[5] is None]
        # Each promise comes with its task (the engine reads it next, mostly) and whether it
        # has callbacks and listeners (a settlement takes them).
        for pid, blob, task, callbacks, listeners, _ in rows:
            seen[pid] = self._decoded(blob)
            if pid not in tasks:
                tasks[pid] = None if task is None else _task(task)
            if not callbacks:
                self._no_callbacks.add(pid)
            if not listeners:
                self._no_listeners.add(pid)
        for pid in ids:
            if pid not in seen:
                seen[pid] = None
                if pid not in tasks:
                    tasks[pid] = None  # a task never outlives its promise
        return seen[promise_id]

    def _decoded(self, blob: bytes) -> Promise:
        p = _promise(blob)
        if p.state != "pending":
            if self._depth:
                self._fresh.append((p, len(blob)))
            else:
                self._settled.put_all([(p, len(blob))])
        return p

    def insert_promise(self, promise: Promise, *, armed: bool) -> None:
        if self._depth:
            self._seen[promise.id] = promise
        armed_at = promise.timeout_at if armed and promise.state == "pending" else None
        if armed_at is not None:
            self._wrote(armed_at)
        self._w(
            "INSERT INTO resonate_promises (id, state, branch, armed_at, record) "
            "VALUES (%s, %s, %s, %s, %s)",
            (promise.id, promise.state, promise.tags.get(TAG_BRANCH), armed_at, _encode(promise)),
        )

    def update_promise(self, promise: Promise) -> None:
        if self._depth:
            self._seen[promise.id] = promise
        blob = _encode(promise)
        if promise.state == "pending":
            self._w("UPDATE resonate_promises SET record = %s WHERE id = %s", (blob, promise.id))
        else:
            self._fresh.append((promise, len(blob)))
            self._w("UPDATE resonate_promises SET state = %s, armed_at = NULL, record = %s "
                    "WHERE id = %s", (promise.state, blob, promise.id))

    def branch_promises(self, branch: str) -> list[Promise]:
        if self._depth and branch == self._branch_read:  # read with the first read
            members = dict(self._branch_rows)
            for pid, p in self._seen.items():  # as written since, in this transaction
                if p is not None and p.tags.get(TAG_BRANCH) == branch:
                    members[pid] = p
            return [members[pid] for pid in sorted(members)]
        settled = self._settled
        out = []
        for pid, state, blob in self._x(
            "SELECT id, state, record FROM resonate_promises WHERE branch = %s ORDER BY id",
            (branch,),
        ):
            p = settled.get(pid) if state != "pending" else None
            out.append(p if p is not None else self._decoded(blob))
        return out

    def due_promises(self, now: int, limit: int) -> list[Promise]:
        if not self._tick_lock():
            return []
        rows = self._x(
            "SELECT record FROM resonate_promises WHERE armed_at IS NOT NULL AND armed_at <= %s "
            "ORDER BY armed_at, id LIMIT %s", (now, limit),
        ).fetchall()
        return [_promise(r[0]) for r in rows]

    def _tick_lock(self) -> bool:
        """Whether this transaction may fire timers (no other process is firing them now)."""
        return bool(self._one("SELECT pg_try_advisory_xact_lock(%s)", (TICK_LOCK,)))

    def search_promises(
        self, state: PromiseState | None, tags: dict[str, str] | None, cursor: str | None,
        limit: int,
    ) -> list[Promise]:
        sql = "SELECT record FROM resonate_promises WHERE id > %s" if cursor is not None \
            else "SELECT record FROM resonate_promises WHERE id >= %s"
        args: list[Any] = [cursor if cursor is not None else ""]
        if state is not None:
            sql += " AND state = %s"
            args.append(state)
        sql += " ORDER BY id"
        if not tags:
            sql += " LIMIT %s"
            args.append(limit)
        out = []
        for (blob,) in self._x(sql, args):
            p = _promise(blob)
            if tags_match(p.tags, tags):
                out.append(p)
                if len(out) == limit:
                    break
        return out

    # tasks ------------------------------------------------------------------------------------
    def get_task(self, task_id: str) -> TaskRow | None:
        if self._depth and task_id in self._tasks:
            return self._tasks[task_id]
        blob = self._one("SELECT record FROM resonate_tasks WHERE id = %s", (task_id,))
        row = None if blob is None else _task(blob)
        if self._depth:
            self._tasks[task_id] = row
        return row

    def put_task(self, row: TaskRow) -> None:
        if self._depth:
            self._tasks[row.id] = row
        if row.timer_at is not None:
            self._wrote(row.timer_at)
        self._w(
            "INSERT INTO resonate_tasks (id, state, timer_at, record) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
            "timer_at = excluded.timer_at, record = excluded.record",
            (row.id, row.state, row.timer_at, _encode(row)),
        )

    def due_tasks(self, now: int, limit: int) -> list[TaskRow]:
        if not self._tick_lock():
            return []
        rows = self._x(
            "SELECT record FROM resonate_tasks WHERE timer_at IS NOT NULL AND timer_at <= %s "
            "ORDER BY timer_at, id LIMIT %s", (now, limit),
        ).fetchall()
        return [_task(r[0]) for r in rows]

    def search_tasks(self, state: TaskState | None, cursor: str | None,
                     limit: int) -> list[TaskRow]:
        sql = "SELECT record FROM resonate_tasks WHERE id > %s" if cursor is not None else \
            "SELECT record FROM resonate_tasks WHERE id >= %s"
        args: list[Any] = [cursor if cursor is not None else ""]
        if state is not None:
            sql += " AND state = %s"
            args.append(state)
        sql += " ORDER BY id LIMIT %s"
        args.append(limit)
        return [_task(r[0]) for r in self._x(sql, args)]

    def acquired_tasks(self) -> list[TaskRow]:
        rows = self._x(
            "SELECT record FROM resonate_tasks WHERE state = 'acquired' ORDER BY id"
        ).fetchall()
        return [_task(r[0]) for r in rows]

    # callbacks --------------------------------------------------------------------------------
    def add_callback(self, awaited: str, awaiter: str) -> None:
        self._no_callbacks.discard(awaited)
        self._w("INSERT INTO resonate_callbacks VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (awaited, awaiter))

    def take_callbacks(self, awaited: str) -> list[str]:
        if awaited in self._no_callbacks:  # read in this transaction: there are none
            if awaited in self._no_listeners:
                self._taken_listeners[awaited] = []
            return []
        # A settlement takes the callbacks, then the listeners of one promise: both go in
        # one statement, and the listeners wait for take_listeners.
        rows = self._x(
            "WITH c AS (DELETE FROM resonate_callbacks WHERE awaited = %s RETURNING awaiter), "
            "l AS (DELETE FROM resonate_listeners WHERE promise_id = %s RETURNING seq, address) "
            "SELECT 0, awaiter FROM c UNION ALL SELECT seq, address FROM l",
            (awaited, awaited)).fetchall()
        self._taken_listeners[awaited] = [(seq, a) for seq, a in rows if seq]
        return sorted(a for seq, a in rows if not seq)

    def drop_callbacks_of(self, awaiter: str) -> None:
        self._w("DELETE FROM resonate_callbacks WHERE awaiter = %s", (awaiter,))

    # listeners --------------------------------------------------------------------------------
    def add_listener(self, promise_id: str, address: str) -> None:
        self._no_listeners.discard(promise_id)
        taken = self._taken_listeners.pop(promise_id, None)
        if taken:  # taken already in this transaction: back in the table, in order
            self._w("INSERT INTO resonate_listeners (seq, promise_id, address) "
                    "SELECT s, %s, a FROM unnest(%s::bigint[], %s::text[]) AS t(s, a)",
                    (promise_id, [seq for seq, _ in taken], [a for _, a in taken]))
        self._w("INSERT INTO resonate_listeners (promise_id, address) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING", (promise_id, address))

    def take_listeners(self, promise_id: str) -> list[str]:
        taken = self._taken_listeners.pop(promise_id, None)
        if taken is not None:
            return [address for _, address in sorted(taken)]
        if promise_id in self._no_listeners:  # read in this transaction: there are none
            return []
        rows = self._x("DELETE FROM resonate_listeners WHERE promise_id = %s "
                       "RETURNING seq, address", (promise_id,)).fetchall()
        return [address for _, address in sorted(rows)]

    # schedules --------------------------------------------------------------------------------
    def get_schedule(self, schedule_id: str) -> Schedule | None:
        blob = self._one("SELECT record FROM resonate_schedules WHERE id = %s", (schedule_id,))
        return None if blob is None else _schedule(blob)

    def put_schedule(self, schedule: Schedule) -> None:
        self._wrote(schedule.next_run_at)
        self._w(
            "INSERT INTO resonate_schedules (id, next_run_at, record) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET next_run_at = excluded.next_run_at, "
            "record = excluded.record",
            (schedule.id, schedule.next_run_at, _encode(schedule)),
        )

    def delete_schedule(self, schedule_id: str) -> None:
        self._w("DELETE FROM resonate_schedules WHERE id = %s", (schedule_id,))

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        if not self._tick_lock():
            return []
        rows = self._x(
            "SELECT record FROM resonate_schedules WHERE next_run_at <= %s "
            "ORDER BY next_run_at, id LIMIT %s", (now, limit),
        ).fetchall()
        return [_schedule(r[0]) for r in rows]

    def search_schedules(self, tags: dict[str, str] | None, cursor: str | None,
                         limit: int) -> list[Schedule]:
        sql = "SELECT record FROM resonate_schedules WHERE id > %s ORDER BY id" \
            if cursor is not None else \
            "SELECT record FROM resonate_schedules WHERE id >= %s ORDER BY id"
        out = []
        for (blob,) in self._x(sql, (cursor if cursor is not None else "",)):
            s = _schedule(blob)
            if tags_match(s.promise_tags, tags):
                out.append(s)
                if len(out) == limit:
                    break
        return out

    # outbox -----------------------------------------------------------------------------------
    _PUSH: Final = (
        "WITH pushed AS (INSERT INTO resonate_outbox "
        "(kind, ref, dest, address, mode, grp, pid, message) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (kind, ref, dest) {} "
        "RETURNING grp, mode, pid) "
        "SELECT pg_notify('" + NOTIFY_CHANNEL + "', CASE WHEN mode = 'uni' "
        "THEN grp || '/' || coalesce(pid, '') ELSE grp END) FROM pushed WHERE grp IS NOT NULL"
    )
    _PUSH_EXECUTE: Final = _PUSH.format(
        "DO UPDATE SET address = excluded.address, mode = excluded.mode, grp = excluded.grp, "
        "pid = excluded.pid, message = excluded.message, created_at = excluded.created_at")
    _PUSH_UNBLOCK: Final = _PUSH.format("DO NOTHING")

    def push_execute(self, task_id: str, address: str, message: Message) -> None:
        self._pushing = True
        self._w(self._PUSH_EXECUTE,
                ("e", task_id, "", address, *route(address), _encode(message)))

    def push_unblock(self, promise_id: str, address: str, message: Message) -> None:
        self._pushing = True
        self._w(self._PUSH_UNBLOCK,
                ("u", promise_id, address, address, *route(address), _encode(message)))

    def take_outbox(self) -> list[tuple[str, Message]]:
        rows = self._x("DELETE FROM resonate_outbox RETURNING seq, address, message").fetchall()
        rows.sort()
        return [(address, _message(blob)) for _, address, blob in rows]

    def next_written_deadline(self) -> int | None:
        written, self._written = self._written, None
        return written

    def _wrote(self, deadline: int) -> None:
        if self._written is None or deadline < self._written:
            self._written = deadline

    def next_due(self) -> int | None:
        row = self._x(
            "SELECT LEAST("
            "(SELECT MIN(armed_at) FROM resonate_promises WHERE armed_at IS NOT NULL), "
            "(SELECT MIN(timer_at) FROM resonate_tasks WHERE timer_at IS NOT NULL), "
            "(SELECT MIN(next_run_at) FROM resonate_schedules))"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def __repr__(self) -> str:
        return f"PostgresStorage({self.shown!r})"
