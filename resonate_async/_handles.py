"""What stands behind a handle from ``Resonate.run``/``rpc``/``get``: waiting for a root."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anyio

from resonate_async._clock import Clock, awaiting
from resonate_async._context import Handle
from resonate_async.protocol import Promise

if TYPE_CHECKING:
    from resonate_async._client import Resonate


class Waiter:
    """Everyone awaiting one promise in this process shares one of these."""

    __slots__ = ("event", "listening", "promise")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.promise: Promise | None = None
        self.listening = False


class Drive:
    """This process driving an execution it created (``Resonate.run``): most executions
    finish in that drive, and a handle then needs no listener at all."""

    __slots__ = ("_event", "finished", "promise", "timeout_at")

    def __init__(self, timeout_at: int | None = None) -> None:
        self.finished = False
        self.promise: Promise | None = None
        self.timeout_at = timeout_at  # the root's deadline (Unix ms)
        self._event: anyio.Event | None = None  # made only if someone waits

    async def wait(self, clock: Clock | None = None) -> None:
        """Wait until the drive ends, or (given ``clock``) until the root's deadline passes:
        the engine then settles the root as timed out, whatever the drive still does."""
        if not self.finished:
            if self._event is None:
                self._event = anyio.Event()
            if clock is None or self.timeout_at is None:
                await self._event.wait()
                return
            seconds = (self.timeout_at - clock.now_ms()) / 1000
            await clock.wait(self._event, seconds if math.isfinite(seconds) else math.inf)

    def finish(self) -> None:
        self.finished = True
        if self._event is not None:
            self._event.set()


class RootState:
    """The state behind a handle returned by ``Resonate.run``/``rpc``/``get``."""

    __slots__ = ("client", "drive", "type")

    def __init__(self, client: Resonate, type_: Any, drive: Drive | None = None) -> None:
        self.client = client
        self.type = type_
        self.drive = drive

    async def wait(self, handle: Handle[Any]) -> Any:
        with awaiting(self.client.clock):  # a virtual clock moves time only while awaited
            return await self._wait(handle)

    async def _wait(self, handle: Handle[Any]) -> Any:
        drive = self.drive
        if drive is not None:
            await drive.wait(self.client.clock)
            if drive.promise is not None:
                p = drive.promise
                return self.client.codec.outcome(p, self.type, what=f"result of {handle.id}")
            # It went on elsewhere (suspended, released), or the root's deadline passed while
            # it still runs here: listen for the root's settlement.
            self.drive = None
        p = await self.client._settled_promise(handle.id)
        return self.client.codec.outcome(p, self.type, what=f"result of {handle.id}")

    async def done(self, handle: Handle[Any]) -> bool:
        if self.drive is not None and self.drive.promise is not None:
            return True
        return await self.client._is_settled(handle.id)

    async def cancel(self, handle: Handle[Any]) -> None:
        await self.client.promises.cancel(handle.id)
