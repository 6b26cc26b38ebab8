"""SQLite storage (stdlib ``sqlite3``): WAL, one transaction per request, a versioned schema.

Records are stored as msgspec JSON blobs next to the few columns that the indexes need (state,
branch, deadlines), so a read is one indexed lookup and one decode. The file is held
exclusively by one process (an advisory lock on ``<path>.lock``): a second live process gets
``StorageLockedError`` instead of corrupting anything, and a process that died released it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import msgspec

from resonate_async._errors import SchemaVersionError, StorageLockedError
from resonate_async.engine._cache import DEFAULT_CACHE_BYTES, SettledCache
from resonate_async.engine._storage import TaskRow, tags_match
from resonate_async.protocol import (
    TAG_BRANCH,
    Message,
    Promise,
    PromiseState,
    Schedule,
    TaskState,
)

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS promises (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    branch TEXT,
    armed_at INTEGER,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS promises_branch ON promises (branch, id) WHERE branch IS NOT NULL;
CREATE INDEX IF NOT EXISTS promises_armed ON promises (armed_at, id) WHERE armed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS promises_state ON promises (state, id);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    timer_at INTEGER,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_timer ON tasks (timer_at, id) WHERE timer_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, id);
CREATE TABLE IF NOT EXISTS callbacks (
    awaited TEXT NOT NULL,
    awaiter TEXT NOT NULL,
    PRIMARY KEY (awaited, awaiter)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS callbacks_awaiter ON callbacks (awaiter);
CREATE TABLE IF NOT EXISTS listeners (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    promise_id TEXT NOT NULL,
    address TEXT NOT NULL,
    UNIQUE (promise_id, address)
);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    next_run_at INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_next ON schedules (next_run_at, id);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL,
    message BLOB NOT NULL
);
"""

_encode = msgspec.json.Encoder().encode
_promise = msgspec.json.Decoder(Promise).decode
_task = msgspec.json.Decoder(TaskRow).decode
_schedule = msgspec.json.Decoder(Schedule).decode
_message = msgspec.json.Decoder(Message).decode


