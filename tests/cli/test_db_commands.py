"""The engine commands against the embedded engine in a SQLite file (``--db``)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from resonate_async.engine import Engine
from tests.cli.conftest import Cli, app

TREE = """\
order-1              root flow   pending
├── order-1:1        run double  resolved  6
├── order-1:2        rpc job     resolved  {"n":12}
│   └── order-1:2.1  run double  resolved  12
├── order-1:3        run fails   rejected  ValueError: boom
├── order-1:4        sleep       resolved
├── order-1:5        promise     pending
└── order-1:6        run notify  resolved
"""


def test_tree_shows_every_kind_of_node_with_its_state(cli: Cli, db: str) -> None:
    result = cli("tree", "order-1", "--db", db)
    assert (result.status, result.err) == (0, "")
    assert result.out == TREE


def test_tree_in_ascii_and_from_a_child(cli: Cli, db: str) -> None:
    assert cli("tree", "order-1", "--db", db, "--ascii").out.splitlines()[3] == \
        "|   `-- order-1:2.1  run double  resolved  12"
    assert cli("tree", "order-1:2", "--db", db).out == (
        "order-1:2        rpc job     resolved  {\"n\":12}\n"
        "└── order-1:2.1  run double  resolved  12\n")


def test_get_prints_the_promise_readably(cli: Cli, db: str) -> None:
    result = cli("get", "order-1:2", "--db", db)
    assert result.status == 0
    lines = result.out.splitlines()
    assert lines[:6] == [
        "id        order-1:2",
        "state     resolved",
        "kind      rpc job",
        "function  job (version 1)",
        "args      [6]",
        'value     {"n": 12}',
    ]
    assert "tags      resonate:branch=order-1:2" in lines
    assert "          resonate_async:call=rpc job" in lines
    assert any(line.startswith("timeout   20") and line.endswith("Z") for line in lines)
    rejected = cli("get", "order-1:3", "--db", db).out
    assert "error    ValueError: boom" in rejected.splitlines()


def test_get_json_is_machine_readable(cli: Cli, db: str) -> None:
    data = json.loads(cli("get", "order-1", "--db", db, "--json").out)
    assert data["id"] == "order-1"
    assert data["state"] == "pending"
    assert data["kind"] == "root flow"
    assert data["param"] == {"func": "flow", "args": [3], "kwargs": {}, "version": 1}
    assert data["value"] is None and data["error"] is None and data["settled_at"] is None
    assert data["tags"]["resonate:origin"] == "order-1"
    failed = json.loads(cli("get", "order-1:3", "--db", db, "--json").out)
    assert (failed["state"], failed["error"]) == ("rejected", "ValueError: boom")


def test_search_prints_one_line_per_promise(cli: Cli, db: str) -> None:
    everything = cli("search", "--db", db)
    assert everything.status == 0
    assert everything.out.splitlines() == [
        "order-1      pending   root flow",
        "order-1:1    resolved  run double",
        "order-1:2    resolved  rpc job",
        "order-1:2.1  resolved  run double",
        "order-1:3    rejected  run fails",
        "order-1:4    resolved  sleep",
        "order-1:5    pending   promise",
        "order-1:6    resolved  run notify",
    ]
    pending = cli("search", "--db", db, "--state", "pending").out.splitlines()
    assert [line.split()[0] for line in pending] == ["order-1", "order-1:5"]
    tagged = cli("search", "--db", db, "--tag", "resonate_async:call=rpc job").out
    assert tagged == "order-1:2  resolved  rpc job\n"
    two = cli("search", "--db", db, "--limit", "2", "--json")
    assert [json.loads(line)["id"] for line in two.out.splitlines()] == ["order-1", "order-1:1"]
    assert two.err == "(the first 2 promises; more match: raise --limit)\n"


def test_resolving_the_promise_lets_the_execution_finish(cli: Cli, db: str) -> None:
    result = cli("resolve", "order-1:5", "--value", '"approved"', "--db", db)
    assert (result.status, result.out, result.err) == (0, "order-1:5 resolved\n", "")
    resonate, _ = app(Path(db))

    async def finish() -> str:
        async with resonate:
            handle = await resonate.get("order-1")
            with anyio.fail_after(10):
                return str(await handle)

    assert anyio.run(finish) == "6 12 approved"
    assert cli("tree", "order-1", "--db", db).out.splitlines()[0] == \
        'order-1              root flow   resolved  "6 12 approved"'


def test_reject_and_cancel_settle_a_pending_promise(cli: Cli, db: str) -> None:
    assert cli("reject", "order-1:5", "--message", "no way", "--db", db).out == \
        "order-1:5 rejected\n"
    assert json.loads(cli("get", "order-1:5", "--json", "--db", db).out)["error"] == "no way"
    assert cli("cancel", "order-1", "--db", db).out == "order-1 rejected_canceled\n"


def test_invoke_creates_an_execution_the_app_runs_when_it_opens_the_file(
        cli: Cli, db: str) -> None:
    result = cli("invoke", "job-7", "--func", "job", "--arg", "7", "--timeout", "1h",
                 "--db", db)
    assert (result.status, result.out, result.err) == (0, "job-7\n", "")
    record = json.loads(cli("get", "job-7", "--json", "--db", db).out)
    assert record["param"] == {"func": "job", "args": [7], "kwargs": {}, "version": 1}
    assert record["tags"]["resonate:target"] == "poll://any@default"
    resonate, _ = app(Path(db))

    async def result_of_job() -> object:
        async with resonate:
            handle = await resonate.get("job-7")
            with anyio.fail_after(10):
                return await handle

    assert anyio.run(result_of_job) == {"n": 14}


def test_invoke_passes_keyword_arguments_and_the_version(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    Engine.sqlite(str(db)).close()
    invoked = cli("invoke", "k-1", "--func", "f", "--kwarg", 'who="ada"', "--kwarg",
                     "n=[1,2]", "--version", "3", "--target", "other", "--db", str(db))
    assert invoked.status == 0, invoked.err
    data = json.loads(cli("get", "k-1", "--json", "--db", str(db)).out)
    assert data["param"] == {"func": "f", "args": [], "kwargs": {"who": "ada", "n": [1, 2]},
                             "version": 3}
    assert data["tags"]["resonate:target"] == "poll://any@other"
