"""The transport seam: one protocol, interchangeable carriers (embedded engine, HTTP)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from anyio.streams.memory import MemoryObjectReceiveStream

from resonate_async.protocol import Message, Request, Response


class Transport(Protocol):
    """Carries requests to a Resonate engine and push messages back.

    ``send`` never raises for an answer the engine gave (4xx/5xx come back as a ``Response``);
    it raises ``ProtocolError`` for an answer it cannot understand, and ``TransportError`` when
    the engine cannot be reached. Enter it (``async with``) before use.

    Optionally, ``max_request_bytes: int | None``: the largest request the engine accepts;
    the SDK checks results against it before sending (read with ``getattr``, so a transport
    without it is checked by the engine's own refusal).
    """

    @property
    def delivers_all(self) -> bool:
        """Whether every push message reaches its subscriber (in-process delivery), so
        listeners never need registering again; ``False`` for a server, whose unblock
        messages can be lost."""
        ...

    async def send(self, request: Request) -> Response:
        """Send one request and return the answer (a refusal is an answer with its status);
        raises ``TransportError`` when the engine cannot be reached."""
        ...

    def subscribe(self, group: str, pid: str, *, accepts_work: bool = True,
                  on_connect: Callable[[], None] | None = None,
                  ) -> MemoryObjectReceiveStream[Message]:
        """Open this process's message stream: unicast ``poll://uni@group/pid``, and anycast
        ``poll://any@group`` when ``accepts_work``. ``on_connect`` is called each time the
        stream (re)connects: messages sent while it was down may be lost."""
        ...

    async def wait_subscribed(self, group: str, pid: str) -> None:
        """Wait until messages for ``pid`` in ``group`` can arrive."""
        ...

    def unsubscribe(self, group: str, pid: str) -> None:
        """Close the message stream of ``pid`` in ``group`` (nothing if none is open)."""
        ...

    async def background(self) -> None:
        """The transport's background work (timers, streams), run by each owner in its own
        task group until cancelled. Owners may share one transport."""
        ...

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None: ...


async def close_stream(transport: Transport, group: str, pid: str) -> None:
    """Close ``pid``'s message stream and, where the transport can tell (``close_stream``),
    wait until the engine stops routing to it; otherwise ``unsubscribe``."""
    closer = getattr(transport, "close_stream", None)
    if closer is not None:
        await closer(group, pid)
    else:
        transport.unsubscribe(group, pid)
