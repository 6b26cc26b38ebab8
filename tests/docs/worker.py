import asyncio

from resonate_async import Context, Resonate

resonate = Resonate(group="payments")  # the server at RESONATE_URL


@resonate.register
async def charge(ctx: Context, order_id: str, cents: int) -> str:
    return f"charged {cents} for {order_id}"


async def main() -> None:
    await resonate.serve()   # until SIGINT/SIGTERM


if __name__ == "__main__":
    asyncio.run(main())
