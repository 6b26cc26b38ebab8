"""``task.fence``'s ``promise.record``: a promise created already settled, in one write.

The in-process engines take it so that a local step costs one durable write; an engine served
over HTTP refuses it (it is not part of the Resonate protocol). Each test runs on memory,
SQLite and PostgreSQL storage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resonate_async.engine import Engine
from resonate_async.engine._postgres import PostgresStorage
from resonate_async.protocol import (
    FenceCreate,
    FenceRecord,
    FenceSettle,
    PromiseCreate,
    PromiseSettle,
    Response,
    TaskFence,
    Value,
)
from tests._postgres import PostgresServer, fresh_schema
from tests.engine.conftest import HOUR, T0, Client, child_tags, envelope

CHILD = "wf:1"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "memory":
        engine = Engine.memory()
    elif request.param == "sqlite":
        engine = Engine.sqlite(str(tmp_path / "engine.db"))
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        engine = Engine(PostgresStorage(fresh_schema(server)))
    yield engine
    engine.close()


def started(engine: Engine) -> tuple[Client, int]:
    """A client holding the task of root ``wf``: (client, task version)."""
    client = Client(engine)
    reply = client.task_create("wf")
    assert reply.status == 200, reply
    return client, reply.data["task"]["version"]


def record(engine: Engine, version: int, *, state: str = "resolved", value: str = "42",
           timeout: int = HOUR, tags: dict[str, str] | None = None, now: int = T0,
           task: str = "wf", child: str = CHILD) -> Response:
    data = PromiseCreate(child, now + timeout, Value(),
                         child_tags("wf", child, branch="wf") if tags is None else tags)
    return engine.execute(
        TaskFence(task, version, FenceRecord(data=data, state=state,  # type: ignore[arg-type]
                                             value=Value(data=value))), now)


def inner(response: Response) -> Any:
    assert response.status == 200, response
    assert response.data.action.head.status == 200, response.data.action
    return response.data.action.data.promise


def test_a_record_creates_the_promise_settled_at_once(engine: Engine) -> None:
    client, version = started(engine)
    response = record(engine, version)
    assert response.data.action.kind == "promise.record"
    p = inner(response)
    assert (p.state, p.value.data, p.created_at, p.settled_at) == ("resolved", "42", T0, T0)
    stored = client.promise(CHILD)
    assert (stored["state"], stored["value"]["data"], stored["settledAt"]) == (
        "resolved", "42", T0)
    assert stored["tags"]["resonate:branch"] == "wf"
    assert client.drain() == []  # nothing to deliver: no task, no listener


def test_a_rejected_record_keeps_its_error(engine: Engine) -> None:
    _, version = started(engine)
    p = inner(record(engine, version, state="rejected", value='{"boom": 1}'))
    assert (p.state, p.value.data) == ("rejected", '{"boom": 1}')


def test_a_record_of_an_existing_settled_promise_answers_it_unchanged(engine: Engine) -> None:
    _, version = started(engine)
    first = inner(record(engine, version, value="1"))
    again = inner(record(engine, version, value="2", state="rejected", now=T0 + 5))
    assert again == first


def test_a_record_settles_a_promise_an_earlier_run_created(engine: Engine) -> None:
    _, version = started(engine)
    created = engine.execute(TaskFence("wf", version, FenceCreate(data=PromiseCreate(
        CHILD, T0 + HOUR, Value(), child_tags("wf", CHILD, branch="wf")))), T0)
    assert inner(created).state == "pending"
    p = inner(record(engine, version, value="7", now=T0 + 10))
    assert (p.state, p.value.data, p.created_at, p.settled_at) == ("resolved", "7", T0, T0 + 10)


def test_a_record_past_its_deadline_is_timed_out(engine: Engine) -> None:
    _, version = started(engine)
    p = inner(record(engine, version, timeout=0))
    assert (p.state, p.value.data) == ("rejected_timedout", None)


def test_a_record_with_a_stale_version_writes_nothing(engine: Engine) -> None:
    client, version = started(engine)
    response = record(engine, version + 1)
    assert response.status == 409
    assert client.get(CHILD).status == 404


@pytest.mark.parametrize("tag", ["resonate:target", "resonate:timer"])
def test_a_record_of_a_promise_that_must_start_pending_is_refused(engine: Engine,
                                                                 tag: str) -> None:
    client, version = started(engine)
    tags = child_tags("wf", CHILD, branch="wf", **{tag: "poll://any@default"
                                                  if tag == "resonate:target" else "true"})
    response = record(engine, version, tags=tags)
    assert response.status == 400
    assert "cannot carry resonate:target or resonate:timer" in response.data
    assert client.get(CHILD).status == 404


def test_a_record_with_a_bad_id_is_refused_as_a_create_would_be(engine: Engine) -> None:
    _, version = started(engine)
    response = record(engine, version, child="other:1")
    assert response.status == 400
    assert "must equal resonate:origin 'wf' or extend it" in response.data


def test_a_record_over_the_wire_is_refused(engine: Engine) -> None:
    """An engine served over HTTP (the dev server) speaks the Resonate protocol only."""
    client, version = started(engine)
    body = envelope("task.fence", {"id": "wf", "version": version, "action": {
        "kind": "promise.record", "state": "resolved",
        "data": {"id": CHILD, "timeoutAt": T0 + HOUR, "tags": child_tags("wf", CHILD)}}})
    answer = json.loads(engine.handle(body, T0))
    assert answer["head"]["status"] == 400
    assert "not part of the Resonate protocol" in answer["data"]
    assert client.get(CHILD).status == 404


def test_settle_and_record_agree_on_the_promise_they_leave(engine: Engine) -> None:
    """A step recorded in one write is stored exactly as create-then-settle at one instant."""
    _, version = started(engine)
    tags = child_tags("wf", "wf:2", branch="wf")
    engine.execute(TaskFence("wf", version, FenceCreate(data=PromiseCreate(
        "wf:2", T0 + HOUR, Value(), tags))), T0)
    two = inner(engine.execute(TaskFence("wf", version, FenceSettle(data=PromiseSettle(
        "wf:2", "resolved", Value(data="42")))), T0))
    one = inner(record(engine, version))
    assert (one.state, one.value, one.created_at, one.settled_at, one.timeout_at) == (
        two.state, two.value, two.created_at, two.settled_at, two.timeout_at)
