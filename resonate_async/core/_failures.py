"""Back-off for tasks this worker gave back after a platform failure.

A released task is dispatched again at once; if the failure repeats (a server that refuses
every fence, a key this worker lacks), taking it again at once turns into a tight
release/re-acquire loop that re-runs side effects. Each consecutive failure of a task doubles
the wait before this worker takes it again (up to a cap, on the worker's clock), and the same
failure repeated ``report_after`` times in a row is logged as an error.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

from resonate_async._clock import Clock

log = structlog.get_logger("resonate_async.worker")

BACKOFF_FIRST: Final = 0.1  # seconds before the first retry of a task that failed
BACKOFF_MAX: Final = 30.0
REPORT_AFTER: Final = 5  # the same failure this many times in a row is an error log
KEPT_TASKS: Final = 10_000  # failing tasks remembered, least recently failed dropped first


class _Record:
    __slots__ = ("count", "not_before_ms", "reason", "same")

    def __init__(self) -> None:
        self.count = 0
        self.same = 0
        self.reason = ""
        self.not_before_ms = 0


class TaskFailures:
    """Consecutive platform failures per task id, and how long to wait before the next try."""

    def __init__(self, clock: Clock, *, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX,
                 report_after: int = REPORT_AFTER, keep: int = KEPT_TASKS) -> None:
        self.clock = clock
        self.first = first
        self.cap = cap
        self.report_after = report_after
        self.keep = keep
        self._records: dict[str, _Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def failed(self, task_id: str, reason: str, tlog: Any = None) -> float:
        """Record a failure of ``task_id``; returns the back-off before its next try (s)."""
        record = self._records.pop(task_id, None) or _Record()
        self._records[task_id] = record  # most recently failed last
        if len(self._records) > self.keep:
            del self._records[next(iter(self._records))]
        record.count += 1
        record.same = record.same + 1 if reason == record.reason else 1
        record.reason = reason
        delay = min(self.first * 2.0 ** min(record.count - 1, 64), self.cap)
        record.not_before_ms = self.clock.now_ms() + int(delay * 1000)
        if record.same % self.report_after == 0:
            (tlog if tlog is not None else log.bind(task_id=task_id)).error(
                "task_failing_repeatedly", failures=record.same, error=reason,
                next_try_in_s=delay,
                detail="this worker keeps giving the task back after the same failure; it "
                       "retries with a growing back-off. Fix the cause named in `error`")
        return delay

    def succeeded(self, task_id: str) -> None:
        """The task made progress (fulfilled or suspended): forget its failures."""
        self._records.pop(task_id, None)

    def wait_s(self, task_id: str) -> float:
        """Seconds of the worker's clock to wait before taking ``task_id`` again (0: now)."""
        record = self._records.get(task_id)
        if record is None:
            return 0.0
        return max(record.not_before_ms - self.clock.now_ms(), 0) / 1000

    def count(self, task_id: str) -> int:
        """Consecutive failures of ``task_id`` recorded so far."""
        record = self._records.get(task_id)
        return record.count if record is not None else 0


__all__ = ["TaskFailures"]
