"""What stands behind a handle from ``Resonate.run``/``rpc``/``get``: waiting for a root."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

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

    __slots__ = ("_event", "finished", "promise")

    def __init__(self) -> None:
        self.finished = False
        self.promise: Promise | None = None
        self._event: anyio.Event | None = None  # made only if someone waits

    async def wait(self) -> None:
        if not self.finished:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()

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
        drive = self.drive
        if drive is not None:
            await drive.wait()
            if drive.promise is not None:
                p = drive.promise
                return self.client.codec.outcome(p, self.type, what=f"result of {handle.id}")
            self.drive = None  # it went on elsewhere (suspended, released): listen for it
        p = await self.client._settled_promise(handle.id)
        return self.client.codec.outcome(p, self.type, what=f"result of {handle.id}")

    async def done(self, handle: Handle[Any]) -> bool:
        if self.drive is not None and self.drive.promise is not None:
            return True
        return await self.client._is_settled(handle.id)
