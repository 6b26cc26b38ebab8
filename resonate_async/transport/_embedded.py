"""The embedded transport: the engine in this process, called directly (no JSON, no sockets).

It routes the engine's push messages to the subscribers of this process (several ``Resonate``
instances may share one transport, as workers of one engine) and runs the engine's timers in
a background task that sleeps until the next deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from resonate_async._clock import Clock, SystemClock
from resonate_async.engine import Engine
from resonate_async.engine._timers import EngineTimers
from resonate_async.protocol import (
    TAG_TARGET,
    Execute,
    Message,
    Request,
    Response,
    TaskSearch,
    execute_message,
)
from resonate_async.protocol._records import RESERVED_GROUP_PREFIX

log = structlog.get_logger("resonate_async.transport")

_BACKLOG = 10_000


class _Subscriber:
    __slots__ = ("accepts_work", "group", "pid", "stream")

    def __init__(self, group: str, pid: str, accepts_work: bool,
                 stream: MemoryObjectSendStream[Message]) -> None:
        self.group = group
        self.pid = pid
        self.accepts_work = accepts_work
        self.stream = stream


class EmbeddedTransport:
    """A ``Transport`` over an in-process ``Engine``.

    The engine is synchronous; ``send`` runs it inline on the event loop (one SQLite
    transaction is far cheaper than a thread hop). Enter the transport once per owner; it may
    be shared, and the last owner to leave stops its timer task and closes the engine if the
    transport created it.
    """

    delivers_all = True  # in-process: nothing between the engine and the subscriber
    max_request_bytes: int | None = None  # no wire, no body limit
    sends_inline = True  # ``send`` never yields: a cancellation cannot land inside a request
    records_steps = True  # the engine takes task.fence's promise.record (one write per step)

    def __init__(self, engine: Engine | None = None, *, clock: Clock | None = None,
                 close_engine: bool | None = None, recover: bool | None = None) -> None:
        self.engine = engine if engine is not None else Engine.memory()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._close_engine = engine is None if close_engine is None else close_engine
        self._recover_on_open = self._close_engine if recover is None else recover
        self._subscribers: dict[tuple[str, str], _Subscriber] = {}
        self._rr: dict[str, int] = {}
        self._owners = 0
        self._ticker = anyio.Lock()
        self._closed = False
        self._timers = EngineTimers(self.engine, self.clock, self._deliver)
        self.fence_preload = False
        # Work for a group with no worker subscribed yet waits here (bounded) instead of being
        # dropped: in one process the worker usually subscribes right after the engine opens.
        self._backlog: dict[str, list[tuple[str, Message]]] = {}
        self._recovered = False

    async def __aenter__(self) -> EmbeddedTransport:
        self._owners += 1
        if self._owners == 1 and not self._recovered and self._recover_on_open:
            self._recovered = True
            self._recover()
        return self

    def _recover(self) -> None:
        """Take over the work of processes that are gone, at once.

        This transport opened the engine itself, and an engine file is held by one live process
        at a time, so every lease in it belongs to a process that died: release them, and
        dispatch every pending task again rather than waiting for lease or retry timers.
        """
        engine = self.engine
        now = self.clock.now_ms()
        released = engine.release_leases(now)
        cursor: str | None = None
        pending = 0
        while True:
            page = engine.execute(TaskSearch("pending", 1000, cursor), now)
            if page.status != 200:
                break
            for task in page.data.tasks:
                p = engine.storage.get_promise(task.id)
                target = p.tags.get(TAG_TARGET) if p is not None else None
                if target is not None:
                    pending += 1
                    self._deliver([(target, execute_message(task.id, task.version))])
            cursor = page.data.cursor
            if cursor is None:
                break
        self._deliver(engine.drain_messages())
        if released or pending:
            log.info("engine_recovered", released=released, redispatched=pending)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._owners -= 1
        if self._owners == 0 and self._close_engine and not self._closed:
            self._closed = True
            self.engine.close()

    async def background(self) -> None:
        """Fire the engine's timers until cancelled.

        Every owner runs this in its own task group; one of them ticks at a time, and when it
        stops (its owner left) another takes over, so a shared transport never depends on
        the task that happened to enter it first.
        """
        async with self._ticker:
            await self._timers.run()

    async def send(self, request: Request) -> Response:
        """Run ``request`` on the engine now and deliver the push messages it queued."""
        engine = self.engine
        response = engine.execute(request, self.clock.now_ms(),
                                  fence_preload=self.fence_preload)
        self._deliver(engine.drain_messages())
        self._timers.poke()
        return response

    def subscribe(self, group: str, pid: str, *, accepts_work: bool = True,
                  on_connect: Callable[[], None] | None = None,
                  ) -> MemoryObjectReceiveStream[Message]:
        """In-process subscriptions are connected at once and never drop; ``on_connect`` is
        not needed (and not called)."""
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        self._subscribers[(group, pid)] = _Subscriber(group, pid, accepts_work, send)
        if accepts_work:
            self._deliver(self._backlog.pop(group, []))
        return receive

    async def wait_subscribed(self, group: str, pid: str) -> None:
        """Subscriptions of the embedded engine are live at once."""
        await anyio.lowlevel.checkpoint()

    def unsubscribe(self, group: str, pid: str) -> None:
        """Close the message stream of ``pid`` in ``group`` (nothing if none is open)."""
        sub = self._subscribers.pop((group, pid), None)
        if sub is not None:
            sub.stream.close()

    # delivery ---------------------------------------------------------------------------------
    def _deliver(self, messages: list[tuple[str, Message]]) -> None:
        for address, message in messages:
            sub = self._route(address)
            if sub is None:
                if address.startswith("poll://any@") and isinstance(message, Execute):
                    group = address[11:].partition("/")[0]
                    # Nobody ever listens in a reserved group (timers, clients): drop.
                    backlog = (None if group.startswith(RESERVED_GROUP_PREFIX)
                               else self._backlog.setdefault(group, []))
                    if backlog is not None and len(backlog) < _BACKLOG:
                        backlog.append((address, message))
                        continue
                log.debug("message_dropped", address=address, kind=type(message).__name__)
                continue
            try:
                sub.stream.send_nowait(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.pop((sub.group, sub.pid), None)

    def _route(self, address: str) -> _Subscriber | None:
        if not address.startswith("poll://"):
            return None
        mode, _, rest = address[7:].partition("@")
        group, _, pid = rest.partition("/")
        if mode == "uni":
            return self._subscribers.get((group, pid))
        if mode != "any":
            return None
        if pid:
            sub = self._subscribers.get((group, pid))
            if sub is not None and sub.accepts_work:
                return sub
        workers = [s for s in self._subscribers.values() if s.group == group and s.accepts_work]
        if not workers:
            return None
        i = self._rr.get(group, 0)
        self._rr[group] = i + 1
        return workers[i % len(workers)]

    def __repr__(self) -> str:
        return f"EmbeddedTransport({self.engine!r})"


