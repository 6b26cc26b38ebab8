"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s bench`,
`nox -s interop` (not run by default: it installs the official SDK from PyPI)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests-3.11", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite (both anyio backends, every transport)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff over the package, the tests, the examples and the benchmarks."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "resonate_async", "tests", "examples", "benchmarks")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy in strict mode over the package."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python="3.11")
def typing(session: nox.Session) -> None:
    """Typed usage files: correct calls pass strict mypy, mistakes are reported."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests/typing", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmarks of benchmarks/ (they print figures; they never fail on speed)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python="3.12", default=False)
def interop(session: nox.Session) -> None:
    """The official Python SDK (resonate-sdk, PyPI) runs its workflows on our dev server."""
    import socket
    import subprocess
    import time

    session.install("resonate-sdk", "-e", ".[server]")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    python = f"{session.bin}/python"
    server = subprocess.Popen(
        [python, "-m", "resonate_async", "dev", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the server prints its URL once it listens
        if "listening on " not in line:
            session.error(f"the dev server did not start: {line!r}")
        url = line.rsplit(" ", 1)[1].strip()
        began = time.monotonic()
        session.run("python", "interop/official_sdk_workflow.py", url)
        session.log(f"interop scenarios passed in {time.monotonic() - began:.1f}s against {url}")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
