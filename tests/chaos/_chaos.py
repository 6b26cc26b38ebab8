"""Real-process chaos: a dev server on SQLite and worker processes, SIGKILLed at random
while a load of workflows runs through them; every workflow completes, none twice."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from resonate_async import Resonate, ResonateError
from tests._devserver import DevServerProcess

TAG = {"chaos": "load"}


@dataclass
class ChaosReport:
    workflows: int
    completed: int = 0
    worker_kills: int = 0
    server_kills: int = 0
    executions: int = 0
    reexecuted: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Workers:
    def __init__(self, url: str, log: Path, count: int) -> None:
        self.url, self.log = url, log
        self.procs: list[subprocess.Popen[bytes]] = [self.spawn() for _ in range(count)]

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "tests.chaos.worker", self.url,
                                 str(self.log)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        self.procs[i] = self.spawn()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def check_log(log: Path, count: int, report: ChaosReport) -> None:
    """No step ran after its settle was acknowledged; every workflow's step ran."""
    runs: dict[int, int] = {}
    settled: set[int] = set()
    for line in log.read_text().splitlines():
        what, i_text, _ = line.split()
        i = int(i_text)
        if what == "exec":
            runs[i] = runs.get(i, 0) + 1
            if i in settled:
                report.violations.append(f"workflow {i}: its step ran again after it settled")
        else:
            settled.add(i)
    report.executions = sum(runs.values())
    report.reexecuted = sum(1 for n in runs.values() if n > 1)
    missing = [i for i in range(count) if i not in runs]
    if missing:
        report.violations.append(f"{len(missing)} workflows never ran their step: {missing[:10]}")


async def run_chaos(directory: Path, *, count: int = 2000, workers: int = 3,
                    chaos_seconds: float = 30.0, limit: float = 110.0,
                    seed: int = 0) -> ChaosReport:
    """Submit ``count`` workflows and SIGKILL workers (and, every few kills, the server) for
    ``chaos_seconds``; then wait, at most until ``limit`` seconds in all, for every one."""
    rng = random.Random(seed)
    began = time.monotonic()
    report = ChaosReport(count)
    log = directory / "effects.log"
    # a short retry timeout: execute messages lost with a killed server are sent again soon
    server = DevServerProcess(str(directory / "chaos.db"), args=["--retry-timeout", "2"])
    server.start()
    pool = Workers(server.url, log, workers)
    client = Resonate(url=server.url, group="chaos", worker=False)
    ids = [f"chaos-{i}" for i in range(count)]
    try:
        async with client:
            async with anyio.create_task_group() as tg:
                async def submit(lo: int, hi: int) -> None:
                    for i in range(lo, hi):
                        while True:
                            try:
                                await client.options(tags=TAG).rpc(ids[i], "chaos_flow", i)
                                break
                            except ResonateError:
                                await anyio.sleep(0.2)

                async def chaos() -> None:
                    n = 0
                    while time.monotonic() - began < chaos_seconds:
                        await anyio.sleep(rng.uniform(0.5, 2.0))
                        n += 1
                        if n % 5 == 0:
                            await anyio.to_thread.run_sync(server.kill)
                            report.server_kills += 1
                            await anyio.sleep(rng.uniform(0.1, 1.0))
                            await anyio.to_thread.run_sync(server.start)
                        else:
                            pool.kill(rng.randrange(workers))
                            report.worker_kills += 1
                    calm.set()

                calm = anyio.Event()  # the chaos is over and the server is up
                tg.start_soon(chaos)
                async with anyio.create_task_group() as submitters:
                    step = max(1, count // 20)
                    for lo in range(0, count, step):
                        submitters.start_soon(submit, lo, min(count, lo + step))
                with anyio.move_on_after(max(1.0, limit - (time.monotonic() - began))):
                    while True:
                        await anyio.sleep(1.0)
                        try:
                            pending = [r async for r in client.promises.search(
                                state="pending", tags=TAG, page_size=500)]
                        except ResonateError:
                            continue
                        if not pending and calm.is_set():
                            break
                tg.cancel_scope.cancel()
            for i, pid in enumerate(ids):
                record = await client.promises.get(pid)
                if record.state == "resolved" and record.result() == i * 3:
                    report.completed += 1
                elif len(report.violations) < 10:
                    report.violations.append(f"{pid}: {record.state}")
    finally:
        pool.close()
        server.close()
    check_log(log, count, report)
    report.seconds = time.monotonic() - began
    return report


__all__ = ["ChaosReport", "run_chaos"]
