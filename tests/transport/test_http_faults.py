"""HttpTransport against a fake server (httpx.MockTransport): retries, bad answers, auth, SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

from resonate_async._errors import NotStartedError, ProtocolError, TransportError
from resonate_async.protocol import (
    Action,
    ActionHead,
    Empty,
    Execute,
    PromiseCreate,
    PromiseGet,
    PromiseResult,
    PromiseSettle,
    ScheduleDelete,
    TaskAcquire,
    TaskFulfill,
    Unblock,
    Value,
)
from resonate_async.transport import HttpTransport

URL = "http://resonate.test"
FAR = 4_102_444_800_000

Handler = Callable[[httpx.Request], Any]


def promise(pid: str, state: str = "pending",
            value: dict[str, Any] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"id": pid, "state": state, "param": {}, "value": value or {},
                              "tags": {}, "timeoutAt": FAR, "createdAt": 1}
    if state != "pending":
        record["settledAt"] = 2
    return record


def answer(request: httpx.Request, status: int, data: Any, *, corr_id: str | None = None,
           kind: str | None = None) -> httpx.Response:
    sent = json.loads(request.content)
    body = {"kind": kind or sent["kind"],
            "head": {"corrId": corr_id or sent["head"]["corrId"], "status": status,
                     "version": "2026-04-01"},
            "data": data}
    return httpx.Response(status, json=body)


def fake(handler: Handler, **options: Any) -> HttpTransport:
    options = {"backoff": 0.001, "backoff_max": 0.01, "retry_for": 2.0, **options}
    return HttpTransport(URL, transport=httpx.MockTransport(handler), **options)


def fulfill(task_id: str, state: str = "resolved", data: str = "MQ==") -> TaskFulfill:
    settle = PromiseSettle(task_id, state, Value(data=data))  # type: ignore[arg-type]
    return TaskFulfill(task_id, 1, Action("promise.settle", ActionHead(), settle))


# -- requests ------------------------------------------------------------------------------------


async def test_token_travels_in_head_auth_and_in_the_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request, 404, "Promise not found")

    async with fake(handler, token="jwt-123") as t:
        response = await t.send(PromiseGet("p1"))
    assert response.status == 404
    assert response.data == "Promise not found"
    (request,) = seen
    assert request.method == "POST"
    assert request.url == URL + "/"
    assert request.headers["authorization"] == "Bearer jwt-123"
    body = json.loads(request.content)
    assert body["head"]["auth"] == "jwt-123"
    assert body["head"]["version"] == "2026-04-01"
    assert body["kind"] == "promise.get"
    assert body["data"] == {"id": "p1"}


async def test_every_request_has_a_fresh_corr_id() -> None:
    corr_ids: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        corr_ids.append(json.loads(request.content)["head"]["corrId"])
        return answer(request, 200, {"promise": promise("p1")})

    async with fake(handler) as t:
        for _ in range(3):
            assert (await t.send(PromiseGet("p1"))).status == 200
    assert len(set(corr_ids)) == 3


async def test_no_token_means_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request, 200, {"promise": promise("p1")})

    async with fake(handler) as t:
        await t.send(PromiseGet("p1"))
    assert "authorization" not in seen[0].headers
    assert "auth" not in json.loads(seen[0].content)["head"]


async def test_the_status_comes_from_the_envelope_not_from_http() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        ok = answer(request, 200, {"promise": promise("p1")})
        return httpx.Response(418, content=ok.content)

    async with fake(handler) as t:
        response = await t.send(PromiseGet("p1"))
    assert response.status == 200
    assert isinstance(response.data, PromiseResult)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not a response envelope"),
        (b"<html>oops</html>", "not a response envelope"),
        (b'{"kind":"promise.get","head":{"corrId":"other","status":200},"data":{}}', "corrId"),
        (b'{"kind":"promise.get","head":{"corrId":"%s","status":200},"data":{"x":1}}',
         "malformed 200"),
        (b'{"kind":"promise.get","head":{"corrId":"%s","status":302},"data":{}}',
         "unexpected status 302"),
    ],
)
async def test_a_malformed_answer_is_a_protocol_error_naming_the_kind(
        body: bytes, fragment: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        corr_id = json.loads(request.content)["head"]["corrId"]
        content = body.replace(b"%s", corr_id.encode()) if b"%s" in body else body
        return httpx.Response(200, content=content)

    async with fake(handler) as t:
        with pytest.raises(ProtocolError, match=fragment) as info:
            await t.send(PromiseGet("p1"))
    assert info.value.kind == "promise.get"
    assert "promise.get" in str(info.value)


async def test_a_500_is_retried_for_a_kind_that_is_safe_to_repeat() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return answer(request, 500, "Internal error: database is locked")
        return answer(request, 200, {"promise": promise("p1")})

    async with fake(handler) as t:
        response = await t.send(PromiseCreate("p1", FAR))
    assert response.status == 200
    assert calls == 3


async def test_a_500_is_returned_once_the_retry_time_is_spent() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return answer(request, 500, "Internal error: disk full")

    async with fake(handler, retry_for=0.05) as t:
        response = await t.send(PromiseGet("p1"))
    assert response.status == 500
    assert response.data == "Internal error: disk full"
    assert calls >= 2


async def test_a_500_is_not_retried_for_a_kind_that_is_unsafe_to_repeat() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return answer(request, 500, "Internal error: boom")

    async with fake(handler) as t:
        response = await t.send(TaskAcquire("t1", 0, "pid", 60_000))
    assert (response.status, calls) == (500, 1)


async def test_a_500_from_a_server_that_could_not_read_the_request_is_an_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return answer(request, 500, "Internal error: panic", corr_id="0", kind="unknown")

    async with fake(handler, retry_for=0.02) as t:
        response = await t.send(PromiseGet("p1"))
    assert response.status == 500


async def test_refused_connections_are_retried_until_the_server_answers() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise httpx.ConnectError("Connection refused", request=request)
        return answer(request, 404, "Task not found")

    async with fake(handler) as t:  # not sent: even an unsafe kind is retried
        response = await t.send(TaskAcquire("t1", 0, "pid", 60_000))
    assert response.status == 404
    assert calls == 4


async def test_a_server_that_never_answers_is_a_transport_error_naming_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    async with fake(handler, retry_for=0.05) as t:
        with pytest.raises(TransportError, match="cannot reach the Resonate server") as info:
            await t.send(PromiseGet("p1"))
    assert URL in str(info.value)
    assert "retry_for" in str(info.value)


async def test_a_lost_answer_is_retried_for_a_kind_that_is_safe_to_repeat() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadError("Connection reset by peer", request=request)
        if calls == 2:
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        return answer(request, 200, {"promise": promise("p1")})

    async with fake(handler) as t:
        response = await t.send(PromiseCreate("p1", FAR))
    assert response.status == 200
    assert calls == 3


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_a_lost_answer_is_not_repeated_for_task_acquire(
        error: type[httpx.TransportError]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise error("lost", request=request)

    async with fake(handler) as t:
        with pytest.raises(TransportError, match="not safe to repeat") as info:
            await t.send(TaskAcquire("t1", 0, "pid", 60_000))
    assert calls == 1
    assert "task.acquire" in str(info.value)


async def test_a_repeated_fulfill_that_conflicts_is_confirmed_with_promise_get() -> None:
    kinds: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        kind = json.loads(request.content)["kind"]
        kinds.append(kind)
        if kind == "task.fulfill" and kinds.count(kind) == 1:
            raise httpx.ReadError("reset after the server committed", request=request)
        if kind == "task.fulfill":
            return answer(request, 409, "Task version mismatch or invalid state")
        return answer(request, 200, {"promise": promise("t1", "resolved", {"data": "MQ=="})})

    async with fake(handler) as t:
        response = await t.send(fulfill("t1"))
    assert kinds == ["task.fulfill", "task.fulfill", "promise.get"]
    assert response.status == 200
    assert isinstance(response.data, PromiseResult)
    assert response.data.promise.state == "resolved"


async def test_a_repeated_fulfill_keeps_the_conflict_when_someone_else_settled() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        kind = json.loads(request.content)["kind"]
        if kind == "task.fulfill":
            handler.calls += 1  # type: ignore[attr-defined]
            if handler.calls == 1:  # type: ignore[attr-defined]
                raise httpx.ReadTimeout("no answer", request=request)
            return answer(request, 409, "Task version mismatch or invalid state")
        return answer(request, 200, {"promise": promise("t1", "rejected_canceled")})

    handler.calls = 0  # type: ignore[attr-defined]
    async with fake(handler) as t:
        response = await t.send(fulfill("t1"))
    assert response.status == 409


async def test_a_first_fulfill_that_conflicts_is_not_second_guessed() -> None:
    kinds: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        kinds.append(json.loads(request.content)["kind"])
        return answer(request, 409, "Task version mismatch or invalid state")

    async with fake(handler) as t:
        response = await t.send(fulfill("t1"))
    assert (response.status, kinds) == (409, ["task.fulfill"])


async def test_a_repeated_schedule_delete_that_finds_nothing_succeeded() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadError("reset", request=request)
        return answer(request, 404, "Schedule not found")

    async with fake(handler) as t:
        response = await t.send(ScheduleDelete("nightly"))
    assert response.status == 200
    assert isinstance(response.data, Empty)


async def test_a_too_large_request_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, text="Payload Too Large")

    async with fake(handler) as t:
        with pytest.raises(ProtocolError, match="413"):
            await t.send(PromiseCreate("p1", FAR, param=Value(data="x" * 100)))


async def test_redirects_are_not_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": "http://elsewhere/"})

    async with fake(handler) as t:
        with pytest.raises(ProtocolError):
            await t.send(PromiseGet("p1"))


async def test_a_transport_must_be_entered_before_use() -> None:
    t = HttpTransport(URL)
    with pytest.raises(NotStartedError, match="async with"):
        await t.send(PromiseGet("p1"))
    with pytest.raises(NotStartedError):
        t.subscribe("default", "pid")


async def test_aclose_is_idempotent_and_construction_needs_no_loop() -> None:
    t = fake(lambda request: answer(request, 200, {"promise": promise("p1")}))
    async with t:
        assert (await t.send(PromiseGet("p1"))).status == 200
    await t.aclose()
    await t.aclose()
    async with t:  # and it can be entered again
        assert (await t.send(PromiseGet("p1"))).status == 200


def test_a_url_without_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="http://"):
        HttpTransport("localhost:8001")


# -- subscriptions ---------------------------------------------------------------------------

EXECUTE = b'{"kind":"execute","head":{"serverUrl":""},"data":{"task":{"id":"t1","version":0}}}'
UNBLOCK = json.dumps({"kind": "unblock", "head": {},
                      "data": {"promise": promise("p1", "resolved")}}).encode()


class FakeStreams:
    """Serves one scripted SSE body per connection; later connections stay open and idle."""

    def __init__(self, *bodies: list[bytes]) -> None:
        self.bodies = list(bodies)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.bodies:
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=_idle())
        chunks = self.bodies.pop(0)
        if chunks and chunks[0].startswith(b"HTTP "):
            return httpx.Response(int(chunks[0][5:]), text="Unauthorized")
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=_chunks(chunks))


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _idle() -> AsyncIterator[bytes]:
    await anyio.sleep_forever()
    yield b""  # pragma: no cover


async def test_events_are_parsed_across_chunks_and_malformed_ones_are_skipped() -> None:
    streams = FakeStreams([
        b": a comment\n\n",
        b"data: " + EXECUTE[:30], EXECUTE[30:] + b"\n\n",
        b"data: {not json}\n\n",
        b'data: {"kind":"surprise","head":{},"data":{}}\n\n',
        b"event: message\r\ndata:" + UNBLOCK + b"\r\n\r\n",
    ])
    async with fake(streams, token="jwt-1") as t:
        stream = t.subscribe("g1", "pid1")
        with anyio.fail_after(5):
            first = await stream.receive()
            second = await stream.receive()
    assert isinstance(first, Execute)
    assert (first.task_id, first.version) == ("t1", 0)
    assert isinstance(second, Unblock)
    assert second.promise.id == "p1"
    request = streams.requests[0]
    assert request.method == "GET"
    assert request.url == URL + "/poll/g1/pid1"
    assert request.headers["authorization"] == "Bearer jwt-1"


async def test_a_cut_stream_reconnects_and_keeps_delivering() -> None:
    streams = FakeStreams([b"data: " + EXECUTE + b"\n\n"], [b"HTTP 401"],
                          [b"data: " + UNBLOCK + b"\n\n"])
    async with fake(streams) as t:
        stream = t.subscribe("g1", "pid1")
        with anyio.fail_after(5):
            assert isinstance(await stream.receive(), Execute)
            assert isinstance(await stream.receive(), Unblock)
            await t.wait_subscribed("g1", "pid1")
    assert len(streams.requests) == 4


async def test_a_subscription_quotes_its_group_and_pid_and_sends_no_query() -> None:
    # The Resonate server ignores ``?work=0``: a client that takes no work gets a group of
    # its own instead, so the stream's URL carries nothing else.
    streams = FakeStreams()
    async with fake(streams) as t:
        t.subscribe("g 1", "pid/1", accepts_work=False)
        with anyio.fail_after(5):
            await t.wait_subscribed("g 1", "pid/1")
    assert str(streams.requests[0].url) == URL + "/poll/g%201/pid%2F1"


async def test_unsubscribe_ends_the_stream() -> None:
    streams = FakeStreams()
    async with fake(streams) as t:
        stream = t.subscribe("g1", "pid1")
        with anyio.fail_after(5):
            await t.wait_subscribed("g1", "pid1")
            t.unsubscribe("g1", "pid1")
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()
            with pytest.raises(NotStartedError):
                await t.wait_subscribed("g1", "pid1")


async def test_leaving_the_transport_ends_its_streams() -> None:
    streams = FakeStreams()
    async with fake(streams) as t:
        stream = t.subscribe("g1", "pid1")
        with anyio.fail_after(5):
            await t.wait_subscribed("g1", "pid1")
    with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
        await stream.receive()


async def test_a_subscription_without_work_drops_execute_from_a_server_that_sends_it() -> None:
    streams = FakeStreams([b"data: " + EXECUTE + b"\n\n", b"data: " + UNBLOCK + b"\n\n"])
    async with fake(streams) as t:
        stream = t.subscribe("g1", "client", accepts_work=False)
        with anyio.fail_after(5):
            message = await stream.receive()
    assert isinstance(message, Unblock)
