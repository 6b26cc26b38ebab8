"""SIGKILL workers and the server while 500 workflows run: all complete, none twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos._chaos import run_chaos

# The run takes as long as the machine needs; its own bound is progress (see run_chaos), and
# the timeout only stops a run that hangs. The kills are paced by progress, so every one of
# them lands while work is in flight: 500 workflows cover what 2,000 paced by time did.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(1200)]

COUNT = int(os.environ.get("CHAOS_WORKFLOWS", "500"))
KILLS = 20  # every fifth one is the server's
POISON = 10  # workflows whose step raises SystemExit among them: rejected, no worker lost


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the test drives subprocesses; the workers run asyncio.run


async def test_workflows_survive_repeated_sigkill_of_workers_and_server(tmp_path: Path) -> None:
    report = await run_chaos(tmp_path, count=COUNT, workers=3, kills=KILLS, stall=90.0,
                             poison=POISON)
    print(report)
    assert (report.worker_kills, report.server_kills) == (KILLS * 4 // 5, KILLS // 5), report
    assert report.kills_in_flight == KILLS, report  # none came after the work was done
    assert report.violations == [], report
    assert report.completed == COUNT, report
    assert report.poisoned == POISON, report
