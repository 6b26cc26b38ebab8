"""The README's "Scaling out" section, as code that runs: the same application on a SQLite
file, on PostgreSQL and on a server is one argument apart."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from resonate_async import Context, Resonate
from resonate_async.transport import HttpTransport, PostgresTransport


def test_the_url_picks_where_the_state_lives(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESONATE_URL", raising=False)
    one_machine = Resonate(path="app.db")
    many_processes = Resonate(url="postgresql://app:secret@db.internal:5432/app")
    behind_a_server = Resonate(url="http://resonate.internal:8001")
    assert not isinstance(one_machine.transport, (HttpTransport, PostgresTransport))
    assert isinstance(many_processes.transport, PostgresTransport)
    assert "secret" not in repr(many_processes.transport)
    assert isinstance(behind_a_server.transport, HttpTransport)


@pytest.mark.anyio
async def test_a_worker_and_a_client_share_one_database(pg_dsn: str) -> None:
    database_url = pg_dsn
    worker = Resonate(url=database_url, group="payments", ttl=10)

    @worker.register
    async def charge(ctx: Context, order_id: str, cents: int) -> str:
        return f"charged {cents} for {order_id}"

    client = Resonate(url=database_url, group="web", worker=False)
    async with worker, client:
        with anyio.fail_after(30):
            handle = await client.options(target="payments").rpc(
                "charge-17", "charge", "17", 1200)
            assert await handle == "charged 1200 for 17"
