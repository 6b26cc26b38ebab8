"""The engine commands against the engine in a PostgreSQL database (``--url postgresql://``),
on the same execution as the SQLite tests (tests/cli/test_db_commands.py): same output."""

from __future__ import annotations

import json

import anyio
import pytest

from resonate_async import NotFoundError
from tests.cli.conftest import Cli, app
from tests.cli.test_db_commands import TREE


@pytest.fixture
def url(pg_dsn: str) -> str:
    """The test's database, where execution ``order-1`` waits on its promise ``order-1:5``."""
    resonate, ready = app(None, url=pg_dsn)

    async def prepare() -> None:
        async with resonate:
            await resonate.run("order-1", "flow", 3)
            with anyio.fail_after(30):
                await ready.wait()
                # notify ran; its step is recorded just after (created settled, or created
                # and then settled): wait for that, not for luck
                while True:
                    try:
                        if not (await resonate.promises.get("order-1:6")).pending:
                            break
                    except NotFoundError:  # not recorded yet
                        pass
                    await anyio.sleep(0.01)

    anyio.run(prepare)
    return pg_dsn


def test_tree_on_postgres_shows_every_kind_of_node(cli: Cli, url: str) -> None:
    result = cli("tree", "order-1", "--url", url)
    assert (result.status, result.err) == (0, "")
    assert result.out == TREE


def test_get_and_search_on_postgres(cli: Cli, url: str) -> None:
    got = json.loads(cli("get", "order-1:2", "--url", url, "--json").out)
    assert (got["state"], got["kind"], got["value"]) == ("resolved", "rpc job", {"n": 12})
    pending = cli("search", "--url", url, "--state", "pending")
    assert pending.status == 0
    assert pending.out.splitlines() == ["order-1    pending  root flow",
                                        "order-1:5  pending  promise"]


def test_cancel_on_postgres_settles_the_execution(cli: Cli, url: str) -> None:
    assert cli("cancel", "order-1", "--url", url).out == "order-1 rejected_canceled\n"
    assert json.loads(cli("get", "order-1", "--json", "--url", url).out)["state"] == \
        "rejected_canceled"


def test_resolving_on_postgres_lets_a_worker_finish_the_execution(cli: Cli, url: str) -> None:
    result = cli("resolve", "order-1:5", "--value", '"approved"', "--url", url)
    assert (result.status, result.out, result.err) == (0, "order-1:5 resolved\n", "")
    resonate, _ = app(None, url=url)

    async def finish() -> str:
        async with resonate:
            handle = await resonate.get("order-1")
            with anyio.fail_after(30):
                return str(await handle)

    assert anyio.run(finish) == "6 12 approved"
    assert cli("tree", "order-1", "--url", url).out.splitlines()[0] == \
        'order-1              root flow   resolved  "6 12 approved"'


def test_the_password_of_the_url_never_reaches_the_output(cli: Cli, url: str) -> None:
    port = url.split("127.0.0.1:", 1)[1].split("/", 1)[0]
    wrong = url.replace("postgres@", "postgres:hunter2@").replace(f":{port}/", ":1/")
    result = cli("get", "order-1", "--url", wrong)  # a port where nothing listens
    assert result.status != 0
    assert "hunter2" not in result.out + result.err
    assert "cannot connect to PostgreSQL at postgresql://***@127.0.0.1:1/" in result.err
    assert "Resonate server" not in result.err  # it is a database, not a server
