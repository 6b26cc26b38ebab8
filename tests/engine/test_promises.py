"""promise.* operations (protocol.md §3.1-3.6) and the deadline rules of our decisions."""

from __future__ import annotations

import pytest

from tests.engine.conftest import HOUR, TARGET, Client, child_tags, root_tags

UNI = "poll://uni@default/client"


# promise.get ------------------------------------------------------------------------------------
def test_getting_a_missing_promise_is_404(client: Client) -> None:
    reply = client.get("nope")
    assert (reply.status, reply.data) == (404, "Promise not found")


def test_getting_an_existing_promise_returns_its_record(client: Client) -> None:
    created = client.create("p", param={"data": "eyJ4IjoxfQ==", "headers": {"h": "v"}}).data
    reply = client.get("p")
    assert reply.status == 200
    assert reply.data == created
    assert reply.data["promise"]["param"] == {"data": "eyJ4IjoxfQ==", "headers": {"h": "v"}}


def test_getting_an_unarmed_promise_past_its_deadline_times_it_out_lazily(client: Client) -> None:
    client.create("p", timeout=1000)
    client.advance(5000)
    p = client.promise("p")
    assert p["state"] == "rejected_timedout"
    assert p["settledAt"] == p["timeoutAt"]
    assert p["value"] == {}


# promise.create ---------------------------------------------------------------------------------
def test_creating_a_promise_returns_a_pending_record_in_camel_case(client: Client) -> None:
    reply = client.create("p", timeout=1000, tags={"a": "b"})
    assert reply.status == 200
    assert reply.data == {"promise": {
        "id": "p", "state": "pending", "param": {}, "value": {}, "tags": {"a": "b"},
        "timeoutAt": client.now + 1000, "createdAt": client.now}}


def test_creating_an_existing_id_returns_the_existing_record_unchanged(client: Client) -> None:
    first = client.create("p", timeout=1000, tags={"a": "1"}).data
    client.advance(10)
    again = client.create("p", timeout=9999, tags={"a": "2"}, param={"data": "eA=="})
    assert again.status == 200
    assert again.data == first


def test_creating_an_existing_id_with_a_target_creates_no_task(client: Client) -> None:
    client.create("p")
    client.create("p", tags={"resonate:target": TARGET})
    assert client.request("task.get", {"id": "p"}).status == 404
    assert client.drain() == []


def test_a_promise_created_already_expired_is_born_timed_out(client: Client) -> None:
    p = client.create("p", timeout=0).data["promise"]
    assert p["state"] == "rejected_timedout"
    assert p["createdAt"] == p["settledAt"] == p["timeoutAt"] == client.now


def test_a_timer_created_already_expired_is_born_resolved(client: Client) -> None:
    p = client.create("p", timeout=-5, tags={"resonate:timer": "true"}).data["promise"]
    assert p["state"] == "resolved"
    assert p["createdAt"] == p["settledAt"] == p["timeoutAt"] == client.now - 5


def test_a_targeted_promise_created_already_expired_has_a_fulfilled_task_and_no_execute(
    client: Client,
) -> None:
    client.create("p", timeout=0, tags={"resonate:target": TARGET})
    assert client.task("p") == {"id": "p", "state": "fulfilled", "version": 0, "resumes": 0}
    client.tick(client.now + 10 * HOUR)
    assert client.drain() == []


def test_creating_a_targeted_promise_creates_a_pending_task_and_dispatches_execute(
    client: Client,
) -> None:
    client.create("p", tags={"resonate:target": TARGET})
    assert client.task("p") == {"id": "p", "state": "pending", "version": 0, "resumes": 0}
    assert client.drain() == [(TARGET, {"kind": "execute", "head": {"serverUrl": ""},
                                        "data": {"task": {"id": "p", "version": 0}}})]


@pytest.mark.parametrize("timeout_at", [-1, 1.5, "10", None])
def test_creating_with_an_invalid_timeout_is_400(client: Client, timeout_at: object) -> None:
    assert client.request("promise.create", {"id": "p", "timeoutAt": timeout_at}).status == 400


def test_creating_with_a_timeout_beyond_64_bits_is_400(client: Client) -> None:
    assert client.request("promise.create", {"id": "p", "timeoutAt": 2**64}).status == 400


