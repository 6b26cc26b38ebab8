"""The commands of ``python -m resonate_async`` that talk to an engine.

``invoke``, ``list``, ``get``, ``search``, ``resolve``, ``reject``, ``cancel`` and ``tree``
each work against a Resonate server (``--url``, default ``RESONATE_URL``; a
``postgresql://`` URL reaches the engine in that database) or the embedded engine in a SQLite
file (``--db``). Each ``setup_*`` function declares a command's arguments on its
subparser and returns the function that runs it (the exit status: 0, 1 when the command failed,
2 for a usage error). Expected failures print one line to stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import anyio

from resonate_async._client import Resonate
from resonate_async._errors import (
    NotFoundError,
    ResonateError,
    SchemaVersionError,
    StorageLockedError,
    TransportError,
)
from resonate_async._logging import configure_logging
from resonate_async._records import PromiseRecord
from resonate_async._redact import redact
from resonate_async._tree import describe, function_of, is_execution, outcome, render_tree
from resonate_async.protocol import (
    PROMISE_STATES,
    TAG_ORIGIN,
    PromiseGet,
    id_problem,
    origin_of,
)

Run = Callable[[argparse.Namespace], int]
Body = Callable[[Resonate], Awaitable[int]]

CONNECT_RETRY: Final = 5.0
"""Seconds a command keeps retrying a server it cannot reach before it gives up."""
SEARCH_LIMIT: Final = 100
PAGE_SIZE: Final = 100
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SEARCH_HINT: Final = "`python -m resonate_async search` lists the promises"


def _out(text: str) -> None:
    """One line (or block) of the command's result, on stdout: this module is a terminal UI."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    """One line for the user on stderr (errors and notes; never a traceback)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class UsageError(Exception):
    """The command line is wrong: exit status 2."""


class CommandError(Exception):
    """The command could not do its job: exit status 1."""


