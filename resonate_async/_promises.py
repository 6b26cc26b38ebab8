"""``resonate.promises`` and ``resonate.schedules``: durable promises and cron schedules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from resonate_async._checks import milliseconds, tags_problem
from resonate_async._errors import ApplicationError, RegistrationError, ResonateError
from resonate_async._records import PromiseRecord, ScheduleRecord
from resonate_async._status import expect_ok
from resonate_async.core._execution import halt_unrun_task, pending_descendants
from resonate_async.protocol import (
    TAG_EXTERNAL,
    TAG_TARGET,
    TAG_TIMER,
    PromiseCreate,
    PromiseGet,
    PromiseSearch,
    PromiseSettle,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleGet,
    ScheduleSearch,
    SettleState,
    Value,
    check_root_id,
)
from resonate_async.protocol._ids import check_id
from resonate_async.protocol._records import TIMER_TARGET

if TYPE_CHECKING:
    from resonate_async._client import Resonate

SCHEDULE_TEMPLATE: Final = "{{.id}}-{{.timestamp}}"


def _check_tags(tags: dict[str, str] | None) -> dict[str, str]:
    problem = tags_problem(tags, reserved_ok=True)  # searching by resonate:* tags is fine
    if problem:
        raise TypeError(problem)
    return dict(tags or {})


class Promises:
    """Durable promises by id: create them, settle them from outside, read and search them.

    A promise created here (or by ``ctx.promise()``) is settled by whoever holds its id:
    ``await resonate.promises.resolve(id, value)``. Settling is first-writer-wins: the record
    returned tells which state the promise is really in.
    """

    def __init__(self, client: Resonate) -> None:
        self._client = client

    async def create(self, id: str, *, timeout: float | timedelta,
                     param: Any = None, tags: dict[str, str] | None = None) -> PromiseRecord:
        """Create promise ``id`` (or return the existing one) that times out after
        ``timeout``; it can be awaited (``resonate.get(id)``) and settled from outside."""
        check_root_id(id)
        client = self._client
        # A target, so that servers fire its deadline (see TIMER_TARGET): nobody runs it.
        all_tags = {**_check_tags(tags), TAG_EXTERNAL: "true", TAG_TARGET: TIMER_TARGET}
        deadline = client.clock.now_ms() + milliseconds(timeout, "timeout", allow_zero=True)
        value = client.codec.encode(param, what=f"param of promise {id!r}")
        record = await self._one(PromiseCreate(id, deadline, value, all_tags), id)
        if record.state == "pending":
            await halt_unrun_task(client.send, id)
        return record

    async def get(self, id: str) -> PromiseRecord:
        """The promise ``id``; raises ``NotFoundError`` if there is none."""
        return await self._one(PromiseGet(id), id)

    async def resolve(self, id: str, value: Any = None) -> PromiseRecord:
        """Resolve promise ``id`` with ``value`` (no-op if it is settled already)."""
        encoded = self._client.codec.encode(value, what=f"value of promise {id!r}")
        return await self._settle(id, "resolved", encoded)

    async def reject(self, id: str, error: BaseException | str) -> PromiseRecord:
        """Reject promise ``id`` with ``error`` (an exception, or a message)."""
        exc = error if isinstance(error, BaseException) else ApplicationError(str(error))
        return await self._settle(id, "rejected", self._client.codec.encode_error(exc))

    async def cancel(self, id: str) -> PromiseRecord:
        """Cancel promise ``id``: awaiting it raises ``CanceledError``.

        For an execution, its pending descendants (rpc children, their children, sleeps,
        promises) are cancelled too, from the top down, and the worker running it stops within
        half a lease; detached work is not a descendant and keeps running. A descendant that
        settled first keeps its outcome. Raises ``ResonateError`` if the server refuses to
        search for the descendants (a token scoped to an id prefix may not search); the
        promise itself is cancelled by then.
        """
        record = await self._settle(id, "rejected_canceled", Value())
        if record.tags.get(TAG_EXTERNAL) or record.tags.get(TAG_TIMER):
            return record  # a promise nobody runs has no descendants
        # From the top down: a child cancelled after its own children would wake up in
        # between (its wait cancelled) and fail first, ending "rejected". Searched again until
        # a search finds nothing new: a child still running while the cancel is under way may
        # create promises after a search, until it is cancelled itself.
        done: set[str] = set()
        while True:
            try:
                below = sorted((c for c in await pending_descendants(self._client.send, id)
                                if c not in done), key=lambda c: (c.count(".") + c.count(":"), c))
            except ResonateError as exc:
                raise ResonateError(f"{id!r} is cancelled, but its descendants could not be "
                                    f"found to cancel them: {exc}") from None
            if not below:
                return record
            for child in below:
                await self._settle(child, "rejected_canceled", Value())
                done.add(child)

    async def search(self, *, state: str | None = None, tags: dict[str, str] | None = None,
                     page_size: int = 100) -> AsyncIterator[PromiseRecord]:
        """Every promise matching ``state`` and all of ``tags``, by id, page by page."""
        client = self._client
        cursor: str | None = None
        while True:
            response = await client.send(PromiseSearch(
                state, _check_tags(tags) or None, page_size, cursor))  # type: ignore[arg-type]
            expect_ok(response, "promise.search")
            for p in response.data.promises:
                yield PromiseRecord.of(p, client.codec)
            cursor = response.data.cursor
            if cursor is None:
                return

    async def _settle(self, id: str, state: SettleState, value: Value) -> PromiseRecord:
        return await self._one(PromiseSettle(id, state, value), id)

    async def _one(self, request: Any, id: str) -> PromiseRecord:
        check_id(id)  # a clear InvalidIdError, not a raw UnicodeEncodeError or a 500
        client = self._client
        response = await client.send(request)
        expect_ok(response, request.KIND, subject=repr(id))
        client._on_settled(response.data.promise)
        return PromiseRecord.of(response.data.promise, client.codec)


class Schedules:
    """Cron schedules: each firing starts a new execution of a registered function."""

    def __init__(self, client: Resonate) -> None:
        self._client = client

    async def create(self, id: str, cron: str, fn: str | Callable[..., Any], /,
                     *args: Any, timeout: float | timedelta = timedelta(days=1),
                     target: str | None = None, **kwargs: Any) -> ScheduleRecord:
        """Fire ``fn(*args, **kwargs)`` on ``cron`` (5 fields, UTC; 6 with leading seconds).

        Each firing is an execution with id ``{id}-{fire time in ms}``, run by a worker of
        ``target`` (default: this worker's group) within ``timeout``. Creating an existing
        schedule id returns it unchanged.
        """
        client = self._client
        check_root_id(id)
        if isinstance(fn, str):
            name, version = fn, 1
            found = client.registry.lookup_name(fn)
            if found is not None:
                version = found.version
                found.check_call(args, kwargs)
        else:
            registered = client.registry.lookup(fn)
            if registered is None:
                raise RegistrationError(
                    f"{getattr(fn, '__qualname__', fn)} is not registered: decorate it with "
                    "@resonate.register before scheduling it")
            name, version = registered.name, registered.version
            registered.check_call(args, kwargs)
        param = client.codec.encode_invocation(name, args, kwargs, version)
        timeout_ms = milliseconds(timeout, "timeout", allow_zero=True)
        request = ScheduleCreate(id, cron, SCHEDULE_TEMPLATE, timeout_ms, param,
                                 {"resonate:target": client.target(target)})
        response = await client.send(request)
        expect_ok(response, "schedule.create", subject=repr(id))
        return ScheduleRecord.of(response.data.schedule, client.codec)

    async def get(self, id: str) -> ScheduleRecord:
        """The schedule ``id``; raises ``NotFoundError`` if there is none."""
        response = await self._client.send(ScheduleGet(id))
        expect_ok(response, "schedule.get", subject=repr(id))
        return ScheduleRecord.of(response.data.schedule, self._client.codec)

    async def delete(self, id: str) -> None:
        """Stop schedule ``id`` (executions it already started go on)."""
        response = await self._client.send(ScheduleDelete(id))
        expect_ok(response, "schedule.delete", subject=repr(id))

    async def search(self, *, page_size: int = 100) -> AsyncIterator[ScheduleRecord]:
        """Every schedule, by id."""
        client = self._client
        cursor: str | None = None
        while True:
            response = await client.send(ScheduleSearch(None, page_size, cursor))
            expect_ok(response, "schedule.search")
            for s in response.data.schedules:
                yield ScheduleRecord.of(s, client.codec)
            cursor = response.data.cursor
            if cursor is None:
                return
