"""The task lifecycle and the settlement cascade end to end (protocol.md §4, §7)."""

from __future__ import annotations

from resonate_async.protocol import FenceSettle, PromiseSettle, TaskFence
from tests.engine.conftest import HOUR, RETRY, TARGET, TTL, Client, child_tags

WORKERS = "poll://any@workers"
ME = "poll://uni@default/client"


def rpc_child(client: Client, parent: str, version: int, child: str,
              target: str = WORKERS) -> None:
    tags = child_tags(parent, child, **{"resonate:target": target})
    reply = client.fence_create(parent, version, child, tags=tags)
    assert reply.status == 200, reply


def test_rpc_child_runs_elsewhere_and_its_result_resumes_the_parent(client: Client) -> None:
    client.create_root("wf")
    assert client.executes() == [(TARGET, "wf", 0)]
    v = client.acquire("wf", 0, pid="b2").data["task"]["version"]
    assert v == 1
    client.fence_create("wf", v, "wf:1", tags=child_tags("wf", "wf:1", branch="wf"))
    client.fence_settle("wf", v, "wf:1")
    rpc_child(client, "wf", v, "wf:2")
    assert client.executes() == [(WORKERS, "wf:2", 0)]
    assert client.suspend("wf", v, ["wf:2"]).status == 200

    cv = client.acquire("wf:2", 0, pid="a1").data["task"]["version"]
    assert client.fulfill("wf:2", cv, value={"data": "Nw=="}).status == 200
    assert client.task("wf:2")["state"] == "fulfilled"
    assert client.task("wf") == {"id": "wf", "state": "pending", "version": v, "resumes": 1}
    assert client.executes() == [(TARGET, "wf", v)]

    claim = client.acquire("wf", v, pid="b2").data
    assert claim["task"]["version"] == v + 1
    assert claim["task"]["resumes"] == 0
    assert [p["id"] for p in claim["preload"]] == ["wf:1"]
    again = client.fence_create("wf", v + 1, "wf:2", tags=child_tags(
        "wf", "wf:2", **{"resonate:target": WORKERS})).data["action"]["data"]["promise"]
    assert (again["state"], again["value"]) == ("resolved", {"data": "Nw=="})
    assert client.executes() == []
    client.listen("wf", ME)
    assert client.fulfill("wf", v + 1, value={"data": "OA=="}).status == 200
    [(address, message)] = client.drain()
    assert address == ME
    assert message["data"]["promise"]["value"] == {"data": "OA=="}


def test_a_task_suspended_on_several_promises_is_resumed_once_by_the_first(
    client: Client,
) -> None:
    v = client.run_root("wf")
    rpc_child(client, "wf", v, "wf:1")
    rpc_child(client, "wf", v, "wf:2")
    client.drain()
    client.suspend("wf", v, ["wf:1", "wf:2"])
    client.settle("wf:1")
    client.settle("wf:2")
    assert client.executes() == [(TARGET, "wf", v)]
    assert client.task("wf")["resumes"] == 2


TIMERS = "poll://any@resonate-timers"


def test_a_sleeping_task_is_woken_by_its_targeted_timer_deadline(client: Client) -> None:
    v = client.run_root("wf")
    timer = child_tags("wf", "wf:1", **{"resonate:timer": "true", "resonate:target": TIMERS})
    client.fence_create("wf", v, "wf:1", timeout=5000, tags=timer)
    assert client.executes() == [(TIMERS, "wf:1", 0)]
    client.suspend("wf", v, ["wf:1"])
    client.tick(client.now + 4999)
    assert client.executes() == []
    client.tick(client.now + 1)
    assert client.executes() == [(TARGET, "wf", v)]
    assert client.task("wf:1")["state"] == "fulfilled"
    claim = client.acquire("wf", v).data
    replayed = client.fence_create("wf", v + 1, "wf:1", tags=timer)
    assert replayed.data["action"]["data"]["promise"]["state"] == "resolved"
    assert claim["task"]["version"] == v + 1


