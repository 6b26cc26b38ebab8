"""The call tree of an execution, built from its promise records and rendered for a terminal.

Every promise of an execution carries the tag ``resonate:origin`` (the root's id) and
``resonate:parent`` (the id of the durable function that made it); the children this SDK makes
also carry ``resonate_async:call`` ("run step", "rpc job", "sleep", "promise", "detached job").
``render_tree`` turns the records of one origin into one line per node::

    order-1      root checkout  pending
    ├── order-1:1  run charge     resolved  "ch_1"
    ├── order-1:2  rpc reserve    resolved  {"held":2}
    │   └── order-1:2.1  run hold  resolved  2
    ├── order-1:3  sleep          resolved
    └── order-1:4  promise        pending

(columns are aligned in the real output).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from resonate_async._errors import ApplicationError, NotFoundError
from resonate_async._records import PromiseRecord
from resonate_async.core._execution import CALL_TAG
from resonate_async.protocol import (
    TAG_EXTERNAL,
    TAG_ORIGIN,
    TAG_PARENT,
    TAG_TARGET,
    TAG_TIMER,
    origin_of,
)

DETAIL_WIDTH: Final = 60
_UNICODE: Final = ("├── ", "└── ", "│   ", "    ")
_ASCII: Final = ("|-- ", "`-- ", "|   ", "    ")


@dataclass
class Node:
    """One promise of the tree and the promises its function made, in call order."""

    record: PromiseRecord
    children: list[Node] = field(default_factory=list)


def describe(record: PromiseRecord) -> str:
    """What a promise is: ``root NAME``, ``run NAME``, ``rpc NAME``, ``sleep``, ``promise``,
    ``detached NAME`` (the call tag this SDK writes, else read from the tags and the param)."""
    call = record.tags.get(CALL_TAG)
    if call:
        return call
    if record.tags.get(TAG_TIMER) == "true":
        return "sleep"
    if record.tags.get(TAG_EXTERNAL) == "true":
        return "promise"
    name = function_of(record)
    if name is None:
        return "promise"
    is_root = record.id == (record.tags.get(TAG_ORIGIN) or origin_of(record.id))
    return f"{'root' if is_root else 'call'} {name}"


def function_of(record: PromiseRecord) -> str | None:
    """The function name in a root or rpc promise's param, or ``None`` if it carries none."""
    try:
        param = record.param
    except Exception:  # a param another tool wrote: not ours to interpret
        return None
    if isinstance(param, dict) and isinstance(param.get("func"), str):
        return str(param["func"])
    return None


