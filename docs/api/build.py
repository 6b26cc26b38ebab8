"""Build the API reference (``nox -s docs``): a static site in docs/_build from the docstrings.

The public API is what ``__all__`` exports from ``resonate_async``, ``resonate_async.testing``
and ``resonate_async.transport``. The build fails, naming each one, if a public name or a
public member of a public class has no docstring. The front page is the package docstring
followed by docs/api/guide.md (features that are easy to miss, with tested examples).

    python docs/api/build.py [--out docs/_build] [--check]    # --check: docstrings only
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("resonate_async", "resonate_async.testing", "resonate_async.transport")
GUIDE = Path(__file__).with_name("guide.md")
# Members every class has from its bases outside this package: documented there.
_FOREIGN = (object, BaseException, Exception)


def public_names() -> Iterator[tuple[str, Any]]:
    """Every public name: ``(qualified name, object)`` for each module's ``__all__`` entry."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield f"{module_name}.{name}", getattr(module, name)


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public members ``cls`` defines itself or takes from a base of this package."""
    for klass in cls.__mro__:
        if klass in _FOREIGN or not klass.__module__.startswith("resonate_async"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_") or name in vars(object):
                continue
            yield name, member


def _documented(obj: Any) -> bool:
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    return bool((getattr(obj, "__doc__", None) or "").strip())


def missing_docstrings() -> list[str]:
    """The qualified names of public names and public class members without a docstring."""
    missing: list[str] = []
    seen: set[int] = set()
    for qualified, obj in public_names():
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
            continue  # a constant (``SKIP_TAG``): described by its module
        if not _documented(obj):
            missing.append(qualified)
        if not inspect.isclass(obj) or id(obj) in seen:
            continue
        seen.add(id(obj))
        for name, member in _members(obj):
            if not (inspect.isfunction(member) or isinstance(member, (property, staticmethod,
                                                                       classmethod))):
                continue
            if not any(_documented(vars(klass).get(name)) for klass in obj.__mro__):
                missing.append(f"{qualified}.{name}")  # none in its class nor a base's
    return sorted(set(missing))


def _front_page(package: ModuleType) -> None:
    """Put the guide after the package docstring, for the reference's front page only."""
    package.__doc__ = f"{inspect.cleandoc(package.__doc__ or '')}\n\n{GUIDE.read_text()}"


def build(out: Path) -> None:
    """Render the reference of every module in ``MODULES`` into ``out``."""
    import pdoc
    import pdoc.render

    package = importlib.import_module("resonate_async")
    _front_page(package)
    pdoc.render.configure(docformat="markdown", show_source=False,
                          footer_text="resonate_async API reference")
    pdoc.pdoc(*MODULES, output_directory=out)  # imported already: the patched package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "_build"))
    parser.add_argument("--check", action="store_true", help="check the docstrings only")
    args = parser.parse_args(argv)
    missing = missing_docstrings()
    if missing:
        print(f"{len(missing)} public names have no docstring (write one: what it is, then "
              "its contract):", file=sys.stderr)
        for name in missing:
            print(f"  {name}", file=sys.stderr)
        return 1
    if args.check:
        print("every public name has a docstring")
        return 0
    out = Path(args.out)
    build(out)
    print(f"API reference written to {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
