"""A virtual clock: durable sleeps, timeouts and back-offs pass in no real time."""

from __future__ import annotations

import contextlib
import heapq
import math
from collections.abc import Awaitable, Callable, Iterator
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
    """A ``Clock`` whose time moves only when told, or while the test waits for the SDK.

    * ``await clock.advance(timedelta(hours=1))`` moves time forward, waking every sleeper
      due on the way in order (each gets to run before the next is woken).
    * With ``auto_advance=True`` (the default), time jumps to the earliest wake-up when every
      task of the program is blocked **and** someone waits for the SDK: awaits a handle from
      ``resonate.run``/``rpc``/``get`` (``await handle``, ``handle.result(timeout=...)``), or
      sits in ``clock.awaiting()`` or a kit helper such as ``wait_for_promise``. A workflow
      that sleeps a week completes in milliseconds while the test awaits its result, and
      time stands still while the test polls, sleeps (``anyio.sleep``) or waits for anything
      real, so it can act (resolve an approval) between two durable waits.
    * ``auto_advance=False``: time moves only through ``advance``.

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
        self._demand = 0  # callers inside awaiting(): auto-advance moves time only then
        self._changed: anyio.Event | None = None  # set when a timer or a waiter comes

    # reading ----------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The virtual time, in Unix milliseconds."""
        return self._now

    def now(self) -> datetime:
        """The current virtual time."""
        return datetime.fromtimestamp(self._now / 1000, UTC)

    # waiting ----------------------------------------------------------------------------------
    def _timer(self, seconds: float) -> _Timer:
        timer = _Timer(self._now + max(0, math.ceil(seconds * 1000)))
        self._seq += 1
        heapq.heappush(self._timers, (timer.at, self._seq, timer))
        self._wake_background()
        return timer

    def _wake_background(self) -> None:
        if self._changed is not None:
            self._changed.set()

    @contextlib.contextmanager
    def awaiting(self) -> Iterator[None]:
        """While inside, auto-advance may move time (the caller waits for durable work).

        Handles of ``resonate.run``/``rpc``/``get`` enter it while awaited; use it around
        any other wait of a test that should let durable time pass.
        """
        self._demand += 1
        self._wake_background()
        try:
            yield
        finally:
            self._demand -= 1

    @property
    def awaited(self) -> bool:
        """Whether someone waits for the SDK now (auto-advance may move time)."""
        return self._demand > 0

    async def sleep(self, seconds: float) -> None:
        """Return once the virtual time has moved ``seconds`` on (at once, after a
        checkpoint, when ``seconds <= 0``)."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        timer = self._timer(seconds)
        try:
            await timer.fired.wait()
        finally:
            timer.cancelled = True

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        """Return once ``event`` is set or ``seconds`` of virtual time have passed, whichever
        comes first (it does not raise on the timeout)."""
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
        """Auto-advance (when enabled): while someone waits for the SDK and every task is
        blocked, jump to the next wake-up."""
        if not self.auto_advance:
            await anyio.sleep_forever()
        while True:
            if self._demand == 0 or self._next() is None:
                self._changed = anyio.Event()
                await self._changed.wait()
                continue
            await settle()
            await anyio.sleep(self.cushion)  # real time for worker threads to finish
            await settle()
            # no task ran since settle() returned: the demand and the timers are current
            if self._demand > 0 and self._next() is not None:
                await self._fire_next()

    async def step_until(self, done: Callable[[], Awaitable[bool]]) -> None:
        """Move time one wake-up at a time until ``await done()`` is true.

        Between two wake-ups every task runs until it blocks, and ``done`` is asked first:
        time never passes a moment at which ``done`` would have been true. With nothing left
        to wake, it waits (for real time, in steps of ``cushion``) for work to schedule more.
        Bound it with ``anyio.fail_after``.
        """
        while True:
            await settle()
            if await done():
                return
            await anyio.sleep(self.cushion)  # real time for worker threads to finish
            await settle()
            if await done():
                return
            if self._next() is not None:
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
