"""PostgresTransport's one-round-trip ``task.fence`` + ``promise.record`` (a local step).

The transport answers a fenced ``promise.record`` with one statement sent from the event loop
when the fence holds and the promise is new, and lets the engine answer everything else.
Every answer must be the engine's: each request below goes to a PostgreSQL transport and to
a memory engine in the same state at the same time, and their envelopes must be identical.
"""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
import psycopg

from resonate_async.engine import Engine
from resonate_async.engine._postgres import PostgresStorage
from resonate_async.protocol import Request, decode_data, encode_response
from resonate_async.transport._postgres import PostgresTransport
from tests.transport.test_postgres import HOUR, ManualClock

HEAD = {"corrId": "c", "version": "2026-04-01"}
TARGET = "poll://any@nobody"


def req(kind: str, data: dict[str, Any]) -> Request:
    request: Request = decode_data(kind, json.dumps(data).encode())
    return request


def record(task: str, version: int, promise_id: str, timeout_at: int, *,
           state: str = "resolved", tags: dict[str, str] | None = None) -> Request:
    return req("task.fence", {"id": task, "version": version, "action": {
        "kind": "promise.record", "head": HEAD, "state": state,
        "value": {"data": "b2s=", "headers": {"h": "1"}},
        "data": {"id": promise_id, "timeoutAt": timeout_at, "param": {"data": "cA=="},
                 "tags": tags if tags is not None else {
                     "resonate:scope": "local", "resonate:branch": task,
                     "resonate:parent": task, "resonate:origin": task}}}})


class StillClock(ManualClock):
    """A manual clock whose waits last as long as asked (the timer loop stays asleep)."""

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await event.wait()


class Twins:
    """One PostgreSQL transport and one memory engine, sent the same requests at one time."""

    def __init__(self, transport: PostgresTransport, clock: ManualClock) -> None:
        self.transport = transport
        self.clock = clock
        self.memory = Engine.memory()

    async def send(self, request: Request) -> tuple[int, Any]:
        got = encode_response("k", "", await self.transport.send(request))
        want = encode_response("k", "", self.memory.execute(request, self.clock.ms,
                                                              fence_preload=False))
        assert json.loads(got) == json.loads(want)
        env = json.loads(got)
        return env["head"]["status"], env["data"]

    def round_trips(self) -> int:
        storages: list[PostgresStorage] = [
            e.storage for e in self.transport._engines]  # type: ignore[misc]
        return sum(s.round_trips for s in storages)


async def acquired_root(twins: Twins, root: str, timeout: int = HOUR) -> None:
    claim = req("task.create", {"pid": "p", "ttl": HOUR, "action": {
        "kind": "promise.create", "head": HEAD,
        "data": {"id": root, "timeoutAt": twins.clock.ms + timeout, "tags": {
            "resonate:origin": root, "resonate:branch": root, "resonate:parent": root,
            "resonate:target": TARGET}}}})
    status, data = await twins.send(claim)
    assert status == 200 and data["task"]["state"] == "acquired", data


async def test_a_new_recorded_step_is_one_round_trip_and_answered_as_the_engine_does(
        pg_dsn: str) -> None:
    clock = StillClock()
    async with PostgresTransport(pg_dsn, clock=clock, poll_interval=60.0) as transport:
        twins = Twins(transport, clock)
        await acquired_root(twins, "r")
        with anyio.fail_after(30):  # the timer loop saw the lease, and sleeps till then
            while transport._timers_at == math.inf:
                await anyio.sleep(0.01)
        for n in range(1, 6):
            before = twins.round_trips()
            status, data = await twins.send(record("r", 1, f"r:{n}", clock.ms + HOUR))
            # one; the first time on this connection one more prepares the statement
            assert twins.round_trips() - before == (2 if n == 1 else 1)
            assert status == 200, data
            inner = data["action"]
            assert inner["kind"] == "promise.record" and inner["head"]["status"] == 200
            assert inner["data"]["promise"]["state"] == "resolved"
            clock.ms += 7
        # durable, as the engine would have written it: settled, unarmed, its branch indexed
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute("SELECT id, state, branch, armed_at FROM resonate_promises "
                                "WHERE id LIKE 'r:%' ORDER BY id").fetchall()
        assert rows == [(f"r:{n}", "resolved", "r", None) for n in range(1, 6)]
        status, data = await twins.send(req("promise.get", {"id": "r:2"}))
        assert status == 200 and data["promise"]["value"]["data"] == "b2s="


async def test_every_other_recorded_step_gets_the_engines_answer(pg_dsn: str) -> None:
    clock = ManualClock()
    async with PostgresTransport(pg_dsn, clock=clock, poll_interval=60.0) as transport:
        twins = Twins(transport, clock)
        await acquired_root(twins, "r")
        later = clock.ms + HOUR
        assert (await twins.send(record("r", 1, "r:1", later)))[0] == 200
        clock.ms += 5
        # recorded again (a replay): the stored promise, unchanged
        status, data = await twins.send(record("r", 1, "r:1", later, state="rejected"))
        assert status == 200 and data["action"]["data"]["promise"]["state"] == "resolved"
        # created pending by an earlier run: settled now
        create = req("task.fence", {"id": "r", "version": 1, "action": {
            "kind": "promise.create", "head": HEAD,
            "data": {"id": "r:2", "timeoutAt": later, "tags": {"resonate:scope": "local"}}}})
        assert (await twins.send(create))[0] == 200
        status, data = await twins.send(record("r", 1, "r:2", later, state="rejected"))
        assert data["action"]["data"]["promise"]["state"] == "rejected", data
        # the fence fails: wrong version, no such task
        assert (await twins.send(record("r", 2, "r:3", later)))[0] == 409
        assert (await twins.send(record("nope", 1, "nope:1", later)))[0] == 404
        # refused: the task's own promise, a target tag, a bad id
        assert (await twins.send(record("r", 1, "r", later)))[0] == 400
        assert (await twins.send(record("r", 1, "r:4", later, tags={
            "resonate:target": TARGET})))[0] == 400
        assert (await twins.send(record("r", 1, "", later)))[0] == 400
        # past its own deadline: created timed out
        status, data = await twins.send(record("r", 1, "r:5", clock.ms - 1))
        assert data["action"]["data"]["promise"]["state"] == "rejected_timedout", data
        # the task's promise past its deadline: it times out, and the fence fails
        await acquired_root(twins, "s", timeout=1_000)
        clock.ms += 1_000
        assert (await twins.send(record("s", 1, "s:1", later)))[0] == 409
        assert (await twins.send(req("promise.get", {"id": "s:1"})))[0] == 404
        assert (await twins.send(req("promise.get", {"id": "s"})))[1]["promise"]["state"] \
            == "rejected_timedout"