def test_an_untargeted_timer_is_not_fired_in_the_background(client: Client) -> None:
    # The Resonate server arms only targeted deadlines: an untargeted timer never wakes its
    # awaiter by itself; the SDK must give its timers a target.
    v = client.run_root("wf")
    timer = child_tags("wf", "wf:1", **{"resonate:timer": "true"})
    client.fence_create("wf", v, "wf:1", timeout=5000, tags=timer)
    client.suspend("wf", v, ["wf:1"])
    client.tick(client.now + 10_000)
    assert client.executes() == []
    assert client.task("wf")["state"] == "suspended"


def test_touching_an_expired_untargeted_promise_times_it_out_and_wakes_its_awaiter(
    client: Client,
) -> None:
    v = client.run_root("wf")
    hitl = child_tags("wf", "wf:1", **{"resonate:external": "true"})
    client.fence_create("wf", v, "wf:1", timeout=5000, tags=hitl)
    client.suspend("wf", v, ["wf:1"])
    client.tick(client.now + 5000)
    assert client.executes() == []
    assert client.promise("wf:1")["state"] == "rejected_timedout"  # lazily, on access
    assert client.executes() == [(TARGET, "wf", v)]


def test_a_task_awaiting_a_targeted_external_promise_is_woken_by_its_timeout(
    client: Client,
) -> None:
    v = client.run_root("wf")
    hitl = child_tags("wf", "wf:1", **{"resonate:external": "true", "resonate:target": TIMERS})
    client.fence_create("wf", v, "wf:1", timeout=5000, tags=hitl)
    client.drain()
    client.suspend("wf", v, ["wf:1"])
    client.tick(client.now + 5000)
    assert client.executes() == [(TARGET, "wf", v)]
    assert client.promise("wf:1")["state"] == "rejected_timedout"


def test_the_retry_timer_resends_execute_every_retry_timeout_while_pending(
    client: Client,
) -> None:
    client.create_root("wf")
    assert client.executes() == [(TARGET, "wf", 0)]
    client.tick(client.now + RETRY - 1)
    assert client.executes() == []
    for _ in range(3):
        client.tick(client.now + 1)
        assert client.executes() == [(TARGET, "wf", 0)]
        client.tick(client.now + RETRY - 1)
        assert client.executes() == []
    client.acquire("wf", 0)
    client.tick(client.now + TTL - 1)
    assert client.executes() == []


def test_undrained_executes_for_one_task_coalesce(client: Client) -> None:
    client.create_root("wf")
    client.tick(client.now + RETRY)
    client.tick(client.now + RETRY)
    assert client.executes() == [(TARGET, "wf", 0)]


def test_an_expired_lease_returns_the_task_to_pending_at_the_same_version(
    client: Client,
) -> None:
    v = client.run_root("wf", pid="crashed")
    client.tick(client.now + TTL - 1)
    assert client.task("wf")["state"] == "acquired"
    client.tick(client.now + 1)
    assert client.task("wf") == {"id": "wf", "state": "pending", "version": v, "resumes": 0}
    assert client.executes() == [(TARGET, "wf", v)]
    assert client.fence_create("wf", v, "wf:1").status == 409
    assert client.fulfill("wf", v).status == 409
    assert client.acquire("wf", v, pid="new").data["task"]["version"] == v + 1
    assert client.release("wf", v).status == 409
    assert client.heartbeat([("wf", v)], pid="crashed").status == 200  # silently ignored
    client.tick(client.now + TTL)
    assert client.executes() == [(TARGET, "wf", v + 1)]


def test_a_stale_execute_cannot_be_acquired_twice(client: Client) -> None:
    client.create_root("wf")
    assert client.acquire("wf", 0, pid="a").status == 200
    assert client.acquire("wf", 0, pid="b").status == 409


