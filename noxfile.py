"""Developer sessions: `nox -t tests` (or `-s tests-3.11`), `nox -s lint`, `nox -s typecheck`,
`nox -s bench`; not run by default: `nox -s tests-lowest` (the lowest versions the ranges
allow) and `nox -s interop` (it installs the official SDK from PyPI)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.sessions = ["tests-3.11", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]


def _interpreters(version: str) -> list[str]:
    """Interpreters of ``version`` that run (pyenv installs first: its shims may not)."""
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python")))
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(found)
    return [c for c in candidates
            if subprocess.run([c, "--version"], capture_output=True).returncode == 0]


def _tests(session: nox.Session) -> None:
    """The whole test suite (both anyio backends, every transport)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


# One session per version, named tests-3.11 ... but run by a concrete interpreter: pyenv's
# shims do not run versions that are not selected, so nox would skip them as "not found".
for _version in PYTHONS:
    nox.session(name=f"tests-{_version}", tags=["tests"],
                python=next(iter(_interpreters(_version)), _version))(_tests)


@nox.session(name="tests-lowest", python=next(iter(_interpreters("3.11")), "3.11"),
             venv_backend="uv", default=False)
def tests_lowest(session: nox.Session) -> None:
    """The whole suite on the lowest versions that pyproject.toml's ranges allow.

    ``uv --resolution lowest-direct``: each of our own requirements at its lower bound (their
    dependencies as new as those allow), so a bound that is too low fails here. The
    environment is made anew each run, so a version left from an earlier run cannot hide one.
    """
    session.run_install("uv", "venv", "--clear", "--python", session.virtualenv.interpreter
                        or "3.11", session.virtualenv.location, silent=True)
    session.install("--resolution", "lowest-direct", "-e", ".[test]")
    session.run("uv", "pip", "list", "--python", str(Path(session.bin) / "python"))
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
    """The benchmarks of benchmarks/ (they print figures; they never fail on speed).

    The peers are installed each in its own environment next to this session's: the official
    SDK (``resonate-sdk``, Python >= 3.12) and DBOS (``dbos``, SQLite). A peer that cannot be
    installed is left out (the run says so); ``nox -s bench -- --quick`` for a smoke run.
    """
    session.install("-e", ".[test]")
    peers = Path(session.virtualenv.location).parent / "bench-peers"
    env: dict[str, str] = {}
    for name, package, variable, pythons in (
        ("resonate-sdk", "resonate-sdk", "BENCH_PEER_RESONATE_SDK", ("3.13", "3.12")),
        ("dbos", "dbos", "BENCH_PEER_DBOS", ("3.11", "3.12", "3.13")),
    ):
        python = _peer_env(session, peers / name, package, pythons)
        if python is None:
            session.warn(f"peer {name}: no environment (see the messages above); left out")
        else:
            env[variable] = python
    session.run("python", "-m", "benchmarks", *session.posargs, env=env)


def _peer_env(session: nox.Session, where: Path, package: str,
              pythons: tuple[str, ...]) -> str | None:
    """A virtualenv at ``where`` holding ``package``; its interpreter, or None (with a warning
    saying why) when no suitable Python exists or the environment or install fails."""
    python = where / "bin" / "python"
    try:
        if not python.exists() or subprocess.run(
                [str(python), "--version"], capture_output=True).returncode != 0:
            base = next((found for v in pythons for found in _interpreters(v)), None)
            if base is None:
                session.warn(f"{package}: no Python {' or '.join(pythons)} found (pyenv or "
                             "PATH); install one to compare with this peer")
                return None
            session.run(base, "-m", "venv", "--clear", str(where), external=True)
        session.run(str(python), "-m", "pip", "install", "-q", package, external=True)
    except Exception as exc:  # nox raises its own failure type for a failed command
        session.warn(f"{package}: environment or install failed ({exc}); check the network "
                     "or the package index")
        return None
    return str(python)


@nox.session(python=next(iter(_interpreters("3.12")), "3.12"), default=False)
def interop(session: nox.Session) -> None:
    """Interop both ways (resonate-sdk from PyPI, Python 3.12), each check naming its server:

    1. the official Python SDK runs its workflows on our dev server
       (interop/official_sdk_workflow.py against ``python -m resonate_async dev``);
    2. our SDK runs one scenario against our dev server and against the official SDK's
       in-process server behind our HTTP adapter (interop/scenario.py, which starts and stops
       every process it needs; interop/official_server_adapter.py).

    Both directions run even if the first fails; the session fails if any check failed."""
    import socket
    import time

    from nox.command import CommandFailed

    session.install("resonate-sdk", "-e", ".[server]")
    failed = []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    server = subprocess.Popen(
        [str(Path(session.bin) / "python"), "-m", "resonate_async", "dev",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the server prints its URL once it listens
        if "listening on " not in line:
            session.error(f"the dev server did not start: {line!r}")
        url = line.rsplit(" ", 1)[1].strip()
        session.log(f"direction 1: the official SDK against our dev server at {url}")
        try:
            session.run("python", "interop/official_sdk_workflow.py", url)
        except CommandFailed:
            failed.append("the official SDK on our dev server")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    session.log("direction 2: our SDK against our dev server and the official SDK's server")
    try:
        session.run("python", "interop/scenario.py", "--server", "dev", "--server", "official")
    except CommandFailed:
        failed.append("our SDK's scenario")
    if failed:
        session.error(f"interop failed: {', '.join(failed)} (see the FAIL lines above)")
    session.log(f"interop passed both ways in {time.monotonic() - began:.1f}s")


@nox.session(python="3.11", default=False)
def simulate(session: nox.Session) -> None:
    """The deterministic fault simulator over thousands of seeds (tests/simulation/runner.py):
    ``nox -s simulate -- --seeds 5000``, ``-- --seed 123`` to re-run one seed."""
    session.install("-e", ".[test]")
    args = list(session.posargs) or ["--seeds", "2000"]
    session.run("python", "-m", "tests.simulation", *args)


@nox.session(python="3.11", default=False)
def ui(session: nox.Session) -> None:
    """The dev server's web view in a real headless browser (tests/server/browser_ui.py):
    Debian's chromium (installed with apt-get if missing, when run as root) driven by
    playwright, which never downloads a browser of its own. Writes docs/ui.png
    (``nox -s ui -- /tmp/shot.png`` to write elsewhere)."""
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        if os.geteuid() != 0:
            session.error(f"no chromium at {chromium}: install it (apt-get install -y "
                          "chromium) or set CHROMIUM to a Chromium binary")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", external=True, env=env)
        session.run("apt-get", "install", "-y", "chromium", external=True, env=env)
    session.install("-e", ".[server]", "playwright")
    session.run("python", "-m", "tests.server.browser_ui", "--chromium", chromium,
                *session.posargs, env={"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})


@nox.session(python="3.11", default=False)
def docs(session: nox.Session) -> None:
    """The API reference, generated from the docstrings by pdoc into docs/_build (open
    docs/_build/index.html). Fails, naming them, if a public name has no docstring; the
    examples of its front page (docs/api/guide.md) run in tests/docs/test_reference.py."""
    session.install("-e", ".", "pdoc>=14")
    session.run("python", "docs/api/build.py", *session.posargs)
