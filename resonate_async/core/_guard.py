"""The boundary around user code: deadlines, and which exceptions are ours.

User code may raise anything, ``BaseException`` included; only a cancellation of our own
(a cancel scope of the worker, or a step's deadline) may unwind the driver. Everything else
fails the step or execution that raised it. Deadlines follow the worker's ``Clock``, so a
virtual clock times steps out in virtual time.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from resonate_async._clock import Clock, SystemClock


def cancelled_by_us() -> bool:
    """Whether the running task is being cancelled by a scope it runs in (a shutdown of ours,
    a deadline), as opposed to user code raising a cancellation exception on its own."""
    if anyio.current_effective_deadline() <= anyio.current_time():
        return True  # an enclosing scope was cancelled, or its deadline has passed
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not on asyncio
        return False
    # a plain task.cancel() from outside anyio's scopes (asyncio.run on Ctrl-C, say)
    return task is not None and task.cancelling() > 0


def is_ours(exc: BaseException) -> bool:
    """Whether ``exc`` is a real cancellation that must propagate, not a failure of user code."""
    return isinstance(exc, anyio.get_cancelled_exc_class()) and cancelled_by_us()


class Deadline:
    """A cancel scope that fires at ``deadline_ms`` of ``clock``: ``with Deadline(...) as d``.

    On the system clock this is a plain deadline scope; on any other clock a watcher task
    started in ``tg`` sleeps on that clock and cancels the scope. ``reached`` tells, after the
    block, whether the deadline cut it short.
    """

    __slots__ = ("_clock", "_deadline_ms", "_tg", "_watcher", "scope")

    def __init__(self, clock: Clock, deadline_ms: int, tg: TaskGroup | None) -> None:
        self._clock = clock
        self._deadline_ms = deadline_ms
        self._tg = tg
        self._watcher: anyio.CancelScope | None = None

    def __enter__(self) -> Deadline:
        clock = self._clock
        remaining = (self._deadline_ms - clock.now_ms()) / 1000
        if type(clock) is SystemClock or self._tg is None:
            self.scope = anyio.CancelScope(deadline=anyio.current_time() + remaining)
        else:
            self.scope = anyio.CancelScope()
            if remaining <= 0:
                self.scope.cancel()
            elif math.isfinite(remaining):
                self._watcher = anyio.CancelScope()
                self._tg.start_soon(_watch, clock, remaining, self.scope, self._watcher)
        self.scope.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if self._watcher is not None:
            self._watcher.cancel()
        return bool(self.scope.__exit__(exc_type, exc, tb))

    @property
    def reached(self) -> bool:
        return self.scope.cancel_called


async def _watch(clock: Clock, seconds: float, scope: anyio.CancelScope,
                 watcher: anyio.CancelScope) -> None:
    with watcher:
        await clock.sleep(seconds)
        scope.cancel()


__all__ = ["Deadline", "cancelled_by_us", "is_ours"]