def test_canceling_a_root_from_outside_fulfils_its_task_and_fences_out_the_holder(
    client: Client,
) -> None:
    v = client.run_root("wf")
    client.listen("wf", ME)
    canceled = client.settle("wf", "rejected_canceled").data["promise"]
    assert client.task("wf") == {"id": "wf", "state": "fulfilled", "version": v, "resumes": 0}
    assert client.fence_create("wf", v, "wf:1").status == 409
    assert client.suspend("wf", v, ["wf:1"]).status == 409
    assert client.fulfill("wf", v).status == 409
    assert client.drain() == [(ME, {"kind": "unblock", "head": {},
                                    "data": {"promise": canceled}})]
    client.tick(client.now + 10 * HOUR)
    assert client.drain() == []


def test_a_fulfilled_awaiter_is_not_resumed_by_its_callbacks(client: Client) -> None:
    v = client.run_root("wf")
    rpc_child(client, "wf", v, "wf:1")
    client.suspend("wf", v, ["wf:1"])
    client.drain()
    client.settle("wf", "rejected_canceled")
    client.settle("wf:1")
    assert client.executes() == []
    assert client.task("wf")["state"] == "fulfilled"


def test_a_root_timeout_cascades_to_listeners_and_its_task(client: Client) -> None:
    client.create_root("wf", timeout=1000)
    client.listen("wf", ME)
    client.drain()
    client.tick(client.now + 1000)
    [(address, message)] = client.drain()
    assert address == ME
    assert message["data"]["promise"]["state"] == "rejected_timedout"
    assert client.task("wf")["state"] == "fulfilled"


def test_a_resumed_task_that_is_not_claimed_is_redispatched_by_its_retry_timer(
    client: Client,
) -> None:
    v = client.run_root("wf")
    rpc_child(client, "wf", v, "wf:1")
    client.suspend("wf", v, ["wf:1"])
    client.settle("wf:1")
    client.drain()
    client.tick(client.now + RETRY)
    assert client.executes() == [(TARGET, "wf", v)]


def test_release_leases_returns_acquired_tasks_to_pending(client: Client) -> None:
    a = client.run_root("a", pid="p1")
    b = client.run_root("b", pid="p2")
    assert client.engine.release_leases(client.now, keep_pid="p2") == 1
    assert client.task("a")["state"] == "pending"
    assert client.task("b")["state"] == "acquired"
    assert client.executes() == [(TARGET, "a", a)]
    assert client.engine.release_leases(client.now) == 1
    assert client.executes() == [(TARGET, "b", b)]


def test_next_due_names_the_earliest_armed_deadline(client: Client) -> None:
    assert client.engine.next_due() is None
    client.create_root("wf")
    assert client.engine.next_due() == client.now + RETRY
    client.create("t", timeout=5000, tags={"resonate:timer": "true"})
    assert client.engine.next_due() == client.now + RETRY  # untargeted: not armed
    client.create("u", timeout=5000, tags={"resonate:timer": "true", "resonate:target": TIMERS})
    assert client.engine.next_due() == client.now + 5000
    client.tick(client.now + 5000)
    assert client.engine.next_due() == client.now - 5000 + RETRY


def test_next_written_deadline_reports_the_earliest_new_deadline_once(client: Client) -> None:
    storage = client.engine.storage
    storage.next_written_deadline()
    client.create("t", timeout=5000, tags={"resonate:timer": "true", "resonate:target": TIMERS})
    client.create("u", timeout=3000, tags={"resonate:timer": "true", "resonate:target": TIMERS})
    client.create("v", timeout=1000, tags={"resonate:timer": "true"})  # not armed
    assert storage.next_written_deadline() == client.now + 3000
    assert storage.next_written_deadline() is None


def test_execute_can_leave_the_preload_out_of_fence_answers(client: Client) -> None:
    v = client.run_root("wf")
    client.fence_create("wf", v, "wf:1", tags=child_tags("wf", "wf:1", branch="wf"))
    request = TaskFence("wf", v, FenceSettle(PromiseSettle("wf:1", "resolved")))
    with_preload = client.engine.execute(request, client.now, "c1")
    without = client.engine.execute(request, client.now, "c1", fence_preload=False)
    assert [p.id for p in with_preload.data.preload] == ["wf:1"]
    assert without.data.preload == []
    assert without.data.action.head.status == 200
