"""A transport that forwards everything to another: subclass it to observe or perturb."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from anyio.streams.memory import MemoryObjectReceiveStream

from resonate_async.protocol import Message, Request, Response
from resonate_async.transport._base import Transport, close_stream


class WrappedTransport:
    """Forwards every ``Transport`` call to ``inner``.

    Override ``send`` (or any other method) to record requests, inject failures or delay
    answers, the way the test kit's crash simulation does. Entering and leaving the wrapper
    enters and leaves ``inner``.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    @property
    def delivers_all(self) -> bool:
        """The inner transport's ``delivers_all``."""
        return self.inner.delivers_all

    @property
    def records_steps(self) -> bool:
        """The inner transport's ``records_steps`` (its engine takes ``promise.record``)."""
        return getattr(self.inner, "records_steps", False) is True

    @property
    def max_request_bytes(self) -> int | None:
        """The inner transport's request size limit (``None``: none known)."""
        limit = getattr(self.inner, "max_request_bytes", None)
        return limit if isinstance(limit, int) else None

    async def send(self, request: Request) -> Response:
        """Forward to ``inner.send`` (override to record, fail or delay requests)."""
        return await self.inner.send(request)

    def subscribe(self, group: str, pid: str, *, accepts_work: bool = True,
                  on_connect: Callable[[], None] | None = None,
                  ) -> MemoryObjectReceiveStream[Message]:
        """Forward to ``inner.subscribe``."""
        return self.inner.subscribe(group, pid, accepts_work=accepts_work,
                                    on_connect=on_connect)

    def unsubscribe(self, group: str, pid: str) -> None:
        """Forward to ``inner.unsubscribe``."""
        self.inner.unsubscribe(group, pid)

    async def close_stream(self, group: str, pid: str) -> None:
        """Forward to ``inner.close_stream`` where it has one, else ``inner.unsubscribe``."""
        await close_stream(self.inner, group, pid)

    async def wait_subscribed(self, group: str, pid: str) -> None:
        """Forward to ``inner.wait_subscribed``."""
        await self.inner.wait_subscribed(group, pid)

    async def background(self) -> None:
        """Forward to ``inner.background``."""
        await self.inner.background()

    async def __aenter__(self) -> WrappedTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)
