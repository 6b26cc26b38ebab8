"""User code cannot break the worker: any exception fails only its step, deadlines hold, and
a result too large for the server fails the step with a clear error (issue 11, items 1-3)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest
from structlog.testing import capture_logs

from resonate_async import (
    ApplicationError,
    Context,
    EncodingError,
    Never,
    Resonate,
    TimedOutError,
)
from resonate_async._errors import RequestTooLargeError
from resonate_async.protocol import FenceRecord, FenceSettle, Request, Response, TaskFence
from resonate_async.testing import VirtualClock
from resonate_async.transport import WrappedTransport
from tests.runtime.conftest import Connect


class Meltdown(BaseException):
    """A BaseException of the user's own."""


def fake_cancellation() -> BaseException:
    """The running backend's cancellation exception, raised by user code, not by a scope."""
    cls = anyio.get_cancelled_exc_class()
    if cls is asyncio.CancelledError:
        return asyncio.CancelledError("raised by user code")
    import trio

    made: BaseException = trio.Cancelled._create()
    return made


def kinds() -> dict[str, Callable[[], BaseException]]:
    """Each kind of BaseException user code may raise, by the type name callers see."""
    return {
        "SystemExit": lambda: SystemExit(3),
        "KeyboardInterrupt": KeyboardInterrupt,
        "GeneratorExit": GeneratorExit,
        "Meltdown": lambda: Meltdown("the core is melting"),
        anyio.get_cancelled_exc_class().__qualname__: fake_cancellation,
    }


async def double(n: int) -> int:
    return 2 * n


async def healthy(ctx: Context, n: int) -> int:
    return await ctx.run(double, n)


@pytest.mark.parametrize("leaf", ["async", "sync"])
async def test_a_base_exception_from_a_leaf_step_fails_only_that_step(
        connect: Connect, uid: Callable[[str], str], leaf: str) -> None:
    resonate = connect()
    made = kinds()
    calls: list[str] = []

    def sync_explode(kind: str) -> None:
        calls.append(kind)
        raise made[kind]()

    async def async_explode(kind: str) -> None:
        calls.append(kind)
        raise made[kind]()

    explode = resonate.register(name="explode")(async_explode if leaf == "async"
                                                 else sync_explode)
    resonate.register(healthy)

    @resonate.register
    async def survivor(ctx: Context) -> list[str]:
        seen = []
        for kind in made:
            try:
                await ctx.run(explode, kind)  # the default policy would retry an Exception
            except ApplicationError as exc:
                seen.append(exc.type_name)
        return seen

    async with resonate:
        root = uid("survivor")
        handle = await resonate.run(root, survivor)
        with anyio.fail_after(30):
            assert await handle == list(made)
            # each raised once: a BaseException is not retried
            assert calls == list(made)
            # the rejection is recorded: the step's own promise fails with the type's name
            record = await resonate.promises.get(f"{root}:1")
            assert record.state == "rejected"
            with pytest.raises(ApplicationError, match="SystemExit: 3"):
                record.result()
            # the worker goes on serving
            assert await (await resonate.run(uid("after"), healthy, 21)) == 42


