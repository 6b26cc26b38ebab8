"""The engine's background clock work: fire timeouts, retries, leases and schedules on time.

The engine itself never waits; ``EngineTimers.run`` does, for whoever hosts the engine (the
embedded transport, the development server). After each request the host calls ``poke()``,
which wakes the loop early when that request wrote a deadline earlier than the one it sleeps
towards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anyio

from resonate_async._clock import Clock
from resonate_async.engine._engine import Engine


class EngineTimers:
    """Runs ``engine.tick`` whenever something is due, handing what it queued to ``deliver``.

    ``deliver`` receives the engine's drained messages (``drain_messages()`` or, with
    ``raw=True``, the JSON form of ``drain()``).
    """

    def __init__(self, engine: Engine, clock: Clock, deliver: Callable[[list[Any]], None], *,
                 raw: bool = False) -> None:
        self.engine = engine
        self.clock = clock
        self.deliver = deliver
        self.raw = raw
        self._wake: anyio.Event | None = None
        self._wake_at = math.inf

    def poke(self) -> None:
        """Wake the loop if the last request wrote a deadline before the one it waits for."""
        due = self.engine.storage.next_written_deadline()
        if due is not None and due < self._wake_at and self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Fire the engine's timers until cancelled."""
        engine, clock = self.engine, self.clock
        while True:
            now = clock.now_ms()
            due = engine.next_due()
            if due is not None and due <= now:
                engine.tick(now)
                self.deliver(engine.drain() if self.raw else engine.drain_messages())
                engine.storage.next_written_deadline()  # the loop re-reads next_due itself
                await anyio.lowlevel.checkpoint()
                continue
            self._wake = anyio.Event()
            self._wake_at = math.inf if due is None else due
            await clock.wait(self._wake, math.inf if due is None else (due - now) / 1000)
