"""task.* operations (protocol.md §3.7-3.16)."""

from __future__ import annotations

import pytest

from tests.engine.conftest import (
    ACTION_HEAD,
    HOUR,
    RETRY,
    TARGET,
    TTL,
    Client,
    child_tags,
    root_tags,
)


def ids(promises: list[dict[str, object]]) -> list[object]:
    return [p["id"] for p in promises]


# task.get ---------------------------------------------------------------------------------------
def test_getting_a_missing_task_is_404(client: Client) -> None:
    reply = client.request("task.get", {"id": "nope"})
    assert (reply.status, reply.data) == (404, "Task not found")


def test_a_promise_without_target_has_no_task(client: Client) -> None:
    client.create("p")
    assert client.request("task.get", {"id": "p"}).status == 404


def test_getting_a_task_whose_promise_expired_shows_it_fulfilled(client: Client) -> None:
    client.create_root("wf", timeout=1000)
    client.advance(1000)
    assert client.task("wf")["state"] == "fulfilled"


# task.create ------------------------------------------------------------------------------------
def test_task_create_of_a_new_promise_returns_it_acquired_at_version_1(client: Client) -> None:
    reply = client.task_create("wf", pid="a1", ttl=5000)
    assert reply.status == 200
    assert reply.data["task"] == {"id": "wf", "state": "acquired", "version": 1, "resumes": 0,
                                  "ttl": 5000, "pid": "a1"}
    assert reply.data["promise"]["state"] == "pending"
    assert reply.data["preload"] == []
    assert client.drain() == []


def test_task_create_of_an_expired_new_promise_returns_a_fulfilled_task(client: Client) -> None:
    reply = client.task_create("wf", timeout=0)
    assert reply.status == 200
    assert reply.data["task"] == {"id": "wf", "state": "fulfilled", "version": 0, "resumes": 0}
    assert reply.data["promise"]["state"] == "rejected_timedout"
    assert reply.data["preload"] == []


def test_task_create_of_an_existing_pending_task_claims_it(client: Client) -> None:
    client.create_root("wf")
    client.create("wf:1", tags=child_tags("wf", "wf:1", branch="wf"))
    reply = client.task_create("wf", pid="a2", timeout=5)
    assert reply.status == 200
    assert reply.data["task"]["state"] == "acquired"
    assert reply.data["task"]["version"] == 1
    assert reply.data["promise"]["timeoutAt"] == client.now + HOUR  # the action's is ignored
    assert ids(reply.data["preload"]) == ["wf:1"]


def test_task_create_of_a_fulfilled_task_returns_it_with_the_settled_promise(
    client: Client,
) -> None:
    version = client.run_root("wf")
    client.fulfill("wf", version, value={"data": "NDI="})
    reply = client.task_create("wf")
    assert reply.status == 200
    assert reply.data["task"] == {"id": "wf", "state": "fulfilled", "version": 1, "resumes": 0}
    assert reply.data["promise"]["value"] == {"data": "NDI="}
    assert reply.data["preload"] == []


@pytest.mark.parametrize("state", ["acquired", "suspended", "halted"])
def test_task_create_of_a_task_held_elsewhere_is_409_already_exists(client: Client,
                                                                   state: str) -> None:
    version = client.run_root("wf")
    if state == "suspended":
        client.create("wf:1", tags={"resonate:external": "true"})
        assert client.suspend("wf", version, ["wf:1"]).status == 200
    if state == "halted":
        client.ok("task.halt", {"id": "wf"})
    assert client.task("wf")["state"] == state
    reply = client.task_create("wf", pid="other")
    assert (reply.status, reply.data) == (409, "Already exists")


def test_task_create_of_an_existing_promise_without_target_is_422(client: Client) -> None:
    client.create("wf")
    reply = client.task_create("wf")
    assert (reply.status, reply.data) == (422, "The promise does not have a resonate:target tag")


