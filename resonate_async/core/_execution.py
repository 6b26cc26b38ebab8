"""One execution of a task: the durable function replayed against its promise cache.

Each run starts the function from the top with a fresh call counter. A durable call whose id
is settled in the cache returns at once without a request; anything else goes through
``task.fence``. Awaiting a remote promise that is still pending raises ``Suspended``; the
execution keeps, by itself, the set of remote promises it created and has not seen settled,
so the driver knows exactly what to wait on without trusting the exception's path.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

import anyio
import structlog
from anyio.abc import TaskGroup

from resonate_async._context import MISS, Call, Context, Handle, now
from resonate_async._errors import (
    ContextError,
    DecryptionError,
    EncodingError,
    NonDeterminismError,
    RequestTooLargeError,
    ResonateError,
    Suspended,
    TimedOutError,
)
from resonate_async._frontier import Dropped, Frontier, report_dropped
from resonate_async._retry import RetryPolicy
from resonate_async._tracing import step_span
from resonate_async.core._guard import Deadline, is_ours
from resonate_async.core._kinds import RPC, RUN
from resonate_async.core._registry import Function
from resonate_async.protocol import (
    TAG_BRANCH,
    TAG_ORIGIN,
    TAG_PARENT,
    TAG_SCOPE,
    FenceCreate,
    FenceRecord,
    FenceSettle,
    Promise,
    PromiseCreate,
    PromiseSearch,
    PromiseSettle,
    Response,
    TaskFence,
    TaskHalt,
    Value,
    extends,
    origin_of,
)

if TYPE_CHECKING:
    from resonate_async.core._driver import Worker

log = structlog.get_logger("resonate_async.worker")

CALL_TAG: Final = "resonate_async:call"
DAY_MS: Final = 86_400_000
SETTLE_SHIELD_S: Final = 10.0  # longest wait to record a finished step while cancelled
_INLINE: Final = frozenset((now, random.random))
REFUSED: Final = frozenset((400, 413, 422))
# An encoded value at least this large may be refused as too large (no server or proxy limits
# bodies to less); a 413 to a smaller request is garbage and handled as a platform failure.
LARGE_VALUE: Final = 4 * 1024
# ctx.run of a durable function runs on its caller's stack: deeper nesting than this would
# exhaust Python's recursion limit, so it is refused at the call (ctx.rpc has no such limit).
MAX_NESTING: Final = 100


class LeaseLost(BaseException):
    """The task is no longer ours (409): stop at once, write nothing more."""


class PlatformFailure(BaseException):
    """The engine could not be reached or answered nonsense: give the task back."""


class Refused(ResonateError):
    """The engine refused a durable write for good (400, 413, 422): sending it again cannot
    help, so the call fails (a refused step result becomes the step's rejection)."""


OutcomeKind = Literal["done", "failed", "waiting"]


class Outcome:
    """How one run of the function ended."""

    __slots__ = ("error", "kind", "value", "waiting")

    def __init__(self, kind: OutcomeKind, *, value: Any = None,
                 error: BaseException | None = None, waiting: list[str] | None = None) -> None:
        self.kind: OutcomeKind = kind
        self.value = value
        self.error = error
        self.waiting = waiting or []


class _Flag:
    """A one-shot event, as ``anyio.Event`` behaves, whose event is made only when someone
    waits before it is set: most spawned steps end before anyone awaits them (a fan-out
    awaits its handles after starting them all), so most never need one."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            await anyio.lowlevel.checkpoint()  # a checkpoint, like Event.wait() once set
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class _LocalState:
    """A spawned local step running in the execution's task group."""

    __slots__ = ("call", "cancel_requested", "error", "execution", "finished", "run", "scope",
                 "stopped", "suspended", "value")

    def __init__(self, execution: Execution, call: Call[Any]) -> None:
        self.execution = execution
        self.call = call
        self.run = execution.run_number
        self.finished = _Flag()  # the outcome is final: awaiting the handle gives it
        self.stopped = _Flag()  # the step's task has ended
        self.value: Any = None
        self.error: BaseException | None = None
        self.suspended: Suspended | None = None
        self.scope: anyio.CancelScope | None = None  # set once the step's task has started
        self.cancel_requested = False

    async def wait(self, handle: Handle[Any]) -> Any:
        self.execution.check_handle(handle, self.run)
        await self.finished.wait()
        if self.suspended is not None:
            raise Suspended(self.suspended.promise_id)
        if self.error is not None:
            raise self.error
        return self.value

    async def done(self, handle: Handle[Any]) -> bool:
        return self.finished.is_set()

    async def cancel(self, handle: Handle[Any]) -> None:
        self.execution.check_handle(handle, self.run)
        await self.execution.cancel_handle(handle.id, self)


class _RemoteState:
    """A remote promise (rpc, timer, external, detached) created by this execution."""

    __slots__ = ("bound_ms", "execution", "run", "type")

    def __init__(self, execution: Execution, type_: Any, bound_ms: int) -> None:
        self.execution = execution
        self.run = execution.run_number
        self.type = type_
        self.bound_ms = bound_ms  # the deadline of the function that started it

    async def wait(self, handle: Handle[Any]) -> Any:
        ex = self.execution
        ex.check_handle(handle, self.run)
        p = ex.cache.get(handle.id)
        if p is None or p.state == "pending":
            ex.check_durable_wait(handle.id, self.bound_ms)
            # Only a wait that may suspend yields: a replayed, settled call costs no loop turn.
            try:
                await anyio.lowlevel.checkpoint()
            except anyio.get_cancelled_exc_class():
                ex.interrupted[handle.id] = None  # judged if the function returns (run_once)
                raise
        return ex.remote_outcome(handle.id, self.type)

    async def done(self, handle: Handle[Any]) -> bool:
        p = self.execution.cache.get(handle.id)
        return p is not None and p.state != "pending"

    async def cancel(self, handle: Handle[Any]) -> None:
        self.execution.check_handle(handle, self.run)
        await self.execution.cancel_handle(handle.id, None)


class Execution:
    """The replay state of one task held by this worker."""

    def __init__(self, worker: Worker, task_id: str, version: int, root: Promise,
                 function: Function, args: list[Any], kwargs: dict[str, Any],
                 preload: Iterable[Promise], kept: dict[str, Promise] | None = None,
                 logger: Any = None) -> None:
        self.worker = worker
        self.id = task_id
        self.version = version
        self.root = root
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.origin = root.tags.get(TAG_ORIGIN) or origin_of(root.id)
        self.branch = root.tags.get(TAG_BRANCH) or root.id
        self.cache: dict[str, Promise] = kept if kept is not None else {}
        # (records, bytes) of the cache counted by the worker when it was kept (Worker._keep)
        self.kept_counted = (0, 0)
        self.expected: dict[Any, tuple[str, Any]] = {}  # see Rpc.expect
        self.absorb(preload)
        self.pending: dict[str, None] = {}
        self.locals: dict[str, _LocalState] = {}  # this run's spawned local steps, by id
        self.nondeterminism: NonDeterminismError | None = None
        self.run_number = 0
        self.dropped: list[Dropped] = []  # calls this run made and never awaited nor spawned
        self.interrupted: dict[str, None] = {}  # remote waits an anyio cancel scope cut short
        self.outer_deadline = math.inf  # the deadline around a run, from outside the function
        self.frontier = Frontier(self.cache, task_id)  # where this run stands, for ctx.log
        self._tg: TaskGroup | None = None
        self.log = logger if logger is not None else log.bind(
            task_id=task_id, promise_id=task_id, attempt=version)

    # the cache --------------------------------------------------------------------------------
    def absorb(self, promises: Iterable[Promise]) -> None:
        """Merge records into the cache; a settled record is never replaced by a pending one."""
        cache = self.cache
        for p in promises:
            if p.state != "pending" or p.id not in cache:
                cache[p.id] = p

    # one run ----------------------------------------------------------------------------------
    async def run_once(self) -> Outcome:
        """Run the function from the top; local work is joined before this returns.

        Whatever the function raises (``BaseException`` included) fails it, except a
        cancellation of ours and the driver's own signals; at the root's deadline its body is
        cancelled and the run fails with ``TimedOutError``.
        """
        self.run_number += 1
        self.pending = {}
        self.interrupted = {}
        self.locals = {}
        self.dropped = []
        self.frontier = Frontier(self.cache, self.id)
        fn = self.function
        ctx = Context(self, self.id, self.root.timeout_at, fn.name, None)
        outcome: Outcome
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.outer_deadline = anyio.current_effective_deadline()
                watch = _RootWatch(self, tg)
                self.worker.watch(watch)
                try:
                    value: Any = None
                    with Deadline(self.worker.clock, self.root.timeout_at, tg) as bound:
                        if fn.durable:
                            if fn.is_async:
                                value = await fn.fn(ctx, *self.args, **self.kwargs)
                            else:
                                value = await self.worker.run_sync(
                                    functools.partial(fn.fn, ctx, *self.args, **self.kwargs),
                                    what=f"{fn.name} [{self.id}]")
                        else:
                            # A leaf as the root (resonate.run, or an rpc target) is retried
                            # per its policy, as it would be as a ctx.run step.
                            value = await self._retrying(
                                self._root_leaf, fn.retry or self.worker.retry,
                                self.root.timeout_at, fn.name, self.id)
                    if bound.reached:
                        outcome = Outcome("failed", error=self._timed_out(
                            fn.name, self.id, self.root.timeout_at, "its body was cancelled"))
                    else:
                        outcome = Outcome("done", value=value)
                except Suspended:
                    outcome = Outcome("waiting")
                except (LeaseLost, PlatformFailure):
                    raise
                except BaseExceptionGroup as group:
                    if _cancelled_in(group):
                        raise
                    outcome = _group_outcome(group)
                except Exception as exc:
                    outcome = Outcome("failed", error=exc)
                except BaseException as exc:
                    if is_ours(exc):
                        raise
                    outcome = Outcome("failed", error=exc)  # SystemExit & co. from user code
        except BaseExceptionGroup as group:
            # The platform failed under the task group (in the body, which trio wraps, or in
            # a spawned step): the run is over, whatever else the group holds.
            _raise_platform_failure(group)
            raise
        finally:
            self._tg = None
            self.worker.unwatch(watch)
        if watch.settled is not None:
            raise LeaseLost(f"{self.id} was settled ({watch.settled}) while it ran: it stops "
                            "here, and nothing more is written")
        if self.nondeterminism is not None:
            return Outcome("failed", error=self.nondeterminism)
        cut = [i for i in self.interrupted if i in self.pending]
        if outcome.kind == "done" and cut:
            return Outcome("failed", error=ContextError(
                f"{self.function.name} [{self.id}] returned while {', '.join(cut)} (whose "
                "await an anyio cancel scope cut short) is still pending: anyio cancellation "
                "is not durable and does not cancel it, so the function would wait for it. "
                "Race handles with ctx.first(...), or cancel what the function no longer needs "
                "with handle.cancel()"))
        if outcome.kind != "failed" and self.pending:
            # Spawned children belong to the execution: it completes only once they settle.
            if outcome.kind == "done":  # returned, yet waits: say why (often a lost race)
                self.log.info("execution_joins_children", waiting=list(self.pending),
                              hint="a function completes once its spawned children settle; "
                              "cancel the ones it no longer needs (handle.cancel(), or race "
                              "them with ctx.first)")
            return Outcome("waiting", waiting=list(self.pending))
        if outcome.kind == "waiting":
            return Outcome("failed", error=ResonateError(
                f"{self.function.name} [{self.id}] raised Suspended without a pending "
                "durable dependency; do not raise Suspended yourself"))
        # The run is over for good: calls it dropped were forgotten (unless its deadline cut
        # it short, which drops whatever it had not reached).
        if self.dropped and not isinstance(outcome.error, TimedOutError):
            warned = report_dropped(self.dropped)
            if warned is not None and outcome.kind == "done":
                return Outcome("failed", error=warned)
        return outcome

    async def _root_leaf(self) -> Any:
        fn = self.function
        if fn.is_async:
            return await fn.fn(*self.args, **self.kwargs)
        return await self.worker.run_sync(functools.partial(fn.fn, *self.args, **self.kwargs),
                                          what=f"{fn.name} [{self.id}]")

    def _timed_out(self, name: str, promise_id: str, deadline: int, what: str) -> TimedOutError:
        at = datetime.fromtimestamp(deadline / 1000, UTC).isoformat(timespec="milliseconds")
        return TimedOutError(
            f"{name} [{promise_id}] did not finish before its deadline ({at}); {what}. Give "
            "it a longer timeout with .options(timeout=...), or make it finish sooner")

    # checks -----------------------------------------------------------------------------------
    def check_live(self, ctx: Context) -> None:
        if self._tg is None:
            raise ContextError(
                f"{ctx!r} is used outside its durable function's run: keep ctx inside the "
                "function it was passed to, and call ctx methods only while it runs"
            )

    def check_handle(self, handle: Handle[Any], run: int) -> None:
        if self._tg is None or run != self.run_number:
            raise ContextError(
                f"handle {handle.id} belongs to another execution (or an earlier run of this "
                "one); await a handle only inside the durable function run that created it"
            )

    def _check(self, p: Promise, expected: str) -> None:
        recorded = p.tags.get(CALL_TAG)
        if recorded is not None and recorded != expected:
            err = NonDeterminismError(
                f"replay of {self.function.name} [{self.id}] diverged at {p.id}: the history "
                f"recorded '{recorded}' there but the code now asks for '{expected}'. Durable "
                "functions must take the same steps in the same order on every run; register "
                "changed code under a new version"
            )
            if self.nondeterminism is None:
                self.nondeterminism = err
            raise err

    def detached_id(self, parent: str, counter: int) -> str:
        """``{origin}:d{16 hex}``: deterministic, so a replay finds the same detached work."""
        digest = hashlib.sha256(f"{parent}/{counter}".encode()).hexdigest()[:16]
        return f"{self.origin}:d{digest}"

    def dependency(self, type_: type[Any]) -> Any:
        return self.worker.dependency(type_)

    # durable writes ---------------------------------------------------------------------------
    async def _fence(self, action: FenceCreate | FenceSettle | FenceRecord,
                     promise_id: str) -> Promise:
        settle = not isinstance(action, FenceCreate)
        size = (len(action.value.data or "") if isinstance(action, FenceRecord)
                else len(action.data.value.data or "") if isinstance(action, FenceSettle)
                else 0)
        try:
            response = await self.worker.send(TaskFence(self.id, self.version, action))
        except PlatformFailure as exc:
            # Believed only for a settle that is large: a 413 to a small request is garbage
            # from somewhere (released and retried like any platform failure).
            if (settle and isinstance(exc.__cause__, RequestTooLargeError)
                    and size >= LARGE_VALUE):
                raise Refused(f"durable call {promise_id} was refused: the request is too "
                              f"large ({exc.__cause__})") from None
            raise
        return self._fenced(response, promise_id, settle)

    def _fenced(self, response: Response, promise_id: str, settle: bool = False) -> Promise:
        if response.status == 409:
            raise LeaseLost(f"task {self.id} version {self.version} is no longer held")
        if settle and response.status in REFUSED:
            raise Refused(f"durable call {promise_id} was refused ({response.status}): "
                          f"{response.data!s:.300}")
        if response.status != 200:
            raise PlatformFailure(f"task.fence for {promise_id} answered {response.status}: "
                                  f"{response.data}")
        inner = response.data.action
        if inner.head.status != 200:
            if inner.head.status in REFUSED:
                raise Refused(f"durable call {promise_id} was refused "
                              f"({inner.head.status}): {inner.data!s:.300}")
            raise PlatformFailure(f"task.fence for {promise_id}: inner status "
                                  f"{inner.head.status}: {inner.data}")
        p: Promise = inner.data.promise
        self.absorb((p,))
        return p

    async def _create(self, data: PromiseCreate) -> Promise:
        return await self._fence(FenceCreate(data=data), data.id)

    async def _settle(self, promise_id: str, state: Any, value: Value,
                      record: PromiseCreate | None = None) -> Promise:
        # The step's work is done: record it even while the run is being cancelled (a
        # shutdown, an enclosing deadline), or its side effect would run again where the task
        # resumes. Bounded, so a dead engine cannot hold a shutdown. An in-process engine
        # answers without yielding, so nothing can cancel the write there: no scope (it costs
        # a fifth of an embedded step). With ``record`` (the step's create, never sent), the
        # promise is created settled in the same write.
        action: FenceSettle | FenceRecord = (
            FenceSettle(data=PromiseSettle(promise_id, state, value)) if record is None
            else FenceRecord(data=record, state=state, value=value))
        if self.worker.inline_sends:
            return await self._fence(action, promise_id)
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + SETTLE_SHIELD_S
            return await self._fence(action, promise_id)
        raise PlatformFailure(f"settling {promise_id} took longer than {SETTLE_SHIELD_S:g} s; "
                              "the step will run again where the task resumes")

    def _deadline(self, call: Call[Any], default_ms: int = DAY_MS) -> int:
        now = self.worker.clock.now_ms()
        span = int(call.opts.timeout * 1000) if call.opts.timeout is not None else default_ms
        return min(now + span, call.ctx._timeout_at)

    def _tags(self, call: Call[Any], scope: str, branch: str, expected: str) -> dict[str, str]:
        tags = dict(call.opts.tags) if call.opts.tags else {}
        tags.update({TAG_SCOPE: scope, TAG_BRANCH: branch, TAG_PARENT: call.ctx.id,
                     TAG_ORIGIN: self.origin, CALL_TAG: expected})
        return tags

    # calls ------------------------------------------------------------------------------------
    def replayed(self, call: Call[Any]) -> Any:
        """The outcome of a remote call this run finds settled in the cache (a replayed call),
        or ``MISS`` when it must be awaited for real. Raises what the call failed with.

        No handle, no request, no coroutine, no loop turn: exactly what awaiting its handle
        would give, at the replay cost of every earlier call (``Call.__await__`` asks this
        before it makes the ``await_call`` coroutine)."""
        cached = self.cache.get(call.id)
        if cached is None or cached.state == "pending":
            return MISS
        kind = call._kind
        if not kind.joined:
            return MISS
        if self._tg is None:
            self.check_live(call.ctx)
        # Rpc.expect's own memo, read here without the call (the cost of every replayed rpc)
        found = self.expected.get((kind, call.fn, call.opts.version)) if kind is RPC else None
        expected, type_ = found if found is not None else kind.expect(self, call)
        if cached.tags.get(CALL_TAG) != expected:
            self._check(cached, expected)
        frontier = self.frontier
        if not frontier.live:
            frontier.awaited_record(cached)
        if cached.state == "resolved" and not cached.value.data:
            return None  # what the codec decodes a value without data to, whatever the type
        return self.worker.codec.outcome(cached, type_, what=f"result of {cached.id}")

    async def await_call(self, call: Call[Any]) -> Any:
        kind = call._kind
        if kind.local:
            return await self._run_local(call)
        value = self.replayed(call)
        if value is not MISS:
            return value
        handle = await self.spawn_call(call)
        return await handle

    async def spawn_call(self, call: Call[Any]) -> Handle[Any]:
        self.check_live(call.ctx)
        if call._kind.local:
            state = _LocalState(self, call)
            assert self._tg is not None
            self.locals[call.id] = state
            self._tg.start_soon(self._run_spawned, call, state)
            return Handle(call.id, state)
        type_ = await self._create_remote(call)
        return Handle(call.id, _RemoteState(self, type_, call.ctx._timeout_at))

    def check_durable_wait(self, promise_id: str, bound_ms: int) -> None:
        """Refuse to wait for a pending remote promise under an anyio deadline of the user's:
        it is wall-clock time in this process, forgotten as soon as the function suspends."""
        deadline = anyio.current_effective_deadline()
        if deadline in (math.inf, -math.inf):  # none, or a scope cancelled already (run_once)
            return
        if deadline >= self.outer_deadline - 0.001:
            return  # set outside the function (around the worker itself): not the user's
        clock = self.worker.clock
        own = anyio.current_time() + (bound_ms - clock.now_ms()) / 1000  # the SDK's scope
        if deadline < own - 0.001:
            raise ContextError(
                f"{promise_id} is awaited under an anyio deadline (fail_after, move_on_after "
                "or a cancel scope with a deadline): that is wall-clock time in this process "
                "and not durable; the function suspends here and the deadline is forgotten. "
                "For a durable deadline race the handle with a timer: deadline = await "
                "ctx.sleep(...).spawn(), then await ctx.first(handle, deadline)")

    async def _run_spawned(self, call: Call[Any], state: _LocalState) -> None:
        try:
            with anyio.CancelScope() as scope:  # what handle.cancel() cancels
                state.scope = scope
                if state.cancel_requested:
                    scope.cancel()
                state.value = await self._run_local(call, spawned=True)
        except Suspended as s:
            state.suspended = s
        except Exception as exc:
            state.error = exc
        finally:
            state.stopped.set()
            if not state.cancel_requested:  # else cancel_handle settles the outcome
                state.finished.set()

    def _settled(self, promise_id: str) -> bool:
        p = self.cache.get(promise_id)
        return p is not None and p.state != "pending"

    async def cancel_handle(self, pid: str, state: _LocalState | None) -> None:
        """Cancel the child ``pid`` durably: its promise is settled ``rejected_canceled``.

        A spawned local step (``state``) is cancelled first (its anyio scope) and joined; its
        pending descendants in this execution are cancelled before it. Settled already (it
        finished first, or on a replay of a run that cancelled it), nothing changes: the
        record says what awaiting the handle gives.
        """
        if self._settled(pid):
            return
        if state is None:
            await self._cancel_tree(pid, None)
            return
        already = state.stopped.is_set()
        state.cancel_requested = True
        try:
            if state.scope is not None:
                state.scope.cancel()
            await state.stopped.wait()
            if not self._settled(pid):
                await self._cancel_tree(pid, state)
        finally:
            if not already:
                state.finished.set()

    async def _cancel_tree(self, pid: str, state: _LocalState | None) -> None:
        for lid, local in list(self.locals.items()):
            if lid != pid and extends(lid, pid):
                await self.cancel_handle(lid, local)
        if state is None:  # an rpc child's running worker stops at its next durable step
            await self._cancel_remote(pid)
        await self._cancel_descendants(pid)
        if state is not None and pid not in self.cache:
            # cancelled before its promise was created: create it, to hold the outcome
            expected, _ = RUN.expect(self, state.call)
            self._check(await self._create(RUN.request(self, state.call, expected)), expected)
        p = await self._cancel_remote(pid)
        self.log.info("step_canceled", step_id=pid, state=p.state)
        if state is not None:
            state.value, state.suspended, state.error = None, None, None
            try:
                state.value = self.worker.codec.outcome(p, what=f"result of {pid}")
            except Exception as exc:
                state.error = exc

    async def _cancel_descendants(self, pid: str) -> None:
        # seen pending in this run or an earlier one (the cache), and found by a search (the
        # children of an rpc child, or of a nested function in a run before a resume)
        remote = dict.fromkeys(i for i in self.pending if extends(i, pid))
        remote.update((i, None) for i, p in self.cache.items()
                      if p.state == "pending" and extends(i, pid) and not in_detached(i, pid))
        # From the top down (a child cancelled after its own children wakes up in between and
        # fails first, "rejected"), and searched again until nothing new turns up: a child
        # still running elsewhere may create promises until it is cancelled itself.
        done: set[str] = set()
        while True:
            try:
                remote.update(dict.fromkeys(await pending_descendants(self.worker.send, pid)))
            except ResonateError as exc:
                self.log.warning("descendants_not_searched", step_id=pid, error=str(exc))
            todo = sorted((r for r in remote if r != pid and r not in self.locals
                           and r not in done), key=lambda r: (r.count(".") + r.count(":"), r))
            if not todo:
                return
            for rid in todo:
                await self._cancel_remote(rid)
                done.add(rid)
            remote = {}

    async def _cancel_remote(self, pid: str) -> Promise:
        p = self.cache.get(pid)
        if p is None or p.state == "pending":
            p = await self._settle(pid, "rejected_canceled", Value())
        self.pending.pop(pid, None)
        return p

    async def first(self, ctx: Context, handles: tuple[Handle[Any], ...],
                    cancel_rest: bool) -> Handle[Any]:
        """The first of ``handles`` to settle, recorded as a step (the winner's index), so
        every replay returns the same handle; the others are cancelled if ``cancel_rest``."""
        self.check_live(ctx)
        if not handles:
            raise ContextError("ctx.first() needs at least one handle: pass the handles of "
                               "spawned calls, ctx.first(approval, reminder)")
        for h in handles:
            state = getattr(h, "_state", None)
            if not isinstance(state, _LocalState | _RemoteState) or state.execution is not self:
                raise ContextError(
                    f"ctx.first() takes handles of calls spawned in this durable function "
                    f"(await call.spawn()), got {h!r:.80}")
            self.check_handle(h, state.run)
        pid = ctx._mint(None)
        expected = "first"
        record = self.cache.get(pid)
        if record is not None:
            self._check(record, expected)
        if record is None or record.state == "pending":
            index = await self._earliest(handles, pid)
            encoded = self.worker.codec.encode(index, what=f"winner of ctx.first() [{pid}]")
            if record is None:
                create = PromiseCreate(
                    pid, ctx._timeout_at, Value(),
                    {TAG_SCOPE: "local", TAG_BRANCH: self.branch, TAG_PARENT: ctx.id,
                     TAG_ORIGIN: self.origin, CALL_TAG: expected})
                if self.worker.records_steps:  # created with its outcome, in one write
                    record = await self._settle(pid, "resolved", encoded, create)
                else:
                    record = await self._create(create)
                self._check(record, expected)
            if record.state == "pending":
                record = await self._settle(pid, "resolved", encoded)
        index = self.worker.codec.outcome(record, int, what=f"winner of ctx.first() [{pid}]")
        if not isinstance(index, int) or not 0 <= index < len(handles):
            raise NonDeterminismError(
                f"replay of {self.function.name} [{self.id}] diverged at {pid}: ctx.first() "
                f"recorded winner #{index} but the code now passes {len(handles)} handles")
        winner = handles[index]
        if cancel_rest:
            for h in handles:
                if h is not winner and h.id != winner.id:
                    await h.cancel()
        return winner

    async def _earliest(self, handles: tuple[Handle[Any], ...], pid: str) -> int:
        """The index of the handle whose promise settled first (ties: the first passed).

        Local steps running here are watched as they run; a remote promise is seen settled
        when the execution resumes, so with nothing running here the execution suspends on
        the pending ones (any of them settling resumes it).
        """
        while True:
            settled = [(p.settled_at or 0, i) for i, h in enumerate(handles)
                       if (p := self.cache.get(h.id)) is not None and p.state != "pending"]
            if settled:
                return min(settled)[1]
            running = [h._state for h in handles if isinstance(h._state, _LocalState)
                       and not h._state.stopped.is_set()]
            if not running:
                break
            async with anyio.create_task_group() as tg:
                for state in running:
                    tg.start_soon(_stop_when_stopped, state, tg.cancel_scope)
        waiting = [h.id for h in handles if isinstance(h._state, _RemoteState)]
        if not waiting:
            raise ContextError(
                f"ctx.first() [{pid}] has nothing that can settle: every handle is a local step "
                "that stopped without an outcome of its own")
        for w in waiting:
            self.pending[w] = None
        raise Suspended(waiting[0])

    def remote_outcome(self, promise_id: str, type_: Any) -> Any:
        p = self.cache.get(promise_id)
        if p is None or p.state == "pending":
            self.pending[promise_id] = None
            raise Suspended(promise_id)
        return self.worker.codec.outcome(p, type_, what=f"result of {promise_id}")

    async def _create_remote(self, call: Call[Any]) -> Any:
        """Create (or find) the promise of a remote call; returns the type to decode it to."""
        kind, pid = call._kind, call.id
        expected, type_ = kind.expect(self, call)
        cached = self.cache.get(pid)
        if cached is not None and cached.state != "pending":
            # Seen settled: nothing to create, nothing to encode (the replay fast path).
            self._check(cached, expected)
            return type_
        p = await self._create(kind.request(self, call, expected))
        self._check(p, expected)
        if p.state == "pending":
            if kind.unrun:
                await halt_unrun_task(self.worker.send, pid)
            if kind.joined:
                self.pending[pid] = None
        return type_

    async def _run_local(self, call: Call[Any], *, spawned: bool = False) -> Any:
        worker = self.worker
        fn = worker.registry.describe(call.fn)
        pid = call.id
        expected = f"{RUN.name} {fn.name}"
        cached = self.cache.get(pid)
        if cached is not None and cached.state != "pending":
            self._check(cached, expected)
            return worker.codec.outcome(cached, fn.returns, what=f"result of {fn.name} [{pid}]")
        depth = call.ctx._depth + 1
        if fn.durable and depth > MAX_NESTING:
            raise ContextError(
                f"ctx.run({fn.name}) would nest durable functions {depth} deep, over the limit "
                f"of {MAX_NESTING}: ctx.run of a durable function runs on its caller's stack. "
                "Use ctx.rpc for deep recursion (each call runs as a task of its own), or turn "
                f"the recursion into a loop (the call was {pid})")
        late = False
        record: PromiseCreate | None = None
        if cached is None:
            deadline = self._deadline(call)
            fn.check_call(call.args, call.kwargs)
            create = RUN.request(self, call, expected, deadline)
            if worker.records_steps and not fn.durable and call.opts.timeout is None:
                # One durable write: the promise is created settled once the leaf returns
                # (the cache says it does not exist yet: a run before a crash would have left
                # it in the preload). Nothing of it is visible while it runs; a crash reruns
                # it, as it would rerun a created step; with no timeout of its own its
                # deadline is its caller's, which is durable. A timeout of its own, or a
                # durable function (its children name it), keeps create-then-settle.
                record = create
            else:
                p = await self._create(create)
                self._check(p, expected)
                if p.state != "pending":
                    return worker.codec.outcome(p, fn.returns,
                                                what=f"result of {fn.name} [{pid}]")
                deadline = p.timeout_at
        else:  # created by an earlier run (before a crash): its recorded deadline still holds
            self._check(cached, expected)
            deadline = cached.timeout_at
            late = deadline <= worker.clock.now_ms()
        what = f"result of ctx.run({fn.name}) [{pid}]"
        started = time.monotonic()
        if record is not None:  # made visible (pending) if it runs past half a lease
            worker.unrecorded[pid] = (self, record, worker.clock.now_ms())
        try:
            try:
                if late:  # resumed past it: not run again (the engine's record says timed out)
                    raise self._timed_out(
                        f"ctx.run({fn.name})", pid, deadline,
                        "the task resumed after it, so the step was not run again")
                with step_span(fn.name, pid):
                    # An inline leaf without a timeout of its own runs under its caller's scope
                    # (cut off at the caller's deadline): a cancel scope per step would cost a
                    # third of the embedded per-step budget.
                    bounded = spawned or fn.durable or call.opts.timeout is not None
                    with (Deadline(worker.clock, deadline, self._tg) if bounded
                          else _UNBOUNDED) as bound:
                        if fn.durable:
                            child = Context(self, pid, deadline, fn.name, call.ctx.id, depth)
                            if fn.is_async:
                                value = await fn.fn(child, *call.args, **call.kwargs)
                            else:
                                value = await worker.run_sync(
                                    functools.partial(fn.fn, child, *call.args, **call.kwargs),
                                    what=f"ctx.run({fn.name}) [{pid}]")
                        else:
                            value = await self._run_leaf(call, fn, deadline)
                    if bound.reached:
                        raise self._timed_out(
                            f"ctx.run({fn.name})", pid, deadline,
                            "its code was cancelled" if fn.is_async or fn.fn in _INLINE else
                            "its thread was abandoned (it cannot be stopped; whatever it returns "
                            "is ignored)")
                encoded = worker.codec.encode(value, what=what)
                too_large = worker._too_large(encoded, what)
                if too_large is not None:
                    raise too_large
            except (NonDeterminismError, DecryptionError):
                # never recorded as the step's outcome: the execution fails as a whole (or, for a
                # value this worker's key cannot read, the driver gives the task back)
                raise
            except Exception as exc:
                await self._reject(fn.name, pid, exc, started, record)
            except BaseException as exc:
                if _propagates(exc):
                    raise
                # SystemExit & co. fail the step only
                await self._reject(fn.name, pid, exc, started, record)
            try:
                p = await self._settle(pid, "resolved", encoded, record)
            except Refused as refusal:
                await self._reject(fn.name, pid, EncodingError(
                    f"{what} ({_size(len(encoded.data or ''))} encoded) was refused by the server: "
                    f"{refusal}; store large values elsewhere and return a reference"), started,
                    record)
            if record is not None:
                self._check(p, expected)
            self.log.info("step_completed" if p.state == "resolved" else "step_failed",
                          step_id=pid, function=fn.name, state=p.state,
                          duration_ms=round((time.monotonic() - started) * 1000, 3))
            if p.state != "resolved":  # the engine's record is authoritative (timeout wins)
                return worker.codec.outcome(p, fn.returns, what=f"result of {fn.name} [{pid}]")
            return value
        finally:
            if record is not None:
                worker.unrecorded.pop(pid, None)

    async def _reject(self, name: str, pid: str, exc: BaseException,
                      started: float | None = None,
                      record: PromiseCreate | None = None) -> NoReturn:
        """Settle step ``pid`` as rejected with ``exc`` and raise it to the caller, as the
        caller would see it on a replay (a type this process cannot rebuild becomes
        ``ApplicationError``). An error too large to store is replaced by a small one."""
        worker = self.worker
        codec = worker.codec
        error = codec.encode_error(exc)
        too_large = worker._too_large(
            error, f"the error ctx.run({name}) [{pid}] failed with ({type(exc).__name__})")
        if too_large is not None:
            exc, error = too_large, codec.encode_error(too_large)
        try:
            p = await self._settle(pid, "rejected", error, record)
        except Refused as refusal:
            exc = EncodingError(
                f"the error ctx.run({name}) [{pid}] failed with ({type(exc).__name__}: "
                f"{_text(exc):.200}) was refused by the server: {refusal}")
            error = codec.encode_error(exc)
            p = await self._settle(pid, "rejected", error, record)
        took = {} if started is None else {
            "duration_ms": round((time.monotonic() - started) * 1000, 3)}
        self.log.info("step_failed", step_id=pid, function=name, state=p.state,
                      error=_text(exc, repr), **took)
        if p.state == "rejected_timedout" and not isinstance(exc, TimedOutError):
            codec.outcome(p, what=f"result of {name} [{pid}]")  # raises TimedOutError
        rebuilt = codec.decode_error(error)
        if type(rebuilt) is type(exc):
            raise exc
        raise rebuilt from exc

    async def _run_leaf(self, call: Call[Any], fn: Function, deadline: int) -> Any:
        target = fn.fn
        if fn.is_async:
            async def attempt() -> Any:
                return await target(*call.args, **call.kwargs)
        elif target in _INLINE:
            async def attempt() -> Any:
                return target(*call.args, **call.kwargs)
        else:
            async def attempt() -> Any:
                return await self.worker.run_sync(
                    functools.partial(target, *call.args, **call.kwargs),
                    what=f"ctx.run({fn.name}) [{call.id}]")
        return await self._retrying(attempt, call.opts.retry or fn.retry or self.worker.retry,
                                    deadline, fn.name, call.id)

    async def _retrying(self, attempt: Callable[[], Awaitable[Any]], policy: RetryPolicy,
                        deadline: int, name: str, pid: str) -> Any:
        """``attempt()`` until it returns, retried on ``Exception`` per ``policy``.

        The retry count lives in this process: after a crash the step starts a fresh count
        where the task resumes, but no retry is ever scheduled at or past ``deadline`` (the
        promise's, which is durable), so the deadline bounds crashes and retries together.
        """
        retries = 0
        clock = self.worker.clock
        while True:
            try:
                return await attempt()
            except Exception as exc:
                retries += 1
                delay = policy.delay(retries) if policy.should_retry(exc) else None
                if delay is None or clock.now_ms() + delay * 1000 >= deadline:
                    raise
                self.log.info("step_retry", step_id=pid, function=name,
                              retry=retries, delay=delay, error=repr(exc))
                await clock.sleep(delay)


class _RootWatch:
    """Stops a run whose own promise was settled elsewhere (cancelled from outside, or by
    its parent's ``handle.cancel()``). The worker's heartbeat loop reads the promise of every
    run that has lasted half a lease, as often as heartbeats go, and calls ``settled_elsewhere``
    if it is no longer pending: the run's task group is cancelled at once.

    A run shorter than half a lease sends nothing and costs no task. Without it a long step
    would finish its side effect after the cancel and only learn at its next durable write
    (409).
    """

    __slots__ = ("execution", "settled", "started", "tg")

    def __init__(self, execution: Execution, tg: TaskGroup) -> None:
        self.execution = execution
        self.tg = tg
        self.started = execution.worker.clock.now_ms()
        self.settled: str | None = None

    def settled_elsewhere(self, state: str) -> None:
        if self.settled is None:
            self.settled = state
            self.execution.log.info(
                "execution_canceled" if state == "rejected_canceled"
                else "execution_settled_elsewhere", state=state)
            self.tg.cancel_scope.cancel()


async def _stop_when_stopped(state: _LocalState, scope: anyio.CancelScope) -> None:
    await state.stopped.wait()
    scope.cancel()


class _Unbounded:
    """Stands in for a ``Deadline`` where an enclosing one already bounds the work."""

    __slots__ = ()
    reached = False

    def __enter__(self) -> _Unbounded:
        return self

    def __exit__(self, *_: object) -> None:
        return None


_UNBOUNDED: Final = _Unbounded()


def _propagates(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in it, for a group) must unwind past user code: the
    driver's own signals and a real cancellation of ours."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_propagates(e) for e in exc.exceptions)
    return isinstance(exc, Suspended | LeaseLost | PlatformFailure) or is_ours(exc)


def _cancelled_in(group: BaseExceptionGroup[Any]) -> bool:
    """Whether ``group`` holds a real cancellation of ours (which must propagate)."""
    return any(_cancelled_in(e) if isinstance(e, BaseExceptionGroup) else is_ours(e)
               for e in group.exceptions)


def _text(exc: BaseException, show: Callable[[BaseException], str] = str) -> str:
    """``str(exc)`` (or ``show``), even for an exception whose ``__str__`` itself fails."""
    try:
        return show(exc)
    except Exception:
        return f"<{type(exc).__name__} that cannot be shown>"


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"


def _raise_platform_failure(group: BaseExceptionGroup[Any]) -> None:
    """Raise the first ``LeaseLost`` / ``PlatformFailure`` inside ``group``, if any."""
    found, _ = group.split((LeaseLost, PlatformFailure))
    while found is not None:
        first = found.exceptions[0]
        if not isinstance(first, BaseExceptionGroup):
            raise first
        found = first


def _group_outcome(group: BaseExceptionGroup[Any]) -> Outcome:
    """An exception group of only Suspended (and the cancellations they caused) is one
    suspension; anything else in it is the function's failure."""
    _, rest = group.split(Suspended)
    if rest is None:
        return Outcome("waiting")
    lost, rest2 = rest.split((LeaseLost, PlatformFailure))
    if lost is not None:
        raise lost.exceptions[0]
    if rest2 is not None and len(rest2.exceptions) == 1 and not isinstance(
            rest2.exceptions[0], BaseExceptionGroup):
        return Outcome("failed", error=rest2.exceptions[0])
    return Outcome("failed", error=rest2)


_DETACHED = re.compile(r"d[0-9a-f]{16}")  # the segment of detached_id under the origin


def in_detached(promise_id: str, ancestor: str) -> bool:
    """Whether ``promise_id`` lies in detached work started below ``ancestor``: detached work
    is not a descendant, so cancelling ``ancestor`` leaves it running."""
    origin, _, rest = promise_id.partition(":")
    first = rest.split(".", 1)[0]
    return bool(_DETACHED.fullmatch(first)) and not extends(ancestor, f"{origin}:{first}")


async def pending_descendants(send: Callable[[PromiseSearch], Awaitable[Response]],
                              promise_id: str) -> list[str]:
    """The ids of the pending promises below ``promise_id`` (children, their children, ...),
    detached work aside: every child carries its origin's tag, so one tag search finds them.

    ``send`` is a worker's (raises ``PlatformFailure``) or a client's (``ResonateError``);
    a search the server refuses (a prefix-scoped token may not search) raises
    ``ResonateError`` naming the status.
    """
    origin = origin_of(promise_id)
    found: list[str] = []
    cursor: str | None = None
    while True:
        response = await send(PromiseSearch("pending", {TAG_ORIGIN: origin}, 100, cursor))
        if response.status != 200:
            raise ResonateError(f"searching the descendants of {promise_id} answered "
                                f"{response.status}: {response.data!s:.200}")
        for p in response.data.promises:
            if (p.id != promise_id and extends(p.id, promise_id)
                    and not in_detached(p.id, promise_id)):
                found.append(p.id)
        cursor = response.data.cursor
        if cursor is None:
            # deepest first: a child's own children are cancelled before it
            return sorted(found, key=lambda i: (-i.count(".") - i.count(":"), i))


async def halt_unrun_task(send: Callable[[TaskHalt], Awaitable[Response]],
                          promise_id: str) -> None:
    """Halt the task of a timer or external promise: no worker ever runs it.

    Its ``resonate:target`` exists only so that servers arm its deadline. Halted, the task is
    never dispatched (no ``execute`` re-sent every retry timeout, nothing for a server to log
    as undeliverable) and still becomes fulfilled when the promise settles or times out.
    Best effort: if the halt fails, the task only costs a dropped message per retry timeout.
    ``send`` is a worker's (raises ``PlatformFailure``) or a client's (``ResonateError``).
    """
    try:
        response = await send(TaskHalt(promise_id))
    except (PlatformFailure, ResonateError) as exc:
        log.debug("timer_task_not_halted", promise_id=promise_id, error=str(exc))
        return
    if response.status not in (200, 409):  # 409: already fulfilled, i.e. settled
        log.debug("timer_task_not_halted", promise_id=promise_id, status=response.status)
