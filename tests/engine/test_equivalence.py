"""Memory, SQLite and PostgreSQL storage answer every operation sequence byte-identically.

Random sequences of requests (a small id alphabet, so operations collide), ticks with an
advancing clock and drains run against the three engines side by side. After every step the two
must have given the same bytes, and the engine's invariants must hold.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resonate_async.engine import Engine
from resonate_async.engine._postgres import PostgresStorage
from resonate_async.protocol import TAG_TARGET, Promise
from resonate_async.protocol._wire import decode_data, encode_response
from tests._postgres import PostgresServer, fresh_schema
from tests.engine.conftest import ACTION_HEAD, envelope

TARGET = "poll://any@default"
IDS = ["a", "a:1", "a:2", "a:1.1", "b", "b:1"]
PIDS = ["p1", "p2"]
ADDRESSES = ["poll://uni@default/c1", "poll://uni@default/c2"]
SETTLE_STATES = ["resolved", "rejected", "rejected_canceled"]


def tags_for(promise_id: str, flavour: str) -> dict[str, str]:
    origin, _, rest = promise_id.partition(":")
    parent = origin if "." not in rest else f"{origin}:{rest.rpartition('.')[0]}"
    if not rest:  # roots are mostly runnable, so that task operations have tasks to act on
        tags = {"resonate:origin": origin, "resonate:branch": origin, "resonate:parent": origin}
        flavour = flavour if flavour in ("external", "bare") else "target"
    elif flavour == "local":
        tags = {"resonate:origin": origin, "resonate:branch": origin, "resonate:parent": parent}
    else:
        tags = {"resonate:origin": origin, "resonate:branch": promise_id,
                "resonate:parent": parent}
    if flavour == "target":
        tags[TAG_TARGET] = TARGET
    elif flavour == "timer":
        tags["resonate:timer"] = "true"
    elif flavour == "external":
        tags["resonate:external"] = "true"
    elif flavour == "bare":
        tags = {}
    return tags


promise_ids = st.sampled_from(IDS)
task_ids = st.sampled_from(["a", "a", "a:1", "b"])
flavours = st.sampled_from(["target", "target", "timer", "external", "local", "bare"])
timeouts = st.sampled_from([-1, 0, 500, 5_000, 60_000, 600_000, 600_000, 3_600_000])
versions = st.sampled_from(["current", "current", "current", 0, 1, 2])
pids = st.sampled_from(PIDS)
ttls = st.sampled_from([1_000, 20_000, 90_000])


def create_data(promise_id: str, flavour: str, timeout: int) -> dict[str, Any]:
    return {"id": promise_id, "timeoutAt": ("now", timeout),
            "tags": tags_for(promise_id, flavour)}


creates = st.builds(lambda i, f, t: ("promise.create", create_data(i, f, t)),
                    promise_ids, flavours, timeouts)
task_creates = st.builds(lambda i, p, ttl, t: ("task.create", {
    "pid": p, "ttl": ttl, "action": {"kind": "promise.create", "head": ACTION_HEAD,
                                     "data": create_data(i, "target", t)}}),
    promise_ids, pids, ttls, timeouts)
requests = st.one_of(
    creates, creates, creates, task_creates, task_creates,
    st.builds(lambda i, s: ("promise.settle", {"id": i, "state": s}),
              promise_ids, st.sampled_from(SETTLE_STATES)),
    st.builds(lambda i: ("promise.get", {"id": i}), promise_ids),
    st.builds(lambda a, b: ("promise.register_callback", {"awaited": a, "awaiter": b}),
              promise_ids, promise_ids),
    st.builds(lambda a, addr: ("promise.register_listener", {"awaited": a, "address": addr}),
              promise_ids, st.sampled_from(ADDRESSES)),
    st.builds(lambda s, lim, c: ("promise.search", {k: v for k, v in
                                                    (("state", s), ("limit", lim), ("cursor", c))
                                                    if v is not None}),
              st.sampled_from([None, "pending", "resolved"]), st.sampled_from([None, 1, 2]),
              st.sampled_from([None, "a", "a:1"])),
    task_creates,
    st.builds(lambda i, v, p, ttl: ("task.acquire", {"id": i, "version": v, "pid": p,
                                                     "ttl": ttl}),
              task_ids, versions, pids, ttls),
    st.builds(lambda i, v, aw: ("task.suspend", {"id": i, "version": v, "actions": [
        {"kind": "promise.register_callback", "head": ACTION_HEAD,
         "data": {"awaited": a, "awaiter": i}} for a in aw]}),
        task_ids, versions,
        st.lists(st.sampled_from(["a:1", "a:2", "a:1.1", "b:1"]), min_size=1, max_size=2)),
    st.builds(lambda i, v, s: ("task.fulfill", {"id": i, "version": v, "action": {
        "kind": "promise.settle", "head": ACTION_HEAD, "data": {"id": i, "state": s}}}),
        task_ids, versions, st.sampled_from(SETTLE_STATES)),
    st.builds(lambda i, v, c, f, t: ("task.fence", {"id": i, "version": v, "action": {
        "kind": "promise.create", "head": ACTION_HEAD, "data": create_data(c, f, t)}}),
        task_ids, versions, promise_ids, flavours, timeouts),
    st.builds(lambda i, v, c, s: ("task.fence", {"id": i, "version": v, "action": {
        "kind": "promise.settle", "data": {"id": c, "state": s}}}),
        task_ids, versions, promise_ids, st.sampled_from(SETTLE_STATES)),
    st.builds(lambda i, v, c, f, t, s: ("task.fence", {"id": i, "version": v, "action": {
        "kind": "promise.record", "data": create_data(c, f, t), "state": s,
        "value": {"data": "v"}}}),
        task_ids, versions, promise_ids, flavours, timeouts, st.sampled_from(SETTLE_STATES)),
    st.builds(lambda p, ts: ("task.heartbeat", {"pid": p, "tasks": [
        {"id": i, "version": v} for i, v in ts]}),
        pids, st.lists(st.tuples(task_ids, versions), min_size=1, max_size=2)),
    st.builds(lambda k, i: (k, {"id": i}),
              st.sampled_from(["task.get", "task.halt", "task.continue"]), promise_ids),
    st.builds(lambda i, v: ("task.release", {"id": i, "version": v}), task_ids, versions),
    st.builds(lambda s: ("task.search", {"state": s} if s else {}),
              st.sampled_from([None, "pending", "acquired", "suspended"])),
    st.builds(lambda i, c, t: ("schedule.create", {
        "id": i, "cron": c, "promiseId": "{{.id}}-{{.timestamp}}", "promiseTimeout": t,
        "promiseTags": {TAG_TARGET: TARGET}}),
        st.sampled_from(["s", "t"]), st.sampled_from(["* * * * *", "*/20 * * * * *"]),
        st.sampled_from([1_000, 100_000])),
    st.builds(lambda k, i: (k, {"id": i}),
              st.sampled_from(["schedule.get", "schedule.delete"]), st.sampled_from(["s", "t"])),
    st.just(("schedule.search", {"limit": 1})),
)
steps = st.one_of(
    requests.map(lambda r: ("request", r)),
    requests.map(lambda r: ("request", r)),
    requests.map(lambda r: ("request", r)),
    st.sampled_from([0, 1, 500, 10_000, 30_000, 70_000]).map(lambda dt: ("tick", dt)),
    st.just(("drain", None)),
)


# Every sequence starts from a few live tasks, so that the random steps have something to hit.
PRELUDE = [
    ("request", ("task.create", {"pid": "p1", "ttl": 90_000, "action": {
        "kind": "promise.create", "head": ACTION_HEAD,
        "data": create_data("a", "target", 3_600_000)}})),
    ("request", ("promise.create", create_data("b", "target", 3_600_000))),
    ("request", ("task.fence", {"id": "a", "version": 1, "action": {
        "kind": "promise.create", "data": create_data("a:1", "target", 600_000)}})),
    ("request", ("task.fence", {"id": "a", "version": 1, "action": {
        "kind": "promise.create", "data": create_data("a:2", "timer", 60_000)}})),
]


def resolve(value: Any, engine: Engine, now: int, task_id: str | None) -> Any:
    """Fill in the placeholders: ``("now", dt)`` and ``"current"`` (the task's version)."""
    if isinstance(value, tuple) and value[:1] == ("now",):
        return now + value[1]
    if isinstance(value, dict):
        tid = value.get("id", task_id) if isinstance(value.get("id"), str) else task_id
        out = {}
        for k, v in value.items():
            if k == "version" and v == "current":
                row = engine.storage.get_task(tid) if tid is not None else None
                out[k] = row.version if row is not None else 0
            else:
                out[k] = resolve(v, engine, now, tid)
        return out
    if isinstance(value, list):
        return [resolve(v, engine, now, task_id) for v in value]
    return value


def answer(engine: Engine, body: bytes, now: int) -> bytes:
    """The engine's answer to ``body``: over the wire, except ``promise.record``, which only
    an in-process caller may send (the wire refuses it), so it goes through ``execute``."""
    env = json.loads(body)
    if env["kind"] == "task.fence" and env["data"]["action"]["kind"] == "promise.record":
        request = decode_data("task.fence", json.dumps(env["data"]).encode())
        return encode_response("task.fence", env["head"]["corrId"],
                               engine.execute(request, now, env["head"]["corrId"]))
    return engine.handle(body, now)


def snapshot(engine: Engine) -> tuple[list[Promise], list[Any], list[Any], int | None]:
    storage = engine.storage
    return (storage.search_promises(None, None, None, 10_000),
            storage.search_tasks(None, None, 10_000),
            storage.search_schedules(None, None, 10_000),
            storage.next_due())


class Invariants:
    """What must hold across every step of one sequence."""

    def __init__(self) -> None:
        self.settled: dict[str, Promise] = {}
        self.versions: dict[str, int] = {}

    def check(self, engine: Engine) -> None:
        promises, tasks, _, _ = snapshot(engine)
        rows = {row.id: row for row in tasks}
        for p in promises:
            if p.id in self.settled:
                assert p == self.settled[p.id], f"settled promise {p.id} changed"
            elif p.state != "pending":
                self.settled[p.id] = p
            if p.state == "pending" and TAG_TARGET in p.tags:
                assert p.id in rows, f"pending targeted {p.id} has no task"
                assert rows[p.id].state != "fulfilled", f"pending {p.id} has a fulfilled task"
        for row in tasks:
            assert row.version >= self.versions.get(row.id, 0), f"version of {row.id} fell"
            self.versions[row.id] = row.version
            assert (row.state == "acquired") == (row.pid is not None)
            assert (row.timer is None) == (row.state not in ("pending", "acquired")), row


_counter = itertools.count()


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("equivalence")


@pytest.fixture(scope="module")
def pg_schema(pg_server: PostgresServer) -> str:
    """One migrated schema for the module; each sequence empties it first (much faster than
    a schema per sequence)."""
    dsn = fresh_schema(pg_server)
    PostgresStorage(dsn).close()
    return dsn


def empty_postgres(dsn: str) -> Engine:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE resonate_promises, resonate_tasks, resonate_callbacks, "
                     "resonate_listeners, resonate_schedules, resonate_outbox RESTART IDENTITY")
    return Engine(PostgresStorage(dsn), retry_timeout=30_000)


