"""Durable calls: local steps, rpc, fan-out, nesting, detached work, sleeps and promises."""

from __future__ import annotations

import base64
import dataclasses
import enum
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest

from resonate_async import Context, EncodingError, Handle, Resonate
from resonate_async._codec import Codec
from resonate_async.protocol import PromiseGet
from tests.runtime.conftest import Connect


# A thousand children over HTTP take 20-30 s on a loaded 2-core machine: slow, and its bounds
# are hang guards far above that, not speed checks.
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_fan_out_of_a_thousand_spawned_children_in_a_task_group_completes(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def square(x: int) -> int:
        return x * x

    @resonate.register
    async def fan_out(ctx: Context, n: int) -> int:
        handles = [await ctx.run(square, i).spawn() for i in range(n)]
        results: list[int] = []

        async def collect(h: Handle[int]) -> None:
            results.append(await h)

        async with anyio.create_task_group() as tg:
            for h in handles:
                tg.start_soon(collect, h)
        return sum(results)

    async with resonate:
        handle = await resonate.run(uid("fan"), fan_out, 1000)
        with anyio.fail_after(300):
            assert await handle == sum(i * i for i in range(1000))


async def test_rpc_fan_out_with_spawn_completes(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def double(ctx: Context, x: int) -> int:
        return 2 * x

    @resonate.register
    async def parent(ctx: Context, n: int) -> list[int]:
        handles = [await ctx.rpc(double, i).spawn() for i in range(n)]
        return [await h for h in handles]

    async with resonate:
        handle = await resonate.run(uid("rpcfan"), parent, 20)
        with anyio.fail_after(20):
            assert await handle == [2 * i for i in range(20)]


async def test_nested_durable_functions_three_levels_deep(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    ids: list[str] = []

    @resonate.register
    async def level3(ctx: Context, x: int) -> int:
        ids.append(ctx.info.id)
        return x + 3

    @resonate.register
    async def level2(ctx: Context, x: int) -> int:
        ids.append(ctx.info.id)
        return await ctx.rpc(level3, x + 2)

    @resonate.register
    async def level1(ctx: Context, x: int) -> int:
        ids.append(ctx.info.id)
        return await ctx.run(level2, x + 1)

    async with resonate:
        root = uid("nest")
        handle = await resonate.run(root, level1, 0)
        with anyio.fail_after(10):
            assert await handle == 6
    assert ids[0] == root
    assert f"{root}:1" in ids and f"{root}:1.1" in ids


async def test_sleep_for_a_duration_and_until_a_moment(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    async def sleeper(ctx: Context) -> float:
        start = await ctx.now()
        await ctx.sleep(0.1)
        await ctx.sleep(timedelta(milliseconds=50))
        await ctx.sleep(until=start + timedelta(milliseconds=300))
        end = await ctx.now()
        return (end - start).total_seconds()

    async with resonate:
        handle = await resonate.run(uid("sleep"), sleeper)
        with anyio.fail_after(10):
            elapsed = await handle
    assert elapsed >= 0.29


async def test_a_promise_settled_from_outside_resumes_the_workflow(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    published: list[str] = []

    @resonate.register
    def publish(promise_id: str) -> None:
        published.append(promise_id)

    @resonate.register
    async def approval(ctx: Context) -> str:
        handle = await ctx.promise(timeout=timedelta(minutes=5)).spawn()
        await ctx.run(publish, handle.id)
        decision = await handle
        return f"decision: {decision['approved']}"

    async with resonate:
        handle = await resonate.run(uid("hitl"), approval)
        with anyio.fail_after(10):
            while not published:
                await anyio.sleep(0.01)
        record = await resonate.promises.resolve(published[0], {"approved": True})
        assert record.state == "resolved"
        with anyio.fail_after(10):
            assert await handle == "decision: True"


async def test_detached_work_outlives_its_parent(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    gate = anyio.Event()

    @resonate.register
    async def background(ctx: Context, x: int) -> int:
        await gate.wait()
        return x * 3

    @resonate.register
    async def parent(ctx: Context) -> str:
        handle = await ctx.detached(background, 5)
        return handle.id

    async with resonate:
        root = uid("det")
        handle = await resonate.run(root, parent)
        with anyio.fail_after(10):
            detached_id = await handle
        assert detached_id.startswith(f"{root}:d")
        detached = await resonate.get(detached_id)
        assert not await detached.done()
        gate.set()
        with anyio.fail_after(10):
            assert await detached == 15


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Order:
    item: str
    qty: int
    color: Color


class Receipt(msgspec.Struct):
    item: str
    total: int
    at: datetime


async def test_typed_values_round_trip_on_the_live_and_the_replay_path(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    seen: list[object] = []
    gate = anyio.Event()

    @resonate.register
    def price(order: Order) -> Receipt:
        assert isinstance(order, Order) and isinstance(order.color, Color)
        return Receipt(order.item, order.qty * 3, datetime(2026, 1, 2, tzinfo=UTC))

    @resonate.register
    async def hold(ctx: Context) -> None:
        await gate.wait()

    @resonate.register
    async def buy(ctx: Context, order: Order) -> Receipt:
        seen.append(order)
        receipt = await ctx.run(price, order)
        seen.append(receipt)
        await ctx.rpc(hold)
        return receipt

    async with resonate:
        handle = await resonate.run(uid("buy"), buy, Order("pen", 2, Color.BLUE))
        await anyio.sleep(0.05)
        gate.set()
        with anyio.fail_after(10):
            receipt = await handle
    assert receipt == Receipt("pen", 6, datetime(2026, 1, 2, tzinfo=UTC))
    # run 1 and the replay both see typed values: the argument and the cached step result
    assert [type(x) for x in seen] == [Order, Receipt, Order, Receipt]
    assert seen[2] == Order("pen", 2, Color.BLUE)


async def test_sync_functions_run_in_a_worker_thread(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    loop_thread = threading.get_ident()

    @resonate.register
    def where() -> int:
        return threading.get_ident()

    @resonate.register
    async def flow(ctx: Context) -> int:
        return await ctx.run(where)

    async with resonate:
        handle = await resonate.run(uid("thread"), flow)
        with anyio.fail_after(10):
            assert await handle != loop_thread


async def test_info_and_dependencies_are_available_to_durable_functions(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    class Database:
        name = "db"

    resonate.set_dependency(Database())

    @resonate.register
    async def inner(ctx: Context) -> tuple[str, str | None, str]:
        return ctx.info.id, ctx.info.parent_id, ctx.get_dependency(Database).name

    @resonate.register
    async def outer(ctx: Context) -> list[object]:
        child = await ctx.run(inner)
        return [ctx.info.id, ctx.info.root_id, ctx.info.function, ctx.info.attempt >= 1, *child]

    async with resonate:
        root = uid("info")
        handle = await resonate.run(root, outer)
        with anyio.fail_after(10):
            result = await handle
    assert result == [root, root, "outer", True, f"{root}:1", root, "db"]


async def test_call_options_set_the_child_id_and_timeout(
        resonate: Resonate, uid: Callable[[str], str]) -> None:
    @resonate.register
    def echo(x: str) -> str:
        return x

    @resonate.register
    async def flow(ctx: Context) -> list[str]:
        named = ctx.run(echo, "a").options(id="custom", timeout=30)
        value = await named
        handle = await ctx.run(echo, "b").spawn()
        return [named.id, value, handle.id, await handle]

    async with resonate:
        root = uid("opts")
        handle = await resonate.run(root, flow)
        with anyio.fail_after(10):
            result = await handle
        step = await resonate.promises.get(f"{root}:custom")
    assert result == [f"{root}:custom", "a", f"{root}:2", "b"]
    assert step.state == "resolved" and step.result() == "a"
    assert step.timeout_at <= step.created_at + timedelta(seconds=31)


class XorEncryptor:
    """A toy cipher for the test (a real one: Fernet, AES-GCM): reversible, keyed, checked."""

    def __init__(self, key: int) -> None:
        self.key = key

    def encrypt(self, data: bytes) -> bytes:
        return bytes([0x58, self.key]) + bytes(b ^ self.key for b in data)

    def decrypt(self, data: bytes) -> bytes:
        if data[:2] != bytes([0x58, self.key]):
            raise ValueError("not encrypted with this key")
        return bytes(b ^ self.key for b in data[2:])


async def test_an_encryptor_keeps_plaintext_out_of_the_engine(
        connect: Connect, uid: Callable[[str], str]) -> None:
    resonate = connect(encryptor=XorEncryptor(0x5A))

    @resonate.register
    def secret(word: str) -> str:
        return f"the word is {word}"

    @resonate.register
    async def flow(ctx: Context, word: str) -> str:
        return await ctx.run(secret, word)

    async with resonate:
        root = uid("enc")
        handle = await resonate.run(root, flow, "swordfish")
        with anyio.fail_after(10):
            assert await handle == "the word is swordfish"
        step = await resonate.send(PromiseGet(f"{root}:1"))
        stored = base64.b64decode(step.data.promise.value.data)
        assert b"swordfish" not in stored
        assert stored.startswith(b"X\x5a")
        # a process with another key gets a clear error, not garbage
        with pytest.raises(EncodingError, match="cannot decrypt"):
            Codec(XorEncryptor(1)).decode(step.data.promise.value)