def test_creating_with_the_largest_64_bit_timeout_is_accepted(client: Client) -> None:
    reply = client.request("promise.create", {"id": "p", "timeoutAt": 2**63 - 1,
                                              "tags": {"resonate:target": TARGET}})
    assert reply.status == 200
    assert client.acquire("p", 0, ttl=2**63 - 1).status == 200


@pytest.mark.parametrize("promise_id", ["", "a\x00b"])
def test_creating_with_an_empty_or_nul_id_is_400(client: Client, promise_id: str) -> None:
    assert client.create(promise_id).status == 400


@pytest.mark.parametrize("tags", [{"k": 1}, ["a"], {"k": None}])
def test_creating_with_non_string_tags_is_400(client: Client, tags: object) -> None:
    reply = client.request("promise.create", {"id": "p", "timeoutAt": client.now, "tags": tags})
    assert reply.status == 400


def test_creating_with_non_string_param_data_is_400(client: Client) -> None:
    reply = client.request("promise.create",
                           {"id": "p", "timeoutAt": client.now, "param": {"data": 1}})
    assert reply.status == 400


@pytest.mark.parametrize("target", ["default", "poll://default", "poll://x@default",
                                    "ftp://h/x", "poll://any@", ""])
def test_creating_with_an_invalid_target_is_400(client: Client, target: str) -> None:
    reply = client.create("p", tags={"resonate:target": target})
    assert (reply.status, reply.data) == (400, "Invalid resonate:target address")


@pytest.mark.parametrize("target", ["poll://any@default", "poll://uni@g/pid",
                                    "poll://any@g/pid", "http://w.example/run",
                                    "https://w.example", "gcps://proj/topic"])
def test_creating_with_a_valid_target_is_accepted(client: Client, target: str) -> None:
    assert client.create("p", tags={"resonate:target": target}).status == 200


@pytest.mark.parametrize("delay", ["abc", "-1", "²", "1.5"])
def test_a_delay_that_is_not_a_non_negative_integer_is_400(client: Client, delay: str) -> None:
    reply = client.create("p", tags={"resonate:target": TARGET, "resonate:delay": delay})
    assert reply.status == 400


def test_a_delay_without_a_target_is_400(client: Client) -> None:
    assert client.create("p", tags={"resonate:delay": str(client.now + 10)}).status == 400


def test_a_delay_not_before_the_deadline_is_400(client: Client) -> None:
    tags = {"resonate:target": TARGET, "resonate:delay": str(client.now + HOUR)}
    assert client.create("p", timeout=HOUR, tags=tags).status == 400


def test_a_delayed_task_is_first_dispatched_at_its_delay(client: Client) -> None:
    tags = {"resonate:target": TARGET, "resonate:delay": str(client.now + 5000)}
    assert client.create("p", tags=tags).status == 200
    assert client.executes() == []
    client.tick(client.now + 4999)
    assert client.executes() == []
    client.tick(client.now + 1)
    assert client.executes() == [(TARGET, "p", 0)]


# lineage rules (our decision 1) -------------------------------------------------------------------
def test_a_root_and_its_children_pass_lineage_validation(client: Client) -> None:
    assert client.create("wf", tags=root_tags("wf")).status == 200
    assert client.create("wf:1", tags=child_tags("wf", "wf:1")).status == 200
    assert client.create("wf:1.2", tags=child_tags("wf:1", "wf:1.2")).status == 200
    local = child_tags("wf", "wf:3", branch="wf")
    assert client.create("wf:3", tags=local).status == 200


def test_a_root_id_with_a_dot_is_accepted(client: Client) -> None:
    assert client.create("a.b", tags=root_tags("a.b")).status == 200
    assert client.create("a.b:1", tags=child_tags("a.b", "a.b:1")).status == 200


def test_an_origin_containing_a_colon_is_400(client: Client) -> None:
    reply = client.create("wf:1", tags={"resonate:origin": "wf:1"})
    assert reply.status == 400
    assert "resonate:origin" in reply.data


@pytest.mark.parametrize(("promise_id", "tag", "ancestor"), [
    ("other:1", "resonate:origin", "wf"),
    ("wf1", "resonate:origin", "wf"),
    ("wf.1", "resonate:origin", "wf"),
    ("wf:12", "resonate:parent", "wf:1"),
    ("wf:1:2", "resonate:parent", "wf:1"),
    ("wf:2", "resonate:branch", "wf:1"),
    ("wfx", "resonate:branch", "wf"),
])
def test_a_child_not_extending_its_declared_ancestor_is_400(
    client: Client, promise_id: str, tag: str, ancestor: str,
) -> None:
    reply = client.create(promise_id, tags={tag: ancestor})
    assert reply.status == 400
    assert tag in reply.data


