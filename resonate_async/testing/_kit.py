"""Run an application's own ``Resonate`` in a test, and wait for what a person would act on.

``attach(app_resonate)`` points the application's module-level ``Resonate`` (with its
registrations, errors and dependencies) at a throw-away embedded engine and a
``VirtualClock`` for the duration of a test, and restores it afterwards: the app needs no
factories to be testable. ``wait_for_promise`` lets durable time pass until a promise (an
approval, say) exists, and never past that moment.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import anyio

from resonate_async._client import Resonate
from resonate_async._errors import NotFoundError, ResonateError
from resonate_async._records import PromiseRecord
from resonate_async._tree import call_order, render_tree
from resonate_async.engine import Engine
from resonate_async.protocol import TAG_EXTERNAL, TAG_ORIGIN, origin_of
from resonate_async.testing._clock import VirtualClock
from resonate_async.transport import EmbeddedTransport

_REBUILT: Final = frozenset({"transport", "clock", "worker", "promises", "schedules"})
_POLL: Final = 0.01  # real seconds between two looks on a clock that is not virtual


@dataclass
class Kit:
    """An application's ``Resonate`` running on a test engine and a ``VirtualClock``.

    ``resonate`` is the application's own instance (the very object its modules import),
    ``clock`` its virtual clock, ``engine`` the embedded engine holding its promises.
    """

    resonate: Resonate
    clock: VirtualClock
    engine: Engine

    async def wait_for_promise(self, promise_id: str | None = None, *,
                               execution: str | None = None,
                               timeout: float = 30.0) -> PromiseRecord:
        """``wait_for_promise(self.resonate, ...)``: see that function."""
        return await wait_for_promise(self.resonate, promise_id, execution=execution,
                                      timeout=timeout)

    async def advance(self, delta: float | timedelta) -> None:
        """Move the virtual clock forward by ``delta`` (seconds or timedelta)."""
        await self.clock.advance(delta)


def _rebind(resonate: Resonate, engine: Engine, clock: VirtualClock) -> dict[str, Any]:
    """Point a stopped ``resonate`` at ``engine`` and ``clock``, keeping its functions,
    errors, dependencies and options; returns its former state, for ``_restore``."""
    saved = dict(vars(resonate))
    worker = resonate.worker
    transport = EmbeddedTransport(engine, clock=clock, close_engine=False, recover=False)
    # The constructor is the one place that wires a Resonate's parts (worker, promises,
    # schedules) to its transport and clock: run it again on this object, with its options.
    Resonate.__init__(
        resonate, transport=transport, clock=clock, group=resonate.group, pid=resonate.pid,
        ttl=resonate.ttl_ms / 1000, concurrency=int(worker.limiter.total_tokens),
        retry=worker.retry, timeout=resonate.timeout_ms / 1000, worker=resonate.accepts_work,
        listen_interval=resonate.listen_interval, shutdown_grace=resonate.shutdown_grace)
    for name, value in saved.items():  # options, registry and codec as the app set them
        if name not in _REBUILT and not name.startswith("_"):
            setattr(resonate, name, value)
    resonate._dependencies = saved["_dependencies"]
    resonate.worker.registry = resonate.registry
    resonate.worker.codec = resonate.codec
    return saved


def _restore(resonate: Resonate, saved: dict[str, Any]) -> None:
    state = vars(resonate)
    state.clear()
    state.update(saved)


@asynccontextmanager
async def attach(resonate: Resonate, *, start: bool = True, engine: Engine | None = None,
                 clock: VirtualClock | None = None) -> AsyncIterator[Kit]:
    """Run an application's own ``Resonate`` on a test engine and a virtual clock.

    ``async with attach(app.resonate) as kit:`` keeps the instance's registered functions,
    errors, dependencies and options, and gives it a fresh embedded engine in memory (or
    ``engine``) and a ``VirtualClock`` (or ``clock``) for the block; on exit the instance is
    as it was before, so the next test attaches afresh. With ``start=True`` (the default)
    the block runs it (``async with resonate``); with ``start=False`` something else starts
    and stops it inside the block, e.g. a FastAPI app's lifespan
    (``async with app.router.lifespan_context(app):``).

    Raises ``ResonateError`` if the instance is already running (attach it before the app
    starts), or if it still runs when the block ends (stop the app inside the block).
    """
    if resonate.running:
        raise ResonateError(
            "attach() needs the application's Resonate stopped, and it is running: attach it "
            "before the app starts (the kit starts it, or your app's lifespan does inside the "
            "`async with attach(...)` block)")
    clock = clock if clock is not None else VirtualClock()
    own_engine = engine is None
    engine = engine if engine is not None else Engine.memory()
    saved = _rebind(resonate, engine, clock)
    try:
        kit = Kit(resonate, clock, engine)
        if start:
            async with resonate:
                yield kit
        else:
            yield kit
        if resonate.running:
            raise ResonateError(
                "the application's Resonate still runs at the end of the `async with "
                "attach(...)` block: stop the app (leave its lifespan) inside the block")
    finally:
        if not resonate.running:
            _restore(resonate, saved)
            if own_engine:
                engine.close()


async def _found(resonate: Resonate, promise_id: str | None,
                 execution: str | None) -> PromiseRecord | None:
    if promise_id is not None:
        try:
            return await resonate.promises.get(promise_id)
        except NotFoundError:
            return None
    assert execution is not None
    pending = [r async for r in resonate.promises.search(
        state="pending", tags={TAG_ORIGIN: execution, TAG_EXTERNAL: "true"})]
    if not pending:
        return None
    return min(pending, key=lambda r: (r.created_at, call_order(r.id)))


async def wait_for_promise(resonate: Resonate, promise_id: str | None = None, *,
                           execution: str | None = None,
                           timeout: float = 30.0) -> PromiseRecord:
    """Wait until a promise exists, letting durable time pass only until then.

    Give ``promise_id`` (any promise, in whatever state), or ``execution`` (a root id): the
    first pending promise that execution made with ``ctx.promise`` (an approval, say).
    Returns its record; resolve it with ``resonate.promises.resolve(record.id, value)``.

    On a ``VirtualClock`` the clock moves one wake-up at a time and the promise is looked
    for before each, so its own timeout cannot pass before the test sees it; on another
    clock this polls in real time. ``timeout`` bounds the wait in real seconds.

    Raises ``ValueError`` unless exactly one of ``promise_id`` and ``execution`` is given,
    and ``TimeoutError`` (with the execution's call tree) if the promise does not appear.
    """
    if (promise_id is None) == (execution is None):
        raise ValueError("wait_for_promise() takes a promise id or execution=ROOT_ID (one of "
                         "them): the id of the promise, or the execution whose ctx.promise "
                         "to wait for")
    if not (timeout > 0) or math.isinf(timeout):
        raise ValueError(f"timeout must be a positive, finite number of seconds, got "
                         f"{timeout!r}")
    found: PromiseRecord | None = None

    async def done() -> bool:
        nonlocal found
        found = await _found(resonate, promise_id, execution)
        return found is not None

    clock = resonate.clock
    with anyio.move_on_after(timeout):
        if isinstance(clock, VirtualClock):  # not clock.awaiting(): that would let the
            await clock.step_until(done)      # background jump past the promise's creation
        else:  # a real clock, maybe a remote server: nothing to wait on but the state
            while not await done():  # noqa: ASYNC110
                await anyio.sleep(_POLL)
    if found is not None:
        return found
    what = (f"promise {promise_id!r}" if promise_id is not None
            else f"a pending ctx.promise of execution {execution!r}")
    origin = execution if execution is not None else origin_of(str(promise_id))
    raise TimeoutError(f"{what} did not appear within {timeout:g} s (real time); the "
                       f"execution as it stands:\n{await _tree_text(resonate, origin)}")


async def _tree_text(resonate: Resonate, origin: str) -> str:
    records = [r async for r in resonate.promises.search(tags={TAG_ORIGIN: origin})]
    if not records:
        return f"(no promise of execution {origin!r}: check the id)"
    return render_tree(records)


__all__ = ["Kit", "attach", "wait_for_promise"]