class SqliteStorage:
    """Engine state in one SQLite file (``":memory:"`` for a throw-away database).

    ``synchronous="NORMAL"`` (the default) makes every acknowledged request survive a crash of
    the process; ``"FULL"`` also survives a power loss, at the price of an fsync per request.

    Settled promises never change, so their decoded records are kept in memory (a preload read
    again at every resumption is not decoded again), least recently used first out, within
    ``cache_bytes`` (default ``DEFAULT_CACHE_BYTES``, 32 MiB, measured as encoded size plus a
    per-record overhead; 0 keeps none). SQLite's own page cache stays at its default, 2 MB.
    """

    def __init__(self, path: str, *, synchronous: str = "NORMAL", exclusive: bool = True,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.path = path
        self._depth = 0
        self._written: int | None = None
        self._settled = SettledCache(cache_bytes)
        # Promises read or written by the open transaction (None: known not to exist): one
        # request reads the same ids several times (try-timeout, then the operation itself).
        self._seen: dict[str, Promise | None] = {}
        self._lock_fd: int | None = None
        if exclusive and path != ":memory:":
            self._lock_fd = _lock(path)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._migrate()
        except BaseException:
            self._unlock()
            raise

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded settled records held in memory now (at most ``cache_bytes``)."""
        return self._settled.bytes

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} uses storage schema {row[0]}, newer than this version of "
                    f"resonate_async understands ({SCHEMA_VERSION}); upgrade resonate_async"
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._seen.clear()
            self._db.execute("ROLLBACK")
            self._settled.clear()  # it may hold records of the writes just undone
            raise
        self._depth = 0
        self._seen.clear()
        self._db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None  # type: ignore[assignment]
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # promises -----------------------------------------------------------------------------
    def get_promise(self, promise_id: str) -> Promise | None:
        found = self._settled.get(promise_id)
        if found is not None:
            return found
        seen = self._seen
        if self._depth and promise_id in seen:
            return seen[promise_id]
        blob = self._one("SELECT record FROM promises WHERE id = ?", (promise_id,))
        p = None if blob is None else self._decoded(blob)
        if self._depth:
            seen[promise_id] = p
        return p

    def _decoded(self, blob: bytes) -> Promise:
        p = _promise(blob)
        if p.state != "pending":
            self._settled.put(p, len(blob))
        return p

    def insert_promise(self, promise: Promise, *, armed: bool) -> None:
        if self._depth:
            self._seen[promise.id] = promise
        armed_at = promise.timeout_at if armed and promise.state == "pending" else None
        if armed_at is not None:
            self._wrote(armed_at)
        self._db.execute(
            "INSERT INTO promises (id, state, branch, armed_at, record) VALUES (?, ?, ?, ?, ?)",
            (promise.id, promise.state, promise.tags.get(TAG_BRANCH), armed_at, _encode(promise)),
        )

    def update_promise(self, promise: Promise) -> None:
        if self._depth:
            self._seen[promise.id] = promise
        if promise.state == "pending":
            self._db.execute("UPDATE promises SET record = ? WHERE id = ?",
                             (_encode(promise), promise.id))
        else:
            blob = _encode(promise)
            self._settled.put(promise, len(blob))
            self._db.execute(
                "UPDATE promises SET state = ?, armed_at = NULL, record = ? WHERE id = ?",
                (promise.state, blob, promise.id),
            )

    def branch_promises(self, branch: str) -> list[Promise]:
        settled = self._settled
        out = []
        for pid, state, blob in self._db.execute(
            "SELECT id, state, record FROM promises WHERE branch = ? ORDER BY id", (branch,)
        ):
            p = settled.get(pid) if state != "pending" else None
            out.append(p if p is not None else self._decoded(blob))
        return out

    def due_promises(self, now: int, limit: int) -> list[Promise]:
        rows = self._db.execute(
            "SELECT record FROM promises WHERE armed_at IS NOT NULL AND armed_at <= ? "
            "ORDER BY armed_at, id LIMIT ?", (now, limit),
        ).fetchall()
        return [_promise(r[0]) for r in rows]

    def search_promises(
        self, state: PromiseState | None, tags: dict[str, str] | None, cursor: str | None,
        limit: int,
    ) -> list[Promise]:
        sql = "SELECT record FROM promises WHERE id > ?"
        args: list[Any] = [cursor if cursor is not None else ""]
        if cursor is None:
            sql = "SELECT record FROM promises WHERE id >= ?"
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        sql += " ORDER BY id"
        out = []
        for (blob,) in self._db.execute(sql, args):
            p = _promise(blob)
            if tags_match(p.tags, tags):
                out.append(p)
                if len(out) == limit:
                    break
        return out

    # tasks --------------------------------------------------------------------------------
    def get_task(self, task_id: str) -> TaskRow | None:
        blob = self._one("SELECT record FROM tasks WHERE id = ?", (task_id,))
        return None if blob is None else _task(blob)

    def put_task(self, row: TaskRow) -> None:
        if row.timer_at is not None:
            self._wrote(row.timer_at)
        self._db.execute(
            "INSERT INTO tasks (id, state, timer_at, record) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
            "timer_at = excluded.timer_at, record = excluded.record",
            (row.id, row.state, row.timer_at, _encode(row)),
        )

    def due_tasks(self, now: int, limit: int) -> list[TaskRow]:
        rows = self._db.execute(
            "SELECT record FROM tasks WHERE timer_at IS NOT NULL AND timer_at <= ? "
            "ORDER BY timer_at, id LIMIT ?", (now, limit),
        ).fetchall()
        return [_task(r[0]) for r in rows]

    def search_tasks(self, state: TaskState | None, cursor: str | None,
                     limit: int) -> list[TaskRow]:
        sql = "SELECT record FROM tasks WHERE id > ?" if cursor is not None else \
            "SELECT record FROM tasks WHERE id >= ?"
        args: list[Any] = [cursor if cursor is not None else ""]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [_task(r[0]) for r in self._db.execute(sql, args)]

    def acquired_tasks(self) -> list[TaskRow]:
        rows = self._db.execute(
            "SELECT record FROM tasks WHERE state = 'acquired' ORDER BY id"
        ).fetchall()
        return [_task(r[0]) for r in rows]

    # callbacks ----------------------------------------------------------------------------
    def add_callback(self, awaited: str, awaiter: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO callbacks VALUES (?, ?)", (awaited, awaiter))

    def take_callbacks(self, awaited: str) -> list[str]:
        rows = self._db.execute(
            "DELETE FROM callbacks WHERE awaited = ? RETURNING awaiter", (awaited,)
        ).fetchall()
        return sorted(r[0] for r in rows)

    def drop_callbacks_of(self, awaiter: str) -> None:
        self._db.execute("DELETE FROM callbacks WHERE awaiter = ?", (awaiter,))

    # listeners ----------------------------------------------------------------------------
    def add_listener(self, promise_id: str, address: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO listeners (promise_id, address) VALUES (?, ?)",
                         (promise_id, address))

    def take_listeners(self, promise_id: str) -> list[str]:
        rows = self._db.execute(
            "DELETE FROM listeners WHERE promise_id = ? RETURNING seq, address", (promise_id,)
        ).fetchall()
        return [address for _, address in sorted(rows)]

    # schedules ----------------------------------------------------------------------------
    def get_schedule(self, schedule_id: str) -> Schedule | None:
        blob = self._one("SELECT record FROM schedules WHERE id = ?", (schedule_id,))
        return None if blob is None else _schedule(blob)

    def put_schedule(self, schedule: Schedule) -> None:
        self._wrote(schedule.next_run_at)
        self._db.execute(
            "INSERT INTO schedules (id, next_run_at, record) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET next_run_at = excluded.next_run_at, "
            "record = excluded.record",
            (schedule.id, schedule.next_run_at, _encode(schedule)),
        )

    def delete_schedule(self, schedule_id: str) -> None:
        self._db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        rows = self._db.execute(
            "SELECT record FROM schedules WHERE next_run_at <= ? ORDER BY next_run_at, id "
            "LIMIT ?", (now, limit),
        ).fetchall()
        return [_schedule(r[0]) for r in rows]

    def search_schedules(self, tags: dict[str, str] | None, cursor: str | None,
                         limit: int) -> list[Schedule]:
        sql = "SELECT record FROM schedules WHERE id > ? ORDER BY id" if cursor is not None \
            else "SELECT record FROM schedules WHERE id >= ? ORDER BY id"
        out = []
        for (blob,) in self._db.execute(sql, (cursor if cursor is not None else "",)):
            s = _schedule(blob)
            if tags_match(s.promise_tags, tags):
                out.append(s)
                if len(out) == limit:
                    break
        return out

    # outbox -------------------------------------------------------------------------------
    def push_execute(self, task_id: str, address: str, message: Message) -> None:
        self._db.execute(
            "INSERT INTO outbox (key, address, message) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET address = excluded.address, "
            "message = excluded.message",
            ("e\x00" + task_id, address, _encode(message)),
        )

    def push_unblock(self, promise_id: str, address: str, message: Message) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO outbox (key, address, message) VALUES (?, ?, ?)",
            (f"u\x00{promise_id}\x00{address}", address, _encode(message)),
        )

    def take_outbox(self) -> list[tuple[str, Message]]:
        rows = self._db.execute(
            "DELETE FROM outbox RETURNING seq, address, message"
        ).fetchall()
        rows.sort()
        return [(address, _message(blob)) for _, address, blob in rows]

    def next_written_deadline(self) -> int | None:
        written, self._written = self._written, None
        return written

    def _wrote(self, deadline: int) -> None:
        if self._written is None or deadline < self._written:
            self._written = deadline

    def next_due(self) -> int | None:
        row = self._db.execute(
            "SELECT MIN(x) FROM ("
            "SELECT MIN(armed_at) AS x FROM promises WHERE armed_at IS NOT NULL "
            "UNION ALL SELECT MIN(timer_at) FROM tasks WHERE timer_at IS NOT NULL "
            "UNION ALL SELECT MIN(next_run_at) FROM schedules)"
        ).fetchone()
        return None if row is None else row[0]


def _lock(path: str) -> int:
    """Take the advisory lock of ``path``; raise ``StorageLockedError`` if a live process has it."""
    lock_path = os.path.abspath(path) + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system: no cross-process lock
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageLockedError(
            f"{path} is in use by another live process (lock {lock_path}); an embedded engine "
            "holds its file exclusively: stop the other process, or connect both to one "
            "Resonate server (Resonate(url=...))"
        ) from None
    return fd
