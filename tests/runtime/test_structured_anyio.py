"""anyio cancellation inside a durable function is wall-clock time in one process, not a
durable step (issue 14): the wrong uses fail clearly, naming what to use instead, rather than
leave the function waiting for what it no longer needs.

Both tests fail until core/_execution.py detects these uses (see the report of issue 14):
today the first waits for the promise's own timeout (its ``fail_after`` is forgotten when
the function suspends), the second for the losing promise (with an INFO hint only).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest

from resonate_async import Context, ContextError, Resonate


async def test_a_fail_after_around_a_durable_wait_fails_clearly_at_once(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def expense(ctx: Context) -> str:
        approval = await ctx.promise(timeout=timedelta(hours=1)).spawn()
        with anyio.fail_after(5):  # the wrong way: forgotten as soon as the function suspends
            return str(await approval)

    root = uid("fail-after")
    async with resonate:
        handle = await resonate.run(root, expense)
        with anyio.fail_after(10), pytest.raises(ContextError) as caught:  # not the hour
            await handle
    message = str(caught.value)
    assert f"{root}:1" in message and "not durable" in message, message
    assert "ctx.first" in message and "ctx.sleep" in message, message


async def test_an_anyio_race_that_cancels_a_durable_wait_fails_clearly(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def expense(ctx: Context) -> str:
        approval = await ctx.promise(timeout=timedelta(hours=1)).spawn()
        reminder = await ctx.sleep(0.05).spawn()
        async with anyio.create_task_group() as tg:  # the wrong way: not durable
            async def wait(handle: object) -> None:
                await handle  # type: ignore[misc]
                tg.cancel_scope.cancel()

            tg.start_soon(wait, approval)
            tg.start_soon(wait, reminder)
        return "returned"

    root = uid("anyio-race")
    async with resonate:
        handle = await resonate.run(root, expense)
        with anyio.fail_after(10), pytest.raises(ContextError) as caught:  # not the hour
            await handle
    message = str(caught.value)
    assert f"{root}:1" in message and "cancel scope" in message, message
    assert "ctx.first" in message and "handle.cancel()" in message, message
