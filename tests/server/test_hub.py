"""Routing push messages to poll connections: unicast, anycast, work=0, bounded buffers."""

from __future__ import annotations

import pytest

from resonate_async.server._hub import BUFFER, Connection, Hub


def drained(conn: Connection) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(conn.receive.receive_nowait())
        except Exception:
            return out


def register(hub: Hub, group: str, conn_id: str, work: bool = True) -> Connection:
    conn = hub.register(group, conn_id, work)
    assert conn is not None
    return conn


def test_unicast_goes_to_the_first_connection_registered_with_the_id() -> None:
    hub = Hub()
    first, second = register(hub, "g", "p"), register(hub, "g", "p")
    hub.deliver([("poll://uni@g/p", b"1")])
    assert (drained(first), drained(second)) == ([b"1"], [])
    hub.deregister(first)
    hub.deliver([("poll://uni@g/p", b"2")])
    assert drained(second) == [b"2"]


def test_unicast_reaches_a_connection_without_work() -> None:
    hub = Hub()
    client = register(hub, "g", "client", work=False)
    hub.deliver([("poll://uni@g/client", b"u")])
    assert drained(client) == [b"u"]


@pytest.mark.parametrize("address", [
    "poll://uni@g", "poll://uni@other/p", "http://example.com/hook", "poll://x@g/p",
    "poll://any@nobody",
])
def test_unroutable_messages_are_dropped(address: str) -> None:
    hub = Hub()
    conn = register(hub, "g", "p")
    hub.deliver([(address, b"m")])
    assert drained(conn) == []


def test_anycast_is_round_robin_over_the_workers_of_the_group() -> None:
    hub = Hub()
    a, b, _ = register(hub, "g", "a"), register(hub, "g", "b"), register(hub, "h", "c")
    hub.deliver([("poll://any@g", str(i).encode()) for i in range(4)])
    assert (drained(a), drained(b)) == ([b"0", b"2"], [b"1", b"3"])


def test_anycast_prefers_the_named_connection_and_skips_those_without_work() -> None:
    hub = Hub()
    client, a, b = register(hub, "g", "client", work=False), register(hub, "g", "a"), \
        register(hub, "g", "b")
    hub.deliver([("poll://any@g/b", b"1"), ("poll://any@g/b", b"2"),
                 ("poll://any@g/client", b"3"), ("poll://any@g", b"4")])
    assert drained(b)[:2] == [b"1", b"2"]
    assert drained(client) == []
    assert len(drained(a)) >= 1


def test_anycast_with_only_unicast_connections_is_dropped() -> None:
    hub = Hub()
    client = register(hub, "g", "client", work=False)
    hub.deliver([("poll://any@g", b"1")])
    assert drained(client) == []


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
    assert hub.register("g", "c", True) is None
    hub.deregister(a)
    hub.deregister(a)  # twice is harmless
    assert len(hub) == 1
    assert hub.register("g", "c", True) is not None
