"""Calls are checked against the called function's signature by a type checker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--hide-error-context",
         "--no-error-summary", "--show-column-numbers", str(path.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_typed_usage_passes_strict_mypy() -> None:
    done = _mypy(HERE / "usage_ok.py")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mistakes_are_reported_on_the_lines_that_make_them() -> None:
    path = HERE / "usage_bad.py"
    expected = {i for i, line in enumerate(path.read_text().splitlines(), 1) if "# E:" in line}
    done = _mypy(path)
    reported = {int(m.group(1)) for m in re.finditer(r"usage_bad\.py:(\d+):\d+: error",
                                                     done.stdout)}
    assert expected <= reported, done.stdout
