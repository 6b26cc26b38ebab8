"""Durable structured concurrency: function-level retries, promise params, ``ctx.info``."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from resonate_async import (
    Constant,
    Context,
    Never,
    RegistrationError,
    Resonate,
)
from resonate_async.testing import check_replay

# retries ------------------------------------------------------------------------------------


def _flaky(calls: list[int], failures: int) -> Callable[[], str]:
    def flaky() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise ConnectionError(f"failure {len(calls)}")
        return "ok"

    return flaky


async def test_registered_policy_is_the_default_of_a_ctx_run_step(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Constant(max_retries=2, wait=0.01))(
        _flaky(calls, failures=2))

    @resonate.register
    async def flow(ctx: Context) -> str:
        return str(await ctx.run(flaky))

    async with resonate:
        handle = await resonate.run(uid("reg-run"), flow)
        with anyio.fail_after(20):
            assert await handle == "ok"
    assert len(calls) == 3


async def test_registered_policy_bounds_the_retries_of_a_ctx_run_step(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Constant(max_retries=1, wait=0.01))(
        _flaky(calls, failures=5))

    @resonate.register
    async def flow(ctx: Context) -> str:
        return str(await ctx.run(flaky))

    async with resonate:
        handle = await resonate.run(uid("reg-bound"), flow)
        with anyio.fail_after(20), pytest.raises(ConnectionError, match="failure 2"):
            await handle
    assert len(calls) == 2  # not the instance default's 30 retries


async def test_call_options_override_the_registered_policy(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Constant(max_retries=5, wait=0.01))(
        _flaky(calls, failures=5))

    @resonate.register
    async def flow(ctx: Context) -> str:
        return str(await ctx.run(flaky).options(retry=Never()))

    async with resonate:
        handle = await resonate.run(uid("override"), flow)
        with anyio.fail_after(20), pytest.raises(ConnectionError, match="failure 1"):
            await handle
    assert len(calls) == 1


async def test_a_leaf_rpc_target_is_retried_per_its_registered_policy(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    resonate.register(name="flaky", retry=Constant(max_retries=3, wait=0.01))(
        _flaky(calls, failures=2))

    @resonate.register
    async def flow(ctx: Context) -> str:
        return str(await ctx.rpc("flaky"))

    async with resonate:
        handle = await resonate.run(uid("reg-rpc"), flow)
        with anyio.fail_after(20):
            assert await handle == "ok"
    assert len(calls) == 3


async def test_a_leaf_root_is_retried_per_its_registered_policy(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Constant(max_retries=3, wait=0.01))(
        _flaky(calls, failures=2))

    async with resonate:
        handle = await resonate.run(uid("reg-root"), flaky)
        with anyio.fail_after(20):
            assert await handle == "ok"
        assert (await resonate.promises.get(handle.id)).state == "resolved"
    assert len(calls) == 3


async def test_a_leaf_root_with_never_fails_on_its_first_error(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    calls: list[int] = []
    flaky = resonate.register(name="flaky", retry=Never())(_flaky(calls, failures=1))

    async with resonate:
        handle = await resonate.run(uid("root-never"), flaky)
        with anyio.fail_after(20), pytest.raises(ConnectionError, match="failure 1"):
            await handle
        assert (await resonate.promises.get(handle.id)).state == "rejected"
    assert len(calls) == 1


async def test_a_leaf_root_uses_the_instance_policy_without_its_own(
        connect: Callable[..., Resonate], uid: Callable[[str], str]) -> None:
    resonate = connect(retry=Constant(max_retries=2, wait=0.01))
    calls: list[int] = []
    flaky = resonate.register(name="flaky")(_flaky(calls, failures=2))

    async with resonate:
        handle = await resonate.run(uid("root-instance"), flaky)
        with anyio.fail_after(20):
            assert await handle == "ok"
    assert len(calls) == 3


def test_retry_on_a_durable_function_is_refused_with_a_hint(resonate: Resonate) -> None:
    async def flow(ctx: Context) -> None:
        return None

    with pytest.raises(RegistrationError, match="leaf functions only.*replayed"):
        resonate.register(retry=Constant())(flow)


def test_retry_that_is_not_a_policy_is_refused(resonate: Resonate) -> None:
    def leaf() -> None:
        return None

    with pytest.raises(RegistrationError, match="must be a retry policy.*got int 3"):
        resonate.register(retry=3)(leaf)  # type: ignore[call-overload]


def always_down() -> None:
    raise ConnectionError("down")


async def test_registered_retries_replay_the_same_outcome_across_crashes(
        resonate: Resonate) -> None:
    resonate.register(retry=Constant(max_retries=3, wait=5))(always_down)

    @resonate.register
    async def flow(ctx: Context) -> str:
        try:
            await ctx.run(always_down)
        except ConnectionError as exc:
            return f"gave up: {exc}"
        return "unreachable"

    report = await check_replay(resonate, flow)
    assert report.value == "gave up: down"
