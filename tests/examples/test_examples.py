"""Every example in examples/ runs to completion and prints what it teaches."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._devserver import dev_server

ROOT = Path(__file__).resolve().parents[2]

EXPECTED: dict[str, list[str]] = {
    "hello": ["Hello, world!"],
    "countdown": ["3...", "2...", "1...", "liftoff!"],
    "fibonacci": [
        "fib(10) = 55",
        "table: {1: 1, 2: 1, 3: 2, 4: 3, 5: 5, 6: 8, 7: 13, 8: 21}",
    ],
    "saga": [
        "  reserved flight",
        "  reserved hotel",
        "  canceled hotel-lisbon",
        "  canceled flight-lisbon",
        "trip lisbon not booked (no cars left for lisbon); "
        "compensated: hotel-lisbon, flight-lisbon",
    ],
    "approval": [
        "approval requested for $120: resolve promise 'expense-7:1'",
        "$120 approved",
    ],
}


# Examples that are services rather than scripts, each tested by its own test module.
SERVICES = {"fastapi_app": "tests/fastapi/test_fastapi_app.py"}


def test_every_example_is_tested() -> None:
    scripts = sorted(p.stem for p in (ROOT / "examples").glob("*.py") if p.stem not in SERVICES)
    assert scripts == sorted(EXPECTED)
    assert all((ROOT / test).exists() for test in SERVICES.values())


@pytest.mark.slow  # a process per example, and a dev server for http
@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("engine", ["embedded", "http"])
def test_example_prints_its_result(name: str, engine: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RESONATE_URL"}
    with contextlib.ExitStack() as stack:
        if engine == "http":  # Resonate() takes RESONATE_URL: the same script, remote mode
            env["RESONATE_URL"] = stack.enter_context(dev_server()).url
        done = subprocess.run(
            [sys.executable, f"examples/{name}.py"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env,
        )
    assert done.returncode == 0, done.stderr
    # exact lines in order: a step that printed twice (a replay bug) fails the test
    assert done.stdout.splitlines() == EXPECTED[name], done.stdout + done.stderr


def test_readme_shows_hello_as_it_is() -> None:
    source = (ROOT / "examples" / "hello.py").read_text()
    code = source.split('"""', 2)[2].strip("\n")  # the file without its docstring
    assert f"```python\n{code}\n```" in (ROOT / "README.md").read_text()


def test_readme_quick_start_runs_the_ci_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Quick start" in readme
    assert '\npip install -e ".[test]" && python -m pytest\n' in readme
