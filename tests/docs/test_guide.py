"""The README's guide, as code that runs: every python snippet there is taken from this file,
from tests/docs/worker.py or from examples/ (test_readme.py checks that)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import anyio
import msgspec
import pytest

from resonate_async import Context, Handle, Resonate, TimedOutError, configure_logging
from resonate_async.testing import check_replay, execution_tree
from tests._devserver import dev_server

ROOT = Path(__file__).resolve().parents[2]


class Order(msgspec.Struct):
    id: str
    items: list[str]


async def test_local_steps_and_remote_calls() -> None:
    resonate = Resonate()

    @resonate.register
    def charge(order: Order) -> str:
        return f"receipt {order.id}"

    @resonate.register(name="reserve")
    async def reserve(ctx: Context, items: list[str]) -> int:
        return len(items)

    @resonate.register
    async def checkout(ctx: Context, order: Order) -> tuple[str, int]:
        receipt = await ctx.run(charge, order)        # runs here, in this process
        stock = await ctx.rpc("reserve", order.items)  # runs on any worker of the group
        return receipt, stock

    async with resonate:
        handle = await resonate.run("checkout-1", checkout, Order("o1", ["a", "b"]))
        with anyio.fail_after(10):
            assert await handle == ("receipt o1", 2)


async def test_fan_out_collects_handles_in_a_task_group() -> None:
    resonate = Resonate()

    @resonate.register
    def score(item: str) -> int:
        return len(item)

    @resonate.register
    async def rank(ctx: Context, items: list[str]) -> list[int]:
        scores: list[int] = []

        async def collect(h: Handle[int]) -> None:
            scores.append(await h)

        handles = [await ctx.run(score, item).spawn() for item in items]
        async with anyio.create_task_group() as tg:
            for h in handles:
                tg.start_soon(collect, h)
        return sorted(scores)

    async with resonate:
        with anyio.fail_after(10):
            assert await (await resonate.run("rank-1", rank, ["aa", "b", "ccc"])) == [1, 2, 3]


async def test_human_in_the_loop() -> None:
    resonate = Resonate()
    requests: list[str] = []

    @resonate.register
    def send_approval_request(promise_id: str) -> None:
        requests.append(promise_id)

    @resonate.register
    async def expense(ctx: Context) -> object:
        decision = await ctx.promise(timeout=timedelta(days=7)).spawn()
        await ctx.run(send_approval_request, decision.id)   # publish the id (mail, chat, ticket)
        answer = await decision                              # waits, durably, for the answer
        return answer

    async with resonate:
        approved = await resonate.run("expense-1", expense)
        rejected = await resonate.run("expense-2", expense)
        with anyio.fail_after(10):
            while len(requests) < 2:
                await anyio.sleep(0.01)
        promise_id, other_id = sorted(requests)  # expense-1's promise, then expense-2's
        await resonate.promises.resolve(promise_id, {"approved": True})
        await resonate.promises.reject(other_id, "out of budget")
        with anyio.fail_after(10):
            assert await approved == {"approved": True}
            with pytest.raises(Exception, match="out of budget"):
                await rejected


def test_where_the_state_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESONATE_URL", raising=False)
    Resonate()                              # embedded engine in memory: tests, scripts
    Resonate(path="app.db")                 # embedded engine in a SQLite file
    Resonate(url="http://localhost:8001")   # a Resonate server
    assert (tmp_path / "app.db").exists()


async def test_testing_with_the_virtual_clock(resonate: Resonate) -> None:
    @resonate.register
    async def remind(ctx: Context, who: str) -> str:
        await ctx.sleep(timedelta(days=7))
        return f"ping {who}"

    handle = await resonate.run("reminder-1", remind, "ana")
    assert await handle == "ping ana"                # a week passes in milliseconds
    tree = await execution_tree(resonate, "reminder-1")
    assert [step.call for step in tree.children] == ["sleep"]
    report = await check_replay(resonate, remind, "ana")
    assert report.boundaries > 0                     # crashed at each one, and recovered


async def test_timeouts_on_the_virtual_clock(resonate: Resonate) -> None:
    @resonate.register
    async def wait_for_approval(ctx: Context) -> str:
        try:
            await ctx.promise(timeout=timedelta(hours=48))
        except TimedOutError:
            return "escalated"
        return "approved"

    with anyio.fail_after(10):
        assert await (await resonate.run("approval-1", wait_for_approval)) == "escalated"


def test_configure_logging_shows_state_changes(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)

    async def main() -> None:
        resonate = Resonate()

        @resonate.register
        async def hello(ctx: Context) -> str:
            return "hi"

        async with resonate:
            await (await resonate.run("logged-1", hello))

    try:
        anyio.run(main)
    finally:
        configure_logging("WARNING")
    err = capsys.readouterr().err
    assert '"event": "execution_completed"' in err or '"event":"execution_completed"' in err
    assert "logged-1" in err


def test_the_documented_worker_serves_and_stops_on_sigterm() -> None:
    with dev_server(args=["--retry-timeout", "0.5"]) as server:  # the worker may start late
        env = {**os.environ, "RESONATE_URL": server.url}
        worker = subprocess.Popen([sys.executable, "-m", "tests.docs.worker"], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            async def client() -> str:
                resonate = Resonate(url=server.url, worker=False)
                async with resonate:
                    with anyio.fail_after(20):
                        handle = await resonate.options(target="payments").rpc(
                            "charge-17", "charge", "17", 1200)
                        return str(await handle)

            assert anyio.run(client) == "charged 1200 for 17"
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=20)
        assert worker.returncode == 0, err
