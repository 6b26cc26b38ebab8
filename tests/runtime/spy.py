"""A transport wrapper that records every request kind and answer status."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from anyio.streams.memory import MemoryObjectReceiveStream

from resonate_async._errors import TransportError
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


class FailingTransport(SpyTransport):
    """A transport whose ``fail_on``-th request of kind ``kind`` raises ``TransportError``
    (the engine never sees it), as if the connection dropped."""

    def __init__(self, inner: Any, kind: str, fail_on: int) -> None:
        super().__init__(inner, [])
        self.kind = kind
        self.fail_on = fail_on
        self.seen = 0

    async def send(self, request: Request) -> Response:
        if self.kind == request.KIND:
            self.seen += 1
            if self.seen == self.fail_on:
                raise TransportError(f"simulated connection loss on {request.KIND}")
        return await super().send(request)