def test_task_create_without_target_is_400(client: Client) -> None:
    assert client.task_create("wf", tags=root_tags("wf", target=None)).status == 400


def test_task_create_with_a_delay_is_400(client: Client) -> None:
    tags = root_tags("wf", **{"resonate:delay": str(client.now + 10)})
    assert client.task_create("wf", tags=tags).status == 400


@pytest.mark.parametrize(("pid", "ttl"), [("", TTL), ("p", 0), ("p", -1)])
def test_task_create_with_empty_pid_or_non_positive_ttl_is_400(client: Client, pid: str,
                                                              ttl: int) -> None:
    assert client.task_create("wf", pid=pid, ttl=ttl).status == 400


def test_task_create_without_an_action_head_is_400(client: Client) -> None:
    reply = client.request("task.create", {"pid": "p", "ttl": TTL, "action": {
        "kind": "promise.create", "data": {"id": "wf", "timeoutAt": client.now + HOUR,
                                           "tags": root_tags("wf")}}})
    assert reply.status == 400


def test_task_create_validates_the_target_address(client: Client) -> None:
    tags = root_tags("wf", target="nowhere")
    assert client.task_create("wf", tags=tags).status == 400


# task.acquire -----------------------------------------------------------------------------------
def test_acquire_claims_a_pending_task_at_version_plus_one(client: Client) -> None:
    root = client.create_root("wf")
    client.advance(10)
    reply = client.acquire("wf", 0, pid="b2", ttl=5000)
    assert reply.status == 200
    assert reply.data == {
        "task": {"id": "wf", "state": "acquired", "version": 1, "resumes": 0, "ttl": 5000,
                 "pid": "b2"},
        "promise": root, "preload": []}


def test_acquire_of_a_missing_task_is_404(client: Client) -> None:
    assert client.acquire("nope", 0).status == 404


def test_acquire_with_a_stale_version_is_409(client: Client) -> None:
    client.create_root("wf")
    reply = client.acquire("wf", 3)
    assert (reply.status, reply.data) == (409, "Version mismatch")


def test_acquire_of_an_acquired_task_is_409(client: Client) -> None:
    client.run_root("wf")
    reply = client.acquire("wf", 0)
    assert (reply.status, reply.data) == (409, "Task is not pending")


def test_acquire_of_a_task_whose_promise_expired_is_409(client: Client) -> None:
    client.create_root("wf", timeout=1000)
    client.advance(1000)
    assert client.acquire("wf", 0).status == 409
    assert client.task("wf")["state"] == "fulfilled"


@pytest.mark.parametrize("data", [
    {"id": "wf", "version": -1, "pid": "p", "ttl": 1},
    {"id": "wf", "version": 0, "pid": "p", "ttl": 0},
    {"id": "wf", "version": 0, "pid": "", "ttl": 1},
    {"id": "wf", "version": "0", "pid": "p", "ttl": 1},
    {"id": "wf", "pid": "p", "ttl": 1},
])
def test_acquire_with_invalid_fields_is_400(client: Client, data: dict[str, object]) -> None:
    client.create_root("wf")
    assert client.request("task.acquire", data).status == 400


def test_preload_holds_the_branch_by_id_without_the_root(client: Client) -> None:
    version = client.run_root("wf")
    for child, branch in [("wf:3", "wf"), ("wf:1", "wf"), ("wf:2", None), ("wf:10", "wf")]:
        tags = child_tags("wf", child, branch=branch)
        if branch is None:
            tags["resonate:target"] = TARGET
        assert client.fence_create("wf", version, child, tags=tags).status == 200
    client.create("wf:1.1", tags=child_tags("wf:1", "wf:1.1", branch="wf"))
    client.fence_settle("wf", version, "wf:1")
    client.release("wf", version)
    reply = client.acquire("wf", version)
    assert ids(reply.data["preload"]) == ["wf:1", "wf:1.1", "wf:10", "wf:3"]
    assert reply.data["preload"][0]["state"] == "resolved"
    assert reply.data["preload"][1]["state"] == "pending"


