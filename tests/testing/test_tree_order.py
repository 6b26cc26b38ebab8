"""``execution_tree`` and ``render_tree`` list children in call order: counters numerically,
calls with a custom id at the place the function made them."""

from __future__ import annotations

from datetime import timedelta

import anyio

from resonate_async import Context, Resonate
from resonate_async._tree import build_tree, call_order
from resonate_async.testing import execution_records, execution_tree, render_execution


async def test_children_with_custom_ids_appear_where_they_were_called(
        resonate: Resonate) -> None:
    @resonate.register
    def price(item: str) -> int:
        return len(item)

    @resonate.register
    async def reserve(ctx: Context, item: str) -> str:
        return f"held {item}"

    @resonate.register
    async def order(ctx: Context, item: str) -> str:
        cost = await ctx.run(price, item)
        held = await ctx.rpc(reserve, item).options(id="reserve")
        await ctx.sleep(timedelta(minutes=5))
        for i in range(11):  # enough counters that text order (10 before 2) would show
            await ctx.run(price, "x" * i)
        await ctx.run(price, item).options(id="audit")
        return f"{held} for {cost}"

    with anyio.fail_after(30):
        assert await (await resonate.run("order-1", order, "lamp")) == "held lamp for 4"
    tree = await execution_tree(resonate, "order-1")
    assert [(s.id, s.call) for s in tree.children[:4]] == [
        ("order-1:1", "run price"),
        ("order-1:reserve", "rpc reserve"),
        ("order-1:3", "sleep"),
        ("order-1:4", "run price"),
    ]
    assert [s.id for s in tree.children[4:]] == [
        *(f"order-1:{i}" for i in range(5, 15)), "order-1:audit"]
    text = (await render_execution(resonate, "order-1")).splitlines()
    assert [line.split()[1] for line in text[1:4]] == [
        "order-1:1", "order-1:reserve", "order-1:3"]


async def test_the_order_does_not_depend_on_the_order_of_the_records(
        resonate: Resonate) -> None:
    @resonate.register
    def step(n: int) -> int:
        return n

    @resonate.register
    async def flow(ctx: Context) -> None:
        await ctx.run(step, 1)
        await ctx.run(step, 2).options(id="second")
        await ctx.run(step, 3)

    with anyio.fail_after(30):
        await (await resonate.run("f-1", flow))
    records = await execution_records(resonate, "f-1")
    for arrangement in (records, list(reversed(records)),
                        sorted(records, key=lambda r: r.id)):
        (top,) = build_tree(arrangement)
        assert [n.record.id for n in top.children] == ["f-1:1", "f-1:second", "f-1:3"]


def test_call_order_sorts_counters_numerically_and_names_after() -> None:
    ids = ["r:10", "r:2", "r:x", "r:2.10", "r:2.9", "r:1"]
    assert sorted(ids, key=call_order) == ["r:1", "r:2", "r:2.9", "r:2.10", "r:10", "r:x"]
