"""HttpTransport against the dev server (a subprocess): same answers as the embedded engine.

The lifecycle scenario runs once through ``EmbeddedTransport`` and once over HTTP; the two
transcripts (every answer and every push message, timestamps aside) must be equal.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from resonate_async._errors import TransportError
from resonate_async.engine import Engine
from resonate_async.protocol import (
    TAG_EXTERNAL,
    TAG_TARGET,
    Action,
    ActionHead,
    Execute,
    FenceCreate,
    FenceSettle,
    Message,
    PromiseCreate,
    PromiseGet,
    PromiseRegisterCallback,
    PromiseRegisterListener,
    PromiseSearch,
    PromiseSettle,
    Request,
    Response,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleGet,
    ScheduleSearch,
    TaskAcquire,
    TaskContinue,
    TaskCreate,
    TaskFence,
    TaskFulfill,
    TaskGet,
    TaskHalt,
    TaskHeartbeat,
    TaskRef,
    TaskRelease,
    TaskSearch,
    TaskSuspend,
    Unblock,
    Value,
)
from resonate_async.transport import EmbeddedTransport, HttpTransport, Transport
from tests._devserver import DevServerProcess, dev_server

FAR = 4_102_444_800_000
TTL = 60_000
_VOLATILE = {"createdAt", "settledAt", "corrId", "serverUrl"}


@pytest.fixture(scope="module")
def server() -> Iterator[DevServerProcess]:
    with dev_server() as running:
        yield running


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


async def receive(stream: MemoryObjectReceiveStream[Message], seconds: float = 5) -> Message:
    with anyio.fail_after(seconds):
        return await stream.receive()


async def nothing_arrives(stream: MemoryObjectReceiveStream[Message],
                          seconds: float = 0.3) -> None:
    with anyio.move_on_after(seconds):
        message = await stream.receive()
        pytest.fail(f"unexpected message {message}")


def callback(awaited: str, awaiter: str) -> Action[PromiseRegisterCallback]:
    return Action("promise.register_callback", ActionHead(),
                  PromiseRegisterCallback(awaited, awaiter))


async def lifecycle(t: Transport, p: str, ready: Callable[[str, str], Awaitable[None]]
                    ) -> list[tuple[str, Any]]:
    """Every request kind, in the order a worker uses them; returns the transcript."""
    transcript: list[tuple[str, Any]] = []
    group, pid = f"{p}g", f"{p}pid"
    target = f"poll://any@{group}"

    async def send(label: str, request: Request) -> Response:
        with anyio.fail_after(10):
            response = await t.send(request)
        transcript.append((label, normalized(msgspec.to_builtins(response))))
        return response

    async def push(label: str) -> Message:
        message = await receive(stream)
        transcript.append((label, normalized(msgspec.to_builtins(message))))
        return message

    stream = t.subscribe(group, pid)
    await ready(group, pid)
    root = f"{p}wf"
    c1, c2 = f"{root}:1", f"{root}:2"
    await send("create", PromiseCreate(root, FAR, param=Value(data="e30="),
                                       tags={TAG_TARGET: target, "test": p}))
    await send("create again", PromiseCreate(root, FAR))
    await send("create invalid target", PromiseCreate(f"{p}bad", FAR, tags={TAG_TARGET: "x"}))
    await push("execute")
    await send("acquire", TaskAcquire(root, 0, pid, TTL))
    await send("acquire stale", TaskAcquire(root, 0, pid, TTL))
    await send("fence create c1", TaskFence(root, 1, FenceCreate(
        PromiseCreate(c1, FAR, tags={TAG_EXTERNAL: "true"}))))
    await send("fence create c2", TaskFence(root, 1, FenceCreate(
        PromiseCreate(c2, FAR, tags={TAG_EXTERNAL: "true"}))))
    await send("fence settle c2", TaskFence(root, 1, FenceSettle(
        PromiseSettle(c2, "resolved", Value(data="MQ==")))))
    await send("fence stale", TaskFence(root, 9, FenceSettle(PromiseSettle(c1, "rejected"))))
    await send("heartbeat", TaskHeartbeat(pid, [TaskRef(root, 1)]))
    await send("suspend on settled: 300", TaskSuspend(root, 1, [callback(c2, root)]))
    await send("suspend on pending: 200", TaskSuspend(root, 1, [callback(c1, root)]))
    await send("task.get suspended", TaskGet(root))
    await send("settle c1", PromiseSettle(c1, "resolved", Value(data="Mg==")))
    await push("execute resumed")
    await send("acquire resumed", TaskAcquire(root, 1, pid, TTL))
    await send("listen", PromiseRegisterListener(root, f"poll://uni@{group}/{pid}"))
    await send("listen bad address", PromiseRegisterListener(root, "nowhere"))
    await send("fulfill", TaskFulfill(root, 2, Action("promise.settle", ActionHead(),
                                                      PromiseSettle(root, "resolved",
                                                                    Value(data="Mw==")))))
    await push("unblock")
    await send("fulfill again", TaskFulfill(root, 2, Action("promise.settle", ActionHead(),
                                                            PromiseSettle(root, "resolved"))))
    await send("get", PromiseGet(root))
    await send("get missing", PromiseGet(f"{p}missing"))
    await send("search", PromiseSearch(tags={"test": p}))
    run = f"{p}run"
    await send("task.create", TaskCreate(pid, TTL, Action("promise.create", ActionHead(),
                                                           PromiseCreate(run, FAR, tags={
                                                               TAG_TARGET: target}))))
    await send("release", TaskRelease(run, 1))
    await push("execute released")
    await send("halt", TaskHalt(run))
    await send("continue", TaskContinue(run))
    await push("execute continued")
    await send("create awaited", PromiseCreate(f"{run}:1", FAR, tags={TAG_EXTERNAL: "true"}))
    await send("register_callback", PromiseRegisterCallback(f"{run}:1", run))
    await send("register_callback missing", PromiseRegisterCallback(f"{run}:9", run))
    sched = f"{p}sched"
    await send("schedule.create", ScheduleCreate(sched, "0 0 1 1 *", "{{.id}}-{{.timestamp}}",
                                                 TTL, promise_tags={TAG_TARGET: target}))
    await send("schedule.get", ScheduleGet(sched))
    await send("schedule.search", ScheduleSearch(tags={TAG_TARGET: target}))
    await send("schedule.delete", ScheduleDelete(sched))
    await send("schedule.get deleted", ScheduleGet(sched))
    return transcript


async def test_every_request_kind_answers_as_the_embedded_engine(
        server: DevServerProcess) -> None:
    p = unique()

    async def no_wait(group: str, pid: str) -> None:
        return None

    async with EmbeddedTransport(Engine.memory()) as embedded:
        expected = await lifecycle(embedded, p, no_wait)

    async with HttpTransport(server.url) as http:
        actual = await lifecycle(http, p, http.wait_subscribed)

    assert [label for label, _ in actual] == [label for label, _ in expected]
    for (label, got), (_, want) in zip(actual, expected, strict=True):
        assert got == want, label
    statuses = {label: answer.get("status") for label, answer in actual}
    assert statuses["suspend on settled: 300"] == 300
    assert statuses["suspend on pending: 200"] == 200
    assert statuses["acquire stale"] == 409
    assert statuses["get missing"] == 404
    assert statuses["create invalid target"] == 400
    assert dict(actual)["unblock"]["kind"] == "unblock"


async def test_task_search_answers_a_page(server: DevServerProcess) -> None:
    async with HttpTransport(server.url) as t:
        response = await t.send(TaskSearch(limit=5))
    assert response.status == 200
    assert len(response.data.tasks) <= 5


async def collect(streams: dict[str, MemoryObjectReceiveStream[Message]], count: int,
                  seconds: float = 10) -> dict[str, list[Message]]:
    """The next ``count`` messages of all ``streams`` together, by stream name."""
    got: dict[str, list[Message]] = {name: [] for name in streams}
    done = anyio.Event()

    async def drain(name: str, stream: MemoryObjectReceiveStream[Message]) -> None:
        async for message in stream:
            got[name].append(message)
            if sum(map(len, got.values())) >= count:
                done.set()

    with anyio.fail_after(seconds):
        async with anyio.create_task_group() as tg:
            for name, stream in streams.items():
                tg.start_soon(drain, name, stream)
            await done.wait()
            tg.cancel_scope.cancel()
    return got


async def test_anycast_goes_to_one_connection_of_the_group_each_time(
        server: DevServerProcess) -> None:
    group = unique("g")
    async with HttpTransport(server.url) as t:
        a, b = t.subscribe(group, "a"), t.subscribe(group, "b")
        with anyio.fail_after(5):
            await t.wait_subscribed(group, "a")
            await t.wait_subscribed(group, "b")
        for i in range(6):
            await t.send(PromiseCreate(f"{group}-{i}", FAR, tags={TAG_TARGET: f"poll://any@{group}"}))
        got = await collect({"a": a, "b": b}, 6)
        await nothing_arrives(a, 0.1)
        await nothing_arrives(b, 0.1)
    ids = sorted(m.task_id for m in got["a"] + got["b"] if isinstance(m, Execute))
    assert ids == [f"{group}-{i}" for i in range(6)]


async def test_a_stream_in_a_group_of_its_own_gets_only_its_unicast(
        server: DevServerProcess) -> None:
    group, private = unique("g"), unique("resonate-client-")
    async with HttpTransport(server.url) as t:
        client = t.subscribe(private, "client", accepts_work=False)
        worker = t.subscribe(group, "worker")
        with anyio.fail_after(5):
            await t.wait_subscribed(private, "client")
            await t.wait_subscribed(group, "worker")
        await t.send(PromiseCreate(f"{group}-1", FAR, tags={TAG_TARGET: f"poll://any@{group}"}))
        await t.send(PromiseCreate(f"{group}-2", FAR,
                                   tags={TAG_TARGET: f"poll://any@{group}/client"}))
        assert isinstance(await receive(worker), Execute)
        assert isinstance(await receive(worker), Execute)
        await t.send(PromiseCreate(f"{group}-3", FAR, tags={TAG_EXTERNAL: "true"}))
        await t.send(PromiseRegisterListener(f"{group}-3", f"poll://uni@{private}/client"))
        await t.send(PromiseSettle(f"{group}-3", "resolved"))
        message = await receive(client)
        await nothing_arrives(worker, 0.1)
    assert isinstance(message, Unblock)
    assert message.promise.id == f"{group}-3"


async def test_the_dev_server_sends_anycast_work_to_a_stream_that_wants_none(
        server: DevServerProcess) -> None:
    # As the Resonate server, which ignores ``?work=0``: sharing the workers' group makes a
    # stream a candidate for their work (the transport drops it, and the task waits for the
    # server's retry timeout). Seen from the raw event stream, not through the transport.
    import httpx

    group = unique("g")
    async with httpx.AsyncClient(timeout=10) as raw, \
            raw.stream("GET", f"{server.url}/poll/{group}/client?work=0") as stream:
        async with HttpTransport(server.url) as t:
            await t.send(PromiseCreate(f"{group}-1", FAR,
                                       tags={TAG_TARGET: f"poll://any@{group}"}))
        with anyio.fail_after(5):
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    break
    assert msgspec.json.decode(line[6:])["kind"] == "execute"


async def test_a_send_waits_for_a_server_that_starts_later() -> None:
    late = DevServerProcess()
    late.start()
    port = late.port
    late.kill()
    try:
        async with HttpTransport(f"http://127.0.0.1:{port}", retry_for=15) as t:
            answers: list[Response] = []

            async def ask() -> None:
                answers.append(await t.send(PromiseGet("nothing-here")))

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask)
                    await anyio.sleep(0.3)
                    assert answers == []
                    await anyio.to_thread.run_sync(late.start)
        assert late.port == port
        assert answers[0].status == 404
    finally:
        late.close()


async def test_a_server_that_is_not_there_is_reported_after_retry_for() -> None:
    late = DevServerProcess()
    late.start()
    url = late.url
    late.close()
    async with HttpTransport(url, retry_for=0.3) as t:
        with anyio.fail_after(5), pytest.raises(TransportError, match=url):
            await t.send(PromiseGet("p"))


async def test_a_subscription_survives_a_server_crash_and_gets_released_work(
        tmp_path: Path) -> None:
    group, pid = unique("g"), "worker"
    target = f"poll://any@{group}"
    with dev_server(db=str(tmp_path / "resonate.db")) as server:
        async with HttpTransport(server.url, retry_for=15) as t:
            stream = t.subscribe(group, pid)
            with anyio.fail_after(5):
                await t.wait_subscribed(group, pid)
            await t.send(PromiseCreate("held", FAR, tags={TAG_TARGET: target}))
            execute = await receive(stream)
            assert isinstance(execute, Execute)
            assert (await t.send(TaskAcquire("held", 0, pid, TTL))).status == 200

            server.kill()
            with anyio.fail_after(20):
                await anyio.to_thread.run_sync(server.restart)
                await t.wait_subscribed(group, pid)
            again = await receive(stream)  # the dead holder's lease was released
            assert isinstance(again, Execute)
            assert (again.task_id, again.version) == ("held", 1)

            await t.send(PromiseCreate("later", FAR, tags={TAG_TARGET: target}))
            later = await receive(stream)
            assert isinstance(later, Execute)
            assert later.task_id == "later"