def outcome(record: PromiseRecord) -> tuple[Any, str | None]:
    """``(value, error)`` of a settled record: the decoded value, or the error as text.

    A pending record gives ``(None, None)``; a value that cannot be decoded gives its error.
    """
    if record.pending:
        return None, None
    try:
        return record.result(), None
    except ApplicationError as exc:
        return None, str(exc) or "ApplicationError"
    except Exception as exc:  # the rejection's error, rebuilt: any exception type
        text = str(exc)
        if record.state != "rejected":
            return None, text
        return None, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def summary(record: PromiseRecord, width: int = DETAIL_WIDTH) -> str:
    """A short text for a settled promise: its value as compact JSON, or its error."""
    value, error = outcome(record)
    if error is not None:
        text = error if record.state == "rejected" else ""
    elif value is None:
        text = ""
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def call_order(promise_id: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key for ids: call counters numerically (``r:2`` before ``r:10``), named segments
    (custom ids, ``d<hex>`` of detached calls) after the numbered ones."""
    parts = promise_id.replace(":", ".").split(".")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _segment(parent_id: str, child_id: str) -> str | None:
    """The last segment of ``child_id`` when it is a direct child of ``parent_id`` by id."""
    for sep in (":", "."):
        prefix = parent_id + sep
        if child_id.startswith(prefix) and not any(c in child_id[len(prefix):] for c in ":."):
            return child_id[len(prefix):]
    return None


def _in_call_order(parent_id: str, children: list[Node]) -> list[Node]:
    """The children of one promise in the order its function made them.

    Numbered children (``r:1``, ``r:2``...) go by their counter. A call with a custom id
    also takes a counter but its id does not show it, so the named children, in creation
    order, fill the counters that no numbered child has (when created no later than the
    next numbered child); any left over come last.
    """
    numbered: dict[int, Node] = {}
    named: list[Node] = []
    for child in children:
        segment = _segment(parent_id, child.record.id)
        if segment is not None and segment.isdigit() and int(segment) not in numbered:
            numbered[int(segment)] = child
        else:
            named.append(child)
    if not named:
        return [numbered[k] for k in sorted(numbered)]
    named.sort(key=lambda n: n.record.created_at)  # stable: equal times keep record order
    out: list[Node] = []
    waiting = 0
    counters = sorted(numbered)
    for i, k in enumerate(counters):
        gap = k - (counters[i - 1] if i else 0) - 1
        while gap > 0 and waiting < len(named) \
                and named[waiting].record.created_at <= numbered[k].record.created_at:
            out.append(named[waiting])
            waiting += 1
            gap -= 1
        out.append(numbered[k])
    out.extend(named[waiting:])
    return out


def is_execution(record: PromiseRecord) -> bool:
    """Whether a promise is an execution: a root or an rpc/detached child, which a worker
    runs as a task (it has a target); not a local step, a sleep, or a promise settled from
    outside (``ctx.promise``, ``resonate.promises.create``)."""
    tags = record.tags
    if tags.get(TAG_TIMER) == "true" or tags.get(TAG_EXTERNAL) == "true":
        return False
    return TAG_TARGET in tags


def _lineage_parent(promise_id: str, known: dict[str, PromiseRecord]) -> str | None:
    """The nearest ancestor of ``promise_id`` by id lineage that is among ``known``."""
    current = promise_id
    while True:
        cut = max(current.rfind("."), current.rfind(":"))
        if cut <= 0:
            return None
        current = current[:cut]
        if current in known:
            return current


def build_tree(records: Iterable[PromiseRecord]) -> list[Node]:
    """Link records into trees by ``resonate:parent`` (falling back to id lineage).

    Returns the top-level nodes (usually one: the root), each child list in call order.
    Records whose parent is not among ``records`` become top-level nodes.
    """
    known: dict[str, PromiseRecord] = {}
    for record in records:
        known[record.id] = record
    nodes = {pid: Node(record) for pid, record in known.items()}
    tops: list[Node] = []
    for pid in known:
        parent = known[pid].tags.get(TAG_PARENT)
        if parent == pid or parent not in known:
            parent = _lineage_parent(pid, known)
        if parent is None or parent == pid or _is_below(parent, pid, known):
            tops.append(nodes[pid])
        else:
            nodes[parent].children.append(nodes[pid])
    for node in nodes.values():
        if len(node.children) > 1:
            node.children = _in_call_order(node.record.id, node.children)
    tops.sort(key=lambda n: call_order(n.record.id))
    return tops


def _is_below(candidate: str, pid: str, known: dict[str, PromiseRecord]) -> bool:
    """Whether linking ``pid`` under ``candidate`` would close a cycle (corrupt tags)."""
    seen = {pid}
    current: str | None = candidate
    while current is not None and current in known:
        if current in seen:
            return True
        seen.add(current)
        parent = known[current].tags.get(TAG_PARENT)
        current = None if parent == current else parent
    return False


def render_tree(records: Iterable[PromiseRecord], root_id: str | None = None, *,
                ascii: bool = False) -> str:
    """The call tree of ``records`` as text: one line per promise, children indented.

    Each line shows the id, what the promise is (``describe``), its state and, when settled,
    a short value or error. With ``root_id`` only that promise and what lies below it are
    shown; else every top-level promise with its subtree. ``ascii=True`` draws the tree with
    ``|--`` instead of box-drawing characters.

    Raises ``NotFoundError`` if ``root_id`` is not among ``records``.
    """
    tops = build_tree(records)
    if root_id is not None:
        found = _find(tops, root_id)
        if found is None:
            raise NotFoundError(f"no promise with id {root_id!r} among the records of the tree")
        tops = [found]
    rows: list[tuple[str, str, str, str]] = []
    branch, last, pipe, blank = _ASCII if ascii else _UNICODE

    def walk(node: Node, lead: str, own: str) -> None:
        record = node.record
        rows.append((own + record.id, describe(record), record.state, summary(record)))
        for i, child in enumerate(node.children):
            is_last = i == len(node.children) - 1
            walk(child, lead + (blank if is_last else pipe), lead + (last if is_last else branch))

    for top in tops:
        walk(top, "", "")
    if not rows:
        return ""
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    lines = []
    for row in rows:
        cells = [row[c].ljust(widths[c]) for c in range(3)]
        if row[3]:
            cells.append(row[3])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _find(nodes: list[Node], promise_id: str) -> Node | None:
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.record.id == promise_id:
            return node
        stack.extend(node.children)
    return None
