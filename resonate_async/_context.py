"""What a durable function sees: ``Context``, call objects and handles.

Every durable step is an ``await``. ``ctx.run(f, x)`` and ``ctx.rpc("name", x)`` return a
``Call``: awaiting it gives the value; ``await call.spawn()`` starts it and gives a ``Handle``
to await later. Child ids are minted when the call object is made, in call order
(``root:1``, ``root:2``, ...), so a durable function must make its calls in the same order on
every run.
"""

from __future__ import annotations

import random as _random
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Final,
    Generic,
    NoReturn,
    ParamSpec,
    TypeVar,
    overload,
)

import anyio
import structlog

from resonate_async._checks import milliseconds, tags_problem
from resonate_async._clock import Clock
from resonate_async._errors import ContextError
from resonate_async._logging import ReplayAwareLogger
from resonate_async._retry import RetryPolicy
from resonate_async.core._kinds import DETACHED, EXTERNAL, RPC, RUN, SLEEP, CallKind
from resonate_async.protocol import child_id, id_problem

if TYPE_CHECKING:
    from resonate_async.core._execution import Execution

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)  # a Handle[bool] is a Handle[object]
P = ParamSpec("P")

@dataclass(frozen=True)
class Info:
    """Facts about the running durable function."""

    id: str
    """This function's promise id."""
    root_id: str
    """The id of the execution (the task) this function runs in."""
    parent_id: str | None
    """The id of the durable function that called this one (``None`` for the root)."""
    attempt: int
    """How many times the task has been claimed (the task version)."""
    deadline: datetime
    """When this function's promise times out."""
    function: str
    """The registered name of this function."""
    origin: str
    """The id of the top-level execution this function descends from (rpc children too)."""
    branch: str
    """The id of the task this function runs in: the root, or the rpc child it belongs to."""
    tags: dict[str, str]
    """The tags of this function's promise (a copy): yours from ``.options(tags=...)`` or
    ``resonate.options(tags=...).run(...)``, and the SDK's ``resonate:*`` ones."""


@dataclass(frozen=True)
class Options:
    id: str | None = None
    timeout: float | None = None
    retry: RetryPolicy | None = None
    target: str | None = None
    tags: dict[str, str] | None = None
    version: int | None = None


_NO_OPTIONS = Options()


