"""Routing push messages to poll connections: unicast, anycast, bounded buffers."""

from __future__ import annotations

import random

import anyio
import pytest

from resonate_async.server._hub import BUFFER, Connection, Hub


def drained(conn: Connection) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(conn.receive.receive_nowait())
        except Exception:
            return out


def register(hub: Hub, group: str, conn_id: str) -> Connection:
    conn = hub.register(group, conn_id)
    assert conn is not None
    return conn


def test_a_second_connection_with_an_id_replaces_the_first() -> None:
    hub = Hub()
    first, second = register(hub, "g", "p"), register(hub, "g", "p")
    hub.deliver([("poll://uni@g/p", b"1")])
    assert (drained(first), drained(second)) == ([], [b"1"])
    assert len(hub) == 1
    with pytest.raises(anyio.EndOfStream):
        first.receive.receive_nowait()  # the replaced stream was ended
    hub.deregister(first)  # its own clean-up later leaves the new one alone
    hub.deliver([("poll://uni@g/p", b"2")])
    assert drained(second) == [b"2"]


@pytest.mark.parametrize("address", [
    "poll://uni@g", "poll://uni@other/p", "http://example.com/hook", "poll://x@g/p",
    "poll://any@nobody",
])
def test_unroutable_messages_are_dropped(address: str) -> None:
    hub = Hub()
    conn = register(hub, "g", "p")
    hub.deliver([(address, b"m")])
    assert drained(conn) == []


def test_anycast_goes_to_a_random_connection_of_the_group() -> None:
    hub = Hub(rng=random.Random(7))
    a, b, c = register(hub, "g", "a"), register(hub, "g", "b"), register(hub, "h", "c")
    hub.deliver([("poll://any@g", str(i).encode()) for i in range(BUFFER)])
    got_a, got_b = drained(a), drained(b)
    assert drained(c) == []
    assert sorted(got_a + got_b, key=int) == [str(i).encode() for i in range(BUFFER)]
    assert got_a and got_b  # both are candidates (a seeded draw: no flake)


def test_anycast_prefers_the_named_connection() -> None:
    hub = Hub()
    a, b = register(hub, "g", "a"), register(hub, "g", "b")
    hub.deliver([("poll://any@g/b", b"1"), ("poll://any@g/b", b"2"), ("poll://any@g/x", b"3")])
    got_a, got_b = drained(a), drained(b)
    assert got_b[:2] == [b"1", b"2"]
    assert len(got_a) + len(got_b) == 3  # the unknown name falls back to any connection


def test_anycast_may_reach_a_stream_that_asked_for_no_work() -> None:
    # The Resonate server has no "no work" stream: a process that takes no work must stream
    # in a group of its own, or be sent work. The hub behaves the same, so tests notice.
    hub = Hub()
    client = register(hub, "g", "client")
    hub.deliver([("poll://any@g", b"1")])
    assert drained(client) == [b"1"]


def test_a_full_buffer_drops_the_overflow() -> None:
    hub = Hub()
    conn = register(hub, "g", "p")
    hub.deliver([("poll://uni@g/p", str(i).encode()) for i in range(BUFFER + 5)])
    got = drained(conn)
    assert len(got) == BUFFER
    assert got[-1] == str(BUFFER - 1).encode()


def test_capacity_and_deregistration() -> None:
    hub = Hub(max_connections=2)
    a = register(hub, "g", "a")
    register(hub, "g", "b")
    assert hub.register("g", "c") is None
    hub.deregister(a)
    hub.deregister(a)  # twice is harmless
    assert len(hub) == 1
    assert hub.register("g", "c") is not None
