"""``check_replay``: crash a durable function at every step boundary and check it recovers."""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import structlog

from resonate_async._client import Resonate
from resonate_async._codec import Codec
from resonate_async._errors import ResonateError, TransportError
from resonate_async._tree import call_order
from resonate_async.engine import Engine
from resonate_async.protocol import (
    TAG_ORIGIN,
    FenceCreate,
    FenceRecord,
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
    """A durable function did not recover from a crash the way durable execution promises.

    ``crash_point`` names the simulated crash (``"crash after durable write #3
    (task.fence create r:2)"``), or is ``None`` when the function's outcome differs between
    two runs without any crash (it is not deterministic even before crashes are simulated).
    """

    def __init__(self, message: str, crash_point: str | None = None) -> None:
        super().__init__(message)
        self.crash_point = crash_point


@dataclass
class ReplayReport:
    """What ``check_replay`` did: how many crash points it tried, and the common outcome.

    ``outcome`` is the final state and the decoded value as text (``resolved {"ok": 1}``);
    ``value`` is the result decoded to the function's return annotation, or ``error`` the
    exception it failed with (then ``value`` is ``None``); ``descriptions`` lists the durable
    writes, one crash point each.
    """

    boundaries: int
    outcome: str
    descriptions: list[str] = field(default_factory=list)
    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Outcome:
    """How a run ended: the root's state and its value (or error record) as plain data."""

    state: str
    data: Any

    def show(self) -> str:
        return self.state if self.data is None else f"{self.state} {_show(self.data)}"


def _show(data: Any, width: int = 300) -> str:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _differences(a: Any, b: Any, path: str = "value", limit: int = 5) -> list[str]:
    """Where two plain values differ, as ``path: a != b`` lines (at most ``limit``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(a.keys() | b.keys(), key=str):
            where = f"{path}[{key!r}]"
            if key not in a:
                out.append(f"{where}: missing != {_show(b[key], 80)}")
            elif key not in b:
                out.append(f"{where}: {_show(a[key], 80)} != missing")
            else:
                out.extend(_differences(a[key], b[key], where, limit - len(out)))
            if len(out) >= limit:
                break
        return out[:limit]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out.extend(_differences(x, y, f"{path}[{i}]", limit - len(out)))
            if len(out) >= limit:
                break
        return out[:limit]
    if a == b:
        return []
    return [f"{path}: {_show(a, 80)} != {_show(b, 80)}"]


def _difference(expected: _Outcome, got: _Outcome) -> str:
    if expected.state != got.state:
        return f"state: {expected.state} != {got.state}"
    return "; ".join(_differences(expected.data, got.data))


def _describe(request: Request) -> str:
    if isinstance(request, TaskFence):
        inner = request.action.data
        what = ("create" if isinstance(request.action, FenceCreate) else
                "record" if isinstance(request.action, FenceRecord) else "settle")
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


def _plain(codec: Codec, p: Promise) -> _Outcome:
    """The outcome of a settled root as plain JSON data (decrypted), for comparing runs."""
    if not p.value.data:
        return _Outcome(p.state, None)
    try:
        return _Outcome(p.state, codec.decode(p.value, what=f"value of {p.id}"))
    except ResonateError:  # not JSON this codec can read: compare the stored text
        return _Outcome(p.state, p.value.data)


def _settled_steps(engine: Engine, codec: Codec, origin: str) -> dict[str, tuple[str, _Outcome]]:
    """The settled children of an execution: id -> (the call recorded, its outcome)."""
    out: dict[str, tuple[str, _Outcome]] = {}
    cursor: str | None = None
    while True:
        page = engine.execute(PromiseSearch(None, {TAG_ORIGIN: origin}, 1000, cursor), 0)
        for p in page.data.promises:
            if p.state != "pending" and p.id != origin:
                out[p.id] = (p.tags.get(_CALL_TAG, "") or "step", _plain(codec, p))
        cursor = page.data.cursor
        if cursor is None:
            return out


_SIMULATED: Final = "simulated crash"
_simulating: ContextVar[bool] = ContextVar("resonate_async_check_replay", default=False)
_quiet_users = 0


def _drop_simulated_crash_events(logger: Any, method: str,
                                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: drop the events a simulated crash causes (expected ones)."""
    if _simulating.get() and any(_SIMULATED in str(v) for v in event.values()):
        raise structlog.DropEvent
    return event


@contextlib.contextmanager
def _quiet_simulated_crashes() -> Iterator[None]:
    """Keep the warnings of check_replay's own crashes (task released, release failed) out
    of the test output; every other event, and everything outside check_replay, shows."""
    global _quiet_users
    processors = structlog.get_config()["processors"]
    if not isinstance(processors, list):  # configured with a tuple: leave it as it is
        processors = []
    if _quiet_users == 0:
        # In place: loggers bound (and cached) earlier share this very list.
        processors.insert(0, _drop_simulated_crash_events)
    _quiet_users += 1
    token = _simulating.set(True)
    try:
        yield
    finally:
        _simulating.reset(token)
        _quiet_users -= 1
        if _quiet_users == 0 and _drop_simulated_crash_events in processors:
            processors.remove(_drop_simulated_crash_events)


def _returns(resonate: Resonate, fn: Callable[..., Any]) -> Any:
    found = (resonate.registry.lookup_name(fn) if isinstance(fn, str)
             else resonate.registry.lookup(fn))
    return found.returns if found is not None else Any


def _first_step_difference(a: dict[str, tuple[str, _Outcome]],
                           b: dict[str, tuple[str, _Outcome]]) -> str | None:
    for pid in sorted(a.keys() | b.keys(), key=call_order):
        if pid not in a or pid not in b:
            return (f"step {pid} ({(a.get(pid) or b[pid])[0]}) ran in one run only: the "
                    "function chose different steps")
        (call, x), (_, y) = a[pid], b[pid]
        if x != y:
            return (f"step {pid} ({call}) gave {x.show()} in one run and {y.show()} in the "
                    f"other ({_difference(x, y)})")
    return None


async def check_replay(resonate: Resonate, fn: Callable[..., Any], /, *args: Any,
                       timeout: float = 30.0, seed: int = 0, **kwargs: Any) -> ReplayReport:
    """Run ``fn(*args, **kwargs)``, then again with a crash after each durable write in turn.

    Each run uses a fresh embedded engine and a ``VirtualClock`` (sleeps cost nothing), with
    ``resonate``'s registered functions, errors and dependencies. After a crash, a new
    process (a fresh ``Resonate`` on the same engine, as after a restart) finishes the work.

    First it runs twice without a crash: if those runs end differently the function is not
    deterministic at all, and ``ReplayCheckError`` (``crash_point=None``) says whether a step
    or the function's own code (a uuid in its body) made the difference. Then it checks that
    every crashed run reaches the same outcome and that no step settled before the crash ran
    again; ``ReplayCheckError`` names the crash point and shows both outcomes decoded, with
    their difference. ``random`` is seeded with ``seed`` before each run. ``timeout`` bounds
    each run in real seconds. The expected warnings of the simulated crashes are not logged.

    Returns a ``ReplayReport`` with the decoded result (``report.value`` or
    ``report.error``).
    """
    root = f"check-replay-{uuid.uuid4().hex[:12]}"
    codec = resonate.codec
    name = getattr(fn, "__name__", str(fn))

    async def one_run(crash_after: int | None) -> tuple[_Recorder, Engine, Promise, list[str]]:
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
            return first, engine, engine.execute(PromiseGet(root), clock.now_ms()).data.promise, []
        before = _settled_steps(engine, codec, root)
        second = _Recorder(EmbeddedTransport(engine, clock=clock, close_engine=False,
                                             recover=True))
        restarted = resonate._derive(transport=second, clock=clock)
        with anyio.fail_after(timeout):
            async with restarted:
                handle = await restarted.run(root, fn, *args, **kwargs)
                with contextlib.suppress(Exception):  # the outcome is read from the engine
                    await handle
        p = engine.execute(PromiseGet(root), clock.now_ms()).data.promise
        reran = [f"{i} ({before[i][0]})" for i in second.settles if i in before]
        return first, engine, p, reran

    with _quiet_simulated_crashes():
        reference, engine_a, p_a, _ = await one_run(None)
        _, engine_b, p_b, _ = await one_run(None)
        expected, again = _plain(codec, p_a), _plain(codec, p_b)
        if expected != again:
            step = _first_step_difference(_settled_steps(engine_a, codec, root),
                                          _settled_steps(engine_b, codec, root))
            cause = (f"The first difference is in a step: {step}. check_replay compares each "
                     "crashed run with a run without crashes, so in a test each step must give "
                     "the same result for the same input: make that step deterministic (seed "
                     "it, or give it a fake through set_dependency)."
                     if step is not None else
                     f"Every durable step gave the same values, so the difference comes from "
                     f"{name}'s own code outside any step (uuid4(), time.time(), a global "
                     "counter in its body): move that into a step (ctx.run(...)), whose value is "
                     "recorded and replayed.")
            raise ReplayCheckError(
                f"{name} differs even without a crash: two runs without any crash ended "
                f"{expected.show()} and {again.show()} (difference: "
                f"{_difference(expected, again)}). {cause}")
        boundaries = len(reference.writes)
        for k in range(1, boundaries + 1):
            point = f"crash after durable write #{k} ({reference.writes[k - 1]})"
            try:
                _, _, p, reran = await one_run(k)
            except TimeoutError:
                raise ReplayCheckError(f"{point}: the execution did not finish within "
                                       f"{timeout:g} s after the restart", point) from None
            if reran:
                raise ReplayCheckError(f"{point}: steps that had settled before the crash ran "
                                       f"again: {', '.join(reran)}", point)
            got = _plain(codec, p)
            if got != expected:
                raise ReplayCheckError(
                    f"{point}: the outcome differs from the run without a crash (which ends "
                    f"the same way every time): expected {expected.show()}, got "
                    f"{got.show()} (difference: {_difference(expected, got)}). Usually code "
                    "outside the steps ran again on replay and saw something else (a counter, "
                    "a clock, a random value, a changed global): keep it in a step "
                    "(ctx.run(...)).", point)
    report = ReplayReport(boundaries, expected.show(), reference.writes)
    try:
        report.value = codec.outcome(p_a, _returns(resonate, fn), what=f"result of {name}")
    except Exception as exc:  # the function failed: the report carries its error
        report.error = exc
    return report