async def test_a_base_exception_from_a_durable_function_fails_only_its_execution(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect()
    made = kinds()
    resonate.register(healthy)

    @resonate.register
    async def doomed(ctx: Context, kind: str) -> str:
        await ctx.run(double, 1)
        raise made[kind]()

    async with resonate:
        handles = {kind: await resonate.run(uid("doomed"), doomed, kind) for kind in made}
        with anyio.fail_after(30):
            for kind, handle in handles.items():
                with pytest.raises(ApplicationError) as caught:
                    await handle
                assert caught.value.type_name == kind
            assert await (await resonate.run(uid("after"), healthy, 5)) == 10


async def test_a_base_exception_from_an_rpc_target_reaches_the_caller(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect()
    made = kinds()
    resonate.register(healthy)

    @resonate.register
    async def target(ctx: Context, kind: str) -> None:
        raise made[kind]()

    @resonate.register
    async def caller(ctx: Context) -> list[str]:
        seen = []
        for kind in made:
            try:
                await ctx.rpc(target, kind)
            except ApplicationError as exc:
                seen.append(f"{exc.type_name}")
        return seen

    async with resonate:
        handle = await resonate.run(uid("caller"), caller)
        with anyio.fail_after(30):
            assert await handle == list(made)
            assert await (await resonate.run(uid("after"), healthy, 4)) == 8


async def test_an_async_step_past_its_timeout_is_cancelled_and_times_out(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(concurrency=2)
    cancelled: list[str] = []
    resonate.register(healthy)

    @resonate.register
    async def hang(name: str) -> str:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(name)
        return "unreachable"

    @resonate.register
    async def stuck(ctx: Context, name: str) -> str:
        call = ctx.run(hang, name).options(timeout=1, retry=Never())
        try:
            await (await call.spawn() if name == "spawned" else call)
        except TimedOutError as exc:
            return f"timed out: {exc}"
        return "finished"

    async with resonate:
        # two hanging steps take both slots; the third workflow needs one of them
        first = await resonate.run(uid("stuck"), stuck, "awaited")
        second = await resonate.run(uid("stuck"), stuck, "spawned")
        after = await resonate.run(uid("after"), healthy, 3)
        with anyio.fail_after(30):
            for handle in (first, second):
                said = await handle
                assert said.startswith("timed out: ctx.run(hang)"), said
                assert "did not finish before its deadline" in said
            assert await after == 6
        assert sorted(cancelled) == ["awaited", "spawned"]
        with pytest.raises(TimedOutError):
            (await resonate.promises.get(f"{first.id}:1")).result()


async def test_a_sync_step_past_its_timeout_is_abandoned_with_a_warning(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(concurrency=1)
    release = threading.Event()
    returned: list[str] = []
    resonate.register(healthy)

    @resonate.register
    def block() -> str:
        release.wait(60)
        returned.append("late")
        return "late result"

    @resonate.register
    async def blocked(ctx: Context) -> str:
        try:
            return await ctx.run(block).options(timeout=1, retry=Never())
        except TimedOutError as exc:
            return f"timed out: {exc}"

    try:
        with capture_logs() as logs:
            async with resonate:
                handle = await resonate.run(uid("blocked"), blocked)
                with anyio.fail_after(30):
                    said = await handle
                    assert said.startswith("timed out: ctx.run(block)"), said
                    assert "abandoned" in said
                    # its slot is free: the only slot serves the next workflow
                    assert await (await resonate.run(uid("after"), healthy, 2)) == 4
                release.set()
                with anyio.fail_after(10):
                    while not returned:
                        await anyio.sleep(0.01)
                # the late result changes nothing
                with pytest.raises(TimedOutError):
                    (await resonate.promises.get(f"{handle.id}:1")).result()
    finally:
        release.set()
    abandoned = [e for e in logs if e["event"] == "step_abandoned"]
    assert abandoned and abandoned[0]["log_level"] == "warning", logs


async def test_a_durable_function_past_its_deadline_has_its_body_cancelled(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(concurrency=1)
    cancelled = anyio.Event()
    resonate.register(healthy)

    @resonate.register
    async def endless(ctx: Context) -> str:
        await ctx.run(double, 1)
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return "unreachable"

    async with resonate:
        handle = await resonate.options(timeout=1).run(uid("endless"), endless)
        with anyio.fail_after(30):
            await cancelled.wait()
            with pytest.raises(TimedOutError):
                await handle
            # its slot is free again
            assert await (await resonate.run(uid("after"), healthy, 1)) == 2


class SizeLimit(WrappedTransport):
    """A transport that declares a request size limit, as the HTTP transport does."""

    max_request_bytes = 64 * 1024


class RefusesLargeSettles(WrappedTransport):
    """A transport whose server refuses large step results with 413, its limit unknown to
    the client (no ``max_request_bytes``)."""

    async def send(self, request: Request) -> Response:
        if isinstance(request, TaskFence) and isinstance(request.action,
                                                         FenceSettle | FenceRecord):
            action = request.action  # a settle, or a step created settled (in-process)
            data = (action.value if isinstance(action, FenceRecord)
                    else action.data.value).data or ""
            if len(data) > 64 * 1024:
                raise RequestTooLargeError("the server refused a request body as too large "
                                           "(HTTP 413)", kind=request.KIND)
        return await self.inner.send(request)


def _connect_limited(connect: Connect, transport_kind: str, how: str) -> Resonate:
    if how == "refused":
        return connect(wrap=RefusesLargeSettles)
    if transport_kind == "http":
        return connect()  # the server's own 2 MiB limit
    return connect(wrap=SizeLimit)


@pytest.mark.parametrize("how", ["limit", "refused"])
async def test_a_step_result_too_large_for_the_server_fails_the_step_once(
        connect: Connect, transport_kind: str, uid: Callable[[str], str], how: str) -> None:
    resonate = _connect_limited(connect, transport_kind, how)
    size = 3 * 1024 * 1024 if transport_kind == "http" and how == "limit" else 100 * 1024
    effects: list[int] = []

    @resonate.register
    def report() -> str:
        effects.append(1)
        return "x" * size

    @resonate.register
    async def reporting(ctx: Context) -> str:
        try:
            await ctx.run(report)
        except EncodingError as exc:
            return str(exc)
        return "stored"

    async with resonate:
        handle = await resonate.run(uid("reporting"), reporting)
        with anyio.fail_after(30):
            said = await handle
        step = f"{handle.id}:1"
        assert said.startswith(f"result of ctx.run(report) [{step}]"), said
        assert "MiB" in said or "KiB" in said
        assert "store large values elsewhere and return a reference" in said
        assert effects == [1]  # the side effect ran once: no release and re-run
        record = await resonate.promises.get(step)
        assert record.state == "rejected"
        with pytest.raises(EncodingError, match="report"):
            record.result()


async def test_a_small_result_passes_a_declared_limit(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(wrap=SizeLimit)
    resonate.register(healthy)

    async with resonate:
        with anyio.fail_after(30):
            assert await (await resonate.run(uid("small"), healthy, 7)) == 14


async def test_a_step_deadline_follows_the_workers_virtual_clock(
        uid: Callable[[str], str]) -> None:
    clock = VirtualClock()
    resonate = Resonate(clock=clock)
    never = anyio.Event()

    @resonate.register
    async def wait_for_mail() -> None:
        await never.wait()

    @resonate.register
    async def patient(ctx: Context) -> str:
        try:
            await ctx.run(wait_for_mail).options(timeout=timedelta(minutes=10), retry=Never())
        except TimedOutError:
            return "gave up"
        return "got mail"

    async with resonate:
        start = clock.now()
        with anyio.fail_after(30):  # real seconds: ten virtual minutes pass at once
            assert await (await resonate.run(uid("patient"), patient)) == "gave up"
        assert clock.now() - start >= timedelta(minutes=10)
