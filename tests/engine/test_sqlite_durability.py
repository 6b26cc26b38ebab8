"""SQLite storage keeps everything acknowledged across a close and reopen, and guards its file."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from resonate_async._errors import ResonateError
from resonate_async.engine import Engine
from resonate_async.engine._sqlite import StorageLockedError
from tests.engine.conftest import RETRY, TARGET, TTL, Client, child_tags

ME = "poll://uni@default/client"


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "durable.db")


@pytest.fixture
def client(path: str) -> Iterator[Client]:
    c = Client(Engine.sqlite(path, retry_timeout=RETRY))
    yield c
    c.engine.close()


def reopen(client: Client, path: str) -> None:
    client.engine.close()
    client.engine = Engine.sqlite(path, retry_timeout=RETRY)


def test_promises_tasks_and_schedules_survive_a_reopen(client: Client, path: str) -> None:
    v = client.run_root("wf", pid="p1")
    client.fence_create("wf", v, "wf:1", tags=child_tags("wf", "wf:1", branch="wf"))
    client.fence_settle("wf", v, "wf:1")
    client.create("x")
    client.request("schedule.create", {"id": "s", "cron": "0 * * * *",
                                       "promiseId": "s-{{.timestamp}}", "promiseTimeout": 1000,
                                       "promiseTags": {"resonate:target": TARGET}})
    before = [client.promise(i) for i in ("wf", "wf:1", "x")]
    task = client.task("wf")
    schedule = client.ok("schedule.get", {"id": "s"})
    reopen(client, path)
    assert [client.promise(i) for i in ("wf", "wf:1", "x")] == before
    assert client.task("wf") == task == {"id": "wf", "state": "acquired", "version": v,
                                         "resumes": 0, "ttl": TTL, "pid": "p1"}
    assert client.ok("schedule.get", {"id": "s"}) == schedule
    assert client.fence_create("wf", v, "wf:2").status == 200  # the lease is still held


def test_a_lease_held_at_close_still_expires_after_reopen(client: Client, path: str) -> None:
    v = client.run_root("wf")
    reopen(client, path)
    client.tick(client.now + TTL)
    assert client.task("wf")["state"] == "pending"
    assert client.executes() == [(TARGET, "wf", v)]


def test_release_leases_on_reopen_returns_held_tasks_to_pending(client: Client,
                                                                path: str) -> None:
    v = client.run_root("wf")
    reopen(client, path)
    assert client.engine.release_leases(client.now) == 1
    assert client.task("wf") == {"id": "wf", "state": "pending", "version": v, "resumes": 0}
    assert client.executes() == [(TARGET, "wf", v)]
    assert client.acquire("wf", v).data["task"]["version"] == v + 1


def test_callbacks_still_fire_after_reopen(client: Client, path: str) -> None:
    v = client.run_root("wf")
    tags = child_tags("wf", "wf:1", **{"resonate:target": "poll://any@workers"})
    client.fence_create("wf", v, "wf:1", tags=tags)
    client.suspend("wf", v, ["wf:1"])
    client.drain()
    reopen(client, path)
    client.settle("wf:1")
    assert client.executes() == [(TARGET, "wf", v)]


def test_listeners_still_get_their_unblock_after_reopen(client: Client, path: str) -> None:
    client.create_root("wf")
    client.listen("wf", ME)
    reopen(client, path)
    client.settle("wf")
    unblocks = [(a, m["data"]["promise"]["id"]) for a, m in client.drain()
                if m["kind"] == "unblock"]
    assert unblocks == [(ME, "wf")]


def test_undrained_messages_survive_a_reopen(client: Client, path: str) -> None:
    client.create_root("wf")
    reopen(client, path)
    assert client.executes() == [(TARGET, "wf", 0)]


def test_armed_deadlines_and_schedules_fire_after_reopen(client: Client, path: str) -> None:
    client.create("t", timeout=5000, tags={"resonate:timer": "true",
                                           "resonate:target": "poll://any@resonate-timers"})
    client.request("schedule.create", {"id": "s", "cron": "* * * * *",
                                       "promiseId": "{{.id}}-{{.timestamp}}",
                                       "promiseTimeout": 100_000,
                                       "promiseTags": {"resonate:target": TARGET}})
    due = client.engine.next_due()
    reopen(client, path)
    assert client.engine.next_due() == due
    client.tick(client.now + 60_000)
    stored = client.engine.storage.get_promise("t")
    assert stored is not None
    assert stored.state == "resolved"
    assert len([task for address, task, _ in client.executes() if address == TARGET]) == 1


def test_a_second_live_open_of_the_same_file_raises_storage_locked(client: Client,
                                                                   path: str) -> None:
    client.create("x")
    with pytest.raises(StorageLockedError, match="in use by another live process") as info:
        Engine.sqlite(path)
    assert isinstance(info.value, ResonateError)
    assert client.promise("x")["state"] == "pending"  # the first engine is untouched


def test_closing_releases_the_lock(client: Client, path: str) -> None:
    client.engine.close()
    client.engine.close()  # idempotent
    other = Engine.sqlite(path)
    other.close()


def _open_and_report(path: str, queue: multiprocessing.Queue[str]) -> None:
    try:
        Engine.sqlite(path).close()
        queue.put("opened")
    except StorageLockedError:
        queue.put("locked")


def test_another_process_cannot_open_a_file_held_by_a_live_engine(client: Client,
                                                                  path: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    proc = ctx.Process(target=_open_and_report, args=(path, queue))
    proc.start()
    proc.join(30)
    assert queue.get(timeout=5) == "locked"