# connection -----------------------------------------------------------------------------------
def add_connection(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--db``, ``--token`` and ``--verbose``, shared by every engine command."""
    where = parser.add_argument_group("engine (one of)")
    where.add_argument("--url", default=os.environ.get("RESONATE_URL") or None,
                       help="a Resonate server, e.g. http://localhost:8001 "
                            "(default: $RESONATE_URL)")
    where.add_argument("--db", default=None, metavar="PATH",
                       help="the SQLite file of an embedded engine (Resonate(path=...)); "
                            "the app using it must not be running")
    parser.add_argument("--token", default=os.environ.get("RESONATE_TOKEN") or None,
                        help="a token for the server (default: $RESONATE_TOKEN)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what the SDK does (retries, connections) to stderr")


def _connect(args: argparse.Namespace) -> Resonate:
    url: str | None = args.url
    db: str | None = args.db
    if url and db:
        raise UsageError("give --url or --db, not both")
    if db:
        if not os.path.isfile(db):
            raise UsageError(f"--db {db}: no such file; give the SQLite file your app opens "
                             "with Resonate(path=...)")
        try:
            return Resonate(path=db, worker=False)
        except StorageLockedError:
            raise CommandError(
                f"--db {db} is in use by a running process (an embedded engine's file is held "
                "by one process at a time): stop that process and retry, or run the app "
                "against a Resonate server and use --url") from None
        except SchemaVersionError as exc:
            raise CommandError(f"--db {db}: {exc}") from None
        except ResonateError as exc:  # e.g. a file that is not an engine file
            raise CommandError(f"--db: {exc}") from None
    if not url:
        raise UsageError("no engine given: pass --url URL (a Resonate server, e.g. one started "
                         "with `python -m resonate_async dev`) or --db PATH (an embedded "
                         "engine's SQLite file), or set RESONATE_URL")
    if url.startswith(("postgresql://", "postgres://")):  # the engine in that database
        try:
            from resonate_async.transport import PostgresTransport

            # an unreachable database fails within CONNECT_RETRY, as a server does
            return Resonate(transport=PostgresTransport(url, retry_for=CONNECT_RETRY),
                            worker=False)
        except ResonateError as exc:  # e.g. the postgres extra is not installed
            raise CommandError(f"--url: {exc}") from None
    from resonate_async.transport import HttpTransport

    try:
        transport = HttpTransport(url, token=args.token, retry_for=CONNECT_RETRY)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None
    return Resonate(transport=transport, token=args.token, worker=False)


def _execute(args: argparse.Namespace, body: Body, *, running: bool = False,
             check: Callable[[], None] | None = None) -> int:
    """Connect, run ``body`` on a fresh event loop, and turn failures into one line.

    ``check`` validates the arguments first (raising ``UsageError``). ``running=True`` starts
    the ``Resonate`` (a client that takes no work) around ``body``, for commands that invoke
    or await executions.
    """

    async def main() -> int:
        resonate = _connect(args)
        async with resonate.transport:
            if not running:
                return await body(resonate)
            # Starting waits (bounded) for the push stream; ask something first, so that an
            # unreachable server fails within CONNECT_RETRY instead.
            await resonate.send(PromiseGet(args.id))
            async with resonate:
                return await body(resonate)

    try:
        if check is not None:
            check()
        configure_logging("INFO" if args.verbose else "ERROR")
        return anyio.run(main)
    except UsageError as exc:
        return _fail(args, str(exc), 2)
    except CommandError as exc:
        return _fail(args, str(exc), 1)
    except NotFoundError:
        subject = getattr(args, "id", None)
        return _fail(args, f"no promise with id {subject!r}; check the id "
                           f"({_SEARCH_HINT})", 1)
    except TransportError as exc:
        if (args.url or "").startswith(("postgresql://", "postgres://")):
            return _fail(args, str(exc), 1)  # says which database, credentials hidden
        return _fail(args, f"cannot reach the Resonate server at {redact(args.url)} (retried "
                           f"for up to {CONNECT_RETRY:g} s); check that it is running and that "
                           "--url is right (start a local one with `python -m resonate_async "
                           "dev`)",
                     1)
    except ResonateError as exc:
        return _fail(args, str(exc), 1)
    except KeyboardInterrupt:
        return 130


def _fail(args: argparse.Namespace, message: str, status: int) -> int:
    _err(f"resonate_async {args.command}: {message}")
    return status


def _check_id(promise_id: str, *, root: bool = False) -> None:
    problem = id_problem(promise_id, root=root)
    if problem:
        raise UsageError(f"invalid id {promise_id!r}: {problem}")


def _json_arg(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r} is not valid JSON ({exc}); write JSON, e.g. "
                         f"{option} 42, {option} '\"text\"' or {option} '{{\"k\": 1}}'") from None


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"`` or ``"500ms"``."""
    spec = text.strip().lower()
    try:
        seconds = float(spec)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(spec):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(spec) or not spec:
            raise UsageError(f"--timeout {text!r} is not a duration; write e.g. 90s, 15m, 1h30m "
                             "or 2d") from None
    if seconds <= 0:
        raise UsageError(f"--timeout {text!r} must be longer than zero")
    return seconds


# rendering ------------------------------------------------------------------------------------
def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def record_json(record: PromiseRecord) -> dict[str, Any]:
    """A promise as plain JSON data: what ``get --json`` and ``search --json`` print."""
    value, error = outcome(record)
    try:
        param = record.param
    except ResonateError as exc:
        param = f"<undecodable: {exc}>"
    return {
        "id": record.id, "state": record.state, "kind": describe(record),
        "function": _function(record), "param": param,
        "value": value, "error": error, "tags": record.tags,
        "created_at": _iso(record.created_at), "timeout_at": _iso(record.timeout_at),
        "settled_at": _iso(record.settled_at),
    }


def _function(record: PromiseRecord) -> str | None:
    """The function a promise runs (roots, rpc and local steps), or ``None``."""
    name = function_of(record)
    if name is not None:
        return name
    kind, _, rest = describe(record).partition(" ")
    return (rest or None) if kind in ("root", "run", "rpc", "detached", "call") else None


def record_text(record: PromiseRecord) -> str:
    """A promise for people: one ``field  value`` line per fact."""
    data = record_json(record)
    rows: list[tuple[str, str]] = [("id", record.id), ("state", record.state),
                                   ("kind", data["kind"])]
    name = function_of(record)
    param = data["param"]
    if name is not None and isinstance(param, dict):
        rows.append(("function", f"{name} (version {param.get('version', 1)})"))
        rows.append(("args", _dumps(param.get("args", []))))
        if param.get("kwargs"):
            rows.append(("kwargs", _dumps(param["kwargs"])))
    elif param is not None:
        rows.append(("param", _dumps(param)))
    if data["error"] is not None:
        rows.append(("error", data["error"]))
    elif not record.pending:
        rows.append(("value", _dumps(data["value"])))
    rows.append(("created", data["created_at"]))
    rows.append(("timeout", data["timeout_at"]))
    if data["settled_at"] is not None:
        rows.append(("settled", data["settled_at"]))
    tags = sorted(record.tags.items())
    if tags:
        rows.extend(("tags" if i == 0 else "", f"{k}={v}") for i, (k, v) in enumerate(tags))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {text}" for label, text in rows)


def _unicode_ok() -> bool:
    try:
        "├└│─…".encode(sys.stdout.encoding or "ascii")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


# commands -------------------------------------------------------------------------------------
def setup_invoke(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("id", help="the execution's id (its idempotency key; no ':')")
    parser.add_argument("--func", required=True, metavar="NAME",
                        help="the registered name of the function to run")
    parser.add_argument("--arg", action="append", default=[], metavar="JSON",
                        help="a positional argument, as JSON (repeat for more; write a negative "
                             "number as --arg=-1)")
    parser.add_argument("--kwarg", action="append", default=[], metavar="KEY=JSON",
                        help="a keyword argument, its value as JSON (repeat for more)")
    parser.add_argument("--version", type=int, default=None, metavar="N",
                        help="the function version (default: 1)")
    parser.add_argument("--timeout", default=None, metavar="DURATION",
                        help="how long the execution may take, e.g. 90s, 15m, 1h, 2d "
                             "(default: 1 day)")
    parser.add_argument("--target", default=None, metavar="GROUP",
                        help="the worker group that runs it (default: 'default')")
    parser.add_argument("--wait", action="store_true",
                        help="wait for the result and print it as JSON (needs --url)")
    add_connection(parser)

    def run(args: argparse.Namespace) -> int:
        try:
            _check_id(args.id, root=True)
            fn_args = [_json_arg(text, "--arg") for text in args.arg]
            fn_kwargs: dict[str, Any] = {}
            for item in args.kwarg:
                key, sep, text = item.partition("=")
                if not sep or not key.isidentifier():
                    raise UsageError(f"--kwarg {item!r} is not KEY=JSON; write e.g. "
                                     "--kwarg count=3 or --kwarg name='\"ada\"'")
                fn_kwargs[key] = _json_arg(text, f"--kwarg {key}=")
            if args.version is not None and args.version < 1:
                raise UsageError(f"--version {args.version}: versions start at 1")
            timeout = parse_duration(args.timeout) if args.timeout is not None else None
            if args.wait and args.db:
                raise UsageError("--wait needs --url: no worker can run the execution while "
                                 "this command holds the --db file; invoke without --wait, "
                                 "then start your app on the file and use `get`")
        except UsageError as exc:
            return _fail(args, str(exc), 2)

        async def body(resonate: Resonate) -> int:
            invoker = resonate.options(timeout=timeout, target=args.target,
                                       version=args.version)
            handle = await invoker.rpc(args.id, args.func, *fn_args, **fn_kwargs)
            _out(handle.id)
            if not args.wait:
                return 0
            try:
                value = await handle
            except (TransportError, NotFoundError):
                raise
            except Exception:  # the execution failed: report it as the record says
                record = await resonate.promises.get(args.id)
                _, error = outcome(record)
                raise CommandError(f"execution {args.id!r} ended {record.state}"
                                   + (f": {error}" if error else "")) from None
            _out(_dumps(value))
            return 0

        return _execute(args, body, running=True)

    return run


def setup_get(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("id", help="the promise id")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_connection(parser)

    def run(args: argparse.Namespace) -> int:
        async def body(resonate: Resonate) -> int:
            record = await resonate.promises.get(args.id)
            _out(_dumps(record_json(record)) if args.json else record_text(record))
            return 0

        return _execute(args, body, check=lambda: _check_id(args.id))

    return run


def setup_search(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("--state", choices=sorted(PROMISE_STATES), default=None,
                        help="only promises in this state")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="only promises with this tag (repeat: all of them)")
    parser.add_argument("--limit", type=int, default=SEARCH_LIMIT, metavar="N",
                        help=f"print at most N promises (default: {SEARCH_LIMIT})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    add_connection(parser)

    def run(args: argparse.Namespace) -> int:
        tags: dict[str, str] = {}
        for item in args.tag:
            key, sep, value = item.partition("=")
            if not sep or not key:
                return _fail(args, f"--tag {item!r} is not KEY=VALUE; write e.g. "
                                   "--tag resonate:origin=order-1", 2)
            tags[key] = value
        if args.limit < 1:
            return _fail(args, f"--limit {args.limit}: give a number of promises >= 1", 2)

        async def body(resonate: Resonate) -> int:
            found, more = await _first_matches(
                resonate.promises.search(state=args.state, tags=tags or None,
                                         page_size=min(args.limit + 1, PAGE_SIZE)),
                args.limit)
            if args.json:
                for record in found:
                    _out(_dumps(record_json(record)))
            else:
                rows = [(r.id, r.state, describe(r)) for r in found]
                if rows:
                    w0 = max(len(r[0]) for r in rows)
                    w1 = max(len(r[1]) for r in rows)
                    for pid, state, what in rows:
                        _out(f"{pid.ljust(w0)}  {state.ljust(w1)}  {what}")
            if more:
                _err(f"(the first {args.limit} promises; more match: raise --limit)")
            return 0

        return _execute(args, body)

    return run


async def _first_matches(records: AsyncIterator[PromiseRecord], limit: int,
                         wanted: Callable[[PromiseRecord], bool] = lambda _: True,
                         ) -> tuple[list[PromiseRecord], bool]:
    """The first ``limit`` records that are ``wanted``, and whether more would follow."""
    found: list[PromiseRecord] = []
    async for record in records:
        if not wanted(record):
            continue
        if len(found) == limit:
            return found, True
        found.append(record)
    return found, False


def setup_list(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("--func", default=None, metavar="NAME",
                        help="only executions of this function")
    parser.add_argument("--state", choices=sorted(PROMISE_STATES), default=None,
                        help="only executions in this state")
    parser.add_argument("--roots", action="store_true",
                        help="only top-level executions (no rpc or detached children)")
    parser.add_argument("--limit", type=int, default=SEARCH_LIMIT, metavar="N",
                        help=f"print at most N executions (default: {SEARCH_LIMIT})")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per line (as `get --json`), for scripts")
    add_connection(parser)

    def run(args: argparse.Namespace) -> int:
        if args.limit < 1:
            return _fail(args, f"--limit {args.limit}: give a number of executions >= 1", 2)
        if args.func is not None and not args.func.strip():
            return _fail(args, "--func needs the registered name of a function, e.g. "
                               "--func checkout", 2)

        def wanted(record: PromiseRecord) -> bool:
            if not is_execution(record):
                return False
            if args.roots and record.id != (record.tags.get(TAG_ORIGIN) or origin_of(record.id)):
                return False
            return args.func is None or _function(record) == args.func

        async def body(resonate: Resonate) -> int:
            found, more = await _first_matches(
                resonate.promises.search(state=args.state, page_size=PAGE_SIZE),
                args.limit, wanted)
            if args.json:
                for record in found:
                    _out(_dumps(record_json(record)))
            else:
                rows = [(r.id, r.state, _function(r) or "?", describe(r).partition(" ")[0],
                         _iso(r.created_at) or "") for r in found]
                widths = [max((len(row[c]) for row in rows), default=0) for c in range(4)]
                for row in rows:
                    _out("  ".join([*(row[c].ljust(widths[c]) for c in range(4)), row[4]]))
            if more:
                _err(f"(the first {args.limit} executions; more match: raise --limit)")
            elif not found and not args.json:
                _err("(no execution matches)")
            return 0

        return _execute(args, body)

    return run


def _setup_settle(parser: argparse.ArgumentParser, state: str) -> Run:
    parser.add_argument("id", help="the promise id")
    if state == "resolved":
        parser.add_argument("--value", default=None, metavar="JSON",
                            help="the value, as JSON (default: null)")
    elif state == "rejected":
        parser.add_argument("--message", default="rejected from the command line",
                            metavar="TEXT", help="the error message")
    add_connection(parser)

    def run(args: argparse.Namespace) -> int:
        try:
            _check_id(args.id)
            value = (_json_arg(args.value, "--value")
                     if state == "resolved" and args.value is not None else None)
        except UsageError as exc:
            return _fail(args, str(exc), 2)

        async def body(resonate: Resonate) -> int:
            promises = resonate.promises
            before = await promises.get(args.id)
            if not before.pending:
                raise CommandError(f"promise {args.id!r} is already {before.state}; a promise "
                                   "is settled only once (nothing changed)")
            if state == "resolved":
                after = await promises.resolve(args.id, value)
            elif state == "rejected":
                after = await promises.reject(args.id, args.message)
            else:
                after = await promises.cancel(args.id)
            if after.state != state:
                raise CommandError(f"promise {args.id!r} was settled meanwhile: it is "
                                   f"{after.state} (nothing changed)")
            _out(f"{after.id} {after.state}")
            return 0

        return _execute(args, body)

    return run


def setup_resolve(parser: argparse.ArgumentParser) -> Run:
    return _setup_settle(parser, "resolved")


def setup_reject(parser: argparse.ArgumentParser) -> Run:
    return _setup_settle(parser, "rejected")


def setup_cancel(parser: argparse.ArgumentParser) -> Run:
    return _setup_settle(parser, "rejected_canceled")


def setup_tree(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("id", help="the execution (or any promise of it)")
    parser.add_argument("--ascii", action="store_true",
                        help="draw with ASCII instead of box-drawing characters")
    add_connection(parser)

    def run(args: argparse.Namespace) -> int:
        async def body(resonate: Resonate) -> int:
            top = await resonate.promises.get(args.id)
            origin = top.tags.get(TAG_ORIGIN) or origin_of(top.id)
            records = {top.id: top}
            async for record in resonate.promises.search(tags={TAG_ORIGIN: origin},
                                                         page_size=PAGE_SIZE):
                records.setdefault(record.id, record)
            _out(render_tree(records.values(), top.id, ascii=args.ascii or not _unicode_ok()))
            return 0

        return _execute(args, body, check=lambda: _check_id(args.id))

    return run
