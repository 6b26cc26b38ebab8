"""In-memory storage: dicts for records, heaps for deadlines, sorted ids for search."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Final

from resonate_async.engine._storage import TaskRow, tags_match
from resonate_async.protocol import TAG_BRANCH, Message, Promise, PromiseState, Schedule, TaskState

CHUNK: Final = 512


class SortedIds:
    """Ids in byte-wise order, in chunks of at most ``2 * CHUNK``.

    One sorted list would move half of its items at every insertion: 190 us per new promise
    with a million ids stored. Chunks make an insertion O(CHUNK + n / CHUNK).
    """

    def __init__(self) -> None:
        self._chunks: list[list[str]] = []
        self._maxes: list[str] = []  # the last id of each chunk

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks)

    def add(self, item: str) -> None:
        """Add ``item`` (the caller knows it is not there yet)."""
        chunks, maxes = self._chunks, self._maxes
        if not chunks:
            chunks.append([item])
            maxes.append(item)
            return
        i = bisect.bisect_left(maxes, item)
        if i == len(maxes):
            i -= 1
            chunks[i].append(item)
            maxes[i] = item
        else:
            bisect.insort(chunks[i], item)
        chunk = chunks[i]
        if len(chunk) > 2 * CHUNK:
            tail = chunk[CHUNK:]
            del chunk[CHUNK:]
            chunks.insert(i + 1, tail)
            maxes[i] = chunk[-1]
            maxes.insert(i + 1, tail[-1])

    def remove(self, item: str) -> None:
        """Remove ``item`` if it is there."""
        chunks, maxes = self._chunks, self._maxes
        i = bisect.bisect_left(maxes, item)
        if i == len(maxes):
            return
        chunk = chunks[i]
        j = bisect.bisect_left(chunk, item)
        if j == len(chunk) or chunk[j] != item:
            return
        del chunk[j]
        if not chunk:
            del chunks[i]
            del maxes[i]
        else:
            maxes[i] = chunk[-1]

    def after(self, cursor: str | None) -> Iterator[str]:
        """The ids after ``cursor`` (every id if ``None``), in order."""
        chunks = self._chunks
        i = j = 0
        if cursor is not None:
            i = bisect.bisect_right(self._maxes, cursor)
            if i < len(chunks):
                j = bisect.bisect_right(chunks[i], cursor)
        for k in range(i, len(chunks)):
            yield from chunks[k][j:] if j else chunks[k]
            j = 0


class Links:
    """A many-to-many relation of ids, each side indexed: one link of an id is held as the
    other id itself, more as a set (most promises have one awaiter and most tasks wait on one
    promise, where a set each would cost ~220 bytes per suspended workflow)."""

    __slots__ = ("_of",)

    def __init__(self) -> None:
        self._of: dict[str, str | set[str]] = {}

    def add(self, key: str, other: str) -> None:
        of = self._of
        found = of.get(key)
        if found is None:
            of[key] = other
        elif isinstance(found, str):
            if found != other:
                of[key] = {found, other}
        else:
            found.add(other)

    def pop(self, key: str) -> tuple[str, ...] | set[str]:
        """The ids linked to ``key`` (forgotten here)."""
        found = self._of.pop(key, None)
        if found is None:
            return ()
        return (found,) if isinstance(found, str) else found

    def discard(self, key: str, other: str) -> None:
        of = self._of
        found = of.get(key)
        if found is None:
            return
        if isinstance(found, str):
            if found == other:
                del of[key]
            return
        found.discard(other)
        if not found:
            del of[key]


class MemoryStorage:
    """Everything in process memory; gone when the process ends.

    Deadlines live in heaps with lazy deletion: an entry counts only while it matches the
    current ``(time, sequence)`` of its record, so re-arming never scans.
    """

    def __init__(self) -> None:
        self._promises: dict[str, Promise] = {}
        self._promise_ids = SortedIds()
        # branch -> its promise ids (each once): one id as itself, several as a list (most
        # branches hold one promise, an rpc's or a root's own: no list per promise then)
        self._branches: dict[str, str | list[str]] = {}
        self._armed: dict[str, int] = {}
        self._promise_heap: list[tuple[int, str]] = []
        self._tasks: dict[str, TaskRow] = {}
        self._task_ids = SortedIds()
        self._task_timer: dict[str, tuple[int, int]] = {}
        self._task_heap: list[tuple[int, str, int]] = []
        self._seq = 0
        self._callbacks = Links()  # awaited promise -> awaiting tasks
        self._awaiting = Links()  # awaiting task -> awaited promises
        self._listeners: dict[str, dict[str, None]] = {}
        self._schedules: dict[str, Schedule] = {}
        self._schedule_ids = SortedIds()
        self._schedule_heap: list[tuple[int, str]] = []
        self._outbox: dict[tuple[str, ...], tuple[str, Message]] = {}
        self._written: int | None = None

    def transaction(self) -> AbstractContextManager[None]:
        return nullcontext()

    def close(self) -> None:
        pass

    # promises -----------------------------------------------------------------------------
    def get_promise(self, promise_id: str) -> Promise | None:
        return self._promises.get(promise_id)

    def insert_promise(self, promise: Promise, *, armed: bool) -> None:
        pid = promise.id
        self._promises[pid] = promise
        self._promise_ids.add(pid)
        branch = promise.tags.get(TAG_BRANCH)
        if branch is not None:
            branches = self._branches
            found = branches.get(branch)  # pid is a new id: not there yet
            if found is None:
                branches[branch] = pid
            elif isinstance(found, str):
                branches[branch] = [found, pid]
            else:
                found.append(pid)
        if armed and promise.state == "pending":
            self._armed[pid] = promise.timeout_at
            self._wrote(promise.timeout_at)
            heapq.heappush(self._promise_heap, (promise.timeout_at, pid))

    def update_promise(self, promise: Promise) -> None:
        self._promises[promise.id] = promise
        if promise.state != "pending":
            self._armed.pop(promise.id, None)

    def branch_promises(self, branch: str) -> list[Promise]:
        ids = self._branches.get(branch)
        if not ids:
            return []
        promises = self._promises
        if isinstance(ids, str):
            return [promises[ids]]
        return [promises[i] for i in sorted(ids)]

    def due_promises(self, now: int, limit: int) -> list[Promise]:
        heap, armed = self._promise_heap, self._armed
        out: list[Promise] = []
        seen: set[str] = set()
        while heap and heap[0][0] <= now and len(out) < limit:
            at, pid = heapq.heappop(heap)
            if armed.get(pid) == at and pid not in seen:
                seen.add(pid)
                out.append(self._promises[pid])
        for p in out:  # still armed until the engine settles them
            heapq.heappush(heap, (p.timeout_at, p.id))
        return out

    def search_promises(
        self, state: PromiseState | None, tags: dict[str, str] | None, cursor: str | None,
        limit: int,
    ) -> list[Promise]:
        promises = self._promises
        out = []
        for pid in self._promise_ids.after(cursor):
            p = promises[pid]
            if (state is None or p.state == state) and tags_match(p.tags, tags):
                out.append(p)
                if len(out) == limit:
                    break
        return out

    # tasks --------------------------------------------------------------------------------
    def get_task(self, task_id: str) -> TaskRow | None:
        return self._tasks.get(task_id)

    def put_task(self, row: TaskRow) -> None:
        tid = row.id
        if tid not in self._tasks:
            self._task_ids.add(tid)
        self._tasks[tid] = row
        if row.timer_at is None:
            self._task_timer.pop(tid, None)
        else:
            current = self._task_timer.get(tid)
            if current is None or current[0] != row.timer_at:
                self._seq += 1
                self._wrote(row.timer_at)
                self._task_timer[tid] = (row.timer_at, self._seq)
                heapq.heappush(self._task_heap, (row.timer_at, tid, self._seq))

    def due_tasks(self, now: int, limit: int) -> list[TaskRow]:
        heap, timers = self._task_heap, self._task_timer
        out: list[TaskRow] = []
        popped = []
        while heap and heap[0][0] <= now and len(out) < limit:
            entry = heapq.heappop(heap)
            if timers.get(entry[1]) == (entry[0], entry[2]):
                popped.append(entry)
                out.append(self._tasks[entry[1]])
        for entry in popped:
            heapq.heappush(heap, entry)
        out.sort(key=lambda r: (r.timer_at, r.id))
        return out

    def search_tasks(self, state: TaskState | None, cursor: str | None,
                     limit: int) -> list[TaskRow]:
        tasks = self._tasks
        out = []
        for tid in self._task_ids.after(cursor):
            row = tasks[tid]
            if state is None or row.state == state:
                out.append(row)
                if len(out) == limit:
                    break
        return out

    def acquired_tasks(self) -> list[TaskRow]:
        return sorted((r for r in self._tasks.values() if r.state == "acquired"),
                      key=lambda r: r.id)

    # callbacks ----------------------------------------------------------------------------
    def add_callback(self, awaited: str, awaiter: str) -> None:
        self._callbacks.add(awaited, awaiter)
        self._awaiting.add(awaiter, awaited)

    def take_callbacks(self, awaited: str) -> list[str]:
        awaiters = self._callbacks.pop(awaited)
        for awaiter in awaiters:
            self._awaiting.discard(awaiter, awaited)
        return sorted(awaiters)

    def drop_callbacks_of(self, awaiter: str) -> None:
        for awaited in self._awaiting.pop(awaiter):
            self._callbacks.discard(awaited, awaiter)

    # listeners ----------------------------------------------------------------------------
    def add_listener(self, promise_id: str, address: str) -> None:
        self._listeners.setdefault(promise_id, {})[address] = None

    def take_listeners(self, promise_id: str) -> list[str]:
        return list(self._listeners.pop(promise_id, ()))

    # schedules ----------------------------------------------------------------------------
    def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self._schedules.get(schedule_id)

    def put_schedule(self, schedule: Schedule) -> None:
        sid = schedule.id
        old = self._schedules.get(sid)
        if old is None:
            self._schedule_ids.add(sid)
        self._schedules[sid] = schedule
        if old is None or old.next_run_at != schedule.next_run_at:
            self._wrote(schedule.next_run_at)
            heapq.heappush(self._schedule_heap, (schedule.next_run_at, sid))

    def delete_schedule(self, schedule_id: str) -> None:
        if self._schedules.pop(schedule_id, None) is not None:
            self._schedule_ids.remove(schedule_id)

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        heap = self._schedule_heap
        out: list[Schedule] = []
        seen: set[str] = set()
        while heap and heap[0][0] <= now and len(out) < limit:
            at, sid = heapq.heappop(heap)
            s = self._schedules.get(sid)
            if s is not None and s.next_run_at == at and sid not in seen:
                seen.add(sid)
                out.append(s)
        for s in out:
            heapq.heappush(heap, (s.next_run_at, s.id))
        return out

    def search_schedules(self, tags: dict[str, str] | None, cursor: str | None,
                         limit: int) -> list[Schedule]:
        schedules = self._schedules
        out = []
        for sid in self._schedule_ids.after(cursor):
            s = schedules[sid]
            if tags_match(s.promise_tags, tags):
                out.append(s)
                if len(out) == limit:
                    break
        return out

    # outbox -------------------------------------------------------------------------------
    def push_execute(self, task_id: str, address: str, message: Message) -> None:
        self._outbox[("e", task_id)] = (address, message)

    def push_unblock(self, promise_id: str, address: str, message: Message) -> None:
        self._outbox.setdefault(("u", promise_id, address), (address, message))

    def take_outbox(self) -> list[tuple[str, Message]]:
        out = list(self._outbox.values())
        self._outbox.clear()
        return out

    def next_written_deadline(self) -> int | None:
        written, self._written = self._written, None
        return written

    def _wrote(self, deadline: int) -> None:
        if self._written is None or deadline < self._written:
            self._written = deadline

    def next_due(self) -> int | None:
        candidates = []
        heap = self._promise_heap
        while heap and self._armed.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        if heap:
            candidates.append(heap[0][0])
        theap = self._task_heap
        while theap and self._task_timer.get(theap[0][1]) != (theap[0][0], theap[0][2]):
            heapq.heappop(theap)
        if theap:
            candidates.append(theap[0][0])
        sheap = self._schedule_heap
        while sheap and (
            (s := self._schedules.get(sheap[0][1])) is None or s.next_run_at != sheap[0][0]
        ):
            heapq.heappop(sheap)
        if sheap:
            candidates.append(sheap[0][0])
        return min(candidates) if candidates else None
