"""``render_tree``: the call tree of an execution, built from its records alone."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from resonate_async import NotFoundError, PromiseRecord
from resonate_async._codec import Codec
from resonate_async._tree import describe, render_tree
from resonate_async.protocol import Promise, Value

CODEC = Codec()


def record(pid: str, state: str = "resolved", *, parent: str | None = None,
           call: str | None = None, value: Any = None, param: Any = None,
           **tags: str) -> PromiseRecord:
    all_tags = {"resonate:origin": pid.partition(":")[0], **tags}
    if parent is not None:
        all_tags["resonate:parent"] = parent
    if call is not None:
        all_tags["resonate_async:call"] = call

    def encode(obj: Any) -> Value:
        return Value() if obj is None else Value(
            data=base64.b64encode(json.dumps(obj).encode()).decode())

    promise = Promise(pid, state, encode(param), encode(value),  # type: ignore[arg-type]
                      all_tags, 2_000_000_000_000, 1_000_000_000_000)
    return PromiseRecord.of(promise, CODEC)


def invocation(func: str) -> dict[str, Any]:
    return {"func": func, "args": [], "kwargs": {}, "version": 1}


def test_children_are_indented_under_their_parent_in_call_order() -> None:
    records = [
        record("r:10", parent="r", call="run late"),
        record("r:2.1", parent="r:2", call="sleep"),
        record("r", "pending", param=invocation("main"), parent="r"),
        record("r:2", "pending", parent="r", call="rpc job", param=invocation("job")),
        record("r:1", parent="r", call="run first", value=[1, 2]),
    ]
    assert render_tree(records, "r") == "\n".join([
        "r              root main  pending",
        "├── r:1        run first  resolved  [1,2]",
        "├── r:2        rpc job    pending",
        "│   └── r:2.1  sleep      resolved",
        "└── r:10       run late   resolved",
    ])


def test_a_subtree_is_rendered_from_any_of_its_promises() -> None:
    records = [record("r", param=invocation("main")),
               record("r:1", parent="r", call="rpc job"),
               record("r:1.1", parent="r:1", call="promise", value="ok")]
    assert render_tree(records, "r:1", ascii=True) == "\n".join([
        "r:1        rpc job  resolved",
        '`-- r:1.1  promise  resolved  "ok"',
    ])


def test_without_a_root_every_top_level_promise_is_rendered() -> None:
    text = render_tree([record("a", param=invocation("f")), record("b", param=invocation("g"))])
    assert text.splitlines() == ["a  root f  resolved", "b  root g  resolved"]


def test_kinds_are_read_from_tags_and_param_when_no_call_tag_was_written() -> None:
    assert describe(record("t:1", **{"resonate:timer": "true"})) == "sleep"
    assert describe(record("t:2", **{"resonate:external": "true"})) == "promise"
    assert describe(record("t:3", param=invocation("other"))) == "call other"
    assert describe(record("t", param=invocation("main"))) == "root main"
    assert describe(record("t:4", param="not an invocation")) == "promise"
    assert describe(record("t:d00ff", call="detached job")) == "detached job"


def test_missing_parents_fall_back_to_id_lineage() -> None:
    records = [record("r", param=invocation("main")), record("r:1.1", call="run leaf")]
    assert render_tree(records, "r").splitlines()[1].startswith("└── r:1.1")


def test_long_values_are_cut_and_errors_shown() -> None:
    error = {"__type": "error", "type": "KeyError", "module": "builtins", "message": "k",
             "args": ["k"]}
    records = [record("r", param=invocation("main")),
               record("r:1", parent="r", call="run big", value="x" * 500),
               record("r:2", "rejected", parent="r", call="run bad", value=error),
               record("r:3", "rejected_timedout", parent="r", call="promise")]
    lines = render_tree(records, "r").splitlines()
    assert lines[1].endswith("…") and len(lines[1]) < 120
    assert lines[2].endswith("rejected           KeyError: 'k'")
    assert lines[3].endswith("rejected_timedout")


def test_an_unknown_root_raises_not_found() -> None:
    with pytest.raises(NotFoundError, match="'nope'"):
        render_tree([record("r")], "nope")


def test_cyclic_parent_tags_do_not_loop() -> None:
    records = [record("a", parent="b"), record("b", parent="a")]
    assert len(render_tree(records).splitlines()) == 2
