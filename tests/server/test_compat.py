"""Requests of the official SDKs that the dev server accepts although the engine refuses them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from resonate_async.engine import Engine
from resonate_async.server import DevApp
from resonate_async.server._compat import split_heartbeat

VERSION = "2026-04-01"
FAR = 4_102_444_800_000
TARGET = {"resonate:target": "poll://any@g"}


def envelope(kind: str, data: Any, corr_id: str = "c1") -> bytes:
    return json.dumps({"kind": kind, "head": {"corrId": corr_id, "version": VERSION},
                       "data": data}).encode()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with DevApp(Engine.memory()) as app, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dev") as c:
        yield c


async def post(client: httpx.AsyncClient, kind: str, data: Any) -> Any:
    answer = await client.post("/", content=envelope(kind, data))
    body = answer.json()
    assert answer.status_code == body["head"]["status"]
    return body


async def claim(client: httpx.AsyncClient, pid: str, ttl: int) -> int:
    action = {"kind": "promise.create", "head": {"corrId": "a", "version": VERSION},
              "data": {"id": pid, "timeoutAt": FAR, "param": {}, "tags": TARGET}}
    body = await post(client, "task.create", {"pid": "w", "ttl": ttl, "action": action})
    assert body["head"]["status"] == 200
    return int(body["data"]["task"]["version"])


async def test_a_heartbeat_across_origins_renews_every_lease(client: httpx.AsyncClient) -> None:
    # The official SDK renews all its leases in one request (protocol.md §10.5).
    tasks = [{"id": pid, "version": await claim(client, pid, 60_000)} for pid in ("a", "b")]
    body = await post(client, "task.heartbeat", {"pid": "w", "tasks": tasks})
    assert (body["head"]["status"], body["head"]["corrId"], body["data"]) == (200, "c1", {})


async def test_a_split_heartbeat_reports_the_first_refusal(client: httpx.AsyncClient) -> None:
    await claim(client, "a", 60_000)
    tasks = [{"id": "a", "version": 1}, {"id": "b", "version": 1}]
    body = await post(client, "task.heartbeat", {"pid": "", "tasks": tasks})
    assert body["head"]["status"] == 400


def test_only_mixed_origin_heartbeats_are_split() -> None:
    one_origin = {"pid": "w", "tasks": [{"id": "a", "version": 1}, {"id": "a:1", "version": 1}]}
    assert split_heartbeat(envelope("task.heartbeat", one_origin)) is None
    assert split_heartbeat(envelope("task.get", {"id": "task.heartbeat"})) is None
    assert split_heartbeat(b'{"kind":"task.heartbeat" broken') is None
    mixed = {"pid": "w", "tasks": [{"id": "a", "version": 1}, {"id": "b:1", "version": 2},
                                   {"id": "a:2", "version": 3}]}
    parts = split_heartbeat(envelope("task.heartbeat", mixed))
    assert parts is not None
    assert [json.loads(p)["data"] for p in parts] == [
        {"pid": "w", "tasks": [{"id": "a", "version": 1}, {"id": "a:2", "version": 3}]},
        {"pid": "w", "tasks": [{"id": "b:1", "version": 2}]},
    ]
    assert all(json.loads(p)["head"]["corrId"] == "c1" for p in parts)
