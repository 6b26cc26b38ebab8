"""The PostgreSQL storage binds values into its SQL itself (client-side, as literals): every
string a user controls (ids, tags, values) must come back exactly as it went in, and never
change the statement it is bound into."""

from __future__ import annotations

import pytest

from resonate_async.engine import Engine
from resonate_async.engine._postgres import PostgresStorage
from resonate_async.protocol import (
    PromiseCreate,
    PromiseGet,
    PromiseSearch,
    PromiseSettle,
    Value,
)
from tests._postgres import PostgresServer, fresh_schema

NOW = 1_700_000_000_000
NASTY = [
    "it's", "''", "a\\b", "\\'", '"quoted"', "{a,b}", "{\"x\"}", "a,b", "NULL", "null",
    "$$", "$tag$", "); DROP TABLE resonate_promises; --", "é✓漢字🙂", "\\x00ff", "%s", "%%",
    " leading and trailing ", "line\nbreak\ttab",
]


@pytest.fixture
def engine(pg_server: PostgresServer) -> Engine:
    engine = Engine(PostgresStorage(fresh_schema(pg_server)))
    yield engine  # type: ignore[misc]
    engine.close()


@pytest.mark.parametrize("text", NASTY)
def test_a_string_comes_back_exactly_and_binds_as_one_value(engine: Engine, text: str) -> None:
    pid = f"root-{NASTY.index(text)}"
    tags = {"resonate:origin": pid, "app:note": text, text: "key"}
    created = engine.execute(PromiseCreate(pid, NOW + 60_000, Value({"h": text}, text), tags),
                             NOW)
    assert created.status == 200, created
    got = engine.execute(PromiseGet(pid), NOW).data.promise
    assert (got.param.data, got.param.headers, got.tags) == (text, {"h": text}, tags)
    settled = engine.execute(PromiseSettle(pid, "resolved", Value(data=text)), NOW + 1)
    assert settled.data.promise.value.data == text
    found = engine.execute(PromiseSearch(None, {"app:note": text}, 10, None), NOW + 1)
    assert [p.id for p in found.data.promises] == [pid]
    everything = engine.execute(PromiseSearch(None, None, 100, None), NOW + 1)
    assert [p.id for p in everything.data.promises] == [pid]  # nothing else touched


def test_a_nul_in_a_value_comes_back_exactly(engine: Engine) -> None:
    """Ids may not hold NUL (refused before any SQL); values may, inside the stored record."""
    answer = engine.execute(PromiseCreate("root", NOW + 60_000, Value(None, "a\x00b"), {}), NOW)
    assert answer.status == 200, answer
    assert engine.execute(PromiseGet("root"), NOW).data.promise.param.data == "a\x00b"
    refused = engine.execute(PromiseCreate("ro\x00ot", NOW + 60_000, Value(), {}), NOW)
    assert refused.status == 400
    assert "NUL" in refused.data
