# mypy: disable-error-code="untyped-decorator, unused-ignore"
"""DBOS (``dbos``) on the shared workloads, with a SQLite or a PostgreSQL system database.

Run in its own environment: ``python dbos_bench.py [--quick] [--postgres=DSN] [names...]``.
Prints ``name value unit tag`` lines like the main benchmark; the tag is ``dbos.sqlite``, or
``dbos.postgres`` with ``--postgres`` (a libpq URL of a server: DBOS gets a database of its
own on it, created by DBOS at launch and dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dbos import DBOS, SetWorkflowID  # type: ignore[import-not-found, unused-ignore]


@DBOS.step()
async def noop() -> None:
    return None


@DBOS.workflow()
async def seq_steps(n: int) -> int:
    for _ in range(n):
        await noop()
    return n


@DBOS.workflow()
async def fanout(n: int) -> int:
    await asyncio.gather(*(noop() for _ in range(n)))
    return n


@DBOS.workflow()
async def one_step() -> int:
    await noop()
    return 1


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--roots", type=int, default=500)
    parser.add_argument("--rpc", type=int, default=50)
    parser.add_argument("--rtt", type=int, default=0, help="unused: DBOS has no HTTP client")
    parser.add_argument("--postgres", default=None, metavar="DSN",
                        help="a PostgreSQL server's URL: DBOS's system database goes there")
    args = parser.parse_args()
    reps = args.reps
    tmp = tempfile.mkdtemp(prefix="dbos-bench-")
    database = f"dbos_bench_{uuid.uuid4().hex[:10]}"
    if args.postgres:
        url = urlsplit(args.postgres)
        system_url = urlunsplit(url._replace(scheme="postgresql", path=f"/{database}"))
        tag = "dbos.postgres"
    else:
        system_url = f"sqlite:///{tmp}/dbos.sqlite"
        tag = "dbos.sqlite"
    DBOS(config={"name": "bench", "system_database_url": system_url, "log_level": "ERROR"})
    DBOS.launch()
    logging.disable(logging.CRITICAL)
    names = args.names or ["seq_steps", "fanout", "roots"]

    async def timed(fn: Any, *fargs: Any) -> float:
        start = time.perf_counter()
        with SetWorkflowID(f"w{uuid.uuid4().hex}"):
            await fn(*fargs)
        return time.perf_counter() - start

    try:
        if "seq_steps" in names:
            n = args.steps
            t = statistics.median([await timed(seq_steps, n) for _ in range(reps)])
            print(f"seq_steps {n / t:.1f} steps/s {tag}", flush=True)
        if "fanout" in names:
            n = args.fanout
            t = statistics.median([await timed(fanout, n) for _ in range(reps)])
            print(f"fanout {n / t:.1f} children/s {tag}", flush=True)
        if "roots" in names:
            n = args.roots
            samples = []
            for _ in range(reps):
                start = time.perf_counter()
                handles = [await DBOS.start_workflow_async(one_step) for _ in range(n)]
                await asyncio.gather(*(h.get_result() for h in handles))
                samples.append(time.perf_counter() - start)
            print(f"roots {n / statistics.median(samples):.1f} roots/s {tag}", flush=True)
    finally:
        DBOS.destroy()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
        if args.postgres:
            _drop_database(args.postgres, database)


def _drop_database(dsn: str, database: str) -> None:
    """Drop DBOS's database (psycopg comes with dbos); a note if it cannot be dropped."""
    try:
        import psycopg  # type: ignore[import-not-found, unused-ignore]

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    except Exception as exc:  # the figures are printed already; say what is left behind
        print(f"# database {database} not dropped: {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