def test_a_prefix_containing_a_colon_is_400(client: Client) -> None:
    assert client.create("wf", tags={"resonate:prefix": "wf:1"}).status == 400


# promise.settle ---------------------------------------------------------------------------------
def test_settling_a_missing_promise_is_404(client: Client) -> None:
    reply = client.settle("nope")
    assert (reply.status, reply.data) == (404, "Promise not found")


@pytest.mark.parametrize("state", ["resolved", "rejected", "rejected_canceled"])
def test_settling_a_pending_promise_records_state_value_and_time(client: Client,
                                                                 state: str) -> None:
    client.create("p")
    client.advance(7)
    p = client.settle("p", state, {"data": "NDI="}).data["promise"]
    assert (p["state"], p["value"], p["settledAt"]) == (state, {"data": "NDI="}, client.now)


@pytest.mark.parametrize("state", ["pending", "rejected_timedout", "done"])
def test_settling_into_a_state_clients_may_not_choose_is_400(client: Client, state: str) -> None:
    client.create("p")
    assert client.settle("p", state).status == 400
    assert client.promise("p")["state"] == "pending"


def test_settling_a_settled_promise_returns_it_unchanged(client: Client) -> None:
    client.create("p")
    first = client.settle("p", "resolved", {"data": "MQ=="}).data
    client.advance(5)
    again = client.settle("p", "rejected", {"data": "Mg=="})
    assert again.status == 200
    assert again.data == first


def test_settling_past_the_deadline_returns_rejected_timedout(client: Client) -> None:
    client.create("p", timeout=1000)
    client.advance(1000)
    p = client.settle("p", "resolved", {"data": "MQ=="}).data["promise"]
    assert p["state"] == "rejected_timedout"
    assert p["value"] == {}
    assert p["settledAt"] == p["timeoutAt"]


def test_settling_a_timer_past_its_deadline_returns_it_resolved_without_value(
    client: Client,
) -> None:
    client.create("p", timeout=1000, tags={"resonate:timer": "true"})
    client.advance(2000)
    p = client.settle("p", "rejected", {"data": "MQ=="}).data["promise"]
    assert (p["state"], p["value"], p["settledAt"]) == ("resolved", {}, p["timeoutAt"])


def test_settling_a_promise_just_before_its_deadline_succeeds(client: Client) -> None:
    client.create("p", timeout=1000)
    client.advance(999)
    assert client.settle("p").data["promise"]["state"] == "resolved"


# deadlines armed as the Resonate server arms them: only targeted promises ------------------------
TIMERS = "poll://any@resonate-timers"


def test_tick_resolves_a_targeted_timer_at_its_deadline(client: Client) -> None:
    client.create("t", timeout=1000, tags={"resonate:timer": "true", "resonate:target": TIMERS})
    client.tick(client.now + 999)
    assert client.engine.storage.get_promise("t").state == "pending"  # type: ignore[union-attr]
    client.tick(client.now + 1)
    stored = client.engine.storage.get_promise("t")
    assert stored is not None
    assert (stored.state, stored.settled_at) == ("resolved", client.now)


@pytest.mark.parametrize("tags", [{"resonate:timer": "true"}, {"resonate:external": "true"}])
def test_tick_leaves_an_untargeted_timer_or_external_promise_to_time_out_on_access(
    client: Client, tags: dict[str, str],
) -> None:
    client.create("h", timeout=1000, tags=tags)
    client.tick(client.now + 5000)
    stored = client.engine.storage.get_promise("h")
    assert stored is not None
    assert stored.state == "pending"
    expected = "resolved" if "resonate:timer" in tags else "rejected_timedout"
    assert client.promise("h")["state"] == expected
    assert client.engine.storage.get_promise("h").state == expected  # type: ignore[union-attr]


def test_tick_times_out_a_targeted_external_promise(client: Client) -> None:
    client.create("h", timeout=1000, tags={"resonate:external": "true", "resonate:target": TIMERS})
    client.tick(client.now + 1000)
    stored = client.engine.storage.get_promise("h")
    assert stored is not None
    assert stored.state == "rejected_timedout"


