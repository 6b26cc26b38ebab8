"""Crash safety of the embedded SQLite engine: kill -9 mid-workflow, finish in a new process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resonate_async import Resonate
from resonate_async.engine import Engine, StorageLockedError
from tests.runtime.crash_worker import STEPS

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = sum(n * n for n in range(STEPS))


def _start(db: Path, log: Path, step_seconds: float = 0.2) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.crash_worker", str(db), str(log),
         str(step_seconds)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        what, n, pid = line.split()
        out.append((what, int(n), int(pid)))
    return out


def _wait_for(log: Path, event: str, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while sum(1 for what, _, _ in _lines(log) if what == event) < count:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the workflow made no progress"
        time.sleep(0.02)


def test_a_killed_process_is_finished_by_the_next_without_rerunning_settled_steps(
        tmp_path: Path) -> None:
    db, log = tmp_path / "app.db", tmp_path / "steps.log"
    first = _start(db, log)
    # the 4th step starts only once the 3rd one's settle is durable (its "end" line comes
    # before that settle: waiting for 3 ends left 2 settled steps now and then)
    _wait_for(log, "start", 4, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    engine = Engine.sqlite(str(db))  # the lock died with the process
    try:
        settled = {p.id for p in engine.storage.search_promises(None, None, None, 1000)
                   if p.state == "resolved" and p.id.startswith("crash-workflow:")}
        root = engine.storage.get_promise("crash-workflow")
        assert root is not None and root.state == "pending"
    finally:
        engine.close()
    assert len(settled) >= 3

    second = _start(db, log)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert f"result={EXPECTED}" in out

    rerun_by_second = {n for what, n, pid in _lines(log)
                       if what == "start" and pid == second.pid}
    settled_steps = {int(i.rsplit(":", 1)[1]) - 1 for i in settled}
    assert rerun_by_second.isdisjoint(settled_steps)
    assert rerun_by_second | settled_steps == set(range(STEPS))


def test_a_second_live_process_on_the_same_file_gets_a_clear_error(tmp_path: Path) -> None:
    db, log = tmp_path / "app.db", tmp_path / "steps.log"
    first = _start(db, log, step_seconds=0.5)
    try:
        _wait_for(log, "end", 1, first)
        with pytest.raises(StorageLockedError, match="in use by another live process"):
            Resonate(path=db)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert os.path.exists(db)
    Resonate(path=db)  # free again once the holder is gone
