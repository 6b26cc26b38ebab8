"""Bugs the simulator found, each pinned by a test that does not need the simulator."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from resonate_async import Context, NotStartedError, Resonate
from resonate_async.engine import Engine
from resonate_async.protocol import PromiseGet, Request, Response
from resonate_async.transport import EmbeddedTransport
from tests.runtime.spy import SpyTransport

pytestmark = pytest.mark.anyio


class _HeldCreate(SpyTransport):
    """Holds ``task.create`` answers until ``release`` is set."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, [])
        self.sent = anyio.Event()
        self.release = anyio.Event()

    async def send(self, request: Request) -> Response:
        response = await super().send(request)
        if request.KIND == "task.create":
            self.sent.set()
            await self.release.wait()
        return response


async def test_run_raises_not_started_when_the_resonate_stops_during_task_create() -> None:
    engine = Engine.memory()
    transport = _HeldCreate(EmbeddedTransport(engine, close_engine=False))
    app = Resonate(transport=transport)

    @app.register
    async def work(ctx: Context) -> int:
        return 1

    outcome: list[BaseException] = []

    async def start() -> None:
        try:
            await app.run("stopped-mid-create", work)
        except BaseException as exc:  # the test inspects what run raised
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        async with app:
            tg.start_soon(start)
            await transport.sent.wait()
        transport.release.set()
    assert len(outcome) == 1 and isinstance(outcome[0], NotStartedError), outcome
    assert "stopped while starting 'stopped-mid-create'" in str(outcome[0])
    # the execution exists (another worker resumes it once the lease expires)
    assert engine.execute(PromiseGet("stopped-mid-create"), 0).data.promise.state == "pending"
