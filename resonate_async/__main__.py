"""The ``resonate_async`` command line: ``python -m resonate_async <command> ...``.

Commands:
    dev     run a development server: the embedded engine behind the Resonate HTTP API, for
            local development and tests. Production deployments use the Resonate server
            (https://github.com/resonatehq/resonate), not this command.
    invoke  start an execution on the workers of a group (``--wait`` prints its result)
    list    list executions (roots and rpc children; not steps), by function and state
    get     show a promise: state, value or error, tags, timeouts
    search  list promises by state and tags
    resolve / reject / cancel
            settle a pending promise (a human-in-the-loop step, a stuck execution)
    tree    the call tree of an execution
    db migrate
            create or upgrade the schema of a PostgreSQL database (``--url postgresql://...``)
            for a deployment whose processes may not run DDL at start-up

The engine commands talk to a Resonate server (``--url``, default ``RESONATE_URL``) or to the
embedded engine in a SQLite file (``--db``); see resonate_async/_cli.py.

Adding a command is one function decorated with ``@command``: it receives its subparser to
declare arguments and returns the function that runs it (which returns the exit status).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

Run = Callable[[argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], Run]

_COMMANDS: dict[str, tuple[str, Setup]] = {}


def command(name: str, help: str) -> Callable[[Setup], Setup]:
    """Register a subcommand: ``setup(parser)`` declares its arguments and returns its runner."""

    def register(setup: Setup) -> Setup:
        _COMMANDS[name] = (help, setup)
        return setup

    return register


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


@command("dev", "run a development server (the embedded engine over HTTP; not for production)")
def _dev(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8001, help="port (0 picks a free one)")
    parser.add_argument("--db", default=None,
                        help="SQLite file keeping the state across restarts (default: memory), or "
                             "postgresql://... to serve the engine in that database (several "
                             "dev servers and Postgres-mode processes may share it)")
    parser.add_argument("--retry-timeout", type=_positive_seconds, default=30.0,
                        metavar="SECONDS",
                        help="re-send execute for a pending task that nobody acquired after "
                             "this long (default: 30, like the Resonate server)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--token", default=os.environ.get("RESONATE_TOKEN") or None,
                        help="require this secret on every request and event stream (401 "
                             "otherwise); give it to workers and clients as RESONATE_TOKEN "
                             "(default: $RESONATE_TOKEN; none: no authentication)")
    parser.add_argument("--no-extensions", dest="extensions", action="store_false",
                        help="behave as the Resonate server where the dev server otherwise "
                             "helps clients: full preload in every task.fence answer, no "
                             "split of heartbeats across origins (for testing clients)")

    def run(args: argparse.Namespace) -> int:
        import anyio
        import structlog

        from resonate_async._token import token_problem
        from resonate_async.server import DevServer, ServerError

        problem = token_problem(args.token) if args.token is not None else None
        if problem is not None:
            parser.error(f"--token (or RESONATE_TOKEN): {problem}")

        level = getattr(logging, args.log_level.upper())
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )
        server = DevServer(host=args.host, port=args.port, db=args.db, log_level=args.log_level,
                           retry_timeout=args.retry_timeout, token=args.token,
                           extensions=args.extensions)

        def listening(url: str) -> None:
            # The server logs dev_server_unprotected as a warning; say it even when the log
            # level hides warnings.
            if server.unprotected and level > logging.WARNING:
                from resonate_async.server._serve import UNPROTECTED

                print(f"resonate_async dev: warning: {url}: {UNPROTECTED}", file=sys.stderr,
                      flush=True)
            print(f"resonate_async dev server listening on {url}", flush=True)

        failed: list[ServerError] = []

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                async def stop_on_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            server.stop()
                            return

                tg.start_soon(stop_on_signal)
                try:
                    await server.serve(listening)
                except ServerError as exc:  # kept out of the task group's ExceptionGroup
                    failed.append(exc)
                tg.cancel_scope.cancel()

        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(main, backend="asyncio", backend_options={"use_uvloop": _has_uvloop()})
        if failed:
            print(f"resonate_async dev: {failed[0]}", file=sys.stderr)
            return 1
        return 0

    return run


# The client commands live in resonate_async._cli, imported only when one of them runs (so
# `dev` starts without loading them): name, help, and the _cli function that sets it up.
_CLIENT_COMMANDS = (
    ("invoke", "start an execution on the workers of a group (--wait: print its result)",
     "setup_invoke"),
    ("list", "list executions (roots, rpc children) by function and state", "setup_list"),
    ("get", "show a promise: state, value or error, tags, timeouts", "setup_get"),
    ("search", "list promises, one per line, by state and tags", "setup_search"),
    ("resolve", "resolve a pending promise with a JSON value", "setup_resolve"),
    ("reject", "reject a pending promise with an error message", "setup_reject"),
    ("cancel", "cancel a pending promise", "setup_cancel"),
    ("tree", "show the call tree of an execution", "setup_tree"),
)


def _client_command(setup_name: str) -> Setup:
    def setup(parser: argparse.ArgumentParser) -> Run:
        from resonate_async import _cli

        run: Run = getattr(_cli, setup_name)(parser)
        return run

    return setup


for _name, _help, _setup_name in _CLIENT_COMMANDS:
    command(_name, _help)(_client_command(_setup_name))


@command("db", "database maintenance: `db migrate --url postgresql://...` creates or upgrades "
                "the schema")
def _db(parser: argparse.ArgumentParser) -> Run:
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    migrate = actions.add_parser("migrate", help="create or upgrade the resonate_async schema",
                                 description="Create or upgrade the resonate_async schema of a "
                                             "PostgreSQL database (safe while processes run).")
    migrate.add_argument("--url", default=os.environ.get("RESONATE_URL") or None,
                         help="postgresql://user:password@host:5432/db (default: RESONATE_URL); "
                              "the tables go in the first schema of its search_path")

    def run(args: argparse.Namespace) -> int:
        from resonate_async._errors import ResonateError
        from resonate_async._redact import redact

        url: str | None = args.url
        if not url or not url.startswith(("postgresql://", "postgres://")):
            shown = redact(url) if url else "none"
            print(f"resonate_async db migrate: give --url postgresql://... (or RESONATE_URL) "
                  f"of the database to migrate (got {shown})", file=sys.stderr)
            return 2
        try:
            from resonate_async.engine._postgres import SCHEMA_VERSION, connect, migrate_schema

            with connect(url) as conn:
                found = migrate_schema(conn, shown=redact(url))
        except ResonateError as exc:
            print(f"resonate_async db migrate: {exc}", file=sys.stderr)
            return 1
        if found == SCHEMA_VERSION:
            print(f"{redact(url)}: schema is up to date (version {SCHEMA_VERSION})")
        elif found == 0:
            print(f"{redact(url)}: schema created (version {SCHEMA_VERSION})")
        else:
            print(f"{redact(url)}: schema upgraded from version {found} to {SCHEMA_VERSION}")
        return 0

    return run


def _has_uvloop() -> bool:
    """uvloop (part of the ``server`` extra) makes the development server faster when present."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resonate_async",
                                     description="Resonate durable execution, in Python.")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    runners: dict[str, Run] = {}
    for name, (help_text, setup) in _COMMANDS.items():
        runners[name] = setup(subparsers.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
