"""Every expected failure of the CLI: one line on stderr saying what went wrong and what to
do, nothing on stdout, exit status 2 for a usage error and 1 otherwise, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from resonate_async import _cli
from resonate_async.engine import Engine
from tests.cli.conftest import Cli, Result


def one_line(result: Result, status: int, *fragments: str) -> None:
    assert result.status == status, result
    assert result.out == ""
    assert result.err.count("\n") == 1 and result.err.endswith("\n"), result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unknown_id_is_reported_with_how_to_find_ids(cli: Cli, db: str) -> None:
    for command in ("get", "tree", "resolve", "reject", "cancel"):
        one_line(cli(command, "order-9", "--db", db), 1,
                 f"resonate_async {command}: no promise with id 'order-9'",
                 "python -m resonate_async search")


def test_an_unreachable_server_is_reported_with_how_to_start_one(
        cli: Cli, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cli, "CONNECT_RETRY", 0.2)
    url = f"http://127.0.0.1:{closed_port}"
    for argv in (["get", "x"], ["search"], ["tree", "x"], ["resolve", "x"],
                 ["invoke", "x", "--func", "f"]):
        one_line(cli(*argv, "--url", url), 1, f"cannot reach the Resonate server at {url}",
                 "python -m resonate_async dev")


def test_the_url_may_come_from_the_environment(
        cli: Cli, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cli, "CONNECT_RETRY", 0.2)
    monkeypatch.setenv("RESONATE_URL", f"http://127.0.0.1:{closed_port}")
    one_line(cli("get", "x"), 1, f"http://127.0.0.1:{closed_port}")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["invoke", "a", "--func", "f", "--arg", "{bad"], "--arg '{bad' is not valid JSON"),
    (["invoke", "a", "--func", "f", "--arg", "text"], "--arg '\"text\"'"),
    (["invoke", "a", "--func", "f", "--kwarg", "n={"], "--kwarg n= '{' is not valid JSON"),
    (["invoke", "a", "--func", "f", "--kwarg", "novalue"], "is not KEY=JSON"),
    (["resolve", "order-1:5", "--value", "nope"], "--value 'nope' is not valid JSON"),
])
def test_bad_json_is_a_usage_error(cli: Cli, db: str, argv: list[str], fragment: str) -> None:
    one_line(cli(*argv, "--db", db), 2, fragment)


@pytest.mark.parametrize(("argv", "fragment"), [
    (["invoke", "a:b", "--func", "f"], "invalid id 'a:b': root id 'a:b' must not contain ':'"),
    (["get", ""], "invalid id '': an id must not be empty"),
    (["tree", "a\x00b"], "must not contain a NUL"),
    (["resolve", ""], "invalid id ''"),
])
def test_an_invalid_id_is_a_usage_error(cli: Cli, db: str, argv: list[str],
                                        fragment: str) -> None:
    one_line(cli(*argv, "--db", db), 2, fragment)


def test_a_db_held_by_a_running_app_is_reported(cli: Cli, db: str) -> None:
    engine = Engine.sqlite(db)  # what a running app holds
    try:
        for command in ("get", "tree", "search", "resolve"):
            argv = [command] if command == "search" else [command, "order-1"]
            one_line(cli(*argv, "--db", db), 1, f"--db {db} is in use by a running process",
                     "stop that process", "--url")
    finally:
        engine.close()
    assert cli("get", "order-1", "--db", db).status == 0


def test_a_db_held_by_a_running_app_is_reported_by_the_real_command(db: str) -> None:
    engine = Engine.sqlite(db)
    try:
        done = subprocess.run([sys.executable, "-m", "resonate_async", "get", "order-1",
                               "--db", db], capture_output=True, text=True, timeout=60,
                              check=False)
    finally:
        engine.close()
    one_line(Result(done.returncode, done.stdout, done.stderr), 1, "is in use")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["get", "x"], "no engine given: pass --url URL"),
    (["get", "x", "--url", "ftp://host"], "must start with http:// or https://"),
    (["get", "x", "--url", "http://h", "--db", "f.db"], "give --url or --db, not both"),
    (["get", "x", "--db", "missing.db"], "--db missing.db: no such file"),
    (["invoke", "a", "--func", "f", "--timeout", "soon", "--db", "x.db"],
     "--timeout 'soon' is not a duration"),
    (["invoke", "a", "--func", "f", "--timeout", "0s", "--db", "x.db"], "longer than zero"),
    (["invoke", "a", "--func", "f", "--version", "0", "--db", "x.db"], "versions start at 1"),
    (["invoke", "a", "--func", "f", "--wait", "--db", "x.db"], "--wait needs --url"),
    (["search", "--tag", "novalue", "--db", "x.db"], "is not KEY=VALUE"),
    (["search", "--limit", "0", "--db", "x.db"], "--limit 0"),
])
def test_usage_errors(cli: Cli, argv: list[str], fragment: str) -> None:
    one_line(cli(*argv), 2, fragment)


def test_a_file_that_is_not_a_database_is_reported(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not sqlite at all " * 100)
    one_line(cli("get", "x", "--db", str(path)), 1, "cannot be used as an embedded engine file")


def test_settling_a_settled_promise_changes_nothing_and_says_so(cli: Cli, db: str) -> None:
    one_line(cli("resolve", "order-1:1", "--db", db), 1,
             "promise 'order-1:1' is already resolved", "nothing changed")
    one_line(cli("cancel", "order-1:3", "--db", db), 1, "already rejected")


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("1h30m", 5400.0), ("2d", 172800.0),
    ("500ms", 0.5), ("1.5h", 5400.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert _cli.parse_duration(text) == seconds
