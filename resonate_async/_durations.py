"""Durations given by users (seconds as numbers, or ``timedelta``), checked in one place."""

from __future__ import annotations

import math
from datetime import timedelta


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
