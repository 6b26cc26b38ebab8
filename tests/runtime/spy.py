"""Transport wrappers for the behaviour suite: record answers, inject connection losses."""

from __future__ import annotations

from typing import Any

from resonate_async._errors import TransportError
from resonate_async.protocol import Request, Response
from resonate_async.transport import WrappedTransport


class SpyTransport(WrappedTransport):
    """Forwards to ``inner`` and appends ``(kind, status)`` of each request to ``log``."""

    def __init__(self, inner: Any, log: list[tuple[str, int]]) -> None:
        super().__init__(inner)
        self.log = log

    async def send(self, request: Request) -> Response:
        response = await self.inner.send(request)
        self.log.append((request.KIND, response.status))
        return response


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
