"""Errors across durable boundaries, retries of leaf steps, and mistaken inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from resonate_async import (
    ApplicationError,
    Constant,
    Context,
    ContextError,
    EncodingError,
    Exponential,
    InvalidIdError,
    Linear,
    Never,
    NotStartedError,
    RegistrationError,
    Resonate,
    ResonateError,
)


class PaymentDeclined(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def test_errors_keep_their_type_across_run_and_rpc(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    resonate.register_error(PaymentDeclined)

    class Unregistered(Exception):  # defined in a function: no process can rebuild it
        pass

    @resonate.register
    def builtin_failure() -> None:
        raise ValueError("bad value")

    @resonate.register
    async def registered_failure(ctx: Context) -> None:
        raise PaymentDeclined("card expired")

    @resonate.register
    def unregistered_failure() -> None:
        raise Unregistered("who knows")

    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        caught: list[str] = []
        try:
            await ctx.run(builtin_failure).options(retry=Never())
        except ValueError as exc:
            caught.append(f"ValueError: {exc}")
        try:
            await ctx.rpc(registered_failure)
        except PaymentDeclined as exc:
            caught.append(f"PaymentDeclined: {exc.reason}")
        try:
            await ctx.run(unregistered_failure).options(retry=Never())
        except ApplicationError as exc:
            caught.append(f"ApplicationError: {exc.type_name.rsplit('.', 1)[-1]}: "
                          f"{exc.message}")
        return caught

    async with resonate:
        handle = await resonate.run(uid("errors"), flow)
        with anyio.fail_after(10):
            assert await handle == [
                "ValueError: bad value",
                "PaymentDeclined: card expired",
                "ApplicationError: Unregistered: who knows",
            ]


async def test_an_uncaught_error_rejects_the_execution_with_its_type(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def failing(ctx: Context) -> None:
        raise KeyError("missing")

    async with resonate:
        handle = await resonate.run(uid("fail"), failing)
        with anyio.fail_after(10), pytest.raises(KeyError, match="missing"):
            await handle
        record = await resonate.promises.get(handle.id)
    assert record.state == "rejected"


@pytest.mark.parametrize(("policy", "failures", "expected_calls", "succeeds"), [
    (Constant(max_retries=3, wait=0.01), 2, 3, True),
    (Linear(max_retries=1, step=0.01), 2, 2, False),
    (Exponential(max_retries=5, base=0.01, max_delay=0.02), 4, 5, True),
    (Never(), 1, 1, False),
    (Constant(max_retries=5, wait=0.01, non_retryable=(PermissionError,)), 5, 1, False),
])
async def test_leaf_steps_are_retried_by_their_policy(
        resonate: Resonate, uid: Callable[[str], str], policy: object, failures: int,
        expected_calls: int, succeeds: bool) -> None:
    calls: list[int] = []

    @resonate.register
    def flaky() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise PermissionError(f"failure {len(calls)}")
        return "ok"

    @resonate.register
    async def flow(ctx: Context) -> str:
        return await ctx.run(flaky).options(retry=policy)  # type: ignore[arg-type]

    async with resonate:
        handle = await resonate.run(uid("retry"), flow)
        with anyio.fail_after(10):
            if succeeds:
                assert await handle == "ok"
            else:
                with pytest.raises(PermissionError):
                    await handle
    assert len(calls) == expected_calls


async def test_retries_stop_at_the_step_deadline(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []

    @resonate.register
    def always_fails() -> None:
        calls.append(1)
        raise RuntimeError("down")

    @resonate.register
    async def flow(ctx: Context) -> None:
        await ctx.run(always_fails).options(
            # a deadline of four waits: room for the create and the thread hops of a
            # loaded machine, and still a bound on the retries (at most 4 calls)
            retry=Constant(max_retries=1000, wait=0.5), timeout=1.75)

    async with resonate:
        handle = await resonate.run(uid("deadline"), flow)
        with anyio.fail_after(10), pytest.raises(RuntimeError, match="down"):
            await handle
    assert 1 < len(calls) <= 4


async def test_unknown_function_name_is_a_clear_error(resonate: Resonate) -> None:
    async with resonate:
        with pytest.raises(RegistrationError, match=r"register it with @resonate\.register"):
            await resonate.run("x-1", "nobody")


async def test_running_an_unregistered_function_is_a_clear_error(resonate: Resonate) -> None:
    async def stray(ctx: Context) -> None: ...

    async with resonate:
        with pytest.raises(RegistrationError, match=r"decorate it with @resonate\.register"):
            await resonate.run("x-2", stray)


def test_duplicate_registration_of_another_function_is_refused(resonate: Resonate) -> None:
    @resonate.register(name="job")
    async def first(ctx: Context) -> None: ...

    async def second(ctx: Context) -> None: ...

    with pytest.raises(RegistrationError, match="already registered as 'job' version 1"):
        resonate.register(name="job")(second)
    resonate.register(name="job", version=2)(second)  # a new version is fine
    resonate.register(name="job")(first)  # registering the same function again is fine


async def test_non_serializable_argument_names_its_type_and_the_call(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def takes(ctx: Context, x: object) -> None: ...

    async with resonate:
        with pytest.raises(EncodingError, match="cannot encode a value of type lock"):
            await resonate.run(uid("enc"), takes, threading_lock())


def threading_lock() -> object:
    import threading

    return threading.Lock()


async def test_non_serializable_step_result_fails_that_call_not_the_task(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    def bad() -> object:
        return threading_lock()

    @resonate.register
    async def flow(ctx: Context) -> str:
        try:
            await ctx.run(bad)
        except EncodingError as exc:
            return f"caught: {'bad' in str(exc)}"
        return "no error"

    async with resonate:
        handle = await resonate.run(uid("encres"), flow)
        with anyio.fail_after(10):
            assert await handle == "caught: True"


async def test_root_id_with_a_colon_is_refused(resonate: Resonate) -> None:
    @resonate.register
    async def job(ctx: Context) -> None: ...

    async with resonate:
        with pytest.raises(InvalidIdError, match="must not contain ':'"):
            await resonate.run("a:b", job)
        with pytest.raises(InvalidIdError, match="must not be empty"):
            await resonate.rpc("", job)


async def test_wrong_arguments_are_refused_before_anything_is_created(
        resonate: Resonate) -> None:
    @resonate.register
    async def job(ctx: Context, a: int) -> None: ...

    async with resonate:
        with pytest.raises(TypeError, match="job"):
            await resonate.run("args-1", job, 1, 2)
        with pytest.raises(Exception, match="no promise"):
            await resonate.get("args-1")


async def test_using_the_context_outside_its_function_is_a_clear_error(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    leaked: list[Context] = []

    @resonate.register
    def step() -> int:
        return 1

    @resonate.register
    async def flow(ctx: Context) -> None:
        leaked.append(ctx)

    async with resonate:
        handle = await resonate.run(uid("leak"), flow)
        with anyio.fail_after(10):
            await handle
        with pytest.raises(ContextError, match="outside its durable function"):
            await leaked[0].run(step)


async def test_awaiting_a_handle_from_another_execution_is_a_clear_error(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    smuggled: list[object] = []

    @resonate.register
    def step() -> int:
        return 1

    @resonate.register
    async def maker(ctx: Context) -> None:
        smuggled.append(await ctx.run(step).spawn())

    @resonate.register
    async def thief(ctx: Context) -> str:
        try:
            await smuggled[0]  # type: ignore[misc]
        except ContextError as exc:
            return str(exc)
        return "no error"

    async with resonate:
        with anyio.fail_after(10):
            await (await resonate.run(uid("maker"), maker))
            message = await (await resonate.run(uid("thief"), thief))
    assert "belongs to another execution" in message


async def test_calls_before_the_client_starts_say_how_to_start_it(resonate: Resonate) -> None:
    @resonate.register
    async def job(ctx: Context) -> None: ...

    with pytest.raises(NotStartedError, match="async with resonate"):
        await resonate.run("early-1", job)


def test_a_file_that_is_not_an_engine_file_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.db"
    garbage.write_text("this is not a database " * 100)
    with pytest.raises(ResonateError, match="cannot be used as an embedded engine file"):
        Resonate(path=garbage)


async def test_the_sdks_own_errors_keep_their_type_across_boundaries(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def misuse(ctx: Context) -> None:
        await ctx.sleep(-1)  # a ContextError, raised in a nested durable function

    @resonate.register
    async def caller(ctx: Context) -> str:
        try:
            await ctx.run(misuse)
        except ContextError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    async with resonate:
        with anyio.fail_after(10):
            message = await (await resonate.run(uid("own"), caller))
    assert message.startswith("ContextError: ctx.sleep expects a non-negative duration")


def test_a_name_that_is_not_a_string_is_refused(resonate: Resonate) -> None:
    async def job(ctx: Context) -> None: ...

    with pytest.raises(RegistrationError, match="name must be a str"):
        resonate.register(name=5)(job)  # type: ignore[arg-type]


async def test_call_tags_that_break_the_rules_are_refused_at_the_call(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    def step() -> int:
        return 1

    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        messages = []
        for tags in ({"resonate:target": "x"}, {"team": 7}):
            try:
                ctx.run(step).options(tags=tags)  # type: ignore[dict-item]
            except ContextError as exc:
                messages.append(str(exc))
        try:
            ctx.run(step).options(timeout=-5)
        except ContextError as exc:
            messages.append(str(exc))
        return messages

    async with resonate:
        with anyio.fail_after(10):
            messages = await (await resonate.run(uid("tags"), flow))
    assert "'resonate:' prefix is reserved" in messages[0]
    assert "tags must map str to str, got 'team': 7" in messages[1]
    assert "timeout must be a positive, finite number of seconds" in messages[2]
