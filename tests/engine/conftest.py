"""Drive the engine the way a Resonate client does: JSON bodies through ``Engine.handle``.

Every engine test takes the ``client`` fixture and so runs once on memory storage and once on
SQLite storage (a file in ``tmp_path``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from resonate_async.engine import Engine

T0 = 1_700_000_000_000
HOUR = 3_600_000
RETRY = 30_000
TTL = 60_000
TARGET = "poll://any@default"
VERSION = "2026-04-01"
ACTION_HEAD = {"corrId": "inner", "version": VERSION}


class Reply(NamedTuple):
    """A decoded response envelope."""

    status: int
    data: Any
    kind: str
    corr_id: str


def envelope(kind: str, data: Any, corr_id: str = "c1") -> bytes:
    return json.dumps({"kind": kind, "head": {"corrId": corr_id, "version": VERSION},
                       "data": data}).encode()


def root_tags(promise_id: str, target: str | None = TARGET, **extra: str) -> dict[str, str]:
    """The tags an SDK gives a root invocation (origin = branch = parent = its own id)."""
    tags = {"resonate:origin": promise_id, "resonate:branch": promise_id,
            "resonate:parent": promise_id, "resonate:scope": "global", **extra}
    if target is not None:
        tags["resonate:target"] = target
    return tags


def child_tags(parent: str, child: str, *, branch: str | None = None, **extra: str
               ) -> dict[str, str]:
    """The tags of a child of ``parent``: its own branch unless ``branch`` is given."""
    return {"resonate:origin": parent.partition(":")[0], "resonate:parent": parent,
            "resonate:branch": branch if branch is not None else child, **extra}


class Client:
    """A thin, typed-as-JSON client of one engine, with its own notion of ``now``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = T0

    # the wire ------------------------------------------------------------------------------
    def raw(self, body: bytes, now: int | None = None) -> Reply:
        out = self.engine.handle(body, self.now if now is None else now)
        env = json.loads(out)
        assert set(env) == {"kind", "head", "data"}
        assert env["head"]["version"] == VERSION
        return Reply(env["head"]["status"], env["data"], env["kind"], env["head"]["corrId"])

    def request(self, kind: str, data: Any, *, corr_id: str = "c1") -> Reply:
        return self.raw(envelope(kind, data, corr_id))

    def ok(self, kind: str, data: Any) -> Any:
        reply = self.request(kind, data)
        assert reply.status == 200, reply
        return reply.data

    def tick(self, at: int | None = None) -> None:
        if at is not None:
            self.now = at
        self.engine.tick(self.now)

    def advance(self, ms: int) -> None:
        self.now += ms

    def drain(self) -> list[tuple[str, Any]]:
        return [(address, json.loads(body)) for address, body in self.engine.drain()]

    def executes(self) -> list[tuple[str, str, int]]:
        """Drain, and keep the execute messages as ``(address, task id, version)``."""
        return [(a, m["data"]["task"]["id"], m["data"]["task"]["version"])
                for a, m in self.drain() if m["kind"] == "execute"]

    # promise.* -----------------------------------------------------------------------------
    def create(self, promise_id: str, *, timeout: int = HOUR, tags: dict[str, str] | None = None,
               param: dict[str, Any] | None = None) -> Reply:
        data: dict[str, Any] = {"id": promise_id, "timeoutAt": self.now + timeout,
                                "tags": tags or {}}
        if param is not None:
            data["param"] = param
        return self.request("promise.create", data)

    def create_root(self, promise_id: str, *, timeout: int = HOUR, **extra: str) -> Any:
        reply = self.create(promise_id, timeout=timeout, tags=root_tags(promise_id, **extra))
        assert reply.status == 200, reply
        return reply.data["promise"]

    def get(self, promise_id: str) -> Reply:
        return self.request("promise.get", {"id": promise_id})

    def promise(self, promise_id: str) -> Any:
        return self.ok("promise.get", {"id": promise_id})["promise"]

    def settle(self, promise_id: str, state: str = "resolved",
               value: dict[str, Any] | None = None) -> Reply:
        return self.request("promise.settle",
                            {"id": promise_id, "state": state, "value": value or {}})

    def listen(self, promise_id: str, address: str = "poll://uni@default/client") -> Reply:
        return self.request("promise.register_listener",
                            {"awaited": promise_id, "address": address})

    def callback(self, awaited: str, awaiter: str) -> Reply:
        return self.request("promise.register_callback",
                            {"awaited": awaited, "awaiter": awaiter})

    # task.* --------------------------------------------------------------------------------
    def task(self, task_id: str) -> Any:
        return self.ok("task.get", {"id": task_id})["task"]

    def task_create(self, promise_id: str, *, pid: str = "p1", ttl: int = TTL,
                    timeout: int = HOUR, tags: dict[str, str] | None = None) -> Reply:
        data = {"id": promise_id, "timeoutAt": self.now + timeout,
                "tags": root_tags(promise_id) if tags is None else tags}
        return self.request("task.create", {
            "pid": pid, "ttl": ttl,
            "action": {"kind": "promise.create", "head": ACTION_HEAD, "data": data}})

    def acquire(self, task_id: str, version: int, *, pid: str = "p1", ttl: int = TTL) -> Reply:
        return self.request("task.acquire",
                            {"id": task_id, "version": version, "pid": pid, "ttl": ttl})

    def suspend(self, task_id: str, version: int, awaited: list[str]) -> Reply:
        actions = [{"kind": "promise.register_callback", "head": ACTION_HEAD,
                    "data": {"awaited": a, "awaiter": task_id}} for a in awaited]
        return self.request("task.suspend",
                            {"id": task_id, "version": version, "actions": actions})

    def fulfill(self, task_id: str, version: int, state: str = "resolved",
                value: dict[str, Any] | None = None) -> Reply:
        return self.request("task.fulfill", {
            "id": task_id, "version": version,
            "action": {"kind": "promise.settle", "head": ACTION_HEAD,
                       "data": {"id": task_id, "state": state, "value": value or {}}}})

    def fence_create(self, task_id: str, version: int, child: str, *, timeout: int = HOUR,
                     tags: dict[str, str] | None = None) -> Reply:
        data = {"id": child, "timeoutAt": self.now + timeout,
                "tags": child_tags(task_id, child) if tags is None else tags}
        return self.request("task.fence", {
            "id": task_id, "version": version,
            "action": {"kind": "promise.create", "head": ACTION_HEAD, "data": data}})

    def fence_settle(self, task_id: str, version: int, child: str,
                     state: str = "resolved") -> Reply:
        return self.request("task.fence", {
            "id": task_id, "version": version,
            "action": {"kind": "promise.settle", "head": ACTION_HEAD,
                       "data": {"id": child, "state": state}}})

    def heartbeat(self, tasks: list[tuple[str, int]], pid: str = "p1") -> Reply:
        return self.request("task.heartbeat",
                            {"pid": pid, "tasks": [{"id": i, "version": v} for i, v in tasks]})

    def release(self, task_id: str, version: int) -> Reply:
        return self.request("task.release", {"id": task_id, "version": version})

    def run_root(self, promise_id: str, *, pid: str = "p1") -> int:
        """Create a root with a target and claim its task; return the held version."""
        self.create_root(promise_id)
        self.drain()
        reply = self.acquire(promise_id, 0, pid=pid)
        assert reply.status == 200, reply
        return int(reply.data["task"]["version"])


def open_engine(kind: str, tmp_path: Path) -> Engine:
    if kind == "memory":
        return Engine.memory(retry_timeout=RETRY)
    return Engine.sqlite(str(tmp_path / "engine.db"), retry_timeout=RETRY)


@pytest.fixture(params=["memory", "sqlite"])
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(storage_kind: str, tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(storage_kind, tmp_path)
    yield engine
    engine.close()


@pytest.fixture
def client(engine: Engine) -> Client:
    return Client(engine)
