"""PostgresStorage's round trips: what a local step and a root cost, counted (never timed),
and the prepared statements that make them cheap surviving what PostgreSQL and psycopg do."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from resonate_async import Context, Resonate
from resonate_async.engine import Engine
from resonate_async.engine._postgres import PostgresStorage
from resonate_async.protocol import TaskFence
from resonate_async.transport._postgres import PostgresTransport, promises_read
from tests.engine.conftest import HOUR, T0, root_tags
from tests.engine.test_postgres import call


async def noop() -> None:
    return None


async def steps(ctx: Context, n: int) -> int:
    for _ in range(n):
        await ctx.run(noop)
    return n


async def one_step(ctx: Context) -> int:
    await ctx.run(noop)
    return 1


def _round_trips(transport: PostgresTransport) -> int:
    storages: list[PostgresStorage] = [e.storage for e in transport._engines]  # type: ignore[misc]
    return sum(s.round_trips for s in storages)


async def test_a_local_step_costs_one_round_trip_and_a_one_step_root_five(
        pg_dsn: str) -> None:
    transport = PostgresTransport(pg_dsn, poll_interval=60.0)  # no timer polls meanwhile
    resonate = Resonate(transport=transport)
    resonate.register(steps)
    resonate.register(one_step)
    async with resonate:
        # warm-up: every statement prepared on the connection that will run it
        assert await (await resonate.run(f"w-{uuid.uuid4().hex[:8]}", steps, 3)) == 3
        assert await (await resonate.run(f"w-{uuid.uuid4().hex[:8]}", one_step)) == 1
        n = 50
        before = _round_trips(transport)
        assert await (await resonate.run(f"s-{uuid.uuid4().hex[:8]}", steps, n)) == n
        per_step = (_round_trips(transport) - before) / n
        roots = 10
        before = _round_trips(transport)
        for _ in range(roots):
            assert await (await resonate.run(f"r-{uuid.uuid4().hex[:8]}", one_step)) == 1
        per_root = (_round_trips(transport) - before) / roots
    # per step: one fence + promise.record, one statement with BEGIN and COMMIT (4 before
    # promise.record: a fence create and a fence settle, each a read, then writes + COMMIT);
    # the workflow's own create and fulfill spread over the n steps (< 0.1 each)
    assert 1 <= per_step < 1.1, per_step
    # task.create (its read and preload together, then writes + COMMIT), the step, and
    # task.fulfill (read, writes + COMMIT); 9 before promise.record, 24 before phase 2b
    assert per_root <= 5.5, per_root


def test_the_reads_of_a_fence_are_named_ahead() -> None:
    fence = msgspec.convert({"id": "r", "version": 1, "action": {
        "kind": "promise.create", "head": {"corrId": "c", "version": "2026-04-01"},
        "data": {"id": "r:1", "timeoutAt": T0}}}, TaskFence)
    assert promises_read(fence) == ("r", "r:1")


@pytest.mark.parametrize("auto_prepared", [0, 8])
def test_prepared_statements_survive_a_rolled_back_transaction(
        pg_dsn: str, auto_prepared: int) -> None:
    # psycopg answers a ROLLBACK with DEALLOCATE ALL once it has prepared statements of its
    # own (a query run 5 times outside a transaction): the storage's must not go with them.
    engine = Engine(PostgresStorage(pg_dsn))
    try:
        for i in range(3):  # the statements of promise.create get prepared after the first
            status, _ = call(engine, "promise.create", {
                "id": f"p{i}", "timeoutAt": T0 + HOUR, "tags": root_tags(f"p{i}")})
            assert status == 200
        storage: PostgresStorage = engine.storage  # type: ignore[assignment]
        for _ in range(auto_prepared):
            assert storage.get_promise("p0") is not None  # outside a transaction
            storage.next_due()
        def failing_request() -> None:  # reads, then fails: the storage rolls back
            with storage.transaction():
                storage.get_promise("p1")
                raise RuntimeError("the request failed")

        with pytest.raises(RuntimeError, match="the request failed"):
            failing_request()
        status, data = call(engine, "promise.create", {
            "id": "p9", "timeoutAt": T0 + HOUR, "tags": root_tags("p9")})
        assert status == 200, data
        status, data = call(engine, "promise.get", {"id": "p1"})
        assert status == 200 and data["promise"]["id"] == "p1", data
    finally:
        engine.close()
