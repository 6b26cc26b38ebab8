"""What ``configure_logging`` shows: INFO tells each execution's story under public logger
names, DEBUG leaves other libraries' chatter out, and ``ctx.log`` logs once per execution
(not once per replay)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import structlog

from resonate_async import Context, Never, NotFoundError, Resonate, configure_logging
from resonate_async.engine import Engine
from resonate_async.transport import EmbeddedTransport


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    configure_logging("WARNING", stream=io.StringIO())
    structlog.reset_defaults()


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def wait_for_promise(resonate: Resonate, promise_id: str) -> None:
    with anyio.fail_after(30):
        while True:
            try:
                await resonate.promises.get(promise_id)
                return
            except NotFoundError:
                await anyio.sleep(0.01)


async def test_info_tells_the_story_of_each_execution(out: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=out)
    resonate = Resonate()

    @resonate.register
    def charge(amount: int) -> int:
        return amount

    @resonate.register
    def refuse() -> None:
        raise ValueError("card expired")

    @resonate.register
    async def checkout(ctx: Context) -> int:
        receipt = await ctx.run(charge, 12)
        await ctx.promise()
        return receipt

    @resonate.register
    async def doomed(ctx: Context) -> None:
        await ctx.run(refuse).options(retry=Never())

    async with resonate:
        handle = await resonate.run("story-1", checkout)
        await wait_for_promise(resonate, "story-1:2")
        await resonate.promises.resolve("story-1:2", None)
        failing = await resonate.run("story-2", doomed)
        with anyio.fail_after(30):
            assert await handle == 12
            with pytest.raises(ValueError, match="card expired"):
                await failing

    logged = events(out)
    story = [(e["event"], e.get("function")) for e in logged
             if e.get("task_id") == "story-1" and e["logger"] == "resonate_async.worker"]
    assert story == [("execution_started", "checkout"), ("step_completed", "charge"),
                     ("execution_suspended", "checkout"), ("execution_resumed", "checkout"),
                     ("execution_completed", "checkout")]
    by_event = {e["event"]: e for e in logged if e.get("task_id") == "story-1"}
    for name in ("step_completed", "execution_suspended", "execution_completed"):
        assert isinstance(by_event[name]["duration_ms"], float), by_event[name]
    assert by_event["step_completed"]["step_id"] == "story-1:1"
    assert by_event["execution_suspended"]["waiting_on"] == ["story-1:2"]
    failed = {e["event"]: e for e in logged if e.get("task_id") == "story-2"}
    assert failed["step_failed"]["function"] == "refuse"
    assert "card expired" in failed["step_failed"]["error"]
    assert failed["execution_failed"]["function"] == "doomed"
    assert isinstance(failed["execution_failed"]["duration_ms"], float)
    # every logger is a public name: resonate_async.<worker|client|engine|transport|...>
    names = {e["logger"] for e in logged}
    assert names >= {"resonate_async.worker", "resonate_async.client"}, names
    assert all(n.startswith("resonate_async.") and "._" not in n for n in names), names


def test_debug_leaves_other_libraries_loggers_and_chatter_alone(out: io.StringIO) -> None:
    configure_logging("DEBUG", json=True, stream=out)
    structlog.get_logger("resonate_async.worker").debug("ours")
    logging.getLogger("myapp").debug("yours")
    logging.getLogger("asyncio").debug("Using selector: EpollSelector")
    logging.getLogger("httpx").info("HTTP Request: POST / 200 OK")
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    assert [e["event"] for e in events(out)] == [
        "ours", "yours", "Task exception was never retrieved"]
    assert logging.getLogger("asyncio").level == logging.NOTSET  # not touched
    assert logging.getLogger("httpx").level == logging.NOTSET
    try:
        logging.getLogger("httpx").setLevel(logging.INFO)  # asked for: shown
        logging.getLogger("httpx").info("HTTP Request: GET /poll 200 OK")
    finally:
        logging.getLogger("httpx").setLevel(logging.NOTSET)
    assert events(out)[-1]["event"] == "HTTP Request: GET /poll 200 OK"


def test_info_hides_the_sdks_debug_events(out: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=out)
    structlog.get_logger("resonate_async.worker").debug("execute_dropped")
    structlog.get_logger("resonate_async.worker").info("execution_started")
    assert [e["event"] for e in events(out)] == ["execution_started"]


def _register_approval(resonate: Resonate) -> None:
    @resonate.register
    def charge(amount: int) -> int:
        return amount

    @resonate.register
    async def nested(ctx: Context) -> None:
        ctx.log.info("nested_ran")

    @resonate.register
    async def approval(ctx: Context) -> int:
        log = ctx.log.bind(order="o-1")
        log.info("checkout_started")
        receipt = await ctx.run(charge, 12)
        log.info("charged", receipt=receipt)
        pending = await ctx.promise().spawn()
        log.info("waiting_for_approval", replaying=ctx.log.replaying)
        approved = await pending
        log.info("approved", approved=approved, replaying=ctx.log.replaying)
        await ctx.run(nested)
        await ctx.sleep(0)
        log.info("slept")
        return receipt


def _app_events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [e for e in events(stream) if e["logger"] == "resonate_async.app"]


async def test_ctx_log_logs_each_event_once_however_often_the_function_replays(
        out: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=out)
    resonate = Resonate()
    _register_approval(resonate)
    async with resonate:
        handle = await resonate.run("replays-1", resonate.registry.get("approval").fn)
        await wait_for_promise(resonate, "replays-1:2")
        await resonate.promises.resolve("replays-1:2", True)
        with anyio.fail_after(30):
            assert await handle == 12
    app = _app_events(out)
    assert [e["event"] for e in app] == ["checkout_started", "charged", "waiting_for_approval",
                                        "approved", "nested_ran", "slept"]
    first = app[0]
    assert (first["promise_id"], first["task_id"], first["function"], first["order"],
            first["attempt"]) == ("replays-1", "replays-1", "approval", "o-1", 1)
    assert app[2]["replaying"] is False and app[3]["replaying"] is False
    # the function did replay (in a new attempt, or at once when the approval came first)
    assert [e for e in events(out) if e["event"] == "execution_resumed"
            and e["task_id"] == "replays-1"]
    assert (app[4]["function"], app[4]["promise_id"]) == ("nested", "replays-1:3")


async def test_ctx_log_knows_the_frontier_when_another_process_resumes_the_execution(
        out: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=out)
    transport = EmbeddedTransport(Engine.memory(), close_engine=True)
    async with transport:
        first = Resonate(transport=transport, pid="first")
        _register_approval(first)
        async with first:
            await first.run("replays-2", first.registry.get("approval").fn)
            await wait_for_promise(first, "replays-2:2")
            with anyio.fail_after(30):
                while not [e for e in _app_events(out) if e["event"] ==
                           "waiting_for_approval"]:
                    await anyio.sleep(0.01)
        second = Resonate(transport=transport, pid="second")  # keeps no cache of the first
        _register_approval(second)
        async with second:
            await second.promises.resolve("replays-2:2", True)
            handle = await second.get("replays-2")
            with anyio.fail_after(30):
                assert await handle == 12
    assert [e["event"] for e in _app_events(out)] == [
        "checkout_started", "charged", "waiting_for_approval", "approved", "nested_ran",
        "slept"]
