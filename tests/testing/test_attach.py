"""``attach``: an application's own module-level ``Resonate`` runs on a test engine and clock."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from resonate_async import Context, NotFoundError, Resonate, ResonateError
from resonate_async.testing import VirtualClock, attach


class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []


class OutOfStock(Exception):
    pass


def _app() -> tuple[Resonate, Mailer]:
    """An app as the README writes it: one instance, functions registered on it."""
    app = Resonate(group="shop", concurrency=3)
    mailer = Mailer()
    app.set_dependency(mailer)
    app.register_error(OutOfStock)

    @app.register
    def mail(ctx: Context, text: str) -> None:
        ctx.get_dependency(Mailer).sent.append(text)

    @app.register
    async def remind(ctx: Context, who: str) -> str:
        await ctx.sleep(timedelta(days=2))
        await ctx.run(mail, f"hi {who}")
        return who

    @app.register
    async def reserve(ctx: Context, item: str) -> str:
        raise OutOfStock(item)

    return app, mailer


async def test_the_app_runs_with_its_functions_dependencies_and_errors() -> None:
    app, mailer = _app()
    async with attach(app) as kit:
        assert kit.resonate is app and app.running
        assert isinstance(app.clock, VirtualClock) and app.clock is kit.clock
        start = kit.clock.now()
        with anyio.fail_after(20):
            assert await (await app.run("remind-1", "remind", "ana")) == "ana"
            with pytest.raises(OutOfStock, match="lamp"):
                await (await app.rpc("reserve-1", "reserve", "lamp"))
        assert kit.clock.now() - start >= timedelta(days=2)
    assert mailer.sent == ["hi ana"]
    assert (app.group, app.worker.limiter.total_tokens) == ("shop", 3)


async def test_each_attach_gets_a_fresh_engine_and_the_app_is_restored() -> None:
    app, _ = _app()
    transport, clock = app.transport, app.clock
    async with attach(app):
        await (await app.run("remind-2", "remind", "bo"))
    assert (app.transport, app.clock) == (transport, clock)
    assert not app.running
    async with attach(app):
        with pytest.raises(NotFoundError):
            await app.promises.get("remind-2")


async def test_without_start_the_app_lifespan_starts_the_attached_instance() -> None:
    app, _ = _app()
    async with attach(app, start=False) as kit:
        assert not app.running
        async with app.lifespan():
            with anyio.fail_after(20):
                assert await (await app.run("remind-3", "remind", "cy")) == "cy"
        assert kit.engine is not None


async def test_attaching_a_running_instance_is_refused() -> None:
    app, _ = _app()
    async with app:
        with pytest.raises(ResonateError, match="attach it before the app starts"):
            async with attach(app):
                pass  # pragma: no cover


async def test_an_instance_left_running_at_the_end_is_reported() -> None:
    app, _ = _app()
    with pytest.raises(ResonateError, match="stop the app"):
        async with attach(app, start=False):
            await app.__aenter__()
    await app.__aexit__(None, None, None)
