"""The dev server's security: the token on ``POST /`` and the event streams, one stream per id,
internal errors kept from remote clients, and the warning for an unprotected address."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from structlog.testing import capture_logs

from resonate_async import ResonateError
from resonate_async.engine import Engine
from resonate_async.protocol import PromiseCreate, PromiseGet, PromiseSettle, Value
from resonate_async.server import DevApp
from resonate_async.transport import HttpTransport
from tests._devserver import DevServerProcess, dev_server

VERSION = "2026-04-01"
FAR = 4_102_444_800_000
TOKEN = "s3cret-T0ken.x_~"


def envelope(kind: str, data: Any, *, auth: str | None = None, corr_id: str = "c1") -> bytes:
    head: dict[str, Any] = {"corrId": corr_id, "version": VERSION}
    if auth is not None:
        head["auth"] = auth
    return json.dumps({"kind": kind, "head": head, "data": data}).encode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
async def app() -> AsyncIterator[DevApp]:
    async with DevApp(Engine.memory(), token=TOKEN) as running:
        yield running


@pytest.fixture
async def client(app: DevApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://dev") as c:
        yield c


async def post(client: httpx.AsyncClient, kind: str, data: Any,
               auth: str | None = TOKEN) -> httpx.Response:
    return await client.post("/", content=envelope(kind, data, auth=auth))


# -- the raw ASGI side of an event stream (httpx's ASGITransport buffers whole responses) ------

@dataclass
class Stream:
    """One ``GET /poll/...`` held open against the app: its status and what it sent."""

    status: int
    messages: MemoryObjectReceiveStream[dict[str, Any]]
    disconnect: anyio.Event = field(default_factory=anyio.Event)

    async def next_event(self) -> bytes | None:
        """The next SSE body, or ``None`` when the server ended the stream."""
        async for message in self.messages:
            body: bytes = message.get("body", b"")
            if body:
                return body
            if not message.get("more_body", False):
                return None
        return None


async def open_stream(app: DevApp, tg: TaskGroup, path: str,
                      headers: Sequence[tuple[bytes, bytes]] = ()) -> Stream:
    send_to, received = anyio.create_memory_object_stream[dict[str, Any]](100)
    disconnect = anyio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        await send_to.send(dict(message))

    path, _, query = path.partition("?")
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(),
             "headers": list(headers)}

    async def run() -> None:
        async with send_to:
            await app(scope, receive, send)

    tg.start_soon(run)
    with anyio.fail_after(5):
        start = await received.receive()
    stream = Stream(start["status"], received, disconnect)
    if stream.status == 200:
        with anyio.fail_after(5):
            await received.receive()  # the empty first chunk that opens the event stream
    return stream


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + token.encode())]


# -- POST / -----------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]],
                         ids=["none", "empty", "wrong", "longer", "prefix"])
async def test_a_request_without_the_token_is_401_and_does_nothing(
        client: httpx.AsyncClient, auth: str | None) -> None:
    body = json.dumps({"kind": "promise.create",
                       "head": {"corrId": "c9", "version": VERSION, "auth": auth},
                       "data": {"id": "p1", "timeoutAt": FAR}}).encode()
    with capture_logs() as logs:
        refused = await client.post("/", content=body)
    assert refused.status_code == 401
    assert refused.json() == {"kind": "promise.create",
                              "head": {"corrId": "c9", "status": 401, "version": VERSION},
                              "data": "Unauthorized"}
    assert [e["event"] for e in logs] == ["request_unauthorized"]
    assert all(TOKEN not in str(e) for e in logs)
    assert (await post(client, "promise.get", {"id": "p1"})).status_code == 404


async def test_the_right_token_in_head_auth_is_served(client: httpx.AsyncClient) -> None:
    created = await post(client, "promise.create", {"id": "p1", "timeoutAt": FAR})
    assert created.status_code == 200
    assert created.json()["data"]["promise"]["id"] == "p1"


async def test_post_reads_the_token_from_head_auth_only_like_the_resonate_server(
        client: httpx.AsyncClient) -> None:
    answer = await client.post("/", content=envelope("promise.get", {"id": "p1"}),
                               headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 401


async def test_a_malformed_envelope_gets_400_before_authentication(
        client: httpx.AsyncClient) -> None:
    # as the Resonate server: the envelope checks come first, and they run nothing
    assert (await client.post("/", content=b"{")).status_code == 400
    old = json.dumps({"kind": "promise.get", "head": {"corrId": "c", "version": "1999"},
                      "data": {"id": "p"}}).encode()
    assert (await client.post("/", content=old)).status_code == 400


async def test_an_unauthenticated_client_cannot_read_or_settle_a_promise(
        client: httpx.AsyncClient) -> None:
    secret = b64('{"card": "4111 1111 1111 1111"}')
    await post(client, "promise.create", {"id": "order-1", "timeoutAt": FAR,
                                          "param": {"data": secret}})
    for auth in (None, "guess"):
        read = await post(client, "promise.get", {"id": "order-1"}, auth=auth)
        listed = await post(client, "promise.search", {"state": "pending"}, auth=auth)
        settled = await post(client, "promise.settle", {
            "id": "order-1", "state": "resolved", "value": {"data": b64('"stolen"')}},
            auth=auth)
        assert (read.status_code, listed.status_code, settled.status_code) == (401, 401, 401)
        assert secret not in read.text + listed.text + settled.text
    promise = (await post(client, "promise.get", {"id": "order-1"})).json()["data"]["promise"]
    assert promise["state"] == "pending"
    assert promise["param"]["data"] == secret


async def test_health_and_ready_stay_open_like_the_resonate_server(
        client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/ready")).status_code == 200


async def test_an_app_without_a_token_serves_everyone() -> None:
    async with DevApp(Engine.memory()) as app, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dev") as client:
        assert (await post(client, "promise.get", {"id": "p"}, auth=None)).status_code == 404


@pytest.mark.parametrize(("token", "problem"), [
    ("", "must not be empty"), ("tøken", "must be printable ASCII"),
    ("two words", "must be printable ASCII"),
])
def test_a_token_that_cannot_travel_in_a_header_is_refused_at_construction(
        token: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"DevApp\\(token=...\\): the token {problem}"):
        DevApp(Engine.memory(), token=token)
    with pytest.raises(ValueError, match=f"HttpTransport\\(token=...\\): the token {problem}"):
        HttpTransport("http://localhost:8001", token=token)


# -- GET /poll --------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    [], bearer("wrong"), bearer(TOKEN + "x"), [(b"authorization", TOKEN.encode())],
    [(b"authorization", b"bearer " + TOKEN.encode())], [(b"authorization", b"Bearer ")],
], ids=["none", "wrong", "longer", "no-scheme", "lowercase-scheme", "empty"])
async def test_a_stream_without_the_bearer_token_is_401(
        app: DevApp, headers: list[tuple[bytes, bytes]]) -> None:
    async with anyio.create_task_group() as tg:
        stream = await open_stream(app, tg, "/poll/g/p", headers)
        assert stream.status == 401
        assert await stream.next_event() == b"Unauthorized"
    assert len(app.hub) == 0


async def test_a_stream_with_the_bearer_token_is_served(app: DevApp,
                                                        client: httpx.AsyncClient) -> None:
    async with anyio.create_task_group() as tg:
        stream = await open_stream(app, tg, "/poll/g/worker", bearer(TOKEN))
        assert stream.status == 200
        await post(client, "promise.create", {
            "id": "p1", "timeoutAt": FAR, "tags": {"resonate:target": "poll://any@g"}})
        with anyio.fail_after(5):
            event = await stream.next_event()
        assert event is not None
        assert json.loads(event.removeprefix(b"data: "))["kind"] == "execute"
        stream.disconnect.set()


# -- one stream per id ------------------------------------------------------------------------

async def listen(client: httpx.AsyncClient, promise_id: str, address: str) -> None:
    await post(client, "promise.create", {"id": promise_id, "timeoutAt": FAR,
                                          "tags": {"resonate:external": "true"}})
    answer = await post(client, "promise.register_listener",
                        {"awaited": promise_id, "address": address})
    assert answer.status_code == 200


async def test_a_second_stream_for_an_id_replaces_the_first_and_is_logged(
        app: DevApp, client: httpx.AsyncClient) -> None:
    async with anyio.create_task_group() as tg:
        first = await open_stream(app, tg, "/poll/g/worker", bearer(TOKEN))
        await listen(client, "p1", "poll://uni@g/worker")
        with capture_logs() as logs:
            second = await open_stream(app, tg, "/poll/g/worker", bearer(TOKEN))
        assert [e for e in logs if e["event"] == "poll_replaced"] == [{
            "event": "poll_replaced", "log_level": "warning", "group": "g",
            "conn_id": "worker",
            "detail": "a new event stream for this id replaces the open one"}]
        with anyio.fail_after(5):
            assert await first.next_event() is None  # the old stream was ended
        assert len(app.hub) == 1
        await post(client, "promise.settle", {"id": "p1", "state": "resolved",
                                              "value": {"data": b64('"ok"')}})
        with anyio.fail_after(5):
            event = await second.next_event()
        assert event is not None
        unblock = json.loads(event.removeprefix(b"data: "))
        assert (unblock["kind"], unblock["data"]["promise"]["id"]) == ("unblock", "p1")
        second.disconnect.set()


async def test_without_the_token_a_thief_cannot_take_over_a_stream(
        app: DevApp, client: httpx.AsyncClient) -> None:
    async with anyio.create_task_group() as tg:
        worker = await open_stream(app, tg, "/poll/g/worker", bearer(TOKEN))
        await listen(client, "p1", "poll://uni@g/worker")
        thief = await open_stream(app, tg, "/poll/g/worker", bearer("guess"))
        assert thief.status == 401
        await post(client, "promise.settle", {"id": "p1", "state": "resolved",
                                              "value": {"data": b64('"result"')}})
        with anyio.fail_after(5):
            event = await worker.next_event()
        assert event is not None
        assert json.loads(event.removeprefix(b"data: "))["data"]["promise"]["id"] == "p1"
        worker.disconnect.set()


async def test_a_reconnect_at_capacity_replaces_its_stream_while_new_ids_get_503() -> None:
    async with DevApp(Engine.memory(), max_connections=1) as app, \
            anyio.create_task_group() as tg:
        first = await open_stream(app, tg, "/poll/g/worker")
        other = await open_stream(app, tg, "/poll/g/other")
        assert (other.status, await other.next_event()) == (503, b"Poll registration at capacity")
        again = await open_stream(app, tg, "/poll/g/worker")
        assert again.status == 200
        with anyio.fail_after(5):
            assert await first.next_event() is None
        again.disconnect.set()


# -- internal errors --------------------------------------------------------------------------

class _Broken(Exception):
    pass


def _failing_get(promise_id: str) -> None:
    raise _Broken("disk I/O error at /srv/secret/engine.db (password=hunter2)")


async def test_a_500_does_not_tell_a_remote_client_the_internal_error(
        app: DevApp, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.engine.storage, "get_promise", _failing_get)
    with capture_logs() as logs:
        answer = await client.post("/", content=envelope("promise.get", {"id": "p1"},
                                                         auth=TOKEN, corr_id="c-77"))
    assert answer.status_code == 500
    text = answer.json()["data"]
    assert "hunter2" not in answer.text and "/srv/secret" not in answer.text
    [failed] = [e for e in logs if e["event"] == "engine_request_failed"]
    assert failed["corr_id"] == "c-77"
    assert failed["exc_info"] is True  # logged with its traceback, server-side
    assert text.startswith("Internal error: the server failed on this request")
    assert f"error_ref={failed['error_ref']}" in text


def test_an_embedded_caller_still_sees_the_cause_of_a_500(
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine.memory()
    monkeypatch.setattr(engine.storage, "get_promise", _failing_get)
    response = engine.execute(PromiseGet("p1"), 1)
    assert response.status == 500
    assert "disk I/O error" in str(response.data)


# -- the dev server over HTTP: CLI, environment, the warning ----------------------------------

@pytest.fixture(scope="module")
def secured() -> Iterator[DevServerProcess]:
    with dev_server(args=["--token", TOKEN]) as server:
        yield server


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_over_http_a_client_without_the_token_cannot_read_or_resolve(
        secured: DevServerProcess, token: str | None) -> None:
    async with HttpTransport(secured.url, token=TOKEN) as owner, \
            HttpTransport(secured.url, token=token, retry_for=1) as stranger:
        pid = f"secret-{os.urandom(6).hex()}"
        param = Value(data=b64('"private"'))
        assert (await owner.send(PromiseCreate(pid, FAR, param, {}))).status == 200
        read = await stranger.send(PromiseGet(pid))
        settle = await stranger.send(PromiseSettle(pid, "resolved", Value(data=b64('"x"'))))
        assert (read.status, read.data) == (401, "Unauthorized")
        assert (settle.status, settle.data) == (401, "Unauthorized")
        kept = await owner.send(PromiseGet(pid))
        assert kept.status == 200
        assert kept.data.promise.state == "pending"


async def test_over_http_the_stream_of_a_client_without_the_token_is_refused_with_a_reason(
        secured: DevServerProcess) -> None:
    async with HttpTransport(secured.url, token="wrong", backoff=0.01,
                             backoff_max=0.05) as stranger:
        stranger.subscribe("g", "thief")
        with anyio.fail_after(10):
            while stranger.stream_problem("g", "thief") is None:
                await anyio.sleep(0.01)
        problem = stranger.stream_problem("g", "thief")
    assert problem is not None
    assert "HTTP 401 (Unauthorized)" in problem
    assert "RESONATE_TOKEN" in problem


async def test_over_http_a_resonate_with_the_token_works(secured: DevServerProcess) -> None:
    from resonate_async import Resonate

    resonate = Resonate(url=secured.url, token=TOKEN, worker=False)
    async with resonate:
        pid = f"p-{os.urandom(6).hex()}"
        await resonate.promises.create(pid, timeout=60)
        await resonate.promises.resolve(pid, "done")
        assert (await resonate.promises.get(pid)).result() == "done"
    stranger = Resonate(url=secured.url, token="wrong", worker=False)
    stranger.connect_wait = 0.1
    async with stranger:
        with pytest.raises(ResonateError, match="401"):
            await stranger.promises.get(pid)


def test_resonate_token_in_the_environment_protects_the_dev_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESONATE_TOKEN", "from-env")
    with dev_server() as server:
        assert httpx.post(server.url + "/", content=envelope("promise.get", {"id": "p"}),
                          timeout=5).status_code == 401
        assert httpx.post(server.url + "/", timeout=5, content=envelope(
            "promise.get", {"id": "p"}, auth="from-env")).status_code == 404
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200


def test_listening_beyond_loopback_without_a_token_prints_a_warning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESONATE_TOKEN", raising=False)
    with dev_server(args=["--host", "0.0.0.0"]) as open_server:
        warned = open_server.stderr()
    with dev_server(args=["--host", "0.0.0.0", "--log-level", "error"]) as quiet_logs:
        warned_anyway = quiet_logs.stderr()
    with dev_server(args=["--host", "0.0.0.0", "--token", TOKEN]) as protected:
        quiet = protected.stderr()
    with dev_server() as local:
        local_quiet = local.stderr()
    for text in (warned, warned_anyway):
        assert "warning" in text
        assert "without a token" in text and "--token" in text
        assert text.count("without a token") == 1
    assert "without a token" not in quiet
    assert "without a token" not in local_quiet


def test_an_unusable_token_option_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "resonate_async", "dev", "--token", ""],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--token (or RESONATE_TOKEN): the token must not be empty" in done.stderr
