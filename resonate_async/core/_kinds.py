"""The kinds of durable call, one small class each.

A kind knows what it records (the ``resonate_async:call`` tag a replay checks), what its
result decodes to, whether it runs in this process, and what the request that creates its
promise looks like. ``Execution`` asks the call's kind instead of switching on names, so a new
kind of call is one new class here (and the ``Context`` method that makes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from resonate_async.protocol import (
    TAG_EXTERNAL,
    TAG_PARENT,
    TAG_TARGET,
    TAG_TIMER,
    PromiseCreate,
    Value,
)
from resonate_async.protocol._records import TIMER_TARGET

if TYPE_CHECKING:
    from resonate_async._context import Call
    from resonate_async.core._execution import Execution


class CallKind:
    """What every kind of durable call answers; subclasses set the class attributes."""

    __slots__ = ()
    name: ClassVar[str]
    """How user code names it: ``ctx.{name}(...)``."""
    local: ClassVar[bool] = False
    """Runs in this process (``ctx.run``): created, executed and settled by this execution.
    Otherwise its promise is created and the execution waits for someone to settle it."""
    joined: ClassVar[bool] = True
    """The execution completes only once its promise has settled (detached work is not)."""
    unrun: ClassVar[bool] = False
    """No worker ever runs its task (timers, external promises): it is halted when created."""

    def expect(self, ex: Execution, call: Call[Any]) -> tuple[str, Any]:
        """The tag a replay must find recorded at the call's id, and the type of its result."""
        raise NotImplementedError

    def request(self, ex: Execution, call: Call[Any], expected: str) -> PromiseCreate:
        """The request that creates the call's promise (recording ``expected``)."""
        raise NotImplementedError

    def what(self, call: Call[Any]) -> str:
        """The call as user code wrote it, for messages: ``ctx.sleep(...)``."""
        return f"ctx.{self.name}(...)"

    def __repr__(self) -> str:
        return f"<call kind {self.name}>"


class _Function(CallKind):
    """A call of a registered function (``run``, ``rpc``, ``detached``)."""

    __slots__ = ()

    def what(self, call: Call[Any]) -> str:
        fn = call.fn
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", "...")
        return f"ctx.{self.name}({name})"


class Run(_Function):
    """``ctx.run``: a local step, executed here and persisted (create, then settle)."""

    __slots__ = ()
    name = "run"
    local = True

    def expect(self, ex: Execution, call: Call[Any]) -> tuple[str, Any]:
        fn = ex.worker.registry.describe(call.fn)
        return f"run {fn.name}", fn.returns

    def request(self, ex: Execution, call: Call[Any], expected: str,
                deadline: int | None = None) -> PromiseCreate:
        return PromiseCreate(call.id, ex._deadline(call) if deadline is None else deadline,
                             Value(), ex._tags(call, "local", ex.branch, expected))


class Rpc(_Function):
    """``ctx.rpc``: a task of its own, run by any worker of the target group."""

    __slots__ = ()
    name = "rpc"

    def _target(self, ex: Execution, call: Call[Any]) -> tuple[str, int, Any, Any]:
        """(name, version, result type, the local registration or ``None``)."""
        fn = call.fn
        registry = ex.worker.registry
        if isinstance(fn, str):
            registered = registry.lookup_name(fn, call.opts.version)
            return (fn, call.opts.version or 1,
                    registered.returns if registered is not None else Any, None)
        described = registry.describe(fn)
        return (described.name, call.opts.version or described.version, described.returns,
                described)

    def expect(self, ex: Execution, call: Call[Any]) -> tuple[str, Any]:
        # Asked again for every replayed call: remembered per function and version.
        key = (self, call.fn, call.opts.version)
        found: tuple[str, Any] | None = ex.expected.get(key)
        if found is None:
            name, _, returns, _ = self._target(ex, call)
            found = ex.expected[key] = (f"{self.name} {name}", returns)
        return found

    def request(self, ex: Execution, call: Call[Any], expected: str) -> PromiseCreate:
        worker = ex.worker
        name, version, _, described = self._target(ex, call)
        if described is not None:
            described.check_call(call.args, call.kwargs)
        param = worker.codec.encode_invocation(name, call.args, call.kwargs, version)
        return PromiseCreate(call.id, ex._deadline(call), param, self.tags(ex, call, expected))

    def tags(self, ex: Execution, call: Call[Any], expected: str) -> dict[str, str]:
        """The tags of its promise: a branch of its own, targeted at a worker group."""
        tags = ex._tags(call, "global", call.id, expected)
        tags[TAG_TARGET] = ex.worker.target_address(call.opts.target)
        return tags


class Detached(Rpc):
    """``ctx.detached``: like an rpc, but not a child: the caller neither waits for it nor
    cancels it."""

    __slots__ = ()
    name = "detached"
    joined = False

    def tags(self, ex: Execution, call: Call[Any], expected: str) -> dict[str, str]:
        tags = super().tags(ex, call, expected)
        tags[TAG_PARENT] = ex.origin  # not under its caller: cancelling the caller spares it
        return tags


class Sleep(CallKind):
    """``ctx.sleep``: a durable timer, a promise that times out (resolved) at its time."""

    __slots__ = ()
    name = "sleep"
    unrun = True

    def expect(self, ex: Execution, call: Call[Any]) -> tuple[str, Any]:
        return "sleep", Any

    def request(self, ex: Execution, call: Call[Any], expected: str) -> PromiseCreate:
        tags = ex._tags(call, "global", call.id, expected)
        tags[TAG_TIMER] = "true"
        tags[TAG_TARGET] = TIMER_TARGET  # a server fires only targeted deadlines
        at = call.kwargs.get("at")
        if at is None:
            at = ex.worker.clock.now_ms() + int(call.kwargs["seconds"] * 1000)
        return PromiseCreate(call.id, min(at, call.ctx._timeout_at), Value(), tags)


class External(CallKind):
    """``ctx.promise``: a promise settled from outside, optionally carrying ``data``."""

    __slots__ = ()
    name = "promise"
    unrun = True

    def expect(self, ex: Execution, call: Call[Any]) -> tuple[str, Any]:
        return "promise", call.kwargs.get("type", Any)

    def request(self, ex: Execution, call: Call[Any], expected: str) -> PromiseCreate:
        worker = ex.worker
        tags = ex._tags(call, "global", call.id, expected)
        tags[TAG_EXTERNAL] = "true"
        tags[TAG_TARGET] = TIMER_TARGET  # so that its deadline fires (see TIMER_TARGET)
        param = Value()
        data = call.kwargs.get("data")
        if data is not None:
            what = f"data of ctx.promise() [{call.id}]"
            param = worker.codec.encode(data, what=what)
            too_large = worker._too_large(param, what)
            if too_large is not None:
                raise too_large
        return PromiseCreate(call.id, ex._deadline(call), param, tags)


RUN: Final = Run()
RPC: Final = Rpc()
DETACHED: Final = Detached()
SLEEP: Final = Sleep()
EXTERNAL: Final = External()
