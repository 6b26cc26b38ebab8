"""Human in the loop: a workflow that waits for someone outside to decide.

``await ctx.promise(timeout=...).spawn()`` creates a durable promise and gives its handle;
the workflow publishes ``handle.id`` (here: a step that posts it to an inbox) and awaits the
handle. Whoever holds the id settles the promise, from any process, with
``resonate.promises.resolve(id, value)``; the workflow then resumes with that value. If no one
answers before the timeout, awaiting the handle raises ``TimedOutError``.
"""

import asyncio
from datetime import timedelta

import anyio

from resonate_async import Context, Resonate

resonate = Resonate()
# stands in for an email, a chat message or a ticket
send_request, inbox = anyio.create_memory_object_stream[str](max_buffer_size=10)


async def request_approval(promise_id: str, amount: int) -> None:
    print(f"approval requested for ${amount}: resolve promise {promise_id!r}")
    await send_request.send(promise_id)


@resonate.register
async def expense(ctx: Context, amount: int) -> str:
    decision = await ctx.promise(timeout=timedelta(days=7)).spawn()
    await ctx.run(request_approval, decision.id, amount)
    answer = await decision
    return f"${amount} {'approved' if answer['approved'] else 'rejected'}"


async def main() -> None:
    async with resonate:
        handle = await resonate.run("expense-7", expense, 120)
        promise_id = await inbox.receive()  # a person reads the request and says yes
        await resonate.promises.resolve(promise_id, {"approved": True})
        print(await handle)


if __name__ == "__main__":
    asyncio.run(main())
