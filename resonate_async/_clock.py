"""Time as a seam: the engine, timers and retries read time only through a ``Clock``."""

from __future__ import annotations

import contextlib
import math
import time
from contextlib import AbstractContextManager
from typing import Protocol

import anyio


class Clock(Protocol):
    """Wall-clock time in Unix milliseconds, and ways to wait for a moment of it.

    ``SystemClock`` is the real one; ``resonate_async.testing.VirtualClock`` lets tests jump
    over durable sleeps, timeouts and retry back-offs.
    """

    def now_ms(self) -> int:
        """The current time, in Unix milliseconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        """Wait until ``event`` is set or ``seconds`` of this clock's time pass (``inf``: no
        limit), whichever comes first."""
        ...

    async def background(self) -> None:
        """Work the clock needs done while a ``Resonate`` using it runs (owner's task group)."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(seconds, 0.0))

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        with anyio.move_on_after(seconds if not math.isnan(seconds) else 0.0):
            await event.wait()

    async def background(self) -> None:
        await anyio.sleep_forever()


def awaiting(clock: Clock) -> AbstractContextManager[object]:
    """Mark, for the ``with`` block, that the caller waits for durable work on ``clock``.

    ``Handle`` waits use it. A clock that cares (the test kit's ``VirtualClock`` moves time
    only while someone waits for the SDK) offers an ``awaiting()`` method returning a context
    manager; for any other clock this is a no-op, so ``Clock`` itself needs no such method.
    """
    mark = getattr(clock, "awaiting", None)
    return mark() if callable(mark) else contextlib.nullcontext()
