"""schedule.* operations and schedule firing (protocol.md §3.17, §4.5)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.conftest import HOUR, TARGET, Client

MINUTE = 60_000
TEMPLATE = "{{.id}}-{{.timestamp}}"


def schedule(client: Client, sid: str = "nightly", *, cron: str = "* * * * *",
             tags: dict[str, str] | None = None, timeout: int = HOUR) -> Any:
    reply = client.request("schedule.create", {
        "id": sid, "cron": cron, "promiseId": TEMPLATE, "promiseTimeout": timeout,
        "promiseParam": {"data": "e30="},
        "promiseTags": {"resonate:target": TARGET, "app": "x"} if tags is None else tags})
    assert reply.status == 200, reply
    return reply.data["schedule"]


def test_creating_a_schedule_computes_the_next_run_strictly_after_now(client: Client) -> None:
    client.now = 1_700_000_040_000  # exactly on a minute
    s = schedule(client)
    assert s == {"id": "nightly", "cron": "* * * * *", "promiseId": TEMPLATE,
                 "promiseTimeout": HOUR, "promiseParam": {"data": "e30="},
                 "promiseTags": {"resonate:target": TARGET, "app": "x"},
                 "createdAt": client.now, "nextRunAt": client.now + MINUTE}


def test_a_six_field_cron_has_a_seconds_field(client: Client) -> None:
    client.now = 1_700_000_040_000
    assert schedule(client, cron="*/10 * * * * *")["nextRunAt"] == client.now + 10_000


def test_creating_an_existing_schedule_returns_it_unchanged(client: Client) -> None:
    first = schedule(client)
    client.advance(5)
    assert schedule(client, cron="0 3 * * *") == first


@pytest.mark.parametrize("cron", ["", "not a cron", "61 * * * *", "* * *", "0 0 30 2 *"])
def test_an_invalid_cron_is_400(client: Client, cron: str) -> None:
    reply = client.request("schedule.create", {
        "id": "s", "cron": cron, "promiseId": TEMPLATE, "promiseTimeout": 1,
        "promiseTags": {"resonate:target": TARGET}})
    assert (reply.status, reply.data) == (400, "Invalid cron expression")


@pytest.mark.parametrize("data", [
    {"id": "s", "cron": "* * * * *", "promiseId": TEMPLATE, "promiseTimeout": 1},
    {"id": "s", "cron": "* * * * *", "promiseId": TEMPLATE, "promiseTimeout": 1,
     "promiseTags": {"app": "x"}},
    {"id": "", "cron": "* * * * *", "promiseId": TEMPLATE, "promiseTimeout": 1,
     "promiseTags": {"resonate:target": TARGET}},
    {"id": "a:b", "cron": "* * * * *", "promiseId": TEMPLATE, "promiseTimeout": 1,
     "promiseTags": {"resonate:target": TARGET}},
    {"id": "s", "cron": "* * * * *", "promiseId": "", "promiseTimeout": 1,
     "promiseTags": {"resonate:target": TARGET}},
    {"id": "s", "cron": "* * * * *", "promiseId": TEMPLATE, "promiseTimeout": -1,
     "promiseTags": {"resonate:target": TARGET}},
    {"id": "s\x00", "cron": "* * * * *", "promiseId": TEMPLATE, "promiseTimeout": 1,
     "promiseTags": {"resonate:target": TARGET}},
    {"id": "s", "cron": "* * * * *", "promiseId": "x\x00{{.id}}", "promiseTimeout": 1,
     "promiseTags": {"resonate:target": TARGET}},
    {"id": "s", "cron": "* * * * *", "promiseId": TEMPLATE, "promiseTimeout": 1,
     "promiseTags": {"resonate:target": "nowhere"}},
])
def test_an_invalid_schedule_is_400(client: Client, data: dict[str, Any]) -> None:
    assert client.request("schedule.create", data).status == 400


def test_a_schedule_fires_a_promise_named_from_its_template_and_dispatches_execute(
    client: Client,
) -> None:
    s = schedule(client)
    at = s["nextRunAt"]
    client.tick(at - 1)
    assert client.drain() == []
    client.tick(at + 500)  # processed late: the id and createdAt use the scheduled time
    pid = f"nightly-{at}"
    p = client.promise(pid)
    assert p == {
        "id": pid, "state": "pending", "param": {"data": "e30="}, "value": {},
        "tags": {"resonate:target": TARGET, "app": "x", "resonate:schedule": "nightly",
                 "resonate:origin": pid, "resonate:branch": pid, "resonate:parent": pid,
                 "resonate:prefix": pid},
        "timeoutAt": at + HOUR, "createdAt": at}
    assert client.task(pid)["state"] == "pending"
    assert client.executes() == [(TARGET, pid, 0)]
    got = client.ok("schedule.get", {"id": "nightly"})["schedule"]
    assert (got["lastRunAt"], got["nextRunAt"]) == (at, at + MINUTE)


def test_a_fired_promise_overrides_lineage_tags_from_the_template(client: Client) -> None:
    s = schedule(client, tags={"resonate:target": TARGET, "resonate:origin": "x"})
    client.tick(s["nextRunAt"])
    pid = f"nightly-{s['nextRunAt']}"
    assert client.promise(pid)["tags"]["resonate:origin"] == pid


def test_missed_firings_are_caught_up_one_per_occurrence(client: Client) -> None:
    s = schedule(client)
    at = s["nextRunAt"]
    client.tick(at + 2 * MINUTE)
    fired = [m["data"]["task"]["id"] for _, m in client.drain()]
    assert fired == [f"nightly-{at}", f"nightly-{at + MINUTE}", f"nightly-{at + 2 * MINUTE}"]


def test_a_firing_past_its_promise_timeout_is_born_timed_out(client: Client) -> None:
    s = schedule(client, timeout=1000)
    at = s["nextRunAt"]
    client.tick(at + 1000)
    p = client.promise(f"nightly-{at}")
    assert p["state"] == "rejected_timedout"
    assert client.task(f"nightly-{at}")["state"] == "fulfilled"
    assert client.drain() == []


def test_a_firing_adopts_an_existing_promise_with_its_id(client: Client) -> None:
    s = schedule(client)
    pid = f"nightly-{s['nextRunAt']}"
    existing = client.create(pid, tags={"mine": "yes"}).data["promise"]
    client.tick(s["nextRunAt"])
    assert client.promise(pid) == existing
    assert client.drain() == []


def test_deleting_a_schedule_stops_its_firing_and_keeps_fired_promises(client: Client) -> None:
    s = schedule(client)
    client.tick(s["nextRunAt"])
    client.drain()
    assert client.request("schedule.delete", {"id": "nightly"}).data == {}
    client.tick(s["nextRunAt"] + 10 * MINUTE)
    fired = f"nightly-{s['nextRunAt']}"
    assert {task for _, task, _ in client.executes()} == {fired}  # only its retry timer
    assert [p["id"] for p in client.ok("promise.search", {})["promises"]] == [fired]
    assert client.request("schedule.get", {"id": "nightly"}).status == 404


@pytest.mark.parametrize("kind", ["schedule.get", "schedule.delete"])
def test_a_missing_schedule_is_404(client: Client, kind: str) -> None:
    reply = client.request(kind, {"id": "nope"})
    assert (reply.status, reply.data) == (404, "Schedule not found")


def test_schedule_search_filters_on_promise_tags_and_pages_by_id(client: Client) -> None:
    for sid in ["s3", "s1", "s2"]:
        schedule(client, sid)
    schedule(client, "t", tags={"resonate:target": TARGET, "app": "other"})
    page = client.ok("schedule.search", {"tags": {"app": "x"}, "limit": 2})
    assert [s["id"] for s in page["schedules"]] == ["s1", "s2"]
    assert page["cursor"] == "s2"
    page = client.ok("schedule.search", {"tags": {"app": "x"}, "limit": 2, "cursor": "s2"})
    assert [s["id"] for s in page["schedules"]] == ["s3"]
    assert "cursor" not in page


def test_schedule_search_returns_10_by_default(client: Client) -> None:
    for i in range(11):
        schedule(client, f"s{i:02}")
    page = client.ok("schedule.search", {})
    assert len(page["schedules"]) == 10
    assert page["cursor"] == "s09"
