"""Waiting for promises to exist, for the behaviour suite (a step recorded in one write, or
shown pending once it has run for half a lease, exists only from then on)."""

from __future__ import annotations

import anyio

from resonate_async import NotFoundError, Resonate


async def exists(resonate: Resonate, promise_id: str) -> bool:
    """Whether ``promise_id`` exists now."""
    try:
        await resonate.promises.get(promise_id)
    except NotFoundError:
        return False
    return True


async def until_exists(resonate: Resonate, *promise_ids: str, within: float = 20) -> None:
    """Return once every one of ``promise_ids`` exists (TimeoutError after ``within`` s)."""
    with anyio.fail_after(within):
        for promise_id in promise_ids:
            while not await exists(resonate, promise_id):
                await anyio.sleep(0.01)
