"""``scaling`` (postgres only): roots/s with 1, 2 and 4 worker processes on one database.

For each K a new schema, K worker processes (``benchmarks._pg_worker``, each a
``Resonate(url=postgresql://...)`` worker) and this process as a client (``worker=False``)
that sends ``sizes.scaling_roots`` roots with ``rpc`` (each a one-step function run by some
worker), at most ``IN_FLIGHT`` at a time, and awaits every result, after a warm-up of a few
roots. (A worker holds at most 256 execute messages waiting for its concurrency slots and
drops the rest, which the engine sends again after the 30 s retry timeout: a wave of 500 at
once on one worker would measure that timeout, not throughput.) Next to each figure
it notes the CPU each side used over the timed wave, as a share of one core: the workers
(summed), the client and the PostgreSQL server (when it runs on this machine), so the
output says where throughput saturates (database, workers or the cores themselves).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from benchmarks._workloads import Connect, Figure, Sizes, one_step
from resonate_async import Resonate

READY_TIMEOUT = 120.0  # seconds a worker process may take to start serving
STOP_TIMEOUT = 30.0
ROOT = Path(__file__).parent.parent
IN_FLIGHT = 128  # roots the client has started and not seen finish, at most


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` used so far (gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _postgres_pids() -> list[int]:
    """The pids of the PostgreSQL server processes on this machine (empty where /proc or
    pgrep is missing: then the database's CPU is not reported)."""
    try:
        found = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(pid) for pid in found.stdout.split()]


@contextmanager
def workers(url: str, k: int, counters: list[dict[str, int]] | None = None,
            ) -> Iterator[list[int]]:
    """``k`` worker processes on ``url``, serving when the block starts; stopped (SIGTERM,
    bounded, then killed) when it ends, each then adding what its connections did (its
    ``counters`` line) to ``counters``."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(k):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks._pg_worker", url], cwd=ROOT,
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True))
        deadline = time.monotonic() + READY_TIMEOUT
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # bounded: a worker that dies closes its stdout
            if line.strip() != "ready" or time.monotonic() > deadline:
                raise RuntimeError(f"a scaling worker did not start (exit code "
                                   f"{proc.poll()}, said {line!r}); its errors are above")
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate(timeout=STOP_TIMEOUT)
            for line in (out or "").splitlines():
                if counters is not None and line.startswith("counters "):
                    counters.append(json.loads(line.partition(" ")[2]))


async def _wave(client: Resonate, n: int) -> None:
    slots = anyio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with slots:
            handle = await client.rpc(f"s-{uuid.uuid4().hex[:12]}", one_step.__name__)
            if await handle.result() != 1:
                raise RuntimeError("a scaling root returned the wrong result")

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)


async def bench_scaling(connect: Connect, sizes: Sizes) -> list[Figure]:
    fresh = getattr(connect, "fresh_dsn", None)
    if fresh is None:
        raise ValueError("the scaling workload runs in the postgres mode only")
    out = []
    for k in sizes.scaling_workers:
        url = fresh()
        counted: list[dict[str, int]] = []
        with workers(url, k, counted) as pids:
            async with Resonate(url=url, worker=False) as client:
                await _wave(client, 2 * k)  # warm-up: every worker's connections are open
                pg = _postgres_pids()  # now that every connection has its server process
                cpu = (_cpu_of(pids), time.process_time(), _cpu_of(pg))
                before = _counters(client)
                start = time.perf_counter()
                await _wave(client, sizes.scaling_roots)
                wall = time.perf_counter() - start
                used = (_cpu_of(pids) - cpu[0], time.process_time() - cpu[1],
                        _cpu_of(pg) - cpu[2])
                mine = {key: value - before.get(key, 0)
                        for key, value in _counters(client).items()}
        out.append(Figure(f"scaling.{k}", sizes.scaling_roots / wall, "roots/s", True))
        db = f", postgres server {used[2] / wall:.2f}" if pg else ""
        print(f"# scaling.{k}: cores busy over the wave: workers {used[0] / wall:.2f}, "
              f"client {used[1] / wall:.2f}{db} (of {os.cpu_count()} cores)", flush=True)
        roots = sizes.scaling_roots
        if mine and counted:  # the workers' figures count their warm-up roots too
            served = roots + 2 * k
            theirs = {key: sum(c.get(key, 0) for c in counted) for key in mine}
            print(f"# scaling.{k}: per root: client {mine['round_trips'] / roots:.1f} round "
                  f"trips, {mine['conflicts'] / roots:.2f} serialization conflicts; workers "
                  f"{theirs['round_trips'] / served:.1f} round trips, "
                  f"{theirs['conflicts'] / served:.2f} conflicts", flush=True)
    return out


def _counters(client: Resonate) -> dict[str, int]:
    """The client's PostgreSQL counters (empty for another transport)."""
    counters = getattr(client.transport, "counters", None)
    found: dict[str, int] = counters() if callable(counters) else {}
    return found
