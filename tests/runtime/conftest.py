"""Fixtures of the behaviour suite: every test runs on each transport and each anyio backend.

``connect()`` makes a ``Resonate`` attached to the test's engine: an embedded engine in memory,
an embedded engine in a SQLite file, the development server over HTTP, or a PostgreSQL schema
of the test's own. Several instances made by one test share that engine (several workers of
one application); on PostgreSQL each has a transport of its own, as separate processes do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resonate_async import Resonate
from resonate_async.engine import Engine
from resonate_async.transport import EmbeddedTransport
from tests.runtime.spy import SpyTransport

TRANSPORTS = ["memory", "sqlite", "http", "postgres"]


# The behaviour suite's server behaves as the Resonate server: no dev-server extension (full
# preload in every fence answer, no heartbeat splitting) and its 30 s retry timeout, so a
# client that relied on an extension, or on work being re-sent soon, fails here.
DEV_SERVER_ARGS = ("--no-extensions", "--retry-timeout", "30")


@pytest.fixture(scope="session")
def http_url() -> Iterator[str]:
    from tests._devserver import dev_server

    with dev_server(args=DEV_SERVER_ARGS) as server:
        yield server.url


@pytest.fixture(params=TRANSPORTS)
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Connect = Callable[..., Resonate]


@pytest.fixture
def connect(transport_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Connect:
    group = f"g{uuid.uuid4().hex[:10]}"
    shared: dict[str, Any] = {}

    def make(**options: Any) -> Resonate:
        options.setdefault("group", group)
        spy = options.pop("spy", None)
        wrap = options.pop("wrap", None)
        if transport_kind == "http":
            url = request.getfixturevalue("http_url")
            if spy is None and wrap is None:
                return Resonate(url=url, **options)
            from resonate_async.transport import HttpTransport

            transport: Any = HttpTransport(url)
        elif transport_kind == "postgres":
            if "dsn" not in shared:
                shared["dsn"] = request.getfixturevalue("pg_dsn")
            from resonate_async.transport._postgres import PostgresTransport

            transport = PostgresTransport(shared["dsn"], poll_interval=0.5)
        else:
            if "transport" not in shared:
                engine = (Engine.memory() if transport_kind == "memory"
                          else Engine.sqlite(str(tmp_path / "engine.db")))
                shared["transport"] = EmbeddedTransport(engine, close_engine=True)
            transport = shared["transport"]
        if spy is not None:
            transport = SpyTransport(transport, spy)
        if wrap is not None:
            transport = wrap(transport)
        return Resonate(transport=transport, **options)

    return make


@pytest.fixture
def resonate(connect: Connect) -> Resonate:
    return connect()


@pytest.fixture
def uid() -> Callable[[str], str]:
    """Unique ids, so tests sharing one development server never collide."""
    return lambda name: f"{name}-{uuid.uuid4().hex[:12]}"
