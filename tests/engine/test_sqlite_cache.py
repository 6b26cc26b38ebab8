"""SQLite keeps decoded settled records in memory within a byte bound, and reads stay right.

With 1 MB step results a count bound let an embedded engine grow to gigabytes (issue 11,
item 7): the bound is on bytes, whatever the size of the values. And what a durable step
costs must not grow with the database: every statement it runs is an index search.
"""

from __future__ import annotations

import base64
import gc
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resonate_async.engine import Engine
from resonate_async.engine._cache import RECORD_OVERHEAD, SettledCache
from resonate_async.engine._memory import CHUNK, SortedIds
from resonate_async.engine._sqlite import SqliteStorage
from resonate_async.protocol import Promise, Value
from tests.engine.conftest import RETRY, Client, child_tags, root_tags

BOUND = 256 * 1024


def data(i: int, size: int) -> str:
    """``size`` bytes of base64 text, different for each ``i``."""
    raw = i.to_bytes(4, "big") * (size * 3 // 16 + 1)
    return base64.b64encode(raw).decode()[:size]


def cached_bytes(client: Client) -> int:
    storage = client.engine.storage
    assert isinstance(storage, SqliteStorage)
    return storage.cached_bytes


def settle_with(client: Client, promise_id: str, value: str) -> None:
    reply = client.settle(promise_id, value={"data": value})
    assert reply.status == 200, reply


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    c = Client(Engine.sqlite(str(tmp_path / "cache.db"), retry_timeout=RETRY,
                             cache_bytes=BOUND))
    yield c
    c.engine.close()


def test_cache_stays_within_its_byte_bound_while_settled_values_outgrow_it(
        client: Client) -> None:
    values = {f"p{i}": data(i, 32 * 1024) for i in range(40)}  # 1.25 MiB in all
    for pid, value in values.items():
        client.create(pid)
        settle_with(client, pid, value)
        assert cached_bytes(client) <= BOUND
    assert cached_bytes(client) > 0  # the cache is in use, not merely empty
    for pid, value in values.items():
        assert client.promise(pid)["value"]["data"] == value
        assert cached_bytes(client) <= BOUND


def test_a_value_larger_than_the_whole_cache_is_read_back_intact(client: Client) -> None:
    huge = data(7, 1024 * 1024)
    client.create("huge")
    settle_with(client, "huge", huge)
    assert cached_bytes(client) <= BOUND
    for _ in range(2):  # from the database each time: it never fits
        assert client.promise("huge")["value"]["data"] == huge
        assert cached_bytes(client) <= BOUND


def test_preload_of_a_branch_larger_than_the_cache_is_complete_and_right(
        client: Client) -> None:
    v = client.run_root("wf")
    values = {f"wf:{i}": data(i, 16 * 1024) for i in range(1, 41)}  # 640 KiB in the branch
    for child, value in values.items():
        reply = client.fence_create("wf", v, child, tags=child_tags("wf", child, branch="wf"))
        assert reply.status == 200, reply
        settle_with(client, child, value)
    for _ in range(2):  # a resumption reads the branch again
        assert client.release("wf", v).status == 200
        client.drain()
        reply = client.acquire("wf", v)
        assert reply.status == 200, reply
        v = reply.data["task"]["version"]
        preload = {p["id"]: p["value"]["data"] for p in reply.data["preload"]}
        assert preload == values
        assert cached_bytes(client) <= BOUND


def test_memory_held_for_settled_values_stays_within_the_bound(tmp_path: Path) -> None:
    bound = 1024 * 1024
    engine = Engine.sqlite(str(tmp_path / "mem.db"), cache_bytes=bound)
    client = Client(engine)
    try:
        client.create("warm")  # first request: statements compiled, caches of sqlite3 filled
        settle_with(client, "warm", "e30=")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(48):  # 6 MiB of values, read back once each
                client.create(f"m{i}")
                settle_with(client, f"m{i}", data(i, 128 * 1024))
                client.promise(f"m{i}")
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    finally:
        engine.close()
    # the bound plus room for what sqlite3 and the engine hold per connection
    assert held < bound + 512 * 1024, f"{held / 2**20:.1f} MiB held for a 1 MiB cache"


def test_cache_bytes_zero_keeps_nothing_and_reads_still_work(tmp_path: Path) -> None:
    client = Client(Engine.sqlite(str(tmp_path / "none.db"), cache_bytes=0))
    try:
        client.create("p")
        settle_with(client, "p", "eyJhIjoxfQ==")
        assert client.promise("p")["value"]["data"] == "eyJhIjoxfQ=="
        assert cached_bytes(client) == 0
    finally:
        client.engine.close()


@pytest.mark.parametrize("bad", [-1, 1.5, "32MB", True, None])
def test_cache_bytes_must_be_a_non_negative_int(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"cache_bytes must be an int >= 0.*got"):
        SqliteStorage(str(tmp_path / "bad.db"), cache_bytes=bad)


def record(pid: str) -> Promise:
    return Promise(pid, "resolved", Value(), Value(data="e30="), {}, 0, 0, 0)


def test_the_least_recently_used_record_is_evicted_first() -> None:
    size = 100
    cache = SettledCache(max_bytes=5 * (size + RECORD_OVERHEAD))
    for pid in "abcde":
        cache.put(record(pid), size)
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put(record("f"), size)
    assert cache.get("b") is None
    assert [pid for pid in "acdef" if cache.get(pid) is not None] == list("acdef")
    assert cache.bytes == 5 * (size + RECORD_OVERHEAD)


def test_a_record_over_a_quarter_of_the_bound_is_not_kept() -> None:
    cache = SettledCache(max_bytes=4000)
    cache.put(record("small"), 100)
    cache.put(record("big"), 1000)
    assert cache.get("big") is None
    assert cache.get("small") is not None


def test_a_record_kept_again_is_counted_once() -> None:
    cache = SettledCache(max_bytes=10_000)
    cache.put(record("a"), 100)
    cache.put(record("a"), 300)
    assert len(cache) == 1
    assert cache.bytes == 300 + RECORD_OVERHEAD


def test_every_statement_of_a_durable_step_searches_an_index(client: Client) -> None:
    """A scan would make each step cost O(database): 1k and 50k steps must cost the same."""
    storage = client.engine.storage
    assert isinstance(storage, SqliteStorage)
    for i in range(20):  # some history, so that the planner has a choice to make
        root = f"old{i}"
        v = client.run_root(root)
        client.fence_create(root, v, f"{root}:1", tags=child_tags(root, f"{root}:1", branch=root))
        client.fence_settle(root, v, f"{root}:1")
        assert client.fulfill(root, v).status == 200
    statements: list[str] = []
    storage._db.set_trace_callback(statements.append)
    try:
        client.create("wf", tags=root_tags("wf"))
        client.drain()
        v = client.acquire("wf", 0).data["task"]["version"]
        for n in (1, 2):
            child = f"wf:{n}"
            assert client.fence_create("wf", v, child,
                                       tags=child_tags("wf", child, branch="wf")).status == 200
            assert client.fence_settle("wf", v, child).status == 200
        client.heartbeat([("wf", v)])
        assert client.fulfill("wf", v).status == 200
    finally:
        storage._db.set_trace_callback(None)
    queries = {s for s in statements
               if s.split()[0] in ("SELECT", "UPDATE", "DELETE", "INSERT")
               and not s.startswith("DELETE FROM outbox")}  # the outbox is emptied whole
    assert any(q.startswith("SELECT") for q in queries)
    for sql in sorted(queries):
        plan = [row[-1] for row in storage._db.execute("EXPLAIN QUERY PLAN " + sql)]
        assert not any(step.startswith("SCAN") for step in plan), (sql, plan)


def test_the_work_of_a_step_does_not_grow_with_the_database(client: Client) -> None:
    """SQLite instructions per step, counted (not timed): the same with 2,000 steps stored."""
    storage = client.engine.storage
    assert isinstance(storage, SqliteStorage)
    instructions = [0]

    def count() -> int:
        instructions[0] += 1
        return 0

    def workflow(root: str, steps: int) -> int:
        """Run ``root`` with ``steps`` settled steps; SQLite instructions of its last step."""
        v = client.run_root(root)
        for n in range(1, steps + 1):
            child = f"{root}:{n}"
            before = instructions[0]
            client.fence_create(root, v, child, tags=child_tags(root, child, branch=root))
            client.fence_settle(root, v, child)
            cost = instructions[0] - before
        assert client.fulfill(root, v).status == 200
        return cost

    storage._db.set_progress_handler(count, 1)
    try:
        small = workflow("small", 10)
        for i in range(20):
            workflow(f"fill{i}", 100)
        large = workflow("large", 10)
    finally:
        storage._db.set_progress_handler(None, 1)
    assert large <= small * 1.05, f"{small} SQLite instructions per step, then {large}"


# Memory storage keeps its ids sorted in chunks: one sorted list made each new promise cost
# O(promises stored) (190 us with a million).
def test_sorted_ids_stay_in_order_through_adds_and_removes_across_many_chunks() -> None:
    rng = random.Random(7)
    ids = SortedIds()
    model: set[str] = set()
    for _ in range(CHUNK * 12):
        item = f"{rng.randrange(10**6):06d}:{rng.randrange(100)}"
        if item in model:
            ids.remove(item)
            model.discard(item)
        else:
            ids.add(item)
            model.add(item)
    ids.remove("absent")  # removing what is not there changes nothing
    expected = sorted(model)
    assert list(ids.after(None)) == expected
    assert len(ids) == len(expected)
    assert len(ids._chunks) > 2  # the case under test: several chunks
    assert all(0 < len(c) <= 2 * CHUNK for c in ids._chunks)
    for cursor in (expected[0], expected[len(expected) // 2], expected[-1], "", "zzz", "5"):
        assert list(ids.after(cursor)) == [i for i in expected if i > cursor]


def test_sorted_ids_emptied_and_refilled_stay_right() -> None:
    ids = SortedIds()
    for i in range(3 * CHUNK):
        ids.add(f"{i:05d}")
    for i in range(3 * CHUNK):
        ids.remove(f"{i:05d}")
    assert list(ids.after(None)) == []
    ids.add("b")
    ids.add("a")
    assert list(ids.after(None)) == ["a", "b"]
    assert list(ids.after("a")) == ["b"]
