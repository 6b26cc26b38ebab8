"""PostgresStorage: what must hold when several processes share one database.

Each "process" here is an ``Engine`` with a connection of its own, driven from its own
thread, all on one fresh schema; requests race for real (a barrier releases them together).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from resonate_async import Resonate
from resonate_async._errors import ResonateError, SchemaVersionError, TransportError
from resonate_async.engine import Engine
from resonate_async.engine._postgres import SCHEMA_VERSION, PostgresStorage
from resonate_async.transport._postgres import PostgresTransport
from tests._postgres import PostgresServer, fresh_schema
from tests.engine.conftest import ACTION_HEAD, HOUR, T0, TARGET, child_tags, envelope, root_tags


def call(engine: Engine, kind: str, data: Any, now: int = T0) -> tuple[int, Any]:
    env = json.loads(engine.handle(envelope(kind, data), now))
    return env["head"]["status"], env["data"]


def race(workers: list[Callable[[], Any]]) -> list[Any]:
    """Run every worker in a thread of its own, released at once; their results in order."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = workers[i]()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a racing request never finished"
    assert not errors, errors
    return results


@pytest.fixture
def engines(pg_dsn: str) -> Any:
    made = [Engine(PostgresStorage(pg_dsn)) for _ in range(4)]
    yield made
    for engine in made:
        engine.close()


def test_racing_acquires_of_one_task_version_give_it_to_exactly_one_process(
        engines: list[Engine]) -> None:
    first = engines[0]
    for n in range(10):
        root = f"r{n}"
        status, _ = call(first, "promise.create", {"id": root, "timeoutAt": T0 + HOUR,
                                                   "tags": root_tags(root)})
        assert status == 200
        answers = race([
            lambda e=e, i=i, root=root: call(e, "task.acquire", {
                "id": root, "version": 0, "pid": f"p{i}", "ttl": 60_000})
            for i, e in enumerate(engines)])
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200, 409, 409, 409], answers
        winner = next(data for status, data in answers if status == 200)
        status, task = call(first, "task.get", {"id": root})
        assert task["task"]["pid"] == winner["task"]["pid"]
        assert task["task"]["version"] == 1


def test_racing_creates_of_one_promise_make_one_record_that_all_see(
        engines: list[Engine]) -> None:
    for n in range(10):
        root = f"c{n}"
        answers = race([
            lambda e=e, root=root: call(e, "promise.create", {
                "id": root, "timeoutAt": T0 + HOUR, "tags": root_tags(root)})
            for e in engines])
        assert {status for status, _ in answers} == {200}, answers
        assert len({json.dumps(data, sort_keys=True) for _, data in answers}) == 1
    status, page = call(engines[0], "task.search", {"limit": 100})
    assert status == 200 and len(page["tasks"]) == 10


def _suspend_on_timer(engine: Engine, root: str, fires_at: int) -> None:
    """``root`` acquired, with a timer child, suspended until the timer fires."""
    status, _ = call(engine, "task.create", {"pid": "p", "ttl": HOUR, "action": {
        "kind": "promise.create", "head": ACTION_HEAD,
        "data": {"id": root, "timeoutAt": T0 + HOUR, "tags": root_tags(root)}}})
    assert status == 200
    timer = f"{root}:1"
    status, _ = call(engine, "task.fence", {"id": root, "version": 1, "action": {
        "kind": "promise.create", "head": ACTION_HEAD,
        "data": {"id": timer, "timeoutAt": fires_at,
                 "tags": {**child_tags(root, timer), "resonate:timer": "true",
                          "resonate:target": TARGET}}}})
    assert status == 200
    status, _ = call(engine, "task.suspend", {"id": root, "version": 1, "actions": [
        {"kind": "promise.register_callback", "head": ACTION_HEAD,
         "data": {"awaited": timer, "awaiter": root}}]})
    assert status == 200


def test_timers_fire_once_when_several_processes_tick_at_the_same_moment(
        engines: list[Engine], events: list[dict[str, Any]]) -> None:
    roots = [f"t{n}" for n in range(100)]
    for root in roots:
        _suspend_on_timer(engines[0], root, T0 + 1_000)
    for n in range(20):
        status, _ = call(engines[0], "schedule.create", {
            "id": f"s{n}", "cron": "* * * * *", "promiseId": "{{.id}}-{{.timestamp}}",
            "promiseTimeout": HOUR, "promiseTags": {"resonate:target": TARGET}})
        assert status == 200
    # Three rounds of every process ticking at once, past every deadline (and one minute).
    for round_ in range(3):
        race([lambda e=e, at=T0 + 61_000 + round_: e.tick(at)
              for e in engines])
    for root in roots:
        status, timer = call(engines[0], "promise.get", {"id": f"{root}:1"})
        assert timer["promise"]["state"] == "resolved"
        status, task = call(engines[0], "task.get", {"id": root})
        # A second firing would wake the awaiter again: resumes would be 2.
        assert (task["task"]["state"], task["task"]["resumes"]) == ("pending", 1), task
    status, page = call(engines[0], "promise.search", {"tags": {"resonate:schedule": "s0"}})
    assert len(page["promises"]) == 1, page
    status, page = call(engines[0], "task.search", {"state": "pending", "limit": 1000})
    assert len(page["tasks"]) == len(roots) + 20
    failures = [e for e in events if e["log_level"] in ("error", "critical")]
    assert not failures, failures  # no firing collided with another and failed


