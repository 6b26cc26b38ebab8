"""Fixtures of the CLI tests: a SQLite file holding an execution of every kind of node, and
``cli(...)``, which runs ``python -m resonate_async`` in this process and captures its output.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import structlog

from resonate_async import Context, Never, NotFoundError, Resonate
from resonate_async.__main__ import main


@dataclass(frozen=True)
class Result:
    status: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No engine from the environment; logging as it was before the test."""
    monkeypatch.delenv("RESONATE_URL", raising=False)
    monkeypatch.delenv("RESONATE_TOKEN", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    chatty = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in chatty.items():
        logging.getLogger(name).setLevel(was)
    structlog.reset_defaults()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: str) -> Result:
        capsys.readouterr()
        status = main(list(argv))
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)

    return run


def double(x: int) -> int:
    return x * 2


def fails() -> None:
    raise ValueError("boom")


def app(path: Path | None, *, url: str | None = None) -> tuple[Resonate, anyio.Event]:
    """The application of the tests: ``flow`` makes a local step, an rpc (with a step of its
    own), a failing step, a durable sleep and a promise settled from outside. On the SQLite
    file ``path``, or on the engine at ``url``."""
    resonate = Resonate(path=path) if url is None else Resonate(url=url)
    ready = anyio.Event()

    def notify() -> None:
        ready.set()

    @resonate.register
    async def job(ctx: Context, n: int) -> dict[str, int]:
        return {"n": await ctx.run(double, n)}

    @resonate.register
    async def flow(ctx: Context, n: int) -> str:
        a = await ctx.run(double, n)
        b = await ctx.rpc("job", a)
        with contextlib.suppress(ValueError):
            await ctx.run(fails).options(retry=Never())
        await ctx.sleep(0.01)
        approval = await ctx.promise().spawn()
        await ctx.run(notify)
        return f"{a} {b['n']} {await approval}"

    return resonate, ready


async def _settled(resonate: Resonate, promise_id: str) -> bool:
    try:
        return not (await resonate.promises.get(promise_id)).pending
    except NotFoundError:  # a step is recorded in one write when it ends, on an embedded engine
        return False


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite file where execution ``order-1`` waits on its promise ``order-1:5``."""
    path = tmp_path / "app.db"
    resonate, ready = app(path)

    async def prepare() -> None:
        async with resonate:
            await resonate.run("order-1", "flow", 3)
            with anyio.fail_after(10):
                await ready.wait()
                # notify ran; its step is recorded (or settled) just after: wait for that,
                # not for luck
                while not await _settled(resonate, "order-1:6"):
                    await anyio.sleep(0.01)

    anyio.run(prepare)
    return str(path)
