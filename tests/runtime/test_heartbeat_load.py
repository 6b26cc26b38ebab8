"""Leases survive a slow server while a worker holds many tasks.

CI's chaos test once lost every lease under load: the worker sent one heartbeat per origin,
one after another, each after a read of every watched root, so with 64 tasks held the last
lease was extended seconds after it had lapsed, and the tasks went round from worker to
worker without finishing. Heartbeats now go out together, before the root reads, and the
reads never delay the next heartbeat.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from resonate_async import Context
from resonate_async.protocol import PromiseGet, Request, Response, TaskHeartbeat
from tests.runtime.conftest import Connect
from tests.runtime.spy import SpyTransport

pytestmark = pytest.mark.slow

TTL = 2.0  # seconds; heartbeats every 1 s
DELAY = 0.25  # what each heartbeat and root read costs on this "server"
ROOTS = 12  # one after another: 12 x (0.25 + 0.25) = 6 s between renewals of the last lease
HOLD = 5.0  # each root's step outlives two leases


class SlowServer(SpyTransport):
    """Every heartbeat and every promise read takes ``DELAY`` seconds to answer."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, [])

    async def send(self, request: Request) -> Response:
        if isinstance(request, TaskHeartbeat | PromiseGet):
            await anyio.sleep(DELAY)
        return await super().send(request)


async def test_a_worker_holding_many_tasks_keeps_every_lease_on_a_slow_server(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(ttl=TTL, wrap=SlowServer)
    ran: Counter[int] = Counter()

    async def hold(i: int) -> int:
        ran[i] += 1
        await anyio.sleep(HOLD)
        return i

    @resonate.register
    async def holder(ctx: Context, i: int) -> int:
        return await ctx.run(hold, i)

    with capture_logs() as logs:
        async with resonate:
            handles = [await resonate.run(uid(f"held-{i}"), holder, i) for i in range(ROOTS)]
            with anyio.fail_after(120):  # "it finished", not "it was fast"
                results = [await h.result() for h in handles]

    assert results == list(range(ROOTS))
    lost = [e for e in logs if e["event"] in ("task_lost", "execution_settled_elsewhere")]
    assert lost == [], lost
    assert ran == Counter(range(ROOTS)), "a step ran again: its lease lapsed"
