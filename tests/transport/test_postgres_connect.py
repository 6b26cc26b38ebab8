"""PostgresTransport keeps trying to reach PostgreSQL when it opens, for ``retry_for``."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from anyio.abc import SocketStream

from resonate_async._errors import TransportError
from resonate_async.protocol import PromiseGet
from resonate_async.transport._postgres import PostgresTransport


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _on_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    userinfo, _, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}"))


async def _pipe(a: SocketStream, b: SocketStream) -> None:
    try:
        async for chunk in a:
            await b.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        await b.aclose()


async def forward(port: int, to: tuple[str, int], *, task_status: anyio.abc.TaskStatus[None]
                  = anyio.TASK_STATUS_IGNORED) -> None:
    """Listen on ``port`` and pass every connection through to ``to`` (PostgreSQL)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)

    async def serve(client: SocketStream) -> None:
        server = await anyio.connect_tcp(*to)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_pipe, client, server)
            tg.start_soon(_pipe, server, client)

    task_status.started()
    await listener.serve(serve)


async def test_opening_waits_for_a_database_that_comes_up_later(pg_dsn: str) -> None:
    real = urlsplit(pg_dsn)
    assert real.hostname is not None and real.port is not None
    port = _free_port()
    late = _on_port(pg_dsn, port)
    opened, done = anyio.Event(), anyio.Event()

    async def open_it() -> None:
        async with PostgresTransport(late, retry_for=120) as transport:
            opened.set()
            assert (await transport.send(PromiseGet("nothing"))).status == 404
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_it)
        await anyio.sleep(0.3)  # nothing listens yet: the transport is retrying
        assert not opened.is_set()
        await tg.start(forward, port, (real.hostname, real.port))
        with anyio.fail_after(60):
            await done.wait()  # opened, served a request and closed, through the forwarder
        tg.cancel_scope.cancel()


async def test_retry_for_zero_tries_once_and_says_how_to_wait_longer(pg_dsn: str) -> None:
    nowhere = _on_port(pg_dsn, _free_port())
    with anyio.fail_after(30), pytest.raises(TransportError) as caught:
        async with PostgresTransport(nowhere, retry_for=0):
            pass
    message = str(caught.value)
    assert "cannot connect to PostgreSQL" in message and "tried 1 times for 0 s" in message
    assert "PostgresTransport(retry_for=...)" in message


def test_a_negative_retry_for_is_refused_with_what_to_give() -> None:
    with pytest.raises(ValueError, match=r"retry_for must be >= 0 seconds"):
        PostgresTransport("postgresql://u@127.0.0.1:1/db", retry_for=-1)


async def test_a_connection_lost_while_opening_is_a_transport_error_and_then_retried(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL restarting between the connect and the schema check: the request fails as
    unreachable (a platform failure the worker handles), never with a raw driver error that
    would end a worker process; the next request opens a connection again."""
    import psycopg

    from resonate_async.transport import _postgres

    real = _postgres.PostgresStorage
    failures = [psycopg.OperationalError("server closed the connection unexpectedly")]

    def flaky(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)  # type: ignore[arg-type]

    async with PostgresTransport(pg_dsn) as transport:
        transport._free.clear()  # the next request opens a connection of its own
        monkeypatch.setattr(_postgres, "PostgresStorage", flaky)
        with pytest.raises(TransportError, match="failed while opening a connection"):
            await transport.send(PromiseGet("p"))
        answer = await transport.send(PromiseGet("p"))
        assert answer.status == 404
