"""Real-process chaos: a dev server on SQLite and worker processes, SIGKILLed at random
while a load of workflows runs through them; every workflow completes, none twice."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from resonate_async import ApplicationError, Resonate, ResonateError
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
    kills_in_flight: int = 0  # kills made while some workflow had not yet settled its step
    poisoned: int = 0  # workflows whose step raised SystemExit, rejected as they must be
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


async def run_chaos(directory: Path, *, count: int = 2000, workers: int = 3, kills: int = 20,
                    stall: float = 60.0, seed: int = 0, poison: int = 0) -> ChaosReport:
    """Submit ``count`` workflows and make ``kills`` SIGKILLs (every fifth one of the server,
    the rest of a random worker) spread over their run; then wait for every one to finish.
    Among them, ``poison`` workflows whose step raises ``SystemExit``: each must be rejected
    (naming SystemExit), and no worker may exit by itself.

    No bound depends on the machine's speed: the kills are paced by the workflows' progress,
    not by a clock, and the wait gives up only when no workflow has finished for ``stall``
    seconds (a hang), however long the whole run takes on a slow or loaded machine.
    """
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
    poisoned = [f"chaos-poison-{i}" for i in range(poison)]
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
                    for n in range(1, kills + 1):
                        # spread the kills over the work, not over time: kill n comes once
                        # 3n / 4(kills + 1) of the steps have settled, however slow the
                        # machine, so the last one still leaves a quarter of the work to do
                        while _settled_steps(log) < 3 * n * count // (4 * (kills + 1)):
                            await anyio.sleep(0.2)
                        await anyio.sleep(rng.uniform(0.1, 0.5))
                        # counted at the moment of the kill (a server restart can take long
                        # enough for the rest of the work to finish, which is no fault)
                        if _settled_steps(log) < count:
                            report.kills_in_flight += 1
                        if n % 5 == 0:
                            await anyio.to_thread.run_sync(server.kill)
                            report.server_kills += 1
                            await anyio.sleep(rng.uniform(0.1, 1.0))
                            await anyio.to_thread.run_sync(server.start)
                        else:
                            pool.kill(rng.randrange(workers))
                            report.worker_kills += 1
                    calm.set()

                async def submit_poison() -> None:
                    # all at once, at the start: the kills come while they run (pacing them by
                    # progress would hang the submission if they kill the workers)
                    for n, pid in enumerate(poisoned):
                        while True:
                            try:
                                await client.options(tags=TAG).rpc(pid, "chaos_poison", n)
                                break
                            except ResonateError:
                                await anyio.sleep(0.2)

                calm = anyio.Event()  # the chaos is over and the server is up
                tg.start_soon(chaos)
                async with anyio.create_task_group() as submitters:
                    step = max(1, count // 20)
                    for lo in range(0, count, step):
                        submitters.start_soon(submit, lo, min(count, lo + step))
                    submitters.start_soon(submit_poison)
                last_pending, progressed = count + 1, time.monotonic()
                while True:
                    await anyio.sleep(1.0)
                    for code in pool.exited():
                        report.violations.append(f"a worker exited by itself (code {code})")
                    try:
                        pending = len([r async for r in client.promises.search(
                            state="pending", tags=TAG, page_size=500)])
                    except ResonateError:
                        pending = last_pending  # the server is down for a moment
                    if pending == 0 and calm.is_set():
                        break
                    if pending < last_pending:
                        last_pending, progressed = pending, time.monotonic()
                    elif time.monotonic() - progressed > stall:
                        report.violations.append(
                            f"no workflow finished for {stall:.0f}s: {pending} still pending")
                        break
                tg.cancel_scope.cancel()
            for i, pid in enumerate(ids):
                record = await client.promises.get(pid)
                if record.state == "resolved" and record.result() == i * 3:
                    report.completed += 1
                elif len(report.violations) < 10:
                    report.violations.append(f"{pid}: {record.state}")
            for pid in poisoned:
                record = await client.promises.get(pid)
                try:
                    record.result()
                except ApplicationError as exc:
                    if "SystemExit" in str(exc) or "SystemExit" in type(exc).__name__:
                        report.poisoned += 1
                        continue
                    report.violations.append(f"{pid}: rejected with {exc!r}")
                except BaseException as exc:  # the outcome is what the test inspects
                    report.violations.append(f"{pid}: rejected with {exc!r}")
                else:
                    report.violations.append(f"{pid}: {record.state}, not rejected")
    finally:
        pool.close()
        server.close()
    check_log(log, count, report)
    report.seconds = time.monotonic() - began
    return report


def _settled_steps(log: Path) -> int:
    """How many workflows have settled their step so far (a replay logs it again)."""
    try:
        return len(set(_SETTLED.findall(log.read_bytes())))
    except FileNotFoundError:
        return 0


_SETTLED = re.compile(rb"^settled (\d+) ", re.MULTILINE)


__all__ = ["ChaosReport", "run_chaos"]
