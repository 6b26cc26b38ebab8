"""The API reference (``nox -s docs``): every public name is documented, every example of the
guide (docs/api/guide.md) runs on both backends, and every code example in a public
docstring is valid Python."""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "api" / "guide.md"


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_api_build", ROOT / "docs/api/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_module()


def _guide_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_every_public_name_and_member_has_a_docstring() -> None:
    assert BUILD.missing_docstrings() == []


def test_the_docstring_check_finds_an_undocumented_member(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import resonate_async

    def undocumented(self: object) -> None:
        pass

    monkeypatch.setattr(resonate_async.Resonate, "shiny", undocumented, raising=False)
    assert BUILD.missing_docstrings() == ["resonate_async.Resonate.shiny"]


def test_the_guide_covers_the_features_found_only_in_docstrings() -> None:
    text = GUIDE.read_text()
    for feature in ("ctx.promise(", "type=", "set_dependency", "ctx.get_dependency",
                    "side_effect(ctx)", "busy("):
        assert feature in text, f"docs/api/guide.md shows no example of {feature}"
    assert len(_guide_examples()) >= 3


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("example", _guide_examples(),
                         ids=lambda e: re.findall(r"def (\w+)", e)[-2])
def test_each_guide_example_runs(example: str, backend: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples end with ``anyio.run(main)``: run them on the backend under test.
    monkeypatch.setattr(anyio, "run", functools.partial(anyio.run, backend=backend))
    module = ModuleType("guide_example")  # a real module: dataclasses look classes up there
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(example, f"{GUIDE}:example", "exec"), module.__dict__)


# -- code examples in docstrings --------------------------------------------------------------

def _documented_objects() -> Iterator[tuple[str, Any]]:
    for qualified, obj in BUILD.public_names():
        yield qualified, obj
        if inspect.isclass(obj):
            for name, member in vars(obj).items():
                if not name.startswith("_"):
                    yield f"{qualified}.{name}", member
    for module_name in BUILD.MODULES:
        yield module_name, importlib.import_module(module_name)


def _code_blocks(doc: str) -> list[str]:
    """The indented blocks of a docstring that follow a blank line (its code examples)."""
    lines = inspect.cleandoc(doc).splitlines()
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        starts = (lines[i].startswith("    ") and lines[i].strip()
                  and (i == 0 or not lines[i - 1].strip()))
        if not starts:
            i += 1
            continue
        block = []
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            block.append(lines[i])
            i += 1
        blocks.append(textwrap.dedent("\n".join(block)).strip())
    return blocks


def _docstring_examples() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for qualified, obj in _documented_objects():
        target = obj.fget if isinstance(obj, property) else obj
        doc = getattr(target, "__doc__", None)
        if not isinstance(doc, str) or doc in seen:
            continue
        seen.add(doc)
        found.extend((qualified, block) for block in _code_blocks(doc))
    return found


def test_the_docstring_examples_are_found() -> None:
    assert any(where == "resonate_async.testing" for where, _ in _docstring_examples())


@pytest.mark.parametrize(("where", "block"), _docstring_examples(),
                         ids=[f"{w}-{i}" for i, (w, _) in enumerate(_docstring_examples())])
def test_each_docstring_example_is_valid_python(where: str, block: str) -> None:
    try:
        compile(block, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as exc:
        raise AssertionError(f"the example in the docstring of {where} is not valid Python "
                             f"({exc}):\n{block}") from None
