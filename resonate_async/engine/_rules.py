"""Validation rules of the engine: addresses, lineage tags, delays and cron expressions."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from urllib.parse import urlsplit

from croniter import croniter

from resonate_async.protocol import (
    TAG_BRANCH,
    TAG_DELAY,
    TAG_EXTERNAL,
    TAG_ORIGIN,
    TAG_PARENT,
    TAG_PREFIX,
    TAG_TARGET,
    TAG_TIMER,
    PromiseCreate,
    extends,
)

_SCHEMES = frozenset(("poll", "http", "https", "gcps", "bash"))


@functools.lru_cache(maxsize=4096)
def valid_address(address: str) -> bool:
    """Whether ``address`` is a deliverable address (protocol.md §1.7)."""
    try:
        parts = urlsplit(address)
    except ValueError:
        return False
    if parts.scheme not in _SCHEMES:
        return False
    if parts.scheme == "poll":
        return parts.username in ("uni", "any") and bool(parts.hostname) and not parts.password
    return bool(parts.netloc)


def is_timer(tags: dict[str, str]) -> bool:
    return tags.get(TAG_TIMER) == "true"


def is_awaitable(tags: dict[str, str]) -> bool:
    """Runnable (targeted), timer or external promises may be awaited; local steps may not."""
    return TAG_TARGET in tags or tags.get(TAG_TIMER) == "true" or tags.get(TAG_EXTERNAL) == "true"


def create_problem(data: PromiseCreate) -> str | None:
    """What makes a ``promise.create`` payload invalid, or ``None`` (protocol.md §3.2, §2.6)."""
    pid, tags = data.id, data.tags
    if not pid:
        return "Invalid request: 'id' must not be empty"
    if "\x00" in pid:
        return "Invalid request: 'id' must not contain NUL characters"
    origin = tags.get(TAG_ORIGIN)
    if origin is not None:
        if ":" in origin:
            return "resonate:origin must not contain ':'"
        if not extends(pid, origin):
            return f"Promise id '{pid}' must equal resonate:origin '{origin}' or extend it"
    for tag in (TAG_BRANCH, TAG_PARENT):
        ancestor = tags.get(tag)
        if ancestor is not None and not extends(pid, ancestor):
            return f"Promise id '{pid}' must equal {tag} '{ancestor}' or extend it"
    prefix = tags.get(TAG_PREFIX)
    if prefix is not None and ":" in prefix:
        return "resonate:prefix must not contain ':'"
    target = tags.get(TAG_TARGET)
    if target is not None and not valid_address(target):
        return "Invalid resonate:target address"
    delay = tags.get(TAG_DELAY)
    if delay is not None:
        if target is None:
            return "resonate:delay requires resonate:target"
        if not (delay.isascii() and delay.isdigit()):
            return "resonate:delay must be a non-negative integer (ms since the epoch)"
        if int(delay) >= data.timeout_at:
            return "resonate:delay must be before timeoutAt"
    return None


def _cron(expression: str, start: datetime) -> croniter:
    fields = expression.split()
    if len(fields) not in (5, 6, 7):
        raise ValueError(expression)
    return croniter(expression, start, second_at_beginning=len(fields) > 5)


def cron_problem(expression: str) -> str | None:
    try:
        _cron(expression, datetime.fromtimestamp(0, UTC)).get_next(float)
    except Exception:  # croniter raises several unrelated types for bad input
        return "Invalid cron expression"
    return None


def next_cron_time(expression: str, after_ms: int) -> int:
    """The first occurrence of ``expression`` (UTC) strictly after ``after_ms``, in ms."""
    start = datetime.fromtimestamp(after_ms // 1000, UTC)
    it = _cron(expression, start)
    while True:
        nxt = int(it.get_next(float) * 1000)
        if nxt > after_ms:
            return nxt
