"""Mistakes that used to pass silently, and the options that make a client answer fast.

A call made and never awaited is reported at its line; a call handed to a task spawner says
to ``.spawn()`` it; the application's own exception classes come back as themselves across
durable boundaries (and the rest say how to make them); ``Resonate(request_timeout=...,
retry_for=...)`` reach the HTTP transport.
"""

from __future__ import annotations

import inspect
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest
import sniffio

from resonate_async import (
    ApplicationError,
    Context,
    ContextError,
    Never,
    NotFoundError,
    Resonate,
    TransportError,
)
from resonate_async._codec import Codec
from resonate_async.protocol import PromiseGet
from tests.runtime.conftest import Connect


class OutOfStock(Exception):
    """An application error defined at module level and never registered."""

    def __init__(self, sku: str, left: int) -> None:
        super().__init__(sku, left)
        self.sku = sku
        self.left = left


def line_after(frame: Any) -> int:
    return int(frame.f_lineno) + 1


async def wait_for_promise(resonate: Resonate, promise_id: str) -> None:
    with anyio.fail_after(60):
        while True:
            try:
                await resonate.promises.get(promise_id)
                return
            except NotFoundError:
                await anyio.sleep(0.01)


# a call never awaited ------------------------------------------------------------------------
async def test_a_call_never_awaited_is_reported_at_the_line_that_made_it(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    sent: list[int] = []
    made: dict[str, int] = {}

    @resonate.register
    def send(n: int) -> None:
        sent.append(n)

    @resonate.register
    async def forgetful(ctx: Context) -> str:
        made["line"] = line_after(inspect.currentframe())
        ctx.run(send, 1)
        return "done"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with resonate:
            handle = await resonate.run(uid("forgetful"), forgetful)
            with anyio.fail_after(30):
                assert await handle == "done"
    [warning] = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    text = str(warning.message)
    assert f"ctx.run(send) [{handle.id}:1] was never awaited, so it never ran" in text
    assert "await ctx.run(send).spawn()" in text
    assert (warning.filename, warning.lineno) == (__file__, made["line"])
    assert sent == []


async def test_with_warnings_as_errors_a_forgotten_call_fails_the_execution(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    # pyproject's pytest configuration turns RuntimeWarning into errors, as -W error does
    @resonate.register
    def send(n: int) -> None:
        return None

    @resonate.register
    async def forgetful(ctx: Context) -> None:
        ctx.rpc(send, 1)

    async with resonate:
        handle = await resonate.run(uid("forgetful"), forgetful)
        with anyio.fail_after(30), pytest.raises(RuntimeWarning, match=r"ctx.rpc\(send\)"):
            await handle


async def test_a_call_left_behind_by_a_suspended_run_is_not_reported(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    # The run suspends on the approval before it reaches `await later`: the replay awaits it.
    # (Reported, the RuntimeWarning would fail the execution under this suite's -W error.)
    sent: list[int] = []

    @resonate.register
    def send(n: int) -> int:
        sent.append(n)
        return n

    @resonate.register
    async def approval_first(ctx: Context) -> int:
        approval = ctx.promise()
        later = ctx.run(send, 2)
        approved = await approval
        return int(approved) + await later

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with resonate:
            handle = await resonate.run(uid("approval"), approval_first)
            await wait_for_promise(resonate, f"{handle.id}:1")
            await resonate.promises.resolve(f"{handle.id}:1", 40)
            with anyio.fail_after(30):
                assert await handle == 42
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert sent == [2]


async def test_a_call_handed_to_a_task_spawner_says_to_spawn_it(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    def send(n: int) -> int:
        return n

    @resonate.register
    async def misuse(ctx: Context) -> list[str]:
        messages = []
        call = ctx.run(send, 1)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)  # type: ignore[arg-type]
        except* ContextError as group:  # raised by start_soon, inside the task group
            messages.append(str(group.exceptions[0]))
        if sniffio.current_async_library() == "asyncio":
            import asyncio

            try:
                asyncio.create_task(call)  # type: ignore[arg-type]  # noqa: RUF006
            except TypeError as exc:
                messages.append(str(exc))
        else:
            messages.append(repr(call))
        messages.append(str(await call))  # the mistake fixed: the call runs
        return messages

    async with resonate:
        handle = await resonate.run(uid("misuse"), misuse)
        with anyio.fail_after(30):
            spawner, loop, value = await handle
    assert "ctx.run(send) is a durable call, not a function or coroutine" in spawner
    assert "await ctx.run(send).spawn()" in spawner
    assert f"<Call run {handle.id}:1: await it, or start it with .spawn()>" in loop
    assert value == "1"


# errors across boundaries ------------------------------------------------------------------
async def test_the_applications_own_exception_classes_come_back_as_themselves(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect()  # OutOfStock is not registered with register_error

    @resonate.register
    def reserve(sku: str) -> None:
        raise OutOfStock(sku, 0)

    @resonate.register
    async def reserve_remotely(ctx: Context, sku: str) -> None:
        raise OutOfStock(sku, 1)

    @resonate.register
    async def checkout(ctx: Context) -> list[str]:
        caught = []
        try:
            await ctx.run(reserve, "sku-1").options(retry=Never())
        except OutOfStock as exc:
            caught.append(f"{exc.sku} {exc.left}")
        try:
            await ctx.rpc(reserve_remotely, "sku-2")
        except OutOfStock as exc:
            caught.append(f"{exc.sku} {exc.left}")
        await ctx.run(reserve, "sku-3").options(retry=Never())
        return caught

    async with resonate:
        handle = await resonate.run(uid("checkout"), checkout)
        with anyio.fail_after(30), pytest.raises(OutOfStock) as failed:
            await handle
        assert (failed.value.sku, failed.value.left) == ("sku-3", 0)
        # and on the replay path: the step's stored rejection
        record = await resonate.promises.get(f"{handle.id}:1")
        with pytest.raises(OutOfStock, match="sku-1"):
            record.result()
        assert await resonate.promises.get(f"{handle.id}:2") is not None


async def test_an_error_class_no_process_can_find_arrives_saying_what_to_do(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect()

    class Boom(Exception):  # defined in a function: nothing can find it again
        pass

    @resonate.register
    def explode() -> None:
        raise Boom("x")

    @resonate.register
    async def flow(ctx: Context) -> str:
        try:
            await ctx.run(explode).options(retry=Never())
        except Boom:
            return "caught as Boom"
        except ApplicationError as exc:
            return str(exc)
        return "not raised"

    async with resonate:
        handle = await resonate.run(uid("boom"), flow)
        with anyio.fail_after(30):
            text = await handle
    assert text.startswith(f"{Boom.__qualname__}: x (Boom is defined inside a function")
    assert "define it at module level" in text and "resonate.register_error(Boom)" in text


def _stored_error(codec: Codec, module: str, type_name: str) -> BaseException:
    value = codec.encode_error(ApplicationError("stored", type_name=type_name, module=module))
    return codec.decode_error(value)


def test_a_stored_error_never_imports_the_module_it_names() -> None:
    codec = Codec()
    codec.trust_module("tests.runtime.test_dx")  # as registering a function here does
    absent = "tests.runtime._no_such_module_h10"
    got = _stored_error(codec, absent, "Boom")
    assert isinstance(got, ApplicationError) and absent not in sys.modules
    assert "register it with resonate.register_error(Boom)" in str(got)
    # a class of this package, already imported, comes back as itself
    got = codec.decode_error(codec.encode_error(OutOfStock("sku-9", 2)))
    assert isinstance(got, OutOfStock) and (got.sku, got.left) == ("sku-9", 2)
    # unless its constructor refuses what was stored
    got = _stored_error(codec, __name__, "OutOfStock")
    assert isinstance(got, ApplicationError) and "refused the stored arguments" in str(got)
    # names that do not resolve to an exception class of that module are refused
    for module, name in [(__name__, "Codec"), (__name__, "line_after"),
                         (__name__, "OutOfStock.__init__"), ("tests.runtime.conftest", "uid")]:
        assert isinstance(_stored_error(codec, module, name), ApplicationError), name
    # another package's classes are not the application's, imported or not
    got = _stored_error(codec, "json.decoder", "JSONDecodeError")
    assert isinstance(got, ApplicationError) and got.type_name == "JSONDecodeError"
    # a BaseException from user code never unwinds its caller
    got = _stored_error(codec, "builtins", "SystemExit")
    assert isinstance(got, ApplicationError) and "fails only the step" in str(got)


def test_without_registered_functions_no_class_is_trusted() -> None:
    codec = Codec()
    got = codec.decode_error(codec.encode_error(OutOfStock("sku-9", 2)))
    assert isinstance(got, ApplicationError)
    assert f"{__name__}.OutOfStock is not registered" in str(got)


# client timeouts ----------------------------------------------------------------------------
async def test_request_timeout_and_retry_for_reach_the_http_transport() -> None:
    async def never_answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, never_answer)
        client = Resonate(url=f"http://127.0.0.1:{port}", request_timeout=0.2, retry_for=0,
                          worker=False)
        async with client.transport:
            with anyio.fail_after(60), pytest.raises(
                    TransportError, match=r"ReadTimeout; tried 1 times for 0 s"):
                await client.transport.send(PromiseGet("anything"))
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(("options", "message"), [
    ({"request_timeout": 5}, "Resonate(request_timeout=...) applies to a Resonate server"),
    ({"retry_for": 5}, "Resonate(retry_for=...) applies to a Resonate server"),
    ({"url": "http://x", "request_timeout": 0}, "request_timeout=...) must be a positive"),
    ({"url": "http://x", "retry_for": -1}, "retry_for=...) must be a non-negative"),
    ({"url": "http://x", "retry_for": "30"}, "retry_for=...) must be a non-negative"),
])
def test_bad_client_timeouts_are_refused_saying_why(options: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Resonate(**options)
