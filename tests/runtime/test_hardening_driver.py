"""The task driver under hostile conditions: refusals, repeated failures, a wrong key,
duplicate work messages and deadlines (issue 11).

Every test runs on each transport (memory, sqlite, http) and each anyio backend. Time bounds
are generous upper bounds on "it finished" (a loaded machine only makes things slower); where
a test measures back-off it asserts a lower bound on elapsed time, which load cannot break.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from resonate_async import Context, EncodingError, Resonate, TimedOutError
from resonate_async._errors import RequestTooLargeError, TransportError
from resonate_async.core import _threads
from resonate_async.core._failures import BACKOFF_FIRST, REPORT_AFTER, TaskFailures
from resonate_async.protocol import Request, Response, TaskFulfill, TaskGet
from resonate_async.testing import VirtualClock
from tests.runtime.conftest import Connect
from tests.runtime.spy import SpyTransport

WAIT = 60.0  # "it finished", not "it was fast"


def _resolves(request: Request) -> bool:
    return isinstance(request, TaskFulfill) and request.action.data.state == "resolved"


class RefusingFulfill(SpyTransport):
    """Refuses every ``task.fulfill`` that resolves, as a server refuses a body over its limit
    (``raise``: HTTP 413, which HttpTransport raises as RequestTooLargeError) or a value it
    will not store (an answer with that status)."""

    def __init__(self, inner: Any, refusal: int) -> None:
        super().__init__(inner, [])
        self.refusal = refusal

    async def send(self, request: Request) -> Response:
        if _resolves(request):
            self.log.append((request.KIND, self.refusal))
            if self.refusal == 413:
                raise RequestTooLargeError("the server refused a request body as too large "
                                           "(HTTP 413)", kind=request.KIND)
            return Response(self.refusal, f"value refused ({self.refusal})")
        return await super().send(request)


class Limited(SpyTransport):
    """A transport whose requests may be at most ``max_request_bytes`` long."""

    def __init__(self, inner: Any, limit: int) -> None:
        super().__init__(inner, [])
        self.limit = limit
        self.sizes: list[int] = []

    @property
    def max_request_bytes(self) -> int | None:
        return self.limit

    async def send(self, request: Request) -> Response:
        if isinstance(request, TaskFulfill):
            self.sizes.append(len(request.action.data.value.data or ""))
        return await super().send(request)


class FailingFences(SpyTransport):
    """Every ``task.fence`` fails as if the connection dropped (the engine never sees it)."""

    async def send(self, request: Request) -> Response:
        if request.KIND == "task.fence":
            self.log.append((request.KIND, 0))
            raise TransportError("simulated connection loss on task.fence")
        return await super().send(request)


@pytest.mark.parametrize("refusal", [413, 400, 422])
async def test_a_result_the_server_refuses_for_good_fails_the_execution_once(
        connect: Connect, uid: Callable[[str], str], refusal: int) -> None:
    wrapped: list[RefusingFulfill] = []

    def wrap(inner: Any) -> RefusingFulfill:
        wrapped.append(RefusingFulfill(inner, refusal))
        return wrapped[0]

    resonate = connect(wrap=wrap)
    effects: list[str] = []

    @resonate.register
    async def report(ctx: Context) -> str:
        effects.append("sent")
        return "x" * 1000

    async with resonate:
        root = uid("refused")
        handle = await resonate.run(root, report)
        with anyio.fail_after(WAIT), pytest.raises(EncodingError) as caught:
            await handle
        stored = await resonate.promises.get(root)
    assert effects == ["sent"]
    assert stored.state == "rejected"
    message = str(caught.value)
    assert root in message and "store" in message, message
    kinds = [kind for kind, _ in wrapped[0].log]
    assert kinds.count("task.fulfill") == 2  # the refused result, then the small rejection
    assert "task.acquire" not in kinds  # never released and taken again


async def test_a_result_over_the_transport_limit_is_refused_before_it_is_sent(
        connect: Connect, uid: Callable[[str], str]) -> None:
    limit = 64 * 1024
    wrapped: list[Limited] = []

    def wrap(inner: Any) -> Limited:
        wrapped.append(Limited(inner, limit))
        return wrapped[0]

    resonate = connect(wrap=wrap)
    effects: list[int] = []

    @resonate.register
    async def big(ctx: Context) -> str:
        effects.append(1)
        return "y" * (100 * 1024)

    async with resonate:
        root = uid("big")
        handle = await resonate.run(root, big)
        with anyio.fail_after(WAIT), pytest.raises(EncodingError) as caught:
            await handle
    assert effects == [1]
    message = str(caught.value)
    assert f"result of {root} is " in message and "KiB encoded" in message, message
    assert "at most 64.0 KiB" in message and "return a reference" in message, message
    assert len(wrapped[0].sizes) == 1 and wrapped[0].sizes[0] < limit  # only the rejection


@pytest.mark.parametrize("checked_here", [True, False], ids=["checked-by-client", "server-413"])
async def test_a_root_result_over_the_servers_body_limit_fails_once_over_http(
        http_url: str, uid: Callable[[str], str], checked_here: bool) -> None:
    from resonate_async.transport import HttpTransport

    # The client checks its known limit before sending; without one, the server's 413 ends
    # the execution the same way (never a release and re-run).
    transport = HttpTransport(http_url, **({} if checked_here else {"max_request_bytes": None}))
    resonate = Resonate(transport=transport, group=uid("g")[:20])
    effects: list[int] = []

    @resonate.register
    async def huge(ctx: Context) -> str:
        effects.append(1)
        return "z" * (3 * 1024 * 1024)

    async with resonate:
        root = uid("huge")
        handle = await resonate.run(root, huge)
        with anyio.fail_after(WAIT), pytest.raises(EncodingError) as caught:
            await handle
        stored = await resonate.promises.get(root)
    assert effects == [1]
    assert stored.state == "rejected"
    assert "MiB" in str(caught.value) and "return a reference" in str(caught.value)


async def test_a_task_whose_every_fence_fails_backs_off_and_is_reported(
        connect: Connect, uid: Callable[[str], str], events: list[dict[str, Any]]) -> None:
    wrapped: list[FailingFences] = []

    def wrap(inner: Any) -> FailingFences:
        wrapped.append(FailingFences(inner, []))
        return wrapped[0]

    resonate = connect(wrap=wrap)
    runs: list[float] = []

    @resonate.register
    async def step() -> int:
        return 1

    @resonate.register
    async def flow(ctx: Context) -> int:
        runs.append(time.monotonic())
        return await ctx.run(step)

    def reported() -> list[dict[str, Any]]:
        return [e for e in events if e["event"] == "task_failing_repeatedly"]

    async with resonate:
        root = uid("fences")
        started = time.monotonic()
        await resonate.run(root, flow)
        with anyio.fail_after(WAIT):
            while not reported():
                await anyio.sleep(0.05)
        elapsed = time.monotonic() - started
        count = len(runs)
    report = reported()[0]
    assert report["task_id"] == root and "task.fence" in report["error"]
    assert report["failures"] == REPORT_AFTER
    # One run per failure, each after a doubled wait: no tight release/re-acquire loop.
    assert REPORT_AFTER <= count <= REPORT_AFTER + 1
    backoff = sum(BACKOFF_FIRST * 2 ** n for n in range(REPORT_AFTER - 1))
    assert elapsed >= backoff
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert all(gap >= BACKOFF_FIRST * 2 ** n * 0.9 for n, gap in enumerate(gaps[:3])), gaps


class XorEncryptor:
    """A toy keyed cipher that refuses data it did not encrypt."""

    def __init__(self, key: int) -> None:
        self.key = key

    def encrypt(self, data: bytes) -> bytes:
        return bytes([0x58, self.key]) + bytes(b ^ self.key for b in data)

    def decrypt(self, data: bytes) -> bytes:
        if data[:2] != bytes([0x58, self.key]):
            raise ValueError("not encrypted with this key")
        return bytes(b ^ self.key for b in data[2:])


async def test_a_worker_with_the_wrong_key_gives_the_task_back_and_writes_nothing(
        connect: Connect, uid: Callable[[str], str], events: list[dict[str, Any]]) -> None:
    wrong_log: list[tuple[str, int]] = []
    wrong = connect(encryptor=XorEncryptor(0x11), spy=wrong_log)
    right = connect(encryptor=XorEncryptor(0x5A))
    # in a group of its own, so that no work message for the workers' group reaches it
    client = connect(encryptor=XorEncryptor(0x5A), worker=False, group=uid("clients")[:20])
    ran_on: list[str] = []

    for app in (wrong, right):
        @app.register(name="greet")
        async def greet(ctx: Context, name: str, app: Resonate = app) -> str:
            ran_on.append(app.pid)
            return f"hello {name}"

    # The server may route each re-dispatch to either worker (at random, over HTTP): a short
    # back-off cap keeps the wrong-keyed worker's holds short whatever the draw.
    wrong.worker.failures.cap = 0.5
    async with wrong, client:
        root = uid("keys")
        handle = await client.options(target=wrong.group).rpc(root, "greet", "ada")
        with anyio.fail_after(WAIT):  # the wrong-keyed worker takes it first, alone
            while ("task.release", 200) not in wrong_log:
                await anyio.sleep(0.02)
        async with right:
            with anyio.fail_after(WAIT):
                assert await handle == "hello ada"
    assert ran_on == [right.pid]
    kinds = {kind for kind, _ in wrong_log}
    assert not kinds & {"task.fulfill", "task.fence"}, wrong_log
    errors = [e for e in events if e["event"] == "task_not_decryptable"]
    assert errors and errors[0]["task_id"] == root and errors[0]["log_level"] == "error"
    assert "cannot decrypt" in errors[0]["error"]


async def test_duplicate_execute_messages_do_not_queue_behind_a_full_worker(
        connect: Connect, uid: Callable[[str], str]) -> None:
    spied: list[tuple[str, int]] = []
    resonate = connect(concurrency=1, spy=spied)
    gate = anyio.Event()
    ran: list[str] = []

    @resonate.register
    async def hold(ctx: Context) -> None:
        await gate.wait()

    @resonate.register
    async def work(ctx: Context) -> str:
        ran.append(ctx.info.id)
        return "done"

    async with resonate:
        blocker = await resonate.run(uid("hold"), hold)
        root = uid("dup")
        handle = await resonate.rpc(root, work)
        limiter = resonate.worker.limiter
        with anyio.fail_after(WAIT):  # its execute message waits for the only slot
            while limiter.statistics().tasks_waiting < 1:
                await anyio.sleep(0.01)
        version = (await resonate.send(TaskGet(root))).data.task.version
        returned: list[int] = []

        async def deliver() -> None:
            await resonate.worker.on_execute(root, version)
            returned.append(1)

        async with anyio.create_task_group() as tg:  # the engine's re-sends, many times over
            for _ in range(500):
                tg.start_soon(deliver)
            with anyio.fail_after(WAIT):  # each duplicate is dropped at once
                while len(returned) < 500:
                    await anyio.sleep(0.01)
            waiting = limiter.statistics().tasks_waiting
        gate.set()
        with anyio.fail_after(WAIT):
            assert await handle == "done"
            await blocker
    assert waiting == 1
    assert ran == [root]
    assert [s for k, s in spied if k == "task.acquire"].count(200) == 1


async def test_a_handle_on_a_timed_out_execution_raises_timed_out_error_at_once(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect()
    client = connect(worker=False)
    release = anyio.Event()

    @resonate.register
    async def stuck() -> None:
        await release.wait()

    @resonate.register
    async def slow(ctx: Context) -> None:
        await ctx.run(stuck)

    async with resonate, client:
        local = await resonate.options(timeout=1).run(uid("late"), slow)
        remote = await client.options(timeout=1).rpc(uid("late-rpc"), "slow")
        try:
            with anyio.fail_after(WAIT):
                with pytest.raises(TimedOutError):
                    await local
                with pytest.raises(TimedOutError):
                    await remote
                got = await resonate.get(local.id)
                with pytest.raises(TimedOutError):
                    await got
        finally:
            release.set()


async def test_leaving_async_with_does_not_wait_for_a_blocked_sync_step_beyond_its_grace(
        connect: Connect, uid: Callable[[str], str], events: list[dict[str, Any]]) -> None:
    resonate = connect(shutdown_grace=0.2)
    unblock = threading.Event()
    entered = threading.Event()
    returned: list[str] = []

    def blocking() -> str:
        entered.set()
        unblock.wait(WAIT)
        returned.append("late")
        return "late"

    resonate.register(blocking)

    @resonate.register
    async def flow(ctx: Context) -> str:
        return await ctx.run(blocking)

    after = connect()  # another worker of the group, running all along
    after.register(blocking)
    after.register(flow)
    try:
        async with after:
            async with resonate:
                root = uid("blocked")
                await resonate.run(root, flow)
                with anyio.fail_after(WAIT):
                    while not entered.is_set():
                        await anyio.sleep(0.01)
            # Left while the step's thread still blocks: it was abandoned after the grace.
            assert returned == []
            abandoned = [e for e in events if e["event"] == "step_abandoned"]
            assert abandoned and abandoned[0]["log_level"] == "warning", events
            unblock.set()  # the task was released: the other worker finishes it
            handle = await after.get(root)
            with anyio.fail_after(WAIT):
                assert await handle == "late"
    finally:
        unblock.set()


async def test_a_sync_step_that_returns_within_the_grace_is_recorded_not_run_again(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(shutdown_grace=WAIT)
    entered = threading.Event()
    release = threading.Event()
    runs: list[str] = []

    def slow() -> str:
        runs.append("ran")
        entered.set()
        release.wait(WAIT)
        return "done"

    resonate.register(slow)

    @resonate.register
    async def flow(ctx: Context) -> str:
        return await ctx.run(slow)

    root = uid("graceful")
    after = connect()  # another worker of the group: it finishes what the first gives back
    after.register(slow)
    after.register(flow)
    async with after:
        async with resonate:
            await resonate.run(root, flow)
            with anyio.fail_after(WAIT):
                while not entered.is_set():
                    await anyio.sleep(0.01)
            # Leave while the step runs; it returns well within the grace.
            threading.Timer(0.2, release.set).start()
        step = await after.promises.get(f"{root}:1")
        assert step.state == "resolved"  # recorded on the way out, not lost to the shutdown
        with anyio.fail_after(WAIT):
            assert await (await after.get(root)) == "done"
    assert runs == ["ran"]  # the side effect ran once


def test_back_off_doubles_to_its_cap_and_the_same_failure_is_reported_every_n_times() -> None:
    clock = VirtualClock()
    failures = TaskFailures(clock, first=0.1, cap=30.0, report_after=5)
    with capture_logs() as logs:
        delays = [failures.failed("t", "fence answered 500") for _ in range(2000)]
        failures.failed("t", "another failure")  # a different failure starts a new count
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert max(delays) == 30.0 and delays[-1] == 30.0  # thousands of failures: still capped
    assert failures.wait_s("t") == 30.0
    reports = [e for e in logs if e["event"] == "task_failing_repeatedly"]
    assert len(reports) == 2000 // 5
    assert reports[0]["failures"] == 5 and reports[0]["log_level"] == "error"
    failures.succeeded("t")
    assert failures.wait_s("t") == 0.0 and failures.count("t") == 0


async def test_sync_code_runs_in_daemon_threads_that_can_be_abandoned() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("caller")
    seen: list[tuple[str, bool]] = []

    def look() -> str:
        seen.append((var.get(), threading.current_thread().daemon))
        return "looked"

    def fail() -> None:
        raise KeyError("inside")

    assert await _threads.run_sync(look, grace=lambda: 0.0, on_abandon=lambda: None) == "looked"
    assert seen == [("caller", True)]  # the caller's context, a daemon thread
    with pytest.raises(KeyError):
        await _threads.run_sync(fail, grace=lambda: 0.0, on_abandon=lambda: None)

    release = threading.Event()
    abandoned: list[bool] = []
    try:
        with anyio.move_on_after(0.05):
            await _threads.run_sync(lambda: release.wait(WAIT), grace=lambda: 0.05,
                                    on_abandon=lambda: abandoned.append(True))
        assert abandoned == [True]  # cancelled, waited its grace, and left the thread behind
        assert not release.is_set()
        # the abandoned thread holds no slot of the thread limiter: more work still runs
        assert anyio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
        assert await _threads.run_sync(look, grace=lambda: 0.0, on_abandon=lambda: None)
    finally:
        release.set()


async def test_execute_messages_beyond_the_bound_are_dropped_not_queued(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(concurrency=1)
    resonate.worker.max_queued = 8
    gate, holding = anyio.Event(), anyio.Event()

    @resonate.register
    async def hold(ctx: Context) -> None:
        holding.set()
        await gate.wait()

    async with resonate:
        blocker = await resonate.run(uid("hold"), hold)
        with anyio.fail_after(WAIT):  # it holds the only slot
            await holding.wait()
        limiter = resonate.worker.limiter
        returned: list[str] = []

        async def deliver(task_id: str) -> None:
            await resonate.worker.on_execute(task_id, 0)
            returned.append(task_id)

        async with anyio.create_task_group() as tg:
            for n in range(200):  # a backlog of distinct tasks (unknown ids: never acquired)
                tg.start_soon(deliver, uid(f"backlog{n}"))
            with anyio.fail_after(WAIT):  # all but 8 are dropped at once
                while len(returned) < 200 - 8:
                    await anyio.sleep(0.01)
            waiting = limiter.statistics().tasks_waiting
            gate.set()
        with anyio.fail_after(WAIT):
            await blocker
    assert waiting == 8
