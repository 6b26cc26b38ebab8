"""``python -m resonate_async dev --db postgresql://...``: several development servers on one
database, HTTP workers on each of them and processes on the database itself, one engine."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import anyio
import pytest

from resonate_async import Context, NotFoundError, Resonate
from tests._devserver import DevServerProcess

pytestmark = pytest.mark.anyio

WAIT = 60.0  # real processes on a loaded machine; only a hang hits it


@pytest.fixture
def servers(pg_dsn: str) -> Iterator[tuple[DevServerProcess, DevServerProcess]]:
    """Two dev servers on the test's database (a short retry timeout, as the workers')."""
    first = DevServerProcess(pg_dsn, args=["--retry-timeout", "5"])
    second = DevServerProcess(pg_dsn, args=["--retry-timeout", "5"])
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.close()
        second.close()


def _group(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_workflows_span_two_dev_servers_and_postgres_processes(
        servers: tuple[DevServerProcess, DevServerProcess], pg_dsn: str) -> None:
    one, two = servers
    front, back, tail = _group("front"), _group("back"), _group("tail")
    ran: dict[str, list[int]] = {"front@1": [], "front@2": [], "back": [], "tail": []}

    def fronts(url: str, where: str) -> Resonate:
        worker = Resonate(url=url, group=front, ttl=10)

        @worker.register
        async def start(ctx: Context, n: int) -> int:
            ran[where].append(n)
            got: int = await ctx.rpc("middle", n).options(target=back)
            return got + 1

        return worker

    http_back = Resonate(url=two.url, group=back, ttl=10)

    @http_back.register
    async def middle(ctx: Context, n: int) -> int:
        ran["back"].append(n)
        doubled = await ctx.run(lambda: n * 2)
        got: int = await ctx.rpc("finish", doubled).options(target=tail)
        return got * 10

    pg_tail = Resonate(url=pg_dsn, group=tail, ttl=10)

    @pg_tail.register
    async def finish(ctx: Context, n: int) -> int:
        ran["tail"].append(n)
        return n + 3

    client = Resonate(url=pg_dsn, group=_group("client"), worker=False)
    count = 12
    async with fronts(one.url, "front@1"), fronts(two.url, "front@2"), http_back, pg_tail, \
            client:
        with anyio.fail_after(WAIT):
            handles = [await client.options(target=front).rpc(f"span-{front}-{n}", "start", n)
                       for n in range(count)]
            results = [await handle for handle in handles]
    assert results == [(2 * n + 3) * 10 + 1 for n in range(count)]
    # every function ran on the workers of its group (a replay runs a body again)
    assert set(ran["front@1"]) | set(ran["front@2"]) == set(range(count))
    assert set(ran["back"]) == set(range(count))
    assert set(ran["tail"]) == {2 * n for n in range(count)}


async def test_an_http_client_on_one_dev_server_sees_the_others_writes(
        servers: tuple[DevServerProcess, DevServerProcess], pg_dsn: str) -> None:
    one, two = servers
    group = _group("hitl")
    worker = Resonate(url=one.url, group=group, ttl=10)

    @worker.register
    async def approve(ctx: Context, order: str) -> str:
        decision: str = await ctx.promise()
        return f"{order}: {decision}"

    other = Resonate(url=two.url, group=_group("ops"), worker=False)
    direct = Resonate(url=pg_dsn, group=_group("pg"), worker=False)
    async with worker, other, direct:
        with anyio.fail_after(WAIT):
            root = f"order-{group}"
            handle = await direct.options(target=group).rpc(root, "approve", "o-1")
            approval = f"{root}:1"  # the workflow's first child: its promise
            while True:  # created once the worker (behind server 1) reached it
                try:
                    await other.promises.get(approval)
                    break
                except NotFoundError:
                    await anyio.sleep(0.05)
            await other.promises.resolve(approval, "yes")  # through server 2
            assert await handle == "o-1: yes"


async def test_a_dev_server_that_cannot_reach_its_database_says_so_in_one_line() -> None:
    with anyio.fail_after(WAIT):
        done = await anyio.run_process(
            [sys.executable, "-m", "resonate_async", "dev", "--port", "0",
             "--db", "postgresql://app:hunter2@127.0.0.1:1/app"], check=False)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert err.startswith("resonate_async dev: cannot connect to PostgreSQL at "
                          "postgresql://***@127.0.0.1:1/app"), err
    assert "Traceback" not in err and "hunter2" not in err
    assert len(err.strip().splitlines()) == 1, err