def test_processes_starting_at_once_create_the_schema_once(pg_server: PostgresServer) -> None:
    dsn = fresh_schema(pg_server)
    storages = race([lambda: PostgresStorage(dsn) for _ in range(6)])
    try:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT version FROM resonate_schema").fetchall() == \
                [(SCHEMA_VERSION,)]
        engine = Engine(storages[-1])
        assert call(engine, "promise.create", {"id": "x", "timeoutAt": T0 + HOUR})[0] == 200
    finally:
        for storage in storages:
            storage.close()


def test_without_ddl_an_empty_database_is_refused_with_the_migrate_command(
        pg_server: PostgresServer) -> None:
    dsn = fresh_schema(pg_server)
    with pytest.raises(SchemaVersionError, match=r"python -m resonate_async db migrate"):
        PostgresStorage(dsn, migrate=False)
    PostgresStorage(dsn).close()  # migrates
    PostgresStorage(dsn, migrate=False).close()  # now accepted


def test_a_schema_newer_than_this_version_is_refused(pg_server: PostgresServer) -> None:
    dsn = fresh_schema(pg_server)
    PostgresStorage(dsn).close()
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE resonate_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match="upgrade resonate_async"):
        PostgresStorage(dsn)


def test_an_unreachable_database_error_hides_the_password() -> None:
    dsn = "postgresql://app:s3cret-pw@127.0.0.1:1/app?connect_timeout=2"
    with pytest.raises(TransportError) as info:
        PostgresStorage(dsn)
    text = str(info.value)
    assert "s3cret-pw" not in text
    assert "postgresql://***@127.0.0.1:1/app" in text
    assert "cannot connect to PostgreSQL" in text


def test_libpq_options_in_the_url_pass_through(pg_server: PostgresServer) -> None:
    dsn = fresh_schema(pg_server)
    PostgresStorage(dsn + "&sslmode=disable&application_name=resonate-test").close()
    # The test server has no TLS: sslmode=require reaching libpq makes it refuse.
    with pytest.raises(TransportError, match="SSL"):
        PostgresStorage(dsn + "&sslmode=require")


def test_a_missing_driver_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    with pytest.raises(ResonateError, match=r"pip install 'resonate-async\[postgres\]'"):
        Resonate(url="postgresql://app@db.example/app")
    with pytest.raises(ResonateError, match=r"pip install 'resonate-async\[postgres\]'"):
        PostgresTransport("postgresql://app@db.example/app")


def test_a_postgres_url_picks_the_postgres_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(Resonate(url="postgresql://app@db.example/app").transport,
                      PostgresTransport)
    monkeypatch.setenv("RESONATE_URL", "postgres://app:pw@db.example/app")
    transport = Resonate().transport
    assert isinstance(transport, PostgresTransport)
    assert "pw" not in repr(transport)


def test_ticks_while_the_database_is_unreachable_warn_once_then_say_it_recovered(
        pg_dsn: str, events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    import resonate_async.engine._postgres as module
    from tests.transport.test_postgres_connect import _free_port, _on_port

    monkeypatch.setattr(module, "RECONNECT_FOR", 0.2)  # how long each tick tries to reconnect
    storage = PostgresStorage(pg_dsn)
    engine = Engine(storage)
    try:
        storage.dsn = _on_port(pg_dsn, _free_port())  # where nothing listens
        storage.close()
        for _ in range(3):
            engine.tick(T0)
        said = [e["event"] for e in events if e["event"].startswith("engine_tick")]
        assert said == ["engine_tick_unreachable"]  # once, and no traceback per tick
        [warning] = [e for e in events if e["event"] == "engine_tick_unreachable"]
        assert warning["log_level"] == "warning" and "cannot connect" in warning["error"]
        storage.dsn = pg_dsn
        engine.tick(T0)
        engine.tick(T0)
        said = [e["event"] for e in events if e["event"].startswith("engine_tick")]
        assert said == ["engine_tick_unreachable", "engine_tick_recovered"]
    finally:
        engine.close()
