"""Every python snippet in the README is code that the tests run: it stands, line for line
(comments and blank lines aside), in examples/ or in tests/docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "examples").glob("*.py")), *sorted((ROOT / "tests/docs").glob("*.py"))]
_COMMENT = re.compile(r"\s+#\s.*$")


def _lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = _COMMENT.sub("", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _snippets() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme, flags=re.S)


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def test_the_readme_has_python_snippets() -> None:
    assert len(_snippets()) >= 8


@pytest.mark.parametrize("snippet", _snippets(), ids=lambda s: _lines(s)[0][:40])
def test_each_readme_snippet_is_tested_code(snippet: str) -> None:
    wanted = _lines(snippet)
    for source in SOURCES:
        if _contains(_lines(source.read_text()), wanted):
            return
    raise AssertionError("this README snippet is not in examples/ or tests/docs/ (copy it "
                         f"from a file the tests run):\n{snippet}")
