"""A virtual clock: durable sleeps, timeouts and back-offs pass in no real time."""

from __future__ import annotations

import heapq
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

_EPOCH_2026: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class _Timer:
    __slots__ = ("at", "cancelled", "fired")

    def __init__(self, at: int) -> None:
        self.at = at
        self.fired = anyio.Event()
        self.cancelled = False


class VirtualClock:
    """A ``Clock`` whose time moves only when told, or when everything waits on it.

    * ``await clock.advance(timedelta(hours=1))`` moves time forward, waking every sleeper
      due on the way in order (each gets to run before the next is woken).
    * With ``auto_advance=True`` (the default), when every task of the program is blocked
      and someone sleeps on this clock, time jumps to the earliest wake-up: a workflow that
      sleeps a week completes in milliseconds. Waiting for real things (an ``anyio.sleep``,
      a socket) looks like "blocked" too, so in a test use events, ``clock.advance``, or
      ``auto_advance=False`` when the test itself must act between two durable waits.

    Use it with an embedded ``Resonate`` (``Resonate(clock=clock)``); a remote server has a
    clock of its own.
    """

    def __init__(self, start: datetime | None = None, *, auto_advance: bool = True,
                 cushion: float = 0.002) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("VirtualClock(start=...) needs an aware datetime (with tzinfo)")
        self._now = _EPOCH_2026 if start is None else int(start.timestamp() * 1000)
        self.auto_advance = auto_advance
        self.cushion = cushion
        self._timers: list[tuple[int, int, _Timer]] = []
        self._seq = 0
        self._added: anyio.Event | None = None

    # reading ----------------------------------------------------------------------------------
    def now_ms(self) -> int:
        return self._now

    def now(self) -> datetime:
        """The current virtual time."""
        return datetime.fromtimestamp(self._now / 1000, UTC)

    # waiting ----------------------------------------------------------------------------------
    def _timer(self, seconds: float) -> _Timer:
        timer = _Timer(self._now + max(0, math.ceil(seconds * 1000)))
        self._seq += 1
        heapq.heappush(self._timers, (timer.at, self._seq, timer))
        if self._added is not None:
            self._added.set()
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        timer = self._timer(seconds)
        try:
            await timer.fired.wait()
        finally:
            timer.cancelled = True

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        if math.isinf(seconds):
            await event.wait()
            return
        if seconds <= 0 or event.is_set():
            await anyio.lowlevel.checkpoint()
            return
        timer = self._timer(seconds)
        try:
            async with anyio.create_task_group() as tg:
                async def on_timer() -> None:
                    await timer.fired.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(on_timer)
                await event.wait()
                tg.cancel_scope.cancel()
        finally:
            timer.cancelled = True

    # moving -----------------------------------------------------------------------------------
    def _next(self) -> _Timer | None:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][2] if timers else None

    async def _fire_next(self) -> None:
        _, _, timer = heapq.heappop(self._timers)
        self._now = max(self._now, timer.at)
        timer.fired.set()
        await settle()

    async def advance(self, delta: float | timedelta) -> None:
        """Move time forward by ``delta`` (seconds or timedelta), waking sleepers in order."""
        ms = int((delta.total_seconds() if isinstance(delta, timedelta) else delta) * 1000)
        if ms < 0:
            raise ValueError(f"a clock only moves forward; got {delta!r}")
        target = self._now + ms
        await settle()
        while (timer := self._next()) is not None and timer.at <= target:
            await self._fire_next()
        self._now = max(self._now, target)
        await settle()

    async def background(self) -> None:
        """Auto-advance (when enabled): jump to the next wake-up whenever all tasks wait."""
        if not self.auto_advance:
            await anyio.sleep_forever()
        while True:
            await settle()
            await anyio.sleep(self.cushion)  # real time for worker threads to finish
            await settle()
            if self._next() is None:
                self._added = anyio.Event()
                await self._added.wait()
                continue
            await self._fire_next()


async def settle() -> None:
    """Return once every other task is blocked (waiting on something), on asyncio or trio."""
    if _on_trio():
        import trio.testing

        await trio.testing.wait_all_tasks_blocked()
        return
    import asyncio

    this = asyncio.current_task()
    _settling.add(this)  # other settle() loops treat this one as blocked, and vice versa
    try:
        while True:
            await anyio.lowlevel.checkpoint()
            for task in asyncio.all_tasks():
                if task in _settling:
                    continue
                waiter = getattr(task, "_fut_waiter", None)
                if waiter is None or waiter.done():
                    break
            else:
                return
    finally:
        _settling.discard(this)


_settling: set[Any] = set()  # asyncio tasks inside settle(), across every VirtualClock


def _on_trio() -> bool:
    try:
        import trio
    except ImportError:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


__all__ = ["VirtualClock", "settle"]
