"""Taking a ``CapacityLimiter`` slot without a loop turn when one is free."""

from __future__ import annotations

import sys

import anyio


async def take(limiter: anyio.CapacityLimiter) -> None:
    """``await limiter.acquire()``, but a free slot is taken at once, without a pass through
    the event loop (the caller checks for cancellation itself if it must).

    anyio 4.11 on trio lets trio's own ``WouldBlock`` out of ``acquire_nowait``; and a slot
    that looks free may already be promised to a waiter, so asking first is not enough.
    """
    try:
        limiter.acquire_nowait()
    except anyio.WouldBlock:
        await limiter.acquire()
    except Exception as exc:
        trio = sys.modules.get("trio")
        if trio is None or not isinstance(exc, trio.WouldBlock):
            raise
        await limiter.acquire()
