"""A transport wrapper that records every request kind and answer status."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from anyio.streams.memory import MemoryObjectReceiveStream

from resonate_async.protocol import Message, Request, Response


class SpyTransport:
    """Forwards to ``inner`` and appends ``(kind, status)`` of each request to ``log``."""

    def __init__(self, inner: Any, log: list[tuple[str, int]]) -> None:
        self.inner = inner
        self.log = log

    async def send(self, request: Request) -> Response:
        response: Response = await self.inner.send(request)
        self.log.append((request.KIND, response.status))
        return response

    def subscribe(self, group: str, pid: str, *,
                  accepts_work: bool = True) -> MemoryObjectReceiveStream[Message]:
        stream: MemoryObjectReceiveStream[Message] = self.inner.subscribe(
            group, pid, accepts_work=accepts_work)
        return stream

    def unsubscribe(self, group: str, pid: str) -> None:
        self.inner.unsubscribe(group, pid)

    async def wait_subscribed(self, group: str, pid: str) -> None:
        await self.inner.wait_subscribed(group, pid)

    async def background(self) -> None:
        await self.inner.background()

    async def __aenter__(self) -> SpyTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)
