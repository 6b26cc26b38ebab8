"""Requests of the official SDKs that the dev server accepts although the engine refuses them.

The engine follows the server snapshot of protocol.md; the official Python SDK (0.8.x) sends a
few requests that the snapshot refuses but that newer Resonate servers accept. The dev server
must run that SDK's workflows (``nox -s interop``), so it adapts those requests here, before
the engine sees them, and keeps the engine strict.

* ``task.heartbeat`` with tasks of several origins (protocol.md §10.5, §12.3): the official SDK
  renews every lease of its process in one request; the snapshot refuses a mixed batch with
  ``400``, which lets those leases lapse while the work runs (the SDK then loses every task
  and retries it forever). The dev server, which has a single shard, splits the batch into one
  heartbeat per origin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from resonate_async.protocol import origin_of

_HEARTBEAT: Final = b'"task.heartbeat"'


class _TaskRef(msgspec.Struct):
    id: str


class _HeartbeatData(msgspec.Struct):
    tasks: list[_TaskRef]


class _Heartbeat(msgspec.Struct):
    kind: str
    data: _HeartbeatData


class _Status(msgspec.Struct):
    status: int


class _Answer(msgspec.Struct):
    head: _Status


_heartbeat_decoder = msgspec.json.Decoder(_Heartbeat)
_raw_decoder = msgspec.json.Decoder(dict[str, Any])
_answer_decoder = msgspec.json.Decoder(_Answer)


def split_heartbeat(body: bytes) -> list[bytes] | None:
    """One body per origin for a ``task.heartbeat`` whose tasks span several origins.

    ``None`` for any other request (and for a heartbeat the engine should judge as sent: a
    single origin, or a body it will refuse anyway). Each part keeps the original head, so
    its answer echoes the request's ``corrId``.
    """
    if _HEARTBEAT not in body:
        return None
    try:
        parsed = _heartbeat_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    if parsed.kind != "task.heartbeat":
        return None
    origins = {origin_of(t.id) for t in parsed.data.tasks}
    if len(origins) < 2:
        return None
    raw = _raw_decoder.decode(body)
    by_origin: dict[str, list[Any]] = {}
    for task in raw["data"]["tasks"]:
        by_origin.setdefault(origin_of(task["id"]), []).append(task)
    return [msgspec.json.encode({**raw, "data": {**raw["data"], "tasks": tasks}})
            for tasks in by_origin.values()]


def handle_split(parts: list[bytes], handle: Callable[[bytes], bytes]) -> bytes:
    """Handle every part; the answer is the first one that is not a success, else the last."""
    answer = b""
    for part in parts:
        answer = handle(part)
        try:
            status = _answer_decoder.decode(answer).head.status
        except msgspec.DecodeError:
            return answer
        if status != 200:
            return answer
    return answer
