"""Testing an application as written: the FastAPI example's own module-level ``Resonate``.

``examples/fastapi_app.py`` creates ``resonate = Resonate(path=...)`` at import and registers
its workflow with ``@resonate.register``; it has no factory. ``attach`` runs that very
instance on an embedded engine in memory and a ``VirtualClock`` for each test, while the
app's own lifespan starts and stops it. The tests drive the HTTP API, poll and resolve the
approval as its webhook would, and let the 3-day approval window pass in milliseconds.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest

from resonate_async import TimedOutError
from resonate_async.testing import Kit, attach, check_replay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The app module, imported once as in production (its db path points at a tmp dir)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ORDERS_DB", str(tmp_path_factory.mktemp("orders") / "orders.db"))
        env.syspath_prepend(str(ROOT))
        sys.modules.pop("examples.fastapi_app", None)
        yield importlib.import_module("examples.fastapi_app")
    sys.modules.pop("examples.fastapi_app", None)


# The app's own Resonate on a test engine and virtual clock, started by its lifespan.
@pytest.fixture
async def kit(orders: ModuleType) -> AsyncIterator[Kit]:
    async with attach(orders.resonate, start=False) as kit:
        yield kit
    assert not orders.resonate.running


@pytest.fixture
async def client(orders: ModuleType, kit: Kit) -> AsyncIterator[httpx.AsyncClient]:
    app = orders.app
    async with app.router.lifespan_context(app):
        assert kit.resonate.running  # the lifespan started the attached instance
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as c:
            yield c


async def _settled(client: httpx.AsyncClient, execution_id: str) -> dict[str, object]:
    with anyio.fail_after(20):
        while True:
            body: dict[str, object] = (await client.get(f"/orders/{execution_id}")).json()
            if body["state"] != "pending":
                return body
            await anyio.sleep(0.01)


async def test_a_large_order_waits_for_the_webhook_and_completes(
        client: httpx.AsyncClient, orders: ModuleType, kit: Kit) -> None:
    started = await client.post("/orders", json={"id": "10", "item": "desk", "amount": 500})
    assert started.json() == {"id": "order-10"}
    with anyio.fail_after(20):
        while "10" not in orders.approvals:  # poll as long as it takes: no time passes
            await anyio.sleep(0.01)
    approval = await kit.wait_for_promise(orders.approvals["10"])
    assert approval.pending
    assert (await client.get("/orders/order-10")).json()["state"] == "pending"
    answer = await client.post(f"/approvals/{approval.id}", json={"approved": True, "by": "li"})
    assert answer.json() == {"id": approval.id, "state": "resolved"}
    body = await _settled(client, "order-10")
    assert body["result"] == {"status": "done", "receipt": "charged 500 for desk"}


async def test_an_order_nobody_approves_times_out_after_three_days(
        client: httpx.AsyncClient, kit: Kit) -> None:
    start = kit.clock.now()
    await client.post("/orders", json={"id": "11", "item": "car", "amount": 9000})
    handle = await kit.resonate.get("order-11")
    with anyio.fail_after(20), pytest.raises(TimedOutError):
        await handle  # three days pass in milliseconds while the test awaits
    assert (kit.clock.now() - start).days >= 3
    body = await _settled(client, "order-11")
    assert body["state"] == "rejected"


async def test_the_order_workflow_recovers_from_a_crash_at_every_step(
        orders: ModuleType, kit: Kit) -> None:
    with anyio.fail_after(120):
        report = await check_replay(kit.resonate, orders.process_order,
                                    orders.Order(id="12", item="pen", amount=5))
    assert report.value == {"status": "done", "receipt": "charged 5 for pen"}
    assert report.error is None


async def test_the_app_instance_is_restored_after_the_test(orders: ModuleType) -> None:
    before = orders.resonate.transport
    async with attach(orders.resonate) as kit:
        assert kit.resonate is orders.resonate
        assert orders.resonate.transport is not before
        assert orders.resonate.clock is kit.clock
    assert orders.resonate.transport is before
    assert not orders.resonate.running
