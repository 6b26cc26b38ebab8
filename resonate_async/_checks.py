"""Values users give the API, checked in one place: durations and tags."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from resonate_async.protocol._ids import lone_surrogate


def milliseconds(value: float | timedelta, what: str, *, allow_zero: bool = False) -> int:
    """``value`` in whole milliseconds; raises ``ValueError`` naming ``what`` when it is not
    a finite, positive (or, with ``allow_zero``, non-negative) duration."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (not isinstance(seconds, int | float) or isinstance(seconds, bool)
            or not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero)):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{what} must be {kind}, finite number of seconds or a timedelta, "
                         f"got {value!r}")
    return int(seconds * 1000)


def tags_problem(tags: Mapping[Any, Any] | None, *, reserved_ok: bool) -> str | None:
    """What is wrong with user ``tags`` (``None`` when nothing): they map str to str, and keys
    starting with ``resonate:`` belong to the protocol unless ``reserved_ok`` (search filters)."""
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            return f"tags must map str to str, got {key!r}: {value!r}"
        if lone_surrogate(key) is not None or lone_surrogate(value) is not None:
            return (f"tag {key!r}: {value!r} is not valid Unicode text (it holds a lone "
                    "surrogate) and tags travel as UTF-8; decode the bytes properly")
        if not reserved_ok and key.startswith("resonate:"):
            return (f"tag {key!r}: the 'resonate:' prefix is reserved for the protocol; "
                    "choose another key")
    return None
