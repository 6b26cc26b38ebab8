"""The engine commands against a Resonate server (here the development server), with a
worker serving in the test and the CLI run as the real ``python -m resonate_async``."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from resonate_async import Context, Resonate
from tests._devserver import dev_server
from tests.cli.conftest import Result


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with dev_server() as server:
        yield server.url


@pytest.fixture
def group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def worker(url: str, group: str) -> AsyncIterator[Resonate]:
    resonate = Resonate(url=url, group=group)

    @resonate.register
    async def add(ctx: Context, a: int, b: int = 0) -> int:
        if a < 0:
            raise ValueError("negative")
        return await ctx.run(plus, a, b)

    async with resonate:
        yield resonate


def plus(a: int, b: int) -> int:
    return a + b


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


async def cli(*argv: str, url: str | None = None) -> Result:
    env = {k: v for k, v in os.environ.items() if k not in ("RESONATE_URL", "RESONATE_TOKEN")}
    if url is not None:
        env["RESONATE_URL"] = url
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-m", "resonate_async", *argv],
                                       check=False, env=env)
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


async def test_invoke_wait_prints_the_id_then_the_result(
        worker: Resonate, url: str, group: str) -> None:
    pid = uid("sum")
    result = await cli("invoke", pid, "--func", "add", "--arg", "2", "--kwarg", "b=5",
                       "--target", group, "--timeout", "5m", "--wait", "--url", url)
    assert (result.status, result.out, result.err) == (0, f"{pid}\n7\n", "")
    tree = await cli("tree", pid, url=url)
    assert tree.out.splitlines() == [
        f"{pid}        root add  resolved  7",
        f"└── {pid}:1  run plus  resolved  7",
    ]


async def test_invoke_wait_reports_a_failed_execution_in_one_line(
        worker: Resonate, url: str, group: str) -> None:
    pid = uid("neg")
    result = await cli("invoke", pid, "--func", "add", "--arg=-1", "--target", group,
                       "--wait", "--url", url)
    assert result.status == 1
    assert result.out == f"{pid}\n"
    assert result.err == (f"resonate_async invoke: execution {pid!r} ended rejected: "
                          "ValueError: negative\n")


async def test_invoke_without_wait_dispatches_to_the_workers(
        worker: Resonate, url: str, group: str) -> None:
    pid = uid("later")
    result = await cli("invoke", pid, "--func", "add", "--arg", "40", "--arg", "2",
                       "--target", group, url=url)
    assert (result.status, result.out) == (0, f"{pid}\n")
    handle = await worker.get(pid)
    with anyio.fail_after(10):
        assert await handle == 42
    got = json.loads((await cli("get", pid, "--json", url=url)).out)
    assert (got["state"], got["value"], got["kind"]) == ("resolved", 42, "root add")
    found = await cli("search", "--tag", f"resonate:origin={pid}", "--url", url)
    assert [line.split()[0] for line in found.out.splitlines()] == [pid, f"{pid}:1"]


async def test_resolve_over_http_settles_a_promise_someone_awaits(
        worker: Resonate, url: str) -> None:
    pid = uid("approval")
    await worker.promises.create(pid, timeout=60)
    handle = await worker.get(pid)
    result = await cli("resolve", pid, "--value", '{"ok": true}', url=url)
    assert (result.status, result.out, result.err) == (0, f"{pid} resolved\n", "")
    with anyio.fail_after(10):
        assert await handle == {"ok": True}
    again = await cli("reject", pid, url=url)
    assert (again.status, again.out) == (1, "")
    assert again.err == (f"resonate_async reject: promise {pid!r} is already resolved; a "
                         "promise is settled only once (nothing changed)\n")


async def test_an_unknown_id_over_http(url: str) -> None:
    result = await cli("get", "no-such-promise", url=url)
    assert result.status == 1
    assert result.err.startswith("resonate_async get: no promise with id 'no-such-promise'")
    assert result.err.count("\n") == 1
