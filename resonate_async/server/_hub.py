"""Routing push messages to open poll connections (protocol.md §1.7, §1.8).

Delivery is at-most-once and never blocks: a message for an address with no open connection,
or for a connection whose buffer is full, is dropped (and logged), exactly like the server.
Anycast goes to the named connection if it is open, else to a uniformly random connection of
the group, whatever it asked for: the Resonate server has no notion of a stream that takes no
work (it ignores ``?work=0``), and neither does this hub.
"""

from __future__ import annotations

import itertools
import random
from typing import Final

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = structlog.get_logger("resonate_async.server")

BUFFER: Final = 100
MAX_CONNECTIONS: Final = 1000


class Connection:
    """One open ``GET /poll/{group}/{id}`` stream and its bounded message buffer."""

    __slots__ = ("group", "id", "receive", "send", "serial")

    def __init__(self, group: str, conn_id: str, serial: int) -> None:
        self.group = group
        self.id = conn_id
        self.serial = serial
        self.send: MemoryObjectSendStream[bytes]
        self.receive: MemoryObjectReceiveStream[bytes]
        self.send, self.receive = anyio.create_memory_object_stream[bytes](BUFFER)


class Hub:
    """The open poll connections of one server, by group, in registration order."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS,
                 rng: random.Random | None = None) -> None:
        self.max_connections = max_connections
        self._groups: dict[str, list[Connection]] = {}
        self._rng = rng if rng is not None else random.Random()
        self._serial = itertools.count()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def register(self, group: str, conn_id: str) -> Connection | None:
        """A new connection, or ``None`` when the server is at capacity.

        An id has one stream: a stream already open for the same group and id is closed and
        replaced by the new one (a reconnecting worker, whose old connection may not look
        dead yet, gets its messages again at once). The Resonate server keeps both and
        delivers to the older one (docs/remote.md).
        """
        for old in [c for c in self._groups.get(group, ()) if c.id == conn_id]:
            log.warning("poll_replaced", group=group, conn_id=conn_id,
                        detail="a new event stream for this id replaces the open one")
            self.deregister(old)
        if self._count >= self.max_connections:
            return None
        conn = Connection(group, conn_id, next(self._serial))
        self._groups.setdefault(group, []).append(conn)
        self._count += 1
        log.debug("poll_registered", group=group, conn_id=conn_id)
        return conn

    def holds(self, group: str, conn_id: str) -> bool:
        """Whether a stream for ``conn_id`` in ``group`` is open."""
        return any(c.id == conn_id for c in self._groups.get(group, ()))

    def deregister(self, conn: Connection) -> None:
        conns = self._groups.get(conn.group)
        if conns is not None and conn in conns:
            conns.remove(conn)
            self._count -= 1
            if not conns:
                del self._groups[conn.group]
        conn.send.close()
        log.debug("poll_deregistered", group=conn.group, conn_id=conn.id)

    def close_all(self) -> None:
        """End every stream (server shutdown)."""
        for conns in list(self._groups.values()):
            for conn in list(conns):
                self.deregister(conn)

    def deliver(self, messages: list[tuple[str, bytes]]) -> None:
        for address, body in messages:
            conn = self.route(address)
            if conn is None:
                log.debug("message_dropped", address=address, reason="no_connection")
                continue
            try:
                conn.send.send_nowait(body)
            except anyio.WouldBlock:
                log.warning("message_dropped", address=address, reason="buffer_full",
                            group=conn.group, conn_id=conn.id)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("message_dropped", address=address, reason="connection_closed")

    def route(self, address: str) -> Connection | None:
        """The connection a message for ``address`` goes to, if any is open."""
        if not address.startswith("poll://"):
            return None  # http(s) push and the other transports are not served here
        mode, _, rest = address[7:].partition("@")
        group, _, conn_id = rest.partition("/")
        conns = self._groups.get(group)
        if not conns:
            return None
        if mode == "uni":
            return next((c for c in conns if c.id == conn_id), None) if conn_id else None
        if mode != "any":
            return None
        if conn_id:
            preferred = next((c for c in conns if c.id == conn_id), None)
            if preferred is not None:
                return preferred
        return conns[self._rng.randrange(len(conns))]