def test_preload_is_empty_for_a_root_without_branch(client: Client) -> None:
    client.create("wf", tags={"resonate:target": TARGET})
    client.create("wf:1", tags={"resonate:branch": "wf"})
    assert client.acquire("wf", 0).data["preload"] == []


# task.suspend -----------------------------------------------------------------------------------
def suspended_on_external(client: Client) -> int:
    version = client.run_root("wf")
    client.create("wf:1", tags={"resonate:external": "true"})
    return version


def test_suspend_on_pending_promises_suspends_and_drops_the_lease(client: Client) -> None:
    version = suspended_on_external(client)
    reply = client.suspend("wf", version, ["wf:1", "wf:1"])
    assert (reply.status, reply.data) == (200, {})
    assert client.task("wf") == {"id": "wf", "state": "suspended", "version": version,
                                 "resumes": 0}
    client.tick(client.now + 10 * TTL)
    assert client.executes() == []


def test_suspend_on_a_settled_promise_is_300_with_preload_and_keeps_the_lease(
    client: Client,
) -> None:
    version = client.run_root("wf")
    client.fence_create("wf", version, "wf:1", tags=child_tags("wf", "wf:1", branch="wf"))
    client.create("wf:2", tags={"resonate:external": "true"})
    client.create("wf:3", tags={"resonate:external": "true"})
    client.settle("wf:3")
    before = client.task("wf")
    reply = client.suspend("wf", version, ["wf:2", "wf:3"])
    assert reply.status == 300
    assert ids(reply.data["preload"]) == ["wf:1"]
    assert client.task("wf") == before
    assert client.fulfill("wf", version).status == 200


def test_suspend_300_clears_queued_resumes(client: Client) -> None:
    version = suspended_on_external(client)
    client.settle("wf:1")
    client.callback("wf:1", "wf")
    assert client.task("wf")["resumes"] == 1
    assert client.suspend("wf", version, ["wf:1"]).status == 300
    assert client.task("wf")["resumes"] == 0


def test_suspend_of_a_missing_task_is_404(client: Client) -> None:
    client.create("wf:1", tags={"resonate:external": "true"})
    assert client.suspend("wf", 1, ["wf:1"]).status == 404


def test_suspend_with_a_stale_version_is_409(client: Client) -> None:
    version = suspended_on_external(client)
    reply = client.suspend("wf", version + 1, ["wf:1"])
    assert (reply.status, reply.data) == (409, "Task is not acquired or version mismatch")


def test_suspend_on_a_missing_promise_is_422_and_registers_nothing(client: Client) -> None:
    version = suspended_on_external(client)
    reply = client.suspend("wf", version, ["wf:1", "wf:9"])
    assert (reply.status, reply.data) == (422, "Awaited promise not found")
    assert client.task("wf")["state"] == "acquired"
    client.settle("wf:1")
    assert client.task("wf")["resumes"] == 0


def test_suspend_on_a_local_promise_is_422(client: Client) -> None:
    version = client.run_root("wf")
    client.fence_create("wf", version, "wf:1", tags=child_tags("wf", "wf:1", branch="wf"))
    reply = client.suspend("wf", version, ["wf:1"])
    assert reply.status == 422
    assert "cannot be awaited" in reply.data


@pytest.mark.parametrize("actions", [
    [],
    [{"awaited": "wf:1", "awaiter": "other"}],
    [{"awaited": "wf", "awaiter": "wf"}],
    [{"awaited": "x:1", "awaiter": "wf"}],
])
def test_suspend_breaking_the_action_rules_is_400(client: Client,
                                                  actions: list[dict[str, str]]) -> None:
    version = suspended_on_external(client)
    reply = client.request("task.suspend", {"id": "wf", "version": version, "actions": [
        {"kind": "promise.register_callback", "head": ACTION_HEAD, "data": a} for a in actions]})
    assert reply.status == 400


