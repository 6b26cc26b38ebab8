"""The embedded engine: the Resonate server's semantics as a deterministic state machine.

``Engine.memory()`` keeps state in process memory; ``Engine.sqlite(path)`` in a SQLite file
that survives restarts; ``Engine(PostgresStorage(dsn))`` in a PostgreSQL database that many
processes share (see ``PostgresTransport``). The engine is synchronous (see ``Engine``): it
performs no I/O but through its storage and reads no clock; ``now`` is always passed in, in
Unix milliseconds.
"""

from resonate_async._errors import SchemaVersionError, StorageLockedError
from resonate_async.engine._core import DEFAULT_RETRY_TIMEOUT
from resonate_async.engine._engine import Engine, TransactionConflict
from resonate_async.engine._memory import MemoryStorage
from resonate_async.engine._storage import Storage, TaskRow

__all__ = [
    "DEFAULT_RETRY_TIMEOUT",
    "Engine",
    "MemoryStorage",
    "PostgresStorage",
    "SchemaVersionError",
    "SqliteStorage",
    "Storage",
    "StorageLockedError",
    "TaskRow",
    "TransactionConflict",
]


def __getattr__(name: str) -> object:
    if name == "SqliteStorage":
        from resonate_async.engine._sqlite import SqliteStorage

        return SqliteStorage
    if name == "PostgresStorage":
        from resonate_async.engine._postgres import PostgresStorage

        return PostgresStorage
    raise AttributeError(name)
