"""The FastAPI example, driven through httpx's ASGI transport with the app's lifespan."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("ORDERS_DB", str(tmp_path / "orders.db"))
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.fastapi_app", None)
    return importlib.import_module("examples.fastapi_app")


@pytest.fixture
async def client(example: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    app = example.app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as c:
            yield c
    assert not example.resonate.running  # stopped with the app


async def _status(client: httpx.AsyncClient, execution_id: str) -> dict[str, object]:
    with anyio.fail_after(10):
        while True:
            body: dict[str, object] = (await client.get(f"/orders/{execution_id}")).json()
            if body["state"] != "pending":
                return body
            await anyio.sleep(0.02)


async def test_a_small_order_completes_without_approval(client: httpx.AsyncClient) -> None:
    started = await client.post("/orders", json={"id": "1", "item": "pen", "amount": 5})
    assert started.status_code == 202
    execution_id = started.json()["id"]
    assert execution_id == "order-1"
    body = await _status(client, execution_id)
    assert body == {"id": "order-1", "state": "resolved",
                    "result": {"status": "done", "receipt": "charged 5 for pen"}}


async def test_a_large_order_waits_for_the_approval_webhook(
        client: httpx.AsyncClient, example: ModuleType) -> None:
    started = await client.post("/orders", json={"id": "2", "item": "desk", "amount": 500})
    execution_id = started.json()["id"]
    with anyio.fail_after(10):
        while "2" not in example.approvals:
            await anyio.sleep(0.02)
    assert (await client.get(f"/orders/{execution_id}")).json()["state"] == "pending"
    promise_id = example.approvals["2"]
    answer = await client.post(f"/approvals/{promise_id}",
                               json={"approved": True, "by": "maria"})
    assert answer.json() == {"id": promise_id, "state": "resolved"}
    body = await _status(client, execution_id)
    assert body["result"] == {"status": "done", "receipt": "charged 500 for desk"}


async def test_a_rejected_order_reports_who_rejected_it(
        client: httpx.AsyncClient, example: ModuleType) -> None:
    await client.post("/orders", json={"id": "3", "item": "car", "amount": 9000})
    with anyio.fail_after(10):
        while "3" not in example.approvals:
            await anyio.sleep(0.02)
    await client.post(f"/approvals/{example.approvals['3']}",
                      json={"approved": False, "by": "li"})
    body = await _status(client, "order-3")
    assert body["result"] == {"status": "rejected", "by": "li"}


async def test_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/orders/order-nope")).status_code == 404
    missing = await client.post("/approvals/nope", json={"approved": True, "by": "x"})
    assert missing.status_code == 404