# task.fulfill -----------------------------------------------------------------------------------
def test_fulfill_settles_the_root_and_fulfils_the_task(client: Client) -> None:
    version = client.run_root("wf")
    client.advance(3)
    reply = client.fulfill("wf", version, "rejected", {"data": "ZQ=="})
    assert reply.status == 200
    p = reply.data["promise"]
    assert (p["state"], p["value"], p["settledAt"]) == ("rejected", {"data": "ZQ=="}, client.now)
    assert client.task("wf") == {"id": "wf", "state": "fulfilled", "version": version,
                                 "resumes": 0}


def test_fulfill_with_a_stale_version_is_409(client: Client) -> None:
    version = client.run_root("wf")
    reply = client.fulfill("wf", version - 1)
    assert (reply.status, reply.data) == (409, "Task version mismatch or invalid state")


def test_fulfill_after_the_root_timed_out_is_409(client: Client) -> None:
    client.create_root("wf", timeout=1000)
    version = client.acquire("wf", 0).data["task"]["version"]
    client.advance(1000)
    assert client.fulfill("wf", version).status == 409
    assert client.promise("wf")["state"] == "rejected_timedout"


def test_fulfill_of_another_promise_is_400(client: Client) -> None:
    version = client.run_root("wf")
    reply = client.request("task.fulfill", {"id": "wf", "version": version, "action": {
        "kind": "promise.settle", "head": ACTION_HEAD,
        "data": {"id": "wf:1", "state": "resolved"}}})
    assert reply.status == 400


def test_fulfill_of_a_missing_task_is_404(client: Client) -> None:
    assert client.fulfill("wf", 1).status == 404


# task.fence -------------------------------------------------------------------------------------
def test_fence_create_runs_the_inner_create_and_echoes_the_outer_corr_id(client: Client) -> None:
    version = client.run_root("wf")
    reply = client.fence_create("wf", version, "wf:1", tags=child_tags("wf", "wf:1", branch="wf"))
    assert reply.status == 200
    action = reply.data["action"]
    assert action["kind"] == "promise.create"
    assert action["head"] == {"corrId": "c1", "status": 200, "version": "2026-04-01"}
    assert action["data"]["promise"]["id"] == "wf:1"
    assert ids(reply.data["preload"]) == ["wf:1"]


def test_fence_create_of_a_targeted_child_dispatches_its_execute(client: Client) -> None:
    version = client.run_root("wf")
    tags = child_tags("wf", "wf:1", **{"resonate:target": "poll://any@workers"})
    client.fence_create("wf", version, "wf:1", tags=tags)
    assert client.executes() == [("poll://any@workers", "wf:1", 0)]
    assert client.task("wf:1")["state"] == "pending"


def test_fence_create_of_an_existing_child_returns_it_unchanged(client: Client) -> None:
    version = client.run_root("wf")
    first = client.fence_create("wf", version, "wf:1").data["action"]["data"]
    client.advance(5)
    again = client.fence_create("wf", version, "wf:1", timeout=5).data["action"]["data"]
    assert again == first


def test_fence_settle_of_a_missing_promise_is_inner_404_with_outer_200(client: Client) -> None:
    version = client.run_root("wf")
    reply = client.fence_settle("wf", version, "wf:9")
    assert reply.status == 200
    assert reply.data["action"]["head"]["status"] == 404
    assert reply.data["action"]["data"] == "Promise not found"
    assert reply.data["action"]["kind"] == "promise.settle"


def test_fence_settle_past_the_childs_deadline_returns_it_timed_out(client: Client) -> None:
    version = client.run_root("wf")
    client.fence_create("wf", version, "wf:1", timeout=1000)
    client.advance(1000)
    reply = client.fence_settle("wf", version, "wf:1")
    assert reply.data["action"]["data"]["promise"]["state"] == "rejected_timedout"


