"""The in-memory engine's callback index (``Links``): one id per link is held as a string,
more as a set, and both directions stay consistent."""

from __future__ import annotations

from resonate_async.engine._memory import Links, MemoryStorage


def test_links_hold_one_or_many_ids_and_forget_them_when_popped_or_discarded() -> None:
    links = Links()
    links.add("p", "t1")
    links.add("p", "t1")  # twice: still one link
    assert sorted(links.pop("p")) == ["t1"]
    assert list(links.pop("p")) == []
    links.add("p", "t1")
    links.add("p", "t2")
    links.add("p", "t3")
    links.discard("p", "t2")
    links.discard("p", "nobody")
    assert sorted(links.pop("p")) == ["t1", "t3"]
    links.add("q", "t1")
    links.discard("q", "t1")
    assert list(links.pop("q")) == []


def test_callbacks_are_taken_once_and_dropped_from_both_sides() -> None:
    storage = MemoryStorage()
    storage.add_callback("p1", "task-b")
    storage.add_callback("p1", "task-a")
    storage.add_callback("p2", "task-a")
    assert storage.take_callbacks("p1") == ["task-a", "task-b"]
    assert storage.take_callbacks("p1") == []
    storage.drop_callbacks_of("task-a")  # task-a no longer waits on p2 either
    assert storage.take_callbacks("p2") == []
    storage.add_callback("p3", "task-c")
    storage.drop_callbacks_of("task-c")
    storage.drop_callbacks_of("task-c")
    assert storage.take_callbacks("p3") == []