def test_tick_times_out_a_targeted_promise_and_fulfils_its_task(client: Client) -> None:
    client.create("r", timeout=1000, tags={"resonate:target": TARGET})
    client.tick(client.now + 1000)
    stored = client.engine.storage.get_promise("r")
    assert stored is not None
    assert stored.state == "rejected_timedout"
    row = client.engine.storage.get_task("r")
    assert row is not None
    assert row.state == "fulfilled"


def test_tick_leaves_a_local_promise_pending_past_its_deadline(client: Client) -> None:
    client.create("l", timeout=1000)
    client.tick(client.now + 5000)
    stored = client.engine.storage.get_promise("l")
    assert stored is not None
    assert stored.state == "pending"
    page = client.ok("promise.search", {"state": "pending"})
    assert [p["id"] for p in page["promises"]] == ["l"]


def test_a_timer_timeout_sends_unblock_to_its_listeners(client: Client) -> None:
    client.create("t", timeout=1000, tags={"resonate:timer": "true", "resonate:target": TIMERS})
    client.listen("t")
    client.drain()  # the timer task's execute, which goes to the timers' group
    client.tick(client.now + 1000)
    [(address, message)] = client.drain()
    assert address == UNI
    assert message["kind"] == "unblock"
    assert message["head"] == {}
    assert message["data"]["promise"]["state"] == "resolved"


# promise.register_callback ----------------------------------------------------------------------
def test_register_callback_on_itself_is_400(client: Client) -> None:
    client.create_root("wf")
    assert client.callback("wf", "wf").status == 400


def test_register_callback_across_origins_is_400(client: Client) -> None:
    client.create_root("a")
    client.create_root("b")
    assert client.callback("a", "b").status == 400


def test_register_callback_with_a_missing_awaited_is_404(client: Client) -> None:
    client.create_root("wf")
    reply = client.callback("wf:1", "wf")
    assert (reply.status, reply.data) == (404, "Awaited promise not found")


def test_register_callback_with_a_missing_awaiter_is_422(client: Client) -> None:
    client.create("wf:1", tags={"resonate:timer": "true"})
    reply = client.callback("wf:1", "wf")
    assert (reply.status, reply.data) == (422, "Awaiter promise not found")


def test_register_callback_with_an_untargeted_awaiter_is_422(client: Client) -> None:
    client.create("wf")
    client.create("wf:1", tags={"resonate:timer": "true"})
    reply = client.callback("wf:1", "wf")
    assert (reply.status, reply.data) == (422, "Awaiter promise has no resonate:target tag")


def test_register_callback_on_a_local_promise_is_422(client: Client) -> None:
    client.create_root("wf")
    client.create("wf:1", tags=child_tags("wf", "wf:1", branch="wf"))
    reply = client.callback("wf:1", "wf")
    assert reply.status == 422
    assert "cannot be awaited" in reply.data


@pytest.mark.parametrize("tags", [{"resonate:timer": "true"}, {"resonate:external": "true"},
                                  {"resonate:target": TARGET}])
def test_register_callback_on_an_awaitable_pending_promise_returns_it(
    client: Client, tags: dict[str, str],
) -> None:
    client.create_root("wf")
    client.create("wf:1", tags=tags)
    reply = client.callback("wf:1", "wf")
    assert reply.status == 200
    assert reply.data["promise"]["id"] == "wf:1"
    assert reply.data["promise"]["state"] == "pending"


def test_register_callback_on_a_settled_promise_resumes_a_suspended_awaiter(
    client: Client,
) -> None:
    version = client.run_root("wf")
    client.create("wf:1", tags={"resonate:external": "true"})
    client.create("wf:2", tags={"resonate:external": "true"})
    assert client.suspend("wf", version, ["wf:1"]).status == 200
    client.settle("wf:2")
    assert client.executes() == []
    assert client.callback("wf:2", "wf").status == 200
    assert client.task("wf")["state"] == "pending"
    assert client.executes() == [(TARGET, "wf", version)]


def test_register_callback_on_a_settled_promise_counts_a_resume_for_an_acquired_awaiter(
    client: Client,
) -> None:
    client.run_root("wf")
    client.create("wf:1", tags={"resonate:external": "true"})
    client.settle("wf:1")
    client.callback("wf:1", "wf")
    task = client.task("wf")
    assert (task["state"], task["resumes"]) == ("acquired", 1)


