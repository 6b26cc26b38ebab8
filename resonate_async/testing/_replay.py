"""``check_replay``: crash a durable function at every step boundary and check it recovers."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from resonate_async._client import Resonate
from resonate_async._errors import TransportError
from resonate_async.engine import Engine
from resonate_async.protocol import (
    TAG_ORIGIN,
    FenceCreate,
    Promise,
    PromiseCreate,
    PromiseGet,
    PromiseSearch,
    PromiseSettle,
    Request,
    Response,
    TaskFence,
)
from resonate_async.testing._clock import VirtualClock
from resonate_async.transport import EmbeddedTransport, WrappedTransport

_WRITES = frozenset(("task.create", "task.fence", "task.suspend", "task.fulfill",
                     "promise.create", "promise.settle"))
_CALL_TAG = "resonate_async:call"


class ReplayCheckError(AssertionError):
    """A durable function did not recover from a crash the way durable execution promises."""


@dataclass
class ReplayReport:
    """What ``check_replay`` did: how many crash points it tried, and the common outcome."""

    boundaries: int
    outcome: str
    descriptions: list[str] = field(default_factory=list)


def _describe(request: Request) -> str:
    if isinstance(request, TaskFence):
        inner = request.action.data
        what = "create" if isinstance(request.action, FenceCreate) else "settle"
        return f"task.fence {what} {inner.id}"
    if isinstance(request, PromiseCreate | PromiseSettle):
        return f"{request.KIND} {request.id}"
    return f"{request.KIND} {getattr(request, 'id', '')}".rstrip()


class _Recorder(WrappedTransport):
    """Wraps a transport: records the writes, and can die right after the n-th one."""

    def __init__(self, inner: EmbeddedTransport, crash_after: int | None = None) -> None:
        super().__init__(inner)
        self.crash_after = crash_after
        self.writes: list[str] = []
        self.settles: list[str] = []
        self.dead = anyio.Event()

    async def send(self, request: Request) -> Response:
        if self.dead.is_set():
            raise TransportError("simulated crash: this process is gone")
        response = await self.inner.send(request)
        if request.KIND in _WRITES and response.status < 400:
            self.writes.append(_describe(request))
            if isinstance(request, TaskFence) and not isinstance(request.action, FenceCreate):
                self.settles.append(request.action.data.id)
            if self.crash_after is not None and len(self.writes) >= self.crash_after:
                self.dead.set()
                raise TransportError("simulated crash right after a durable write")
        return response


def _outcome(p: Promise) -> str:
    return f"{p.state} {p.value.data or ''}".rstrip()


def _settled_steps(engine: Engine, origin: str) -> dict[str, str]:
    """The settled children of an execution, id -> what the history recorded."""
    out: dict[str, str] = {}
    cursor: str | None = None
    while True:
        page = engine.execute(PromiseSearch(None, {TAG_ORIGIN: origin}, 1000, cursor), 0)
        for p in page.data.promises:
            if p.state != "pending" and p.id != origin:
                out[p.id] = p.tags.get(_CALL_TAG, "")
        cursor = page.data.cursor
        if cursor is None:
            return out


async def check_replay(resonate: Resonate, fn: Callable[..., Any], /, *args: Any,
                       timeout: float = 30.0, seed: int = 0, **kwargs: Any) -> ReplayReport:
    """Run ``fn(*args, **kwargs)``, then again with a crash after each durable write in turn.

    Each run uses a fresh embedded engine and a ``VirtualClock`` (sleeps cost nothing), with
    ``resonate``'s registered functions, errors and dependencies. After a crash, a new
    process (a fresh ``Resonate`` on the same engine, as after a restart) finishes the work.
    Checks that every run reaches the reference outcome and that no step settled before the
    crash ran again; raises ``ReplayCheckError`` naming the crash point and the first
    divergence. ``random`` is seeded with ``seed`` before each run. ``timeout`` bounds each
    run in real seconds.
    """
    root = f"check-replay-{uuid.uuid4().hex[:12]}"

    async def one_run(crash_after: int | None) -> tuple[_Recorder, str, list[str]]:
        random.seed(seed)
        clock = VirtualClock()
        engine = Engine.memory()
        first = _Recorder(EmbeddedTransport(engine, clock=clock, close_engine=False,
                                            recover=False), crash_after)
        app = resonate._derive(transport=first, clock=clock)
        with anyio.fail_after(timeout):
            async with app:
                try:
                    handle = await app.run(root, fn, *args, **kwargs)
                except TransportError:  # the crash hit task.create itself
                    handle = None
                async with anyio.create_task_group() as tg:
                    async def finish() -> None:
                        if handle is not None:
                            with contextlib.suppress(Exception):  # read from the engine
                                await handle
                        tg.cancel_scope.cancel()

                    async def crash() -> None:
                        await first.dead.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(finish)
                    tg.start_soon(crash)
        if not first.dead.is_set():
            p = engine.execute(PromiseGet(root), clock.now_ms()).data.promise
            return first, _outcome(p), []
        before = _settled_steps(engine, root)
        second = _Recorder(EmbeddedTransport(engine, clock=clock, close_engine=False,
                                             recover=True))
        restarted = resonate._derive(transport=second, clock=clock)
        with anyio.fail_after(timeout):
            async with restarted:
                handle = await restarted.run(root, fn, *args, **kwargs)
                with contextlib.suppress(Exception):  # the outcome is read from the engine
                    await handle
        p = engine.execute(PromiseGet(root), clock.now_ms()).data.promise
        reran = [f"{i} ({before[i] or 'step'})" for i in second.settles if i in before]
        return first, _outcome(p), reran

    reference, expected, _ = await one_run(None)
    boundaries = len(reference.writes)
    for k in range(1, boundaries + 1):
        point = f"crash after durable write #{k} ({reference.writes[k - 1]})"
        try:
            _, got, reran = await one_run(k)
        except TimeoutError:
            raise ReplayCheckError(f"{point}: the execution did not finish within "
                                   f"{timeout:g} s after the restart") from None
        if reran:
            raise ReplayCheckError(f"{point}: steps that had settled before the crash ran "
                                   f"again: {', '.join(reran)}")
        if got != expected:
            raise ReplayCheckError(f"{point}: the outcome differs from the run without a "
                                   f"crash: expected {expected!r}, got {got!r}")
    return ReplayReport(boundaries, expected, reference.writes)
