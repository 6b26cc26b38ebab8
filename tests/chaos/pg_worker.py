"""A worker process on PostgreSQL: ``python -m tests.chaos.pg_worker DSN LOG``.

Serves groups ``pga`` and ``pgb`` (a ``Resonate`` for each, on one transport: its pool and
its listening connection) on the database until killed, with the settings a
user running several machines would pick (``ttl=10``: a lease renewed every 5 s, so a worker
that dies hands its tasks back within seconds, not a minute; and a retry timeout of 5 s shared
by every process, so an ``execute`` claimed by a process that died is sent again soon).

``pg_flow(i)`` (group ``pga``): a local step with a side effect, a durable sleep, an rpc to
group ``pgb``, and for every tenth workflow a fan-out of ``FANOUT`` rpcs over both groups.
The step appends ``exec <i> <pid>`` to LOG, and the workflow appends ``settled <i> <pid>``
once the step's settle is acknowledged; both are fsync'd, so the log survives SIGKILL and
shows whether a step ran again after it settled (tests/chaos/_chaos.py ``check_log``); it
appends ``done <i> <pid>`` when it is about to return (the test paces its kills by these).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable

import psycopg
import structlog

from resonate_async import Context, Resonate, TransportError
from resonate_async.transport import PostgresTransport

TTL = 10.0
RETRY_TIMEOUT_MS = 5_000
FANOUT = 4


def expected(i: int) -> int:
    """The result ``pg_flow(i)`` must end with."""
    fan = sum(2 * (i * 100 + k) for k in range(FANOUT)) if i % 10 == 0 else 0
    return i + 2 * i + fan


def build(dsn: str, note: Callable[[str], None]) -> tuple[PostgresTransport, Resonate, Resonate]:
    """The worker's transport and its two ``Resonate``s (one per group), functions registered."""
    transport = PostgresTransport(dsn, retry_timeout=RETRY_TIMEOUT_MS)
    resonate = Resonate(transport=transport, group="pga", ttl=TTL, concurrency=128)
    other = Resonate(transport=transport, group="pgb", ttl=TTL, concurrency=128)

    async def effect(i: int) -> int:
        note(f"exec {i}")
        return i

    async def pg_leaf(ctx: Context, n: int) -> int:
        return n * 2

    resonate.register(pg_leaf)
    other.register(pg_leaf)

    @resonate.register
    async def pg_flow(ctx: Context, i: int) -> int:
        a = await ctx.run(effect, i)
        note(f"settled {i}")
        await ctx.sleep(0.2)
        b = await ctx.rpc(pg_leaf, i).options(target="pgb")
        fan = 0
        if i % 10 == 0:
            handles = [await ctx.rpc(pg_leaf, i * 100 + k)
                       .options(target="pga" if k % 2 else "pgb").spawn()
                       for k in range(FANOUT)]
            fan = sum([await h for h in handles])
        note(f"done {i}")
        return a + b + fan

    return transport, resonate, other


def main(dsn: str, log_path: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    def note(line: str) -> None:
        os.write(fd, f"{line} {pid}\n".encode())
        os.fsync(fd)

    async def serve() -> None:
        # A worker started while PostgreSQL restarts cannot connect: it tries again, as a
        # process supervisor (systemd, Kubernetes) would restart it, for at most a minute.
        deadline = time.monotonic() + 60
        while True:
            transport, resonate, other = build(dsn, note)
            try:
                async with transport:  # one pool for both
                    await asyncio.gather(resonate.serve(), other.serve())
                return
            except (TransportError, psycopg.OperationalError) as exc:
                if time.monotonic() > deadline:
                    raise
                print(f"pg_worker: cannot start yet ({exc}); trying again", file=sys.stderr)
                await asyncio.sleep(0.5)

    asyncio.run(serve())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