def test_fence_with_a_stale_version_is_409(client: Client) -> None:
    version = client.run_root("wf")
    reply = client.fence_create("wf", version + 1, "wf:1")
    assert (reply.status, reply.data) == (409, "Version mismatch")
    assert client.get("wf:1").status == 404


def test_fence_on_the_tasks_own_promise_is_400(client: Client) -> None:
    version = client.run_root("wf")
    assert client.fence_settle("wf", version, "wf").status == 400


def test_fence_with_another_inner_kind_is_400(client: Client) -> None:
    version = client.run_root("wf")
    reply = client.request("task.fence", {"id": "wf", "version": version, "action": {
        "kind": "promise.get", "data": {"id": "wf:1"}}})
    assert (reply.status, reply.data) == (400, "Invalid fence action kind")


def test_fence_validates_the_inner_create_before_the_lease(client: Client) -> None:
    client.run_root("wf")
    tags = {"resonate:origin": "elsewhere"}
    assert client.fence_create("wf", 99, "wf:1", tags=tags).status == 400
    reply = client.request("task.fence", {"id": "wf", "version": 99, "action": {
        "kind": "promise.create", "data": {"id": "wf:1"}}})
    assert reply.status == 400
    assert reply.data.startswith("Invalid action data")


def test_fence_of_a_missing_task_is_404(client: Client) -> None:
    assert client.fence_create("wf", 1, "wf:1").status == 404


# task.heartbeat ---------------------------------------------------------------------------------
def test_heartbeat_extends_the_lease(client: Client) -> None:
    version = client.run_root("wf")
    client.advance(TTL - 1)
    assert client.heartbeat([("wf", version)]).status == 200
    client.tick(client.now + TTL - 1)
    assert client.task("wf")["state"] == "acquired"
    client.tick(client.now + 1)
    assert client.task("wf")["state"] == "pending"


def test_heartbeat_with_the_wrong_pid_or_version_is_silently_ignored(client: Client) -> None:
    version = client.run_root("wf")
    client.advance(TTL - 1)
    assert client.heartbeat([("wf", version)], pid="intruder").data == {}
    assert client.heartbeat([("wf", version + 1), ("wf:9", 0)]).data == {}
    client.tick(client.now + 1)
    assert client.task("wf")["state"] == "pending"


def test_heartbeat_with_mixed_origins_is_400(client: Client) -> None:
    a = client.run_root("a")
    b = client.run_root("b")
    reply = client.heartbeat([("a", a), ("b", b)])
    assert (reply.status, reply.data) == (400, "All tasks must belong to the same origin")


def test_heartbeat_of_one_origin_covers_several_tasks(client: Client) -> None:
    version = client.run_root("wf")
    client.fence_create("wf", version, "wf:1", tags=child_tags(
        "wf", "wf:1", **{"resonate:target": TARGET}))
    child = client.acquire("wf:1", 0).data["task"]["version"]
    client.advance(TTL - 1)
    assert client.heartbeat([("wf", version), ("wf:1", child)]).status == 200
    client.tick(client.now + 1)
    assert client.task("wf")["state"] == client.task("wf:1")["state"] == "acquired"


@pytest.mark.parametrize("data", [{"pid": "p1", "tasks": []}, {"pid": "", "tasks": [
    {"id": "wf", "version": 1}]}, {"pid": "p1"}])
def test_heartbeat_with_no_tasks_or_no_pid_is_400(client: Client,
                                                  data: dict[str, object]) -> None:
    assert client.request("task.heartbeat", data).status == 400


