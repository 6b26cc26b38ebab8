"""Promise id lineage: ``root``, ``root:1``, ``root:1.2`` (protocol.md decision 1).

The origin of an id is the text before its first ``:``; root ids may not contain ``:``.
A child of an id without ``:`` is ``id:n``; a child of any other id is ``id.n``.
"""

from __future__ import annotations

from resonate_async._errors import InvalidIdError


def origin_of(promise_id: str) -> str:
    """The origin (root) of an id: everything before the first ``:``."""
    return promise_id.partition(":")[0]


def separator_for(ancestor: str) -> str:
    """The separator placed between ``ancestor`` and the next lineage segment."""
    return "." if ":" in ancestor else ":"


def child_id(parent: str, segment: int | str) -> str:
    """The id of ``parent``'s child named ``segment`` (a call counter, or ``d<hex>``)."""
    return f"{parent}{separator_for(parent)}{segment}"


def extends(promise_id: str, ancestor: str) -> bool:
    """Whether ``promise_id`` is ``ancestor`` itself or lies below it in the lineage."""
    return promise_id == ancestor or promise_id.startswith(ancestor + separator_for(ancestor))


def id_problem(promise_id: str, *, root: bool) -> str | None:
    """What is wrong with an id, or ``None`` when it is acceptable."""
    if not promise_id:
        return "an id must not be empty"
    if "\x00" in promise_id:
        return "an id must not contain a NUL character"
    surrogate = lone_surrogate(promise_id)
    if surrogate is not None:
        return (f"id {promise_id!r} is not valid Unicode text: it holds the lone surrogate "
                f"{surrogate!r} (from bytes decoded with errors='surrogateescape'?), and ids "
                "travel as UTF-8; decode the bytes properly or choose another id")
    if root and ":" in promise_id:
        return (
            f"root id {promise_id!r} must not contain ':' (':' separates an execution's "
            "children from their root); use another character such as '-' or '.'"
        )
    return None


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` (which UTF-8 cannot carry), or ``None``."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def check_root_id(promise_id: str) -> str:
    """Return ``promise_id`` if it is a valid root id, else raise ``InvalidIdError``."""
    return check_id(promise_id, root=True)


def check_id(promise_id: str, *, root: bool = False) -> str:
    """Return ``promise_id`` if it is a valid id (a root id when ``root``), else raise
    ``InvalidIdError`` saying what is wrong."""
    if not isinstance(promise_id, str):
        raise InvalidIdError(f"an id must be a str, not {type(promise_id).__name__}")
    problem = id_problem(promise_id, root=root)
    if problem:
        raise InvalidIdError(problem)
    return promise_id
