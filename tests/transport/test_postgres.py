"""PostgresTransport: push delivery and timers across processes sharing one database.

Each transport here stands for one process (its own connections, subscribers and timer
loop), all on one fresh schema.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import psycopg
from anyio.streams.memory import MemoryObjectReceiveStream

from resonate_async._clock import SystemClock
from resonate_async.protocol import Execute, Message, Request, Unblock, decode_data
from resonate_async.transport._postgres import PostgresTransport

HOUR = 3_600_000
NOW = SystemClock().now_ms


def req(kind: str, data: dict[str, Any]) -> Request:
    request: Request = decode_data(kind, json.dumps(data).encode())
    return request


def root(promise_id: str, target: str, timeout: int = HOUR) -> Request:
    return req("promise.create", {"id": promise_id, "timeoutAt": NOW() + timeout, "tags": {
        "resonate:origin": promise_id, "resonate:branch": promise_id,
        "resonate:parent": promise_id, "resonate:target": target}})


@asynccontextmanager
async def processes(dsn: str, n: int, **options: Any) -> AsyncIterator[list[PostgresTransport]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(PostgresTransport(dsn, **options))
               for _ in range(n)]


async def collect(stream: MemoryObjectReceiveStream[Message], into: list[Message]) -> None:
    async for message in stream:
        into.append(message)


async def test_an_execute_reaches_exactly_one_of_two_workers_of_its_group(pg_dsn: str) -> None:
    async with processes(pg_dsn, 3) as (a, b, client):
        got: dict[str, list[Message]] = {"a": [], "b": []}
        async with anyio.create_task_group() as tg:
            for name, transport in (("a", a), ("b", b)):
                stream = transport.subscribe("workers", f"pid-{name}")
                await transport.wait_subscribed("workers", f"pid-{name}")
                tg.start_soon(collect, stream, got[name])
            ids = [f"job-{n}" for n in range(60)]
            for promise_id in ids:
                assert (await client.send(root(promise_id, "poll://any@workers"))).status == 200
            with anyio.fail_after(30):
                while len(got["a"]) + len(got["b"]) < len(ids):
                    await anyio.sleep(0.02)
            await anyio.sleep(0.3)  # a duplicate would arrive by now
            tg.cancel_scope.cancel()
        delivered = [m.task_id for m in got["a"] + got["b"] if isinstance(m, Execute)]
        assert sorted(delivered) == sorted(ids)  # each once, none lost


async def test_a_unicast_reaches_the_process_owning_its_pid_only(pg_dsn: str) -> None:
    async with processes(pg_dsn, 2, poll_interval=60.0) as (a, b):
        got: dict[str, list[Message]] = {"a": [], "b": []}
        async with anyio.create_task_group() as tg:
            for name, transport in (("a", a), ("b", b)):
                stream = transport.subscribe("g", f"pid-{name}", accepts_work=False)
                await transport.wait_subscribed("g", f"pid-{name}")
                tg.start_soon(collect, stream, got[name])
            promise = req("promise.create", {"id": "ext", "timeoutAt": NOW() + HOUR,
                                             "tags": {"resonate:external": "true"}})
            assert (await a.send(promise)).status == 200
            listen = req("promise.register_listener",
                         {"awaited": "ext", "address": "poll://uni@g/pid-b"})
            assert (await a.send(listen)).status == 200
            settle = req("promise.settle", {"id": "ext", "state": "resolved"})
            assert (await a.send(settle)).status == 200
            # poll_interval is a minute: only the notification can bring it this fast
            with anyio.fail_after(30):
                while not got["b"]:
                    await anyio.sleep(0.02)
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()
        assert got["a"] == []
        [message] = got["b"]
        assert isinstance(message, Unblock) and message.promise.id == "ext"
        assert message.promise.state == "resolved"


async def test_work_for_a_group_nobody_serves_is_kept_once_per_task(pg_dsn: str) -> None:
    async with processes(pg_dsn, 1, retry_timeout=100, poll_interval=0.05) as (a,):
        for n in range(5):
            assert (await a.send(root(f"idle-{n}", "poll://any@nobody"))).status == 200
        await anyio.sleep(1.0)  # the retry timer re-sends each execute about ten times
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute("SELECT ref, count(*) FROM resonate_outbox GROUP BY ref "
                                "ORDER BY ref").fetchall()
            tasks = conn.execute("SELECT record FROM resonate_tasks").fetchall()
        assert rows == [(f"idle-{n}", 1) for n in range(5)]
        assert all(json.loads(bytes(t[0]))["timer_at"] > NOW() - 1_000 for t in tasks)
        # and a worker that subscribes later still finds the work
        got: list[Message] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, a.subscribe("nobody", "late"), got)
            with anyio.fail_after(30):
                while len({m.task_id for m in got if isinstance(m, Execute)}) < 5:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()


async def test_old_undelivered_messages_are_purged(pg_dsn: str) -> None:
    async with processes(pg_dsn, 1) as (a,):
        assert (await a.send(root("stale", "poll://any@nobody"))).status == 200
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("UPDATE resonate_outbox SET created_at = now() - interval '1 hour'")
    async with processes(pg_dsn, 1) as (b,):
        with anyio.fail_after(30):
            while True:
                with psycopg.connect(pg_dsn) as conn:
                    left = conn.execute("SELECT count(*) FROM resonate_outbox").fetchone()
                if left == (0,):
                    break
                await anyio.sleep(0.05)
        assert (await b.send(req("task.get", {"id": "stale"}))).status == 200


class ManualClock:
    """A clock that moves only when the test says so (the loops poll it every 50 ms)."""

    def __init__(self) -> None:
        self.ms = NOW()

    def now_ms(self) -> int:
        return self.ms

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(min(seconds, 0.05))

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        with anyio.move_on_after(min(seconds, 0.05)):
            await event.wait()

    async def background(self) -> None:
        await anyio.sleep_forever()


async def test_timers_fire_once_with_three_processes_ticking(pg_dsn: str) -> None:
    clock = ManualClock()
    async with processes(pg_dsn, 3, poll_interval=0.05, clock=clock) as (a, _b, _c):
        roots = [f"t{n}" for n in range(30)]
        fires_at = clock.ms + 60_000
        for r in roots:
            claim = req("task.create", {"pid": "p", "ttl": HOUR, "action": {
                "kind": "promise.create", "head": {"corrId": "c", "version": "2026-04-01"},
                "data": {"id": r, "timeoutAt": clock.ms + HOUR, "tags": {
                    "resonate:origin": r, "resonate:branch": r, "resonate:parent": r,
                    "resonate:target": "poll://any@nobody"}}}})
            assert (await a.send(claim)).status == 200
            timer = f"{r}:1"
            fence = req("task.fence", {"id": r, "version": 1, "action": {
                "kind": "promise.create", "head": {"corrId": "c", "version": "2026-04-01"},
                "data": {"id": timer, "timeoutAt": fires_at, "tags": {
                    "resonate:origin": r, "resonate:branch": timer, "resonate:parent": r,
                    "resonate:timer": "true", "resonate:target": "poll://any@nobody"}}}})
            assert (await a.send(fence)).status == 200
            suspend = req("task.suspend", {"id": r, "version": 1, "actions": [{
                "kind": "promise.register_callback",
                "head": {"corrId": "c", "version": "2026-04-01"},
                "data": {"awaited": timer, "awaiter": r}}]})
            assert (await a.send(suspend)).status == 200
        clock.ms = fires_at + 1  # every process's timer loop sees the deadline pass
        with anyio.fail_after(30):
            for r in roots:
                while True:
                    answer = await a.send(req("task.get", {"id": r}))
                    if answer.data.task.state == "pending":
                        break
                    await anyio.sleep(0.05)
        await anyio.sleep(0.3)  # every loop has ticked past the deadline by now
        for r in roots:
            task = (await a.send(req("task.get", {"id": r}))).data.task
            assert (task.state, task.resumes) == ("pending", 1)


async def test_a_unicast_wakes_only_the_process_it_is_for(pg_dsn: str) -> None:
    async with processes(pg_dsn, 3, poll_interval=60.0) as (a, b, writer):
        claims = {"a": 0}
        claim = a._claim

        def counted(conn: Any, args: Any) -> Any:
            claims["a"] += 1
            return claim(conn, args)

        a._claim = counted  # type: ignore[method-assign]
        got: list[Message] = []
        async with anyio.create_task_group() as tg:
            a.subscribe("g", "pid-a")  # a worker of the same group
            await a.wait_subscribed("g", "pid-a")
            tg.start_soon(collect, b.subscribe("g", "pid-b", accepts_work=False), got)
            await b.wait_subscribed("g", "pid-b")
            await anyio.sleep(0.3)  # a's first claims (at start, at subscribe) are done
            before = claims["a"]
            promise = req("promise.create", {"id": "ext", "timeoutAt": NOW() + HOUR,
                                             "tags": {"resonate:external": "true"}})
            assert (await writer.send(promise)).status == 200
            listen = req("promise.register_listener",
                         {"awaited": "ext", "address": "poll://uni@g/pid-b"})
            assert (await writer.send(listen)).status == 200
            settle = req("promise.settle", {"id": "ext", "state": "resolved"})
            assert (await writer.send(settle)).status == 200
            with anyio.fail_after(30):  # by notification: the poll is a minute away
                while not got:
                    await anyio.sleep(0.02)
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()
        assert claims["a"] == before  # a's group was notified, but not for a
        [message] = got
        assert isinstance(message, Unblock) and message.promise.id == "ext"
