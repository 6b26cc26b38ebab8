"""The dev server's ASGI app in-process (httpx.ASGITransport): routes, limits, timers, delivery."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from resonate_async.engine import Engine
from resonate_async.server import MAX_BODY, DevApp

VERSION = "2026-04-01"
FAR = 4_102_444_800_000
GONE = {"error": "This endpoint is no longer supported. Please update to the latest SDK."}


def envelope(kind: str, data: Any, corr_id: str = "c1") -> bytes:
    return json.dumps({"kind": kind, "head": {"corrId": corr_id, "version": VERSION},
                       "data": data}).encode()


@pytest.fixture
async def app() -> AsyncIterator[DevApp]:
    async with DevApp(Engine.memory()) as running:
        yield running


@pytest.fixture
async def client(app: DevApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://dev") as c:
        yield c


async def test_health_is_always_200(client: httpx.AsyncClient) -> None:
    answer = await client.get("/health")
    assert (answer.status_code, answer.content) == (200, b"")


async def test_ready_is_200_while_the_storage_answers(client: httpx.AsyncClient) -> None:
    assert (await client.get("/ready")).status_code == 200


async def test_ready_is_503_when_the_storage_fails(tmp_path: Path) -> None:
    engine = Engine.sqlite(str(tmp_path / "r.db"))
    app = DevApp(engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://dev") as client:
        assert (await client.get("/ready")).status_code == 200
        engine.close()
        assert (await client.get("/ready")).status_code == 503


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/promises"), ("POST", "/promises/p1/create"), ("GET", "/tasks"),
    ("PATCH", "/tasks/t1"), ("DELETE", "/schedules/s1"), ("GET", "/schedules"),
])
async def test_legacy_paths_are_gone(client: httpx.AsyncClient, method: str, path: str) -> None:
    answer = await client.request(method, path)
    assert answer.status_code == 410
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == GONE


@pytest.mark.parametrize(("method", "path", "status"), [
    ("PUT", "/", 405), ("GET", "/nowhere", 404), ("POST", "/poll/g/p", 405),
    ("GET", "/poll/g", 404),
])
async def test_other_paths_get_plain_http_errors(
        client: httpx.AsyncClient, method: str, path: str, status: int) -> None:
    assert (await client.request(method, path)).status_code == status


async def test_the_http_status_is_the_envelope_status(client: httpx.AsyncClient) -> None:
    created = await client.post("/", content=envelope("promise.create",
                                                      {"id": "p1", "timeoutAt": FAR}))
    missing = await client.post("/", content=envelope("promise.get", {"id": "nope"}, "c2"))
    garbage = await client.post("/", content=b"{")
    assert created.status_code == 200
    assert created.json()["head"] == {"corrId": "c1", "status": 200, "version": VERSION}
    assert created.json()["data"]["promise"]["id"] == "p1"
    assert created.headers["content-type"] == "application/json"
    assert missing.status_code == 404
    assert missing.json()["data"] == "Promise not found"
    assert garbage.status_code == 400
    assert garbage.json()["head"]["corrId"] == "0"


async def test_a_body_over_2_mib_is_refused_with_413(client: httpx.AsyncClient) -> None:
    answer = await client.post("/", content=b" " * (MAX_BODY + 1))
    assert answer.status_code == 413


async def test_a_streamed_body_over_2_mib_is_refused_with_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (MAX_BODY // 2)

    answer = await client.post("/", content=chunks())
    assert answer.status_code == 413


async def test_a_body_of_exactly_2_mib_is_read(client: httpx.AsyncClient) -> None:
    body = envelope("promise.get", {"id": "p1"})
    answer = await client.post("/", content=body + b" " * (MAX_BODY - len(body)))
    assert answer.status_code == 404


async def test_a_request_delivers_its_messages(app: DevApp, client: httpx.AsyncClient) -> None:
    conn = app.hub.register("g", "worker")
    assert conn is not None
    await client.post("/", content=envelope("promise.create", {
        "id": "p1", "timeoutAt": FAR, "tags": {"resonate:target": "poll://any@g"}}))
    with anyio.fail_after(2):
        message = json.loads(await conn.receive.receive())
    assert message["kind"] == "execute"
    assert message["data"]["task"] == {"id": "p1", "version": 0}


async def test_the_timer_wakes_early_for_a_deadline_a_request_wrote(
        app: DevApp, client: httpx.AsyncClient) -> None:
    conn = app.hub.register("g", "client")
    assert conn is not None
    soon = time.time_ns() // 1_000_000 + 200
    await client.post("/", content=envelope("promise.create", {
        "id": "timer1", "timeoutAt": soon,
        "tags": {"resonate:timer": "true", "resonate:target": "poll://any@resonate-timers"}}))
    listen = await client.post("/", content=envelope("promise.register_listener", {
        "awaited": "timer1", "address": "poll://uni@g/client"}))
    assert listen.json()["data"]["promise"]["state"] == "pending"
    with anyio.fail_after(3):
        message = json.loads(await conn.receive.receive())
    assert message["kind"] == "unblock"
    assert message["data"]["promise"]["state"] == "resolved"


async def test_poll_refuses_connections_beyond_capacity() -> None:
    app = DevApp(Engine.memory(), max_connections=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://dev") as client:
        answer = await client.get("/poll/g/p")
    assert answer.status_code == 503
    assert answer.text == "Poll registration at capacity"


async def test_a_closed_app_ends_streams_and_refuses_new_ones(app: DevApp,
                                                             client: httpx.AsyncClient) -> None:
    conn = app.hub.register("g", "p")
    assert conn is not None
    app.close()
    with anyio.fail_after(2), pytest.raises(anyio.EndOfStream):
        await conn.receive.receive()
    assert len(app.hub) == 0
    assert (await client.get("/poll/g/p")).status_code == 503


async def test_lifespan_is_acknowledged() -> None:
    app = DevApp(Engine.memory())
    conn = app.hub.register("g", "p")
    assert conn is not None
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert len(app.hub) == 0


@pytest.mark.parametrize(("headers", "preloaded"), [
    ({}, ["r:1", "r:2"]),                                    # the protocol: the whole branch
    ({"Resonate-Fence-Preload": "keep"}, ["r:1", "r:2"]),
    ({"Resonate-Fence-Preload": "omit"}, []),                # a client with its own cache
])
async def test_fence_preload_is_left_out_only_for_clients_that_ask(
        client: httpx.AsyncClient, headers: dict[str, str], preloaded: list[str]) -> None:
    tags = {"resonate:target": "poll://any@g", "resonate:branch": "r"}
    create = {"kind": "promise.create", "head": {}, "data": {"id": "r", "timeoutAt": FAR,
                                                            "tags": tags}}
    await client.post("/", content=envelope("task.create", {"pid": "p", "ttl": 60_000,
                                                           "action": create}))
    answers = []
    for child in ("r:1", "r:2"):
        action = {"kind": "promise.create",
                  "data": {"id": child, "timeoutAt": FAR, "tags": {"resonate:branch": "r"}}}
        answer = await client.post("/", headers=headers, content=envelope(
            "task.fence", {"id": "r", "version": 1, "action": action}))
        answers.append(answer.json())
    assert [p["id"] for p in answers[-1]["data"]["preload"]] == preloaded
    assert answers[-1]["data"]["action"]["data"]["promise"]["id"] == "r:2"