# task.halt / task.continue ----------------------------------------------------------------------
def test_halt_stops_a_task_and_continue_redispatches_it_at_the_same_version(
    client: Client,
) -> None:
    version = client.run_root("wf")
    assert client.request("task.halt", {"id": "wf"}).data == {}
    assert client.request("task.halt", {"id": "wf"}).status == 200
    assert client.task("wf") == {"id": "wf", "state": "halted", "version": version, "resumes": 0}
    assert client.fence_create("wf", version, "wf:1").status == 409
    assert client.acquire("wf", version).status == 409
    client.tick(client.now + 10 * TTL)
    assert client.executes() == []
    assert client.request("task.continue", {"id": "wf"}).data == {}
    assert client.task("wf")["state"] == "pending"
    assert client.executes() == [(TARGET, "wf", version)]
    client.tick(client.now + RETRY)
    assert client.executes() == [(TARGET, "wf", version)]


def test_a_halted_task_counts_resumes_but_is_not_woken(client: Client) -> None:
    version = suspended_on_external(client)
    client.suspend("wf", version, ["wf:1"])
    client.ok("task.halt", {"id": "wf"})
    client.settle("wf:1")
    assert client.task("wf")["state"] == "halted"
    assert client.executes() == []


def test_the_promise_of_a_halted_task_still_settles_and_fulfils_it(client: Client) -> None:
    client.run_root("wf")
    client.ok("task.halt", {"id": "wf"})
    client.settle("wf", "rejected_canceled")
    assert client.task("wf")["state"] == "fulfilled"


def test_halt_of_a_fulfilled_task_is_409(client: Client) -> None:
    version = client.run_root("wf")
    client.fulfill("wf", version)
    reply = client.request("task.halt", {"id": "wf"})
    assert (reply.status, reply.data) == (409, "Task is fulfilled")


def test_continue_of_a_task_that_is_not_halted_is_409(client: Client) -> None:
    client.run_root("wf")
    reply = client.request("task.continue", {"id": "wf"})
    assert (reply.status, reply.data) == (409, "Task is not halted")


@pytest.mark.parametrize("kind", ["task.halt", "task.continue"])
def test_halt_or_continue_of_a_missing_task_is_404(client: Client, kind: str) -> None:
    assert client.request(kind, {"id": "nope"}).status == 404


# task.release -----------------------------------------------------------------------------------
def test_release_returns_the_task_to_pending_and_redispatches_at_once(client: Client) -> None:
    version = client.run_root("wf")
    assert client.release("wf", version).data == {}
    assert client.task("wf") == {"id": "wf", "state": "pending", "version": version,
                                 "resumes": 0}
    assert client.executes() == [(TARGET, "wf", version)]
    assert client.acquire("wf", version).data["task"]["version"] == version + 1


def test_release_with_a_stale_version_is_409(client: Client) -> None:
    version = client.run_root("wf")
    reply = client.release("wf", version + 1)
    assert (reply.status, reply.data) == (409, "Task version mismatch or invalid state")
    assert client.release("wf", version).status == 200
    assert client.release("wf", version).status == 409


def test_release_of_a_missing_task_is_404(client: Client) -> None:
    assert client.release("nope", 1).status == 404


# task.search ------------------------------------------------------------------------------------
def test_task_search_filters_by_state_and_pages_by_id(client: Client) -> None:
    for name in ["d", "a", "c", "b"]:
        client.create_root(name)
    client.acquire("c", 0)
    page = client.ok("task.search", {"state": "pending", "limit": 2})
    assert ids(page["tasks"]) == ["a", "b"]
    assert page["cursor"] == "b"
    page = client.ok("task.search", {"state": "pending", "limit": 2, "cursor": "b"})
    assert ids(page["tasks"]) == ["d"]
    assert "cursor" not in page
    acquired = client.ok("task.search", {"state": "acquired"})["tasks"]
    assert acquired == [{"id": "c", "state": "acquired", "version": 1, "resumes": 0,
                         "ttl": TTL, "pid": "p1"}]


def test_task_search_with_an_unknown_state_is_400(client: Client) -> None:
    assert client.request("task.search", {"state": "running"}).status == 400
