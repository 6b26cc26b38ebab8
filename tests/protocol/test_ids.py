"""Promise id lineage helpers (protocol.md, our decision 1)."""

from __future__ import annotations

import pytest

from resonate_async._errors import InvalidIdError, ResonateError
from resonate_async.protocol import (
    check_root_id,
    child_id,
    extends,
    id_problem,
    origin_of,
    separator_for,
)


@pytest.mark.parametrize(("parent", "segment", "child"), [
    ("root", 1, "root:1"),
    ("root:1", 2, "root:1.2"),
    ("root:1.2", 3, "root:1.2.3"),
    ("a.b", 1, "a.b:1"),
    ("root", "d0123456789abcdef", "root:d0123456789abcdef"),
])
def test_child_id_uses_colon_below_a_root_and_dot_below_that(parent: str, segment: int | str,
                                                              child: str) -> None:
    assert child_id(parent, segment) == child


@pytest.mark.parametrize(("promise_id", "origin"), [
    ("root", "root"), ("root:1", "root"), ("root:1.2", "root"), ("a.b:1", "a.b"),
    ("a.b", "a.b"), ("", ""),
])
def test_origin_is_the_text_before_the_first_colon(promise_id: str, origin: str) -> None:
    assert origin_of(promise_id) == origin


def test_separator_depends_on_whether_the_ancestor_has_a_colon() -> None:
    assert separator_for("root") == ":"
    assert separator_for("root:1") == "."


@pytest.mark.parametrize(("promise_id", "ancestor", "expected"), [
    ("root", "root", True),
    ("root:1", "root", True),
    ("root:1.2", "root", True),
    ("root:1.2", "root:1", True),
    ("root:12", "root:1", False),
    ("root:1:2", "root:1", False),
    ("rootx", "root", False),
    ("root.1", "root", False),
    ("other:1", "root", False),
    ("root", "root:1", False),
])
def test_extends_follows_the_lineage(promise_id: str, ancestor: str, expected: bool) -> None:
    assert extends(promise_id, ancestor) is expected


@pytest.mark.parametrize("promise_id", ["root", "a.b", "order-42", "ü"])
def test_check_root_id_returns_a_valid_root_id(promise_id: str) -> None:
    assert check_root_id(promise_id) == promise_id
    assert id_problem(promise_id, root=True) is None


@pytest.mark.parametrize(("promise_id", "message"), [
    ("", "must not be empty"),
    ("a\x00b", "NUL"),
    ("a:b", "must not contain ':'"),
])
def test_check_root_id_explains_what_is_wrong(promise_id: str, message: str) -> None:
    with pytest.raises(InvalidIdError, match=message) as info:
        check_root_id(promise_id)
    assert isinstance(info.value, ResonateError)
    assert isinstance(info.value, ValueError)


def test_check_root_id_rejects_a_non_string() -> None:
    with pytest.raises(InvalidIdError, match="must be a str, not int"):
        check_root_id(42)  # type: ignore[arg-type]


def test_a_child_id_may_contain_a_colon() -> None:
    assert id_problem("root:1", root=False) is None
    assert id_problem("", root=False) is not None
