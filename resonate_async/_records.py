"""What users read back about promises and schedules: records with decoded values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

from resonate_async._codec import Codec
from resonate_async.protocol import Promise, Schedule

T = TypeVar("T")


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class PromiseRecord:
    """A durable promise as the engine holds it.

    ``state`` is ``pending``, ``resolved``, ``rejected``, ``rejected_canceled`` or
    ``rejected_timedout``. ``result()`` decodes the value (or raises the error it was
    rejected with).
    """

    id: str
    state: str
    tags: dict[str, str]
    timeout_at: datetime
    created_at: datetime
    settled_at: datetime | None
    _promise: Promise = field(repr=False, compare=False)
    _codec: Codec = field(repr=False, compare=False)

    @classmethod
    def of(cls, promise: Promise, codec: Codec) -> PromiseRecord:
        """The record of a wire ``Promise``, whose values ``codec`` decodes on demand."""
        created = _at(promise.created_at)
        timeout = _at(promise.timeout_at)
        assert created is not None and timeout is not None
        return cls(promise.id, promise.state, dict(promise.tags), timeout, created,
                   _at(promise.settled_at), promise, codec)

    @property
    def pending(self) -> bool:
        """Whether nobody has settled the promise yet."""
        return self.state == "pending"

    @overload
    def result(self) -> Any: ...

    @overload
    def result(self, type: type[T]) -> T: ...

    @overload
    def result(self, type: Any) -> Any: ...

    def result(self, type: Any = Any) -> Any:
        """The resolved value (converted to ``type``, and typed so: ``record.result(Order)``
        is an ``Order``), or raise the rejection's error.

        Raises ``ResonateError`` if the promise is still pending.
        """
        if self.pending:
            from resonate_async._errors import ResonateError

            raise ResonateError(f"promise {self.id!r} is still pending: it has no result yet")
        return self._codec.outcome(self._promise, type, what=f"value of {self.id}")

    @property
    def param(self) -> Any:
        """The promise's ``param``, decoded (``None`` when it has none)."""
        return self._codec.decode(self._promise.param, what=f"param of {self.id}")


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule: every time ``cron`` fires, a new execution of its function starts."""

    id: str
    cron: str
    function: str
    promise_id: str
    promise_timeout_ms: int
    created_at: datetime
    next_run_at: datetime
    last_run_at: datetime | None

    @classmethod
    def of(cls, schedule: Schedule, codec: Codec) -> ScheduleRecord:
        """The record of a wire ``Schedule`` (``function`` is ``""`` when its param names
        none)."""
        try:
            function = codec.decode_invocation(schedule.promise_param).func
        except Exception:  # a schedule made by another tool may carry anything
            function = ""
        created, nxt = _at(schedule.created_at), _at(schedule.next_run_at)
        assert created is not None and nxt is not None
        return cls(schedule.id, schedule.cron, function, schedule.promise_id,
                   schedule.promise_timeout, created, nxt, _at(schedule.last_run_at))