class _Miss:
    """What ``Execution.replayed`` returns for a call the cache does not hold settled."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


MISS: Final = _Miss()
_MISS = MISS


class Call(Generic[T]):
    """A durable call not started yet: ``await`` it for its value or ``.spawn()`` it."""

    __slots__ = ("_kind", "_made_at", "_run", "args", "ctx", "fn", "id", "kwargs", "opts")

    def __init__(self, ctx: Context, kind: CallKind, fn: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any], opts: Options = _NO_OPTIONS) -> None:
        self.ctx = ctx
        self._kind = kind
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.opts = opts
        ex = ctx._exec
        if ex._tg is None:  # what ctx._mint checks, inlined: this runs for every call made
            ex.check_live(ctx)
        ctx._counter += 1
        custom = opts.id
        self.id = f"{ctx._prefix}{ctx._counter if custom is None else custom}"
        # Where user code made the call (file, line), until it is awaited or spawned: a call
        # dropped before that is reported as never run, like an un-awaited coroutine.
        # (_caller(), inlined: the first frame outside this module)
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename == __file__:
            frame = frame.f_back  # type: ignore[assignment]
        self._made_at: tuple[str, int] | None = (
            None if frame is None else (frame.f_code.co_filename, frame.f_lineno))
        self._run = ex.run_number

    @property
    def kind(self) -> str:
        """What kind of call this is: ``"run"``, ``"rpc"``, ``"sleep"``, ``"promise"`` or
        ``"detached"`` (the ``ctx`` method that made it)."""
        return self._kind.name

    def options(
        self,
        *,
        id: str | None = None,
        timeout: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        target: str | None = None,
        tags: dict[str, str] | None = None,
        version: int | None = None,
    ) -> Call[T]:
        """This call with options: its ``id`` (a segment under the caller's id), ``timeout``,
        ``retry`` policy (local leaf steps), ``target`` group or address (rpc), extra ``tags``
        and the function ``version`` (rpc)."""
        # A call refused here was not dropped by mistake: no never-awaited warning for it.
        made_at, self._made_at = self._made_at, None
        if id is not None:
            if (not isinstance(id, str) or not id or ":" in id
                    or id_problem(id, root=False) is not None):
                raise ContextError(
                    f"invalid call id {id!r}: give a non-empty segment without ':', NUL or "
                    f"lone surrogates; it is placed under the caller's id ({self.ctx.id})"
                )
            self.id = child_id(self.ctx.id, id)
        problem = tags_problem(tags, reserved_ok=False)
        if problem:
            raise ContextError(f"{problem} (options of the call {self.id})")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if timeout is not None:
            try:
                milliseconds(timeout, "timeout")
            except ValueError as exc:
                raise ContextError(f"{exc} (options of the call {self.id})") from None
        self.opts = Options(
            id=id if id is not None else self.opts.id,
            timeout=seconds if seconds is not None else self.opts.timeout,
            retry=retry or self.opts.retry,
            target=target or self.opts.target,
            tags={**(self.opts.tags or {}), **(tags or {})} or None,
            version=version if version is not None else self.opts.version,
        )
        self._made_at = made_at
        return self

    def __await__(self) -> Generator[Any, None, T]:
        self._made_at = None
        ex = self.ctx._exec
        if self._kind.local:
            ex.frontier.started(self.id)
        else:
            # A remote call a replay finds settled returns from here, without a coroutine.
            value = ex.replayed(self)
            if value is not _MISS:
                result: T = value
                return result
        result = yield from ex.await_call(self).__await__()
        return result

    async def spawn(self) -> Handle[T]:
        """Start the call now; await the returned handle later for its value."""
        self._made_at = None
        ex = self.ctx._exec
        if self._kind.local:
            ex.frontier.started(self.id)
        return await ex.spawn_call(self)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        # Reached when a call object is handed where a function is expected:
        # tg.start_soon(ctx.run(f)), nursery.start_soon(...), to_thread.run_sync(...).
        self._made_at = None
        raise ContextError(
            f"{self._what()} is a durable call, not a function or coroutine: await it for "
            "its value, or start it in the background with `handle = await "
            f"{self._what()}.spawn()` and await the handle later (the call was {self.id})")

    def __del__(self) -> None:
        made_at = getattr(self, "_made_at", None)
        if made_at is None:
            return
        self._made_at = None
        # Judged when the run ends (see _frontier.report_dropped): a call dropped by a run that then
        # suspends or is cut short was not forgotten, the run simply never got to it. A call
        # that outlives its run (kept by a traceback, collected late) gets no verdict.
        ex = self.ctx._exec
        if ex._tg is not None and ex.run_number == self._run:
            ex.dropped.append((self._what(), self.id, made_at))

    def _what(self) -> str:
        return self._kind.what(self)

    def __repr__(self) -> str:
        # Shown by asyncio.create_task(call)'s TypeError: say there what to do instead.
        return f"<Call {self._kind.name} {self.id}: await it, or start it with .spawn()>"


class Handle(Generic[T_co]):
    """A started durable call or execution: ``await handle`` (or ``await handle.result()``)
    gives its value, or raises the error it failed with.

    ``handle.id`` is its promise id. Handles made inside a durable function belong to the run
    that made them; handles from ``Resonate.run``/``rpc``/``get`` can be awaited anywhere while
    the ``Resonate`` is running.
    """

    __slots__ = ("_state", "id")

    def __init__(self, promise_id: str, state: Any) -> None:
        self.id = promise_id
        self._state = state

    def __await__(self) -> Generator[Any, None, T_co]:
        try:
            value: T_co = yield from self._state.wait(self).__await__()
        finally:
            execution = getattr(self._state, "execution", None)  # None: a client's handle
            if execution is not None:
                execution.frontier.awaited(self.id)
        return value

    async def result(self, timeout: float | timedelta | None = None) -> T_co:
        """The value, waiting at most ``timeout`` (seconds or timedelta) for it.

        Raises ``TimeoutError`` when the wait runs out (the durable work goes on), or the
        error the work failed with.
        """
        if timeout is None:
            return await self
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        with anyio.fail_after(seconds):
            return await self

    async def done(self) -> bool:
        """Whether the work has settled (completed or failed), without waiting for it."""
        return bool(await self._state.done(self))

    async def cancel(self) -> None:
        """Cancel the work, durably: its promise is settled as canceled, and awaiting the
        handle then raises ``CanceledError``.

        In a durable function, a spawned local step's code is cancelled (its anyio scope)
        with its pending descendants; an rpc child's, a sleep's or a ``ctx.promise()``'s
        promise is settled as canceled (an rpc child running elsewhere stops at its next
        durable step). A cancelled child counts as settled, so the caller can complete, and
        replays see the same outcome. Work that settled first keeps its outcome.
        """
        await self._state.cancel(self)

    def __repr__(self) -> str:
        return f"<Handle {self.id}>"


class Context:
    """The durable function's gateway to durable steps. Never build one yourself."""

    __slots__ = ("_counter", "_depth", "_exec", "_log", "_parent", "_prefix", "_timeout_at",
                 "function", "id")

    def __init__(self, execution: Execution, promise_id: str, timeout_at: int,
                 function: str, parent: str | None, depth: int = 0) -> None:
        self._exec = execution
        self.id = promise_id
        self._timeout_at = timeout_at
        self._counter = 0
        self.function = function
        self._parent = parent
        self._depth = depth  # durable functions nested by ctx.run between this and the root
        self._log: ReplayAwareLogger | None = None
        self._prefix = child_id(promise_id, "")  # a child's id is this plus its segment

    def _mint(self, custom: str | None) -> str:
        self._exec.check_live(self)
        self._counter += 1
        return f"{self._prefix}{self._counter if custom is None else custom}"

    @property
    def log(self) -> ReplayAwareLogger:
        """A structlog logger bound with this function's ids (``promise_id``, ``task_id``,
        ``function``, ``attempt``) that logs only on the live frontier: while the function
        replays calls an earlier run already made, its events are dropped, so each is logged
        once per execution, not once per replay (at least once: a crash between an event and
        the next durable call logs it again). Logger name: ``resonate_async.app``."""
        if self._log is None:
            ex = self._exec
            self._log = ReplayAwareLogger(
                ex.frontier, structlog.get_logger("resonate_async.app").bind(
                    promise_id=self.id, task_id=ex.id, function=self.function,
                    attempt=ex.version))
        return self._log

    @property
    def info(self) -> Info:
        """Facts about this durable function: where it runs, since when and as what (its
        ids, deadline, attempt and registered name: see ``Info``)."""
        ex = self._exec
        own = ex.root if self.id == ex.id else ex.cache.get(self.id)
        return Info(self.id, ex.id, self._parent, ex.version,
                    datetime.fromtimestamp(self._timeout_at / 1000, UTC), self.function,
                    ex.origin, ex.branch, dict(own.tags) if own is not None else {})

    @overload
    def run(self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, T]], /,
            *args: P.args, **kwargs: P.kwargs) -> Call[T]: ...

    @overload
    def run(self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args,
            **kwargs: P.kwargs) -> Call[T]: ...

    @overload
    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Call[T]: ...

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Call[Any]:
        """A local step: created, executed in this process, settled, then returned.

        ``fn`` may be a leaf function (sync or async; sync ones run in a worker thread, and
        failures are retried by the call's retry policy) or a durable function taking a
        ``Context`` first (run here, as a nested durable function, on this function's stack:
        at most 100 such functions deep; use ``ctx.rpc`` for deeper recursion).

        The step ends at its deadline (``.options(timeout=...)``, and never later than this
        function's own): async code is cancelled there, a sync function's thread is abandoned
        (it cannot be stopped; its late result is ignored), and the step fails with
        ``TimedOutError``. Whatever the function raises, ``BaseException`` included, fails
        the step only (a type this process cannot rebuild arrives as ``ApplicationError``
        naming it). A result too large for the server fails it with ``EncodingError``.
        """
        return Call(self, RUN, fn, args, kwargs)

    @overload
    def rpc(self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, T]], /,
            *args: P.args, **kwargs: P.kwargs) -> Call[T]: ...

    @overload
    def rpc(self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args,
            **kwargs: P.kwargs) -> Call[T]: ...

    @overload
    def rpc(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Call[T]: ...

    @overload
    def rpc(self, fn: str, /, *args: Any, **kwargs: Any) -> Call[Any]: ...

    def rpc(self, fn: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Call[Any]:
        """A remote call: runs the registered function ``fn`` on any worker of the target
        group (by default this worker's group)."""
        return Call(self, RPC, fn, args, kwargs)

    def detached(self, fn: str | Callable[..., Any], /, *args: Any,
                 **kwargs: Any) -> Awaitable[Handle[Any]]:
        """Fire and forget: start ``fn`` as work whose lifetime is independent of this one.

        ``await ctx.detached(...)`` gives its handle right away; this function may complete
        before it does.
        """
        call: Call[Any] = Call(self, DETACHED, fn, args, kwargs)
        call.id = self._exec.detached_id(self.id, self._counter)
        call._made_at = None  # an un-awaited spawn() coroutine is reported by Python itself
        return call.spawn()

    def sleep(self, seconds: float | timedelta | None = None, *,
              until: datetime | None = None) -> Call[None]:
        """A durable timer: ``await ctx.sleep(60)``, ``ctx.sleep(timedelta(days=1))`` or
        ``ctx.sleep(until=datetime(...))``. The worker is free while it waits."""
        if (seconds is None) == (until is None):
            raise ContextError("ctx.sleep takes a duration or until=datetime (one of them)")
        if until is not None:
            if not isinstance(until, datetime):
                raise ContextError(f"ctx.sleep(until=...) expects a datetime, got {until!r}")
            if until.tzinfo is None:
                raise ContextError("ctx.sleep(until=...) needs an aware datetime (with tzinfo)")
            at: float = until.timestamp()
            return Call(self, SLEEP, None, (), {"at": int(at * 1000)})
        span = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if not isinstance(span, int | float) or isinstance(span, bool) or span < 0:
            raise ContextError(f"ctx.sleep expects a non-negative duration, got {seconds!r}")
        return Call(self, SLEEP, None, (), {"seconds": float(span)})

    @overload
    def promise(self, *, timeout: float | timedelta | None = None,
                type: type[T], data: Any = None) -> Call[T]: ...

    @overload
    def promise(self, *, timeout: float | timedelta | None = None,
                data: Any = None) -> Call[Any]: ...

    def promise(self, *, timeout: float | timedelta | None = None,
                type: Any = Any, data: Any = None) -> Call[Any]:
        """A promise settled from outside (human in the loop): ``.spawn()`` it, publish
        ``handle.id``, and ``await handle`` for the value someone resolves it with
        (``resonate.promises.resolve(id, value)``), converted to ``type`` when given
        (``ctx.promise(type=Approval)`` is a ``Call[Approval]``). ``data`` is stored as the
        promise's param, for whoever settles it to read (``(await
        resonate.promises.get(id)).param``): what the approval is about, for instance."""
        call: Call[Any] = Call(self, EXTERNAL, None, (), {"type": type, "data": data})
        if timeout is not None:
            call.options(timeout=timeout)
        return call

    def now(self) -> Call[datetime]:
        """The current time, recorded as a step: identical on every replay."""
        return Call(self, RUN, now, (self._exec.worker.clock,), {})

    def random(self) -> Call[float]:
        """A random float in [0, 1), recorded as a step: identical on every replay."""
        return Call(self, RUN, _random.random, (), {})

    async def first(self, *handles: Handle[T], cancel_rest: bool = True) -> Handle[T]:
        """The first of ``handles`` (spawned in this function) to settle: a durable race.

        The winner is recorded as a step, so every replay returns the same handle even when
        all of them have settled by then; compare it with ``is``. The others are cancelled
        (``handle.cancel()``) unless ``cancel_rest=False``. Await the winner for its value
        (or error). This is the durable way to race work or give it a deadline: pair it with
        ``ctx.sleep(...).spawn()``; an anyio cancel scope or ``fail_after`` around an await
        is wall-clock time in one process and is not recorded.
        """
        winner: Handle[T] = await self._exec.first(self, handles, cancel_rest)
        return winner

    def get_dependency(self, type_: type[T]) -> T:
        """The object registered with ``resonate.set_dependency`` for ``type_``."""
        found: T = self._exec.dependency(type_)
        return found

    def __repr__(self) -> str:
        return f"<Context {self.id}>"


def _caller() -> tuple[str, int] | None:
    """The (file, line) of the first frame outside this module: where user code made a call."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
    return None if frame is None else (frame.f_code.co_filename, frame.f_lineno)


def now(clock: Clock) -> datetime:
    """The time of ``clock`` (the step behind ``ctx.now()``)."""
    return datetime.fromtimestamp(clock.now_ms() / 1000, UTC)
