"""SIGKILL workers and the server while 2,000 workflows run: all complete, none twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos._chaos import run_chaos

pytestmark = pytest.mark.anyio

COUNT = int(os.environ.get("CHAOS_WORKFLOWS", "2000"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the test drives subprocesses; the workers run asyncio.run


async def test_workflows_survive_repeated_sigkill_of_workers_and_server(tmp_path: Path) -> None:
    report = await run_chaos(tmp_path, count=COUNT, workers=3, chaos_seconds=40.0, limit=110.0)
    print(report)
    assert report.worker_kills >= 10 and report.server_kills >= 3, report
    assert report.violations == [], report
    assert report.completed == COUNT, report
