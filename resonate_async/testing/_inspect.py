"""Look inside an execution: its promises as a tree (id, what, state, value)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resonate_async._client import Resonate
from resonate_async._records import PromiseRecord
from resonate_async._tree import Node, build_tree, describe, outcome, render_tree
from resonate_async.protocol import TAG_ORIGIN, origin_of


@dataclass
class Step:
    """One promise of an execution and the calls its function made, in call order."""

    id: str
    call: str
    """What it is: ``root NAME``, ``run NAME``, ``rpc NAME``, ``sleep``, ``promise``, ..."""
    state: str
    value: Any
    error: str | None
    children: list[Step] = field(default_factory=list)

    def find(self, promise_id: str) -> Step | None:
        """The step with ``promise_id`` in this subtree, if any."""
        if self.id == promise_id:
            return self
        for child in self.children:
            found = child.find(promise_id)
            if found is not None:
                return found
        return None

    def walk(self) -> list[Step]:
        """This step and every step below it, depth first in call order."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


def _step(node: Node) -> Step:
    value, error = outcome(node.record)
    return Step(node.record.id, describe(node.record), node.record.state, value, error,
                [_step(child) for child in node.children])


async def execution_records(resonate: Resonate, promise_id: str) -> list[PromiseRecord]:
    """Every promise of the execution that ``promise_id`` belongs to."""
    origin = origin_of(promise_id)
    return [p async for p in resonate.promises.search(tags={TAG_ORIGIN: origin})]


async def execution_tree(resonate: Resonate, promise_id: str) -> Step:
    """The call tree under ``promise_id``: ``tree.walk()``, ``tree.find(id)``, ``.children``.

    Raises ``NotFoundError`` if there is no such promise.
    """
    records = await execution_records(resonate, promise_id)
    if not any(r.id == promise_id for r in records):
        records.append(await resonate.promises.get(promise_id))
    tops = build_tree(records)
    stack = list(tops)
    while stack:
        node = stack.pop()
        if node.record.id == promise_id:
            return _step(node)
        stack.extend(node.children)
    raise AssertionError(f"{promise_id} vanished from its own tree")  # pragma: no cover


async def render_execution(resonate: Resonate, promise_id: str) -> str:
    """The call tree under ``promise_id`` as text, one line per promise (for test output)."""
    records = await execution_records(resonate, promise_id)
    if not any(r.id == promise_id for r in records):
        records.append(await resonate.promises.get(promise_id))
    return render_tree(records, promise_id)
