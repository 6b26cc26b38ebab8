"""The command line on PostgreSQL: ``db migrate`` (the schema for deployments without DDL at
start) and the engine commands with a ``postgresql://`` URL."""

from __future__ import annotations

import pytest

from resonate_async.__main__ import main
from resonate_async._clock import SystemClock
from resonate_async.engine import Engine
from resonate_async.engine._postgres import SCHEMA_VERSION, PostgresStorage
from resonate_async.protocol import PromiseCreate
from tests._postgres import PostgresServer, fresh_schema
from tests.engine.conftest import HOUR


def test_db_migrate_creates_the_schema_then_finds_it_up_to_date(
        pg_server: PostgresServer, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = fresh_schema(pg_server).replace("postgres@", "postgres:hunter2@", 1)
    assert main(["db", "migrate", "--url", dsn]) == 0
    out = capsys.readouterr().out
    assert f"schema created (version {SCHEMA_VERSION})" in out
    assert "hunter2" not in out
    PostgresStorage(dsn, migrate=False).close()  # a process without DDL now starts
    assert main(["db", "migrate", "--url", dsn]) == 0
    assert f"schema is up to date (version {SCHEMA_VERSION})" in capsys.readouterr().out


def test_db_migrate_takes_its_url_from_resonate_url(
        pg_server: PostgresServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESONATE_URL", fresh_schema(pg_server))
    assert main(["db", "migrate"]) == 0
    assert "schema created" in capsys.readouterr().out


def test_db_migrate_refuses_a_url_that_is_not_postgres(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESONATE_URL", raising=False)
    assert main(["db", "migrate", "--url", "http://u:pw@localhost:8001"]) == 2
    err = capsys.readouterr().err
    assert "give --url postgresql://" in err and "pw" not in err


def test_db_migrate_reports_an_unreachable_database_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://app:s3cret@127.0.0.1:1/app?connect_timeout=2"
    assert main(["db", "migrate", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("resonate_async db migrate: cannot connect to PostgreSQL")
    assert "s3cret" not in err and err.count("\n") == 1


def test_the_engine_commands_take_a_postgres_url(
        pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = Engine(PostgresStorage(pg_dsn))
    now = SystemClock().now_ms()  # the commands read the real clock
    try:
        status = engine.execute(PromiseCreate("approval-1", now + HOUR, tags={
            "resonate:external": "true"}), now).status
        assert status == 200
    finally:
        engine.close()
    assert main(["resolve", "approval-1", "--url", pg_dsn, "--value", '"yes"']) == 0
    capsys.readouterr()
    assert main(["get", "approval-1", "--url", pg_dsn]) == 0
    out = capsys.readouterr().out
    assert "resolved" in out and '"yes"' in out
