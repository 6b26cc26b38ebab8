"""HttpTransport reads what real servers send: strict in what we send, tolerant in what we read.

The Resonate server and other implementations of the protocol differ in details that must not
break a client: success as 200 or 201, ``null`` for an empty value, a task record without
``resumes``, a ``task.fence`` action answer without ``kind``/``head``, fields we do not know,
and a full preload in every fence answer. Only an answer that cannot be used is a
``ProtocolError``, and it says what is missing.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from resonate_async._errors import ProtocolError
from resonate_async._status import expect_ok
from resonate_async.protocol import (
    Claim,
    Empty,
    FenceCreate,
    PromiseCreate,
    PromiseGet,
    PromiseResult,
    Response,
    TaskAcquire,
    TaskFence,
    TaskSuspend,
    Value,
)
from tests.transport.test_http_faults import FAR, Handler, fake, promise


def envelope(request: httpx.Request, status: int, data: Any, **extra_head: Any) -> bytes:
    sent = json.loads(request.content)
    return json.dumps({"kind": sent["kind"],
                       "head": {"corrId": sent["head"]["corrId"], "status": status,
                                "version": "2026-04-01", **extra_head},
                       "data": data}).encode()


def serving(status: int, data: Any, **extra_head: Any) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=envelope(request, status, data, **extra_head))
    return handler


def task(version: int = 1, **fields: Any) -> dict[str, Any]:
    return {"id": "wf", "state": "acquired", "version": version, "ttl": 60_000, "pid": "p",
            **fields}


async def send(handler: Handler, request: Any) -> Response:
    async with fake(handler) as t:
        return await t.send(request)


# -- success as 200 or 201 -----------------------------------------------------------------------


async def test_a_201_creation_is_a_success_and_reads_as_200() -> None:
    response = await send(serving(201, {"promise": promise("p1")}),
                          PromiseCreate("p1", FAR))
    assert response.status == 200
    assert isinstance(response.data, PromiseResult)
    assert response.data.promise.id == "p1"


async def test_a_201_claim_is_a_success_with_its_task_and_preload() -> None:
    response = await send(
        serving(201, {"task": task(), "promise": promise("wf"), "preload": [promise("wf:1")]}),
        TaskAcquire("wf", 0, "p", 60_000))
    assert response.status == 200
    assert isinstance(response.data, Claim)
    assert (response.data.task.version, [p.id for p in response.data.preload]) == (1, ["wf:1"])


async def test_a_fenced_creation_answered_201_inside_and_outside_is_a_success() -> None:
    action = {"kind": "promise.create",
              "head": {"corrId": "x", "status": 201, "version": "2026-04-01"},
              "data": {"promise": promise("wf:1")}}
    response = await send(serving(201, {"action": action, "preload": []}),
                          TaskFence("wf", 1, FenceCreate(data=PromiseCreate("wf:1", FAR))))
    assert response.status == 200
    assert response.data.action.head.status == 200
    assert response.data.action.data.promise.id == "wf:1"


def test_expect_ok_takes_201_as_success_and_still_refuses_errors() -> None:
    expect_ok(Response(201, Empty()), "promise.create")
    with pytest.raises(Exception, match="refused"):
        expect_ok(Response(409, "conflict"), "promise.create")


# -- absent and null fields ----------------------------------------------------------------------


async def test_a_promise_with_null_value_param_and_tags_reads_as_empty() -> None:
    record = {**promise("p1", "resolved"), "value": None, "param": None, "tags": None}
    response = await send(serving(200, {"promise": record}), PromiseGet("p1"))
    p = response.data.promise
    assert (p.value, p.param, p.tags) == (Value(), Value(), {})
    assert p.state == "resolved"


@pytest.mark.parametrize(("resumes", "expected"), [
    (None, 0), (3, 3), (["wf:1", "wf:2"], 2), (True, 1),
])
async def test_a_task_record_without_a_resume_count_reads_leniently(
        resumes: Any, expected: int) -> None:
    record = task() if resumes is None else task(resumes=resumes)
    response = await send(serving(200, {"task": record, "promise": promise("wf")}),
                          TaskAcquire("wf", 0, "p", 60_000))
    assert response.data.task.resumes == expected
    assert response.data.preload == []  # an absent preload is an empty one


@pytest.mark.parametrize("envelope_fields", [
    {}, {"kind": "promise.create"}, {"head": {"corrId": "x"}},
])
async def test_a_fence_action_answer_without_kind_or_head_carrying_a_promise_is_a_success(
        envelope_fields: dict[str, Any]) -> None:
    action = {**envelope_fields, "data": {"promise": promise("wf:1")}}
    response = await send(serving(200, {"action": action}),
                          TaskFence("wf", 1, FenceCreate(data=PromiseCreate("wf:1", FAR))))
    assert response.status == 200
    assert response.data.action.head.status == 200
    assert response.data.action.data.promise.id == "wf:1"


async def test_a_fence_action_answer_with_neither_status_nor_promise_is_a_clear_protocol_error(
) -> None:
    handler = serving(200, {"action": {"data": "something went wrong"}, "preload": []})
    with pytest.raises(ProtocolError, match="neither a status nor a promise") as info:
        await send(handler, TaskFence("wf", 1, FenceCreate(data=PromiseCreate("wf:1", FAR))))
    assert "task.fence" in str(info.value)


async def test_a_300_suspend_answer_without_a_preload_is_an_empty_preload() -> None:
    response = await send(serving(300, {}), TaskSuspend("wf", 1, []))
    assert response.status == 300
    assert response.data.preload == []


# -- unknown fields ------------------------------------------------------------------------------


async def test_unknown_fields_everywhere_are_ignored() -> None:
    record = {**promise("wf", "pending"), "extra": {"nested": [1, 2]}, "idempotencyKey": "k"}
    data = {"task": task(future="field"), "promise": record,
            "preload": [{**promise("wf:1", "resolved"), "surprise": True}], "cursor": None,
            "more": 1}
    response = await send(serving(200, data, server="resonate/9.9", shard=3),
                          TaskAcquire("wf", 0, "p", 60_000))
    assert response.status == 200
    assert response.data.promise.id == "wf"
    assert [p.id for p in response.data.preload] == ["wf:1"]


# -- a full preload in every fence answer (the Resonate server's behaviour) ----------------------


async def test_a_full_fence_preload_is_skipped_unread_and_the_action_decoded() -> None:
    # The Resonate server re-sends the branch's whole preload with every fence. The client
    # keeps its own cache and never decodes it: a preload that is big, or holds records we
    # could not even read, costs only a scan.
    preload = [promise(f"wf:{i}", "resolved", {"data": "MQ=="}) for i in range(5000)]
    preload.append({"id": "wf:odd", "state": "not-a-state", "tags": 7})
    action = {"kind": "promise.create",
              "head": {"corrId": "x", "status": 200, "version": "2026-04-01"},
              "data": {"promise": promise("wf:5001")}}
    response = await send(serving(200, {"action": action, "preload": preload}),
                          TaskFence("wf", 1, FenceCreate(data=PromiseCreate("wf:5001", FAR))))
    assert response.status == 200
    assert response.data.action.data.promise.id == "wf:5001"
    assert response.data.preload == []


# -- push messages -------------------------------------------------------------------------------
def test_push_messages_without_a_head_are_read() -> None:
    """The official SDK's in-process server sends ``execute``/``unblock`` with no ``head``."""
    from resonate_async.protocol import Execute, Unblock, decode_message

    execute = decode_message(b'{"kind":"execute","data":{"task":{"id":"wf","version":3}}}')
    assert isinstance(execute, Execute)
    assert (execute.task_id, execute.version, execute.head.server_url) == ("wf", 3, "")
    unblock = decode_message(json.dumps({"kind": "unblock", "data": {"promise": promise(
        "wf", state="resolved")}}).encode())
    assert isinstance(unblock, Unblock)
    assert (unblock.promise.id, unblock.promise.state) == ("wf", "resolved")
