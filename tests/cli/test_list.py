"""``list``: executions only (roots and rpc children, not steps, sleeps or promises), filtered
by function and state, as text or JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from resonate_async import Context, Resonate
from tests.cli.conftest import Cli


def _lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_list_shows_executions_and_no_steps_sleeps_or_promises(cli: Cli, db: str) -> None:
    result = cli("list", "--db", db)
    assert result.status == 0, result.err
    rows = _lines(result.out)
    assert [row[:4] for row in rows] == [
        ["order-1", "pending", "flow", "root"],
        ["order-1:2", "resolved", "job", "rpc"],
    ]
    assert all(row[4].endswith("Z") for row in rows)  # created, ISO 8601 UTC


def test_list_filters_by_function_state_and_roots(cli: Cli, db: str) -> None:
    assert [r[0] for r in _lines(cli("list", "--db", db, "--func", "job").out)] == ["order-1:2"]
    assert [r[0] for r in _lines(cli("list", "--db", db, "--state", "pending").out)] == [
        "order-1"]
    assert [r[0] for r in _lines(cli("list", "--db", db, "--roots").out)] == ["order-1"]
    none = cli("list", "--db", db, "--func", "nothing-by-this-name")
    assert (none.status, none.out, none.err) == (0, "", "(no execution matches)\n")


def test_list_json_prints_one_object_per_execution(cli: Cli, db: str) -> None:
    result = cli("list", "--db", db, "--json")
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [(r["id"], r["function"], r["kind"], r["state"]) for r in records] == [
        ("order-1", "flow", "root flow", "pending"),
        ("order-1:2", "job", "rpc job", "resolved"),
    ]
    assert records[1]["value"] == {"n": 12}
    assert cli("list", "--db", db, "--json", "--func", "nope").out == ""


def test_list_limit_says_when_more_match(cli: Cli, db: str) -> None:
    result = cli("list", "--db", db, "--limit", "1")
    assert [r[0] for r in _lines(result.out)] == ["order-1"]
    assert result.err == "(the first 1 executions; more match: raise --limit)\n"


def test_list_refuses_bad_arguments_with_a_clear_line(cli: Cli, db: str) -> None:
    bad = cli("list", "--db", db, "--limit", "0")
    assert (bad.status, bad.err) == (
        2, "resonate_async list: --limit 0: give a number of executions >= 1\n")
    empty = cli("list", "--db", db, "--func", " ")
    assert empty.status == 2 and "--func needs the registered name" in empty.err


def test_list_counts_detached_executions_and_skips_global_sleeps(
        cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "more.db"
    resonate = Resonate(path=path)

    @resonate.register
    async def side(ctx: Context) -> str:
        return "ok"

    @resonate.register
    async def main_flow(ctx: Context) -> str:
        await ctx.sleep(0.01)  # a global promise (scope=global) that is not an execution
        await ctx.detached(side)
        return "done"

    async def prepare() -> None:
        async with resonate:
            with anyio.fail_after(20):
                assert await (await resonate.run("m-1", main_flow)) == "done"
                while not [p async for p in resonate.promises.search(state="resolved")
                           if p.tags.get("resonate_async:call") == "detached side"]:
                    await anyio.sleep(0.01)

    anyio.run(prepare)
    rows = _lines(cli("list", "--db", str(path)).out)
    assert sorted((r[2], r[3]) for r in rows) == [("main_flow", "root"), ("side", "detached")]
