"""A booking saga: undo the steps that succeeded when a later one fails.

Each reservation is a durable step. The car step fails with ``NoCarsLeft``, an exception
registered with ``resonate.register_error`` so it comes back out of the step as itself (an
unregistered type would arrive as ``ApplicationError``). The saga catches it and runs the
compensations, also durable steps, in reverse order: a crash half-way through the undo would
resume it, never repeat a cancellation that already happened.
"""

import asyncio

from resonate_async import Context, Never, Resonate

resonate = Resonate()


class NoCarsLeft(Exception):
    """The car rental has nothing available for these dates."""


resonate.register_error(NoCarsLeft)


async def reserve(kind: str, trip: str) -> str:
    if kind == "car":
        raise NoCarsLeft(f"no cars left for {trip}")
    print(f"  reserved {kind}")
    return f"{kind}-{trip}"


async def cancel(booking: str) -> None:
    print(f"  canceled {booking}")


@resonate.register
async def book_trip(ctx: Context, trip: str) -> str:
    undo: list[str] = []  # rebuilt identically on every replay: it only holds step results
    try:
        for kind in ("flight", "hotel", "car"):
            # Never: a sold-out car is a business answer, not a glitch to retry.
            booking = await ctx.run(reserve, kind, trip).options(retry=Never())
            undo.append(booking)
    except NoCarsLeft as exc:
        for booking in reversed(undo):
            await ctx.run(cancel, booking)
        return f"trip {trip} not booked ({exc}); compensated: {', '.join(reversed(undo))}"
    return f"trip {trip} booked: {', '.join(undo)}"


async def main() -> None:
    async with resonate:
        handle = await resonate.run("trip-lisbon", book_trip, "lisbon")
        print(await handle)


if __name__ == "__main__":
    asyncio.run(main())
