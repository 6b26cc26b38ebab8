"""A FastAPI service that starts durable workflows and lets people approve them.

``FastAPI(lifespan=resonate.lifespan)`` runs the Resonate with the app. ``POST /orders`` starts
a workflow and answers its id at once; ``GET /orders/{id}`` reports its status and result;
the workflow waits for a human decision on a durable promise, which ``POST /approvals/{id}``
(a webhook) resolves. Run it with ``uvicorn examples.fastapi_app:app`` (``pip install fastapi
uvicorn``); the embedded engine here keeps its state in ``orders.db``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from resonate_async import Context, NotFoundError, Resonate

resonate = Resonate(path=os.environ.get("ORDERS_DB", "orders.db"))
app = FastAPI(title="orders", lifespan=resonate.lifespan)


class Order(BaseModel):
    id: str
    item: str
    amount: int


class Decision(BaseModel):
    approved: bool
    by: str


approvals: dict[str, str] = {}  # order id -> promise id to resolve (an outbox in real life)


def ask_for_approval(order_id: str, promise_id: str) -> None:
    approvals[order_id] = promise_id  # e.g. post a link to a chat channel


def charge(order: Order) -> str:
    return f"charged {order.amount} for {order.item}"


@resonate.register
async def process_order(ctx: Context, order: Order) -> dict[str, object]:
    if order.amount > 100:
        decision = await ctx.promise(timeout=timedelta(days=3)).spawn()
        await ctx.run(ask_for_approval, order.id, decision.id)
        answer = await decision
        if not answer["approved"]:
            return {"status": "rejected", "by": answer["by"]}
    receipt = await ctx.run(charge, order)
    return {"status": "done", "receipt": receipt}


@app.post("/orders", status_code=202)
async def create_order(order: Order) -> dict[str, str]:
    handle = await resonate.run(f"order-{order.id}", process_order, order)
    return {"id": handle.id}


@app.get("/orders/{execution_id}")
async def order_status(execution_id: str) -> dict[str, object]:
    try:
        record = await resonate.promises.get(execution_id)
    except NotFoundError:
        raise HTTPException(404, f"no order execution {execution_id!r}") from None
    if record.pending:
        return {"id": execution_id, "state": "pending"}
    try:
        return {"id": execution_id, "state": record.state, "result": record.result()}
    except Exception as exc:
        return {"id": execution_id, "state": record.state, "error": str(exc)}


@app.post("/approvals/{promise_id}")
async def approve(promise_id: str, decision: Decision) -> dict[str, str]:
    try:
        record = await resonate.promises.resolve(promise_id, decision.model_dump())
    except NotFoundError:
        raise HTTPException(404, f"no approval {promise_id!r}") from None
    return {"id": promise_id, "state": record.state}
