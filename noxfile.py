"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s bench`."""

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
def bench(session: nox.Session) -> None:
    """The benchmarks of benchmarks/ (they print figures; they never fail on speed)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks", *session.posargs)