def test_register_callback_is_idempotent(client: Client) -> None:
    version = client.run_root("wf")
    client.create("wf:1", tags={"resonate:external": "true"})
    assert client.callback("wf:1", "wf").status == 200
    assert client.callback("wf:1", "wf").status == 200
    assert client.suspend("wf", version, ["wf:1"]).status == 200
    client.settle("wf:1")
    assert client.executes() == [(TARGET, "wf", version)]


# promise.register_listener ----------------------------------------------------------------------
def test_register_listener_on_a_missing_promise_is_404(client: Client) -> None:
    reply = client.listen("nope")
    assert (reply.status, reply.data) == (404, "Awaited promise not found")


@pytest.mark.parametrize("address", ["nowhere", "poll://default", "poll://bad@g", "x://y"])
def test_register_listener_with_an_invalid_address_is_400(client: Client, address: str) -> None:
    client.create_root("wf")
    reply = client.listen("wf", address)
    assert (reply.status, reply.data) == (400, "Invalid listener address")


def test_register_listener_on_a_local_promise_is_422(client: Client) -> None:
    client.create("local")
    assert client.listen("local").status == 422


def test_listeners_get_exactly_one_unblock_per_address(client: Client) -> None:
    client.create_root("wf")
    client.drain()
    client.listen("wf")
    client.listen("wf")
    client.listen("wf", "poll://uni@default/other")
    settled = client.settle("wf", "resolved", {"data": "NDI="}).data["promise"]
    messages = client.drain()
    assert messages == [
        (UNI, {"kind": "unblock", "head": {}, "data": {"promise": settled}}),
        ("poll://uni@default/other", {"kind": "unblock", "head": {}, "data": {"promise": settled}}),
    ]
    client.settle("wf", "rejected")
    assert client.drain() == []


def test_register_listener_on_a_settled_promise_returns_it_and_records_nothing(
    client: Client,
) -> None:
    client.create_root("wf")
    client.settle("wf")
    client.drain()
    reply = client.listen("wf")
    assert reply.data["promise"]["state"] == "resolved"
    assert client.drain() == []


# promise.search ---------------------------------------------------------------------------------
def test_search_pages_promises_by_id_with_a_cursor(client: Client) -> None:
    for i in range(5):
        client.create(f"p{i}", tags={"g": "x" if i % 2 == 0 else "y"})
    first = client.ok("promise.search", {"limit": 2})
    assert [p["id"] for p in first["promises"]] == ["p0", "p1"]
    assert first["cursor"] == "p1"
    second = client.ok("promise.search", {"limit": 2, "cursor": first["cursor"]})
    assert [p["id"] for p in second["promises"]] == ["p2", "p3"]
    last = client.ok("promise.search", {"limit": 2, "cursor": second["cursor"]})
    assert [p["id"] for p in last["promises"]] == ["p4"]
    assert "cursor" not in last


def test_search_filters_promises_by_state_and_every_tag(client: Client) -> None:
    client.create("a", tags={"g": "x", "h": "1"})
    client.create("b", tags={"g": "x"})
    client.create("c", tags={"g": "x", "h": "1"})
    client.settle("c")
    found = client.ok("promise.search", {"tags": {"g": "x", "h": "1"}})
    assert [p["id"] for p in found["promises"]] == ["a", "c"]
    found = client.ok("promise.search", {"state": "pending", "tags": {"g": "x"}})
    assert [p["id"] for p in found["promises"]] == ["a", "b"]


def test_search_without_limit_returns_at_most_100_promises(client: Client) -> None:
    for i in range(101):
        client.create(f"p{i:03}")
    found = client.ok("promise.search", {})
    assert len(found["promises"]) == 100
    assert found["cursor"] == "p099"


@pytest.mark.parametrize("kind", ["promise.search", "task.search", "schedule.search"])
@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_search_with_a_limit_outside_1_to_1000_is_400(client: Client, kind: str,
                                                      limit: int) -> None:
    reply = client.request(kind, {"limit": limit})
    assert reply.status == 400
    assert "limit" in reply.data


@pytest.mark.parametrize("kind", ["promise.search", "task.search", "schedule.search"])
def test_search_with_limit_1000_is_accepted(client: Client, kind: str) -> None:
    assert client.request(kind, {"limit": 1000}).status == 200


def test_search_with_an_unknown_state_is_400(client: Client) -> None:
    assert client.request("promise.search", {"state": "done"}).status == 400