@pytest.mark.slow  # hypothesis: 120 sequences through the three storages
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sequence=st.lists(steps, min_size=30, max_size=60),
       advances=st.lists(st.sampled_from([0, 0, 1, 100, 1_000, 20_000]), min_size=64,
                         max_size=64))
def test_memory_sqlite_and_postgres_answer_every_sequence_identically(
    db_dir: Path, pg_schema: str, sequence: list[tuple[str, Any]], advances: list[int],
) -> None:
    memory = Engine.memory(retry_timeout=30_000)
    sqlite = Engine.sqlite(str(db_dir / f"{next(_counter)}.db"), retry_timeout=30_000)
    postgres = empty_postgres(pg_schema)
    invariants = Invariants()
    now = 1_700_000_000_000
    try:
        for i, (step, arg) in enumerate(PRELUDE + sequence):
            now += advances[i]
            if step == "request":
                kind, data = arg
                body = envelope(kind, resolve(data, memory, now, None), corr_id=f"c{i}")
                a, b = answer(memory, body, now), answer(sqlite, body, now)
                assert a == b, (body, a, b)
                c = answer(postgres, body, now)
                assert a == c, (body, a, c)
                status = json.loads(a)["head"]["status"]
                assert status in (200, 300, 400, 404, 409, 422), a
            elif step == "tick":
                now += arg
                memory.tick(now)
                sqlite.tick(now)
                postgres.tick(now)
            else:
                drained = memory.drain()
                assert drained == sqlite.drain()
                assert drained == postgres.drain()
            assert snapshot(memory) == snapshot(sqlite) == snapshot(postgres)
            invariants.check(memory)
        drained = memory.drain()
        assert drained == sqlite.drain()
        assert drained == postgres.drain()
    finally:
        sqlite.close()
        postgres.close()
