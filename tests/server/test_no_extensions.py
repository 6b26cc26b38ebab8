"""``DevApp(extensions=False)`` (``dev --no-extensions``) behaves as the Resonate server.

The behaviour suite runs its HTTP mode against such a server, so a client that relied on an
extension of the dev server would fail there. These tests pin what "off" means.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from resonate_async.engine import Engine
from resonate_async.server import DevApp
from tests._devserver import dev_server

VERSION = "2026-04-01"
FAR = 4_102_444_800_000
TARGET = {"resonate:target": "poll://any@g"}


def envelope(kind: str, data: Any) -> bytes:
    return json.dumps({"kind": kind, "head": {"corrId": "c1", "version": VERSION},
                       "data": data}).encode()


@pytest.fixture
async def strict() -> AsyncIterator[httpx.AsyncClient]:
    async with DevApp(Engine.memory(), extensions=False) as app, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dev") as c:
        yield c


async def post(client: httpx.AsyncClient, kind: str, data: Any,
               headers: dict[str, str] | None = None) -> Any:
    answer = await client.post("/", content=envelope(kind, data), headers=headers or {})
    return answer.json()


async def claim(client: httpx.AsyncClient, pid: str) -> int:
    action = {"kind": "promise.create", "head": {},
              "data": {"id": pid, "timeoutAt": FAR, "tags": {**TARGET, "resonate:branch": pid}}}
    body = await post(client, "task.create", {"pid": "w", "ttl": 60_000, "action": action})
    assert body["head"]["status"] == 200, body
    return int(body["data"]["task"]["version"])


async def test_every_fence_answer_carries_the_full_preload_whatever_the_client_asks(
        strict: httpx.AsyncClient) -> None:
    version = await claim(strict, "r")
    for child in ("r:1", "r:2"):
        action = {"kind": "promise.create", "head": {},
                  "data": {"id": child, "timeoutAt": FAR, "tags": {"resonate:branch": "r"}}}
        body = await post(strict, "task.fence", {"id": "r", "version": version,
                                                 "action": action},
                          headers={"Resonate-Fence-Preload": "omit"})
    assert [p["id"] for p in body["data"]["preload"]] == ["r:1", "r:2"]


async def test_a_heartbeat_across_origins_is_refused_as_by_the_resonate_server(
        strict: httpx.AsyncClient) -> None:
    tasks = [{"id": pid, "version": await claim(strict, pid)} for pid in ("a", "b")]
    body = await post(strict, "task.heartbeat", {"pid": "w", "tasks": tasks})
    assert body["head"]["status"] == 400


def test_the_dev_command_takes_no_extensions() -> None:
    with dev_server(args=["--no-extensions"]) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        client.post("/", content=envelope("task.create", {
            "pid": "w", "ttl": 60_000, "action": {
                "kind": "promise.create", "head": {},
                "data": {"id": "r", "timeoutAt": FAR,
                         "tags": {**TARGET, "resonate:branch": "r"}}}}))
        action = {"kind": "promise.create", "head": {},
                  "data": {"id": "r:1", "timeoutAt": FAR, "tags": {"resonate:branch": "r"}}}
        answer = client.post("/", headers={"Resonate-Fence-Preload": "omit"},
                             content=envelope("task.fence", {"id": "r", "version": 1,
                                                             "action": action}))
    assert [p["id"] for p in answer.json()["data"]["preload"]] == ["r:1"]
