"""``schedule.*`` operations of the engine and its background work (protocol.md §3.17, §4.4-4.5)."""

from __future__ import annotations

import msgspec

from resonate_async.engine._core import (
    BATCH,
    MAX_FIRINGS_PER_TICK,
    OK_EMPTY,
    Core,
    expired_state,
    page_limit,
    refuse,
    saturated_after,
)
from resonate_async.engine._rules import (
    cron_problem,
    next_cron_time,
    valid_address,
)
from resonate_async.engine._storage import LEASE_TIMER, TaskRow
from resonate_async.protocol import (
    EMPTY_VALUE,
    TAG_BRANCH,
    TAG_ORIGIN,
    TAG_PARENT,
    TAG_PREFIX,
    TAG_SCHEDULE,
    TAG_TARGET,
    Promise,
    Response,
    Schedule,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleGet,
    SchedulePage,
    ScheduleResult,
    ScheduleSearch,
)


class ScheduleOps(Core):
    """schedule.create, get, delete, search; and the tick: timeouts, retries, leases, firings."""

    # schedule.* -----------------------------------------------------------------------------------
    def _schedule_create(self, req: ScheduleCreate, now: int, _: str) -> Response:
        if not req.id:
            refuse(400, "Invalid request: 'id' must not be empty")
        if ":" in req.id:
            refuse(400, "Schedule id must not contain ':'")
        if "\x00" in req.id or "\x00" in req.promise_id:
            refuse(400, "Invalid request: schedule ids and promiseId must not contain NUL")
        if not req.promise_id:
            refuse(400, "Invalid request: 'promiseId' must not be empty")
        if ":" in req.promise_id:
            refuse(400, "promiseId template must not contain ':' (fired ids are roots)")
        target = req.promise_tags.get(TAG_TARGET)
        if target is None:
            refuse(400, "promiseTags must contain resonate:target")
        if not valid_address(target):
            refuse(400, "Invalid resonate:target address")
        if cron_problem(req.cron):
            refuse(400, "Invalid cron expression")
        existing = self.storage.get_schedule(req.id)
        if existing is not None:
            return Response(200, ScheduleResult(existing))
        schedule = Schedule(req.id, req.cron, req.promise_id, req.promise_timeout,
                            req.promise_param, req.promise_tags, now,
                            next_cron_time(req.cron, now))
        self.storage.put_schedule(schedule)
        return Response(200, ScheduleResult(schedule))

    def _schedule_get(self, req: ScheduleGet, now: int, _: str) -> Response:
        s = self.storage.get_schedule(req.id)
        if s is None:
            return Response(404, "Schedule not found")
        return Response(200, ScheduleResult(s))

    def _schedule_delete(self, req: ScheduleDelete, now: int, _: str) -> Response:
        if self.storage.get_schedule(req.id) is None:
            return Response(404, "Schedule not found")
        self.storage.delete_schedule(req.id)
        return OK_EMPTY

    def _schedule_search(self, req: ScheduleSearch, now: int, _: str) -> Response:
        limit = page_limit(req.limit, 10)
        found = self.storage.search_schedules(req.tags, req.cursor, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return Response(200, SchedulePage(found, found[-1].id if more else None))

    # background -----------------------------------------------------------------------------------
    def _tick(self, now: int) -> None:
        storage = self.storage
        while True:
            with storage.transaction():
                due = storage.due_promises(now, BATCH)
                for p in due:
                    self._time_out(p, now)
            if len(due) < BATCH:
                break
        while True:
            with storage.transaction():
                rows = storage.due_tasks(now, BATCH)
                for row in rows:
                    if row.timer == LEASE_TIMER:
                        self._redispatch(row, now)
                    else:
                        self._dispatch(row, now)
            if len(rows) < BATCH:
                break
        fired = 0
        while fired < MAX_FIRINGS_PER_TICK:  # a long downtime catches up over several ticks
            with storage.transaction():
                schedules = storage.due_schedules(now, BATCH)
                for s in schedules:
                    self._fire(s, now)
            if not schedules:
                break
            fired += len(schedules)

    def _fire(self, s: Schedule, now: int) -> None:
        """Fire one occurrence of a schedule (protocol.md §4.5) and move it to the next."""
        at = s.next_run_at
        pid = s.promise_id.replace("{{.id}}", s.id).replace("{{.timestamp}}", str(at))
        if self.storage.get_promise(pid) is None:
            tags = {**s.promise_tags, TAG_SCHEDULE: s.id, TAG_ORIGIN: pid, TAG_BRANCH: pid,
                    TAG_PARENT: pid, TAG_PREFIX: pid}
            timeout_at = saturated_after(at, s.promise_timeout)
            if now >= timeout_at:
                p = Promise(pid, expired_state(tags), s.promise_param, EMPTY_VALUE, tags,
                            timeout_at, at, timeout_at)
                self.storage.insert_promise(p, armed=False)
                self.storage.put_task(TaskRow(pid, "fulfilled", 0))
            else:
                p = Promise(pid, "pending", s.promise_param, EMPTY_VALUE, tags, timeout_at, at)
                self.storage.insert_promise(p, armed=True)
                self._dispatch(TaskRow(pid, "pending", 0), now)
        self.storage.put_schedule(msgspec.structs.replace(
            s, last_run_at=at, next_run_at=next_cron_time(s.cron, at)))


