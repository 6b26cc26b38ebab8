"""The official SDK's in-process server behind the Resonate HTTP API, for interop runs.

``python interop/official_server_adapter.py [--port N]`` in an environment with
``resonate-sdk`` (Python >= 3.12) and uvicorn. It prints ``listening on http://127.0.0.1:N``
once it accepts connections and serves until SIGINT/SIGTERM:

- ``POST /``: the request envelope goes unchanged to the official SDK's ``LocalConnection``
  (its in-process simulation of the server); its answer comes back unchanged, with the HTTP
  status set to ``head.status`` as the real server does. A request the simulation refuses by
  raising (an unknown kind, a missing field) becomes the wire's error answer: that status with
  the message as ``data``.
- ``GET /poll/{group}/{id}``: an SSE stream delivering the simulation's push messages. The
  simulation hands every message to every receiver (one process has nothing to route
  between), so this adapter routes by the message's address as the real server does:
  ``poll://uni@group/id`` to that stream, ``poll://any@group/id`` to it if open else to a
  random stream of the group, ``poll://any@group`` to a random stream of the group; the
  simulation's own ``local://`` addresses are read the same way. ``?work=0`` is ignored for
  routing, as the real server ignores it, but an ``execute`` sent to such a stream is
  recorded.
- ``GET /health``: 200. ``GET /interop/stats``: what this adapter counted (requests and
  answers by kind and status, push messages by kind, messages dropped, executes sent to
  streams that asked for no work) as JSON.

Only transport details are translated: bodies, statuses and push messages are the
simulation's own, so every protocol difference reaches the client as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import socket
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import uvicorn
from resonate.connections.local import LocalConnection, OutgoingMessage
from resonate.error import DecodingError, ServerError
from resonate_base import PROTOCOL_VERSION

Scope = dict[str, Any]
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass(eq=False)
class Stream:
    """One open ``GET /poll/{group}/{id}`` connection."""

    group: str
    id: str
    accepts_work: bool
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)


@dataclass
class Stats:
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    pushes: collections.Counter[str] = field(default_factory=collections.Counter)
    polls: int = 0
    dropped: list[str] = field(default_factory=list)
    work_to_clients: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "statuses": dict(self.statuses),
                "pushes": dict(self.pushes), "polls": self.polls,
                "dropped": self.dropped, "work_to_clients": self.work_to_clients}


class Hub:
    """The open streams, and the routing of push messages by address."""

    def __init__(self, stats: Stats) -> None:
        self.streams: list[Stream] = []
        self.stats = stats

    def route(self, address: str) -> Stream | None:
        parts = urlsplit(address)
        if parts.scheme not in ("poll", "local") or parts.username not in ("uni", "any"):
            return None
        group = parts.hostname or ""
        wanted = unquote(parts.path.lstrip("/"))
        in_group = [s for s in self.streams if s.group == group]
        named = [s for s in in_group if wanted and s.id == wanted]
        if named:
            return named[0]
        if parts.username == "any" and in_group:
            return random.choice(in_group)
        return None

    def deliver(self, messages: list[OutgoingMessage]) -> None:
        for outgoing in messages:
            body = json.dumps(outgoing.message, separators=(",", ":")).encode()
            kind = str(outgoing.message.get("kind"))
            stream = self.route(outgoing.address)
            if stream is None:
                self.stats.dropped.append(f"{kind} to {outgoing.address}: no open stream")
                continue
            self.stats.pushes[kind] += 1
            if kind == "execute" and not stream.accepts_work:
                task = outgoing.message.get("data", {}).get("task", {})
                self.stats.work_to_clients.append(
                    f"execute {task.get('id')} v{task.get('version')} to "
                    f"{stream.group}/{stream.id}, which asked for no work (?work=0)")
            stream.queue.put_nowait(body)


class RoutedConnection(LocalConnection):
    """``LocalConnection`` whose push messages go to the hub with their addresses."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub

    def _dispatch_messages(self, messages: list[OutgoingMessage]) -> None:
        self.hub.deliver(messages)


class Adapter:
    """The ASGI application."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.hub = Hub(self.stats)
        self.connection: RoutedConnection | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/":
            await self._rpc(receive, send)
        elif method == "GET" and path.startswith("/poll/") and path.count("/") == 3:
            _, _, group, conn_id = path.split("/")
            await self._poll(scope, receive, send, unquote(group), unquote(conn_id))
        elif method == "GET" and path == "/health":
            await _respond(send, 200, b"", [])
        elif method == "GET" and path == "/interop/stats":
            await _respond(send, 200, json.dumps(self.stats.as_json()).encode(), _JSON)
        else:
            await _respond(send, 404, b"Not Found", [(b"content-type", b"text/plain")])

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.connection = RoutedConnection(self.hub)
                await self.connection.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.connection is not None:
                    await self.connection.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _rpc(self, receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        kind, corr_id = _kind_and_corr_id(body)
        self.stats.requests[kind] += 1
        assert self.connection is not None
        try:
            answer = (await self.connection.send(body.decode("utf-8", "replace"))).encode()
            status = int(json.loads(answer)["head"]["status"])
        except Exception as exc:
            # The simulation raises where the server answers: give the wire's error answer
            # (400 for what it refuses, 500 "Internal error" for anything else, as the server).
            if isinstance(exc, ServerError):
                status, message = exc.code, exc.message
            elif isinstance(exc, DecodingError):
                status, message = 400, str(exc)
            else:
                status, message = 500, f"Internal error: {type(exc).__name__}: {exc}"
            answer = json.dumps({"kind": kind, "head": {"corrId": corr_id, "status": status,
                                                        "version": PROTOCOL_VERSION},
                                 "data": message}).encode()
        self.stats.statuses[f"{kind} {status}"] += 1
        await _respond(send, status, answer, _JSON)

    async def _poll(self, scope: Scope, receive: Any, send: Any, group: str,
                    conn_id: str) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        stream = Stream(group, conn_id, query.get("work", ["1"])[-1] not in ("0", "false"))
        self.hub.streams.append(stream)
        self.stats.polls += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                while not gone.done():
                    got = asyncio.ensure_future(stream.queue.get())
                    await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
                    if not got.done():
                        got.cancel()
                        break
                    await send({"type": "http.response.body",
                                "body": b"data: " + got.result() + b"\n\n", "more_body": True})
            finally:
                gone.cancel()
        finally:
            self.hub.streams.remove(stream)


def _kind_and_corr_id(body: bytes) -> tuple[str, Any]:
    try:
        envelope = json.loads(body)
    except ValueError:
        return "unknown", "0"
    if not isinstance(envelope, dict):
        return "unknown", "0"
    head = envelope.get("head")
    corr_id = head.get("corrId", "0") if isinstance(head, dict) else "0"
    kind = envelope.get("kind")
    return (kind if isinstance(kind, str) and kind else "unknown"), corr_id


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _respond(send: Any, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def main(port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(Adapter(), log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=2)
    server = _Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    started = asyncio.ensure_future(server.ready.wait())
    await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    else:
        started.cancel()
    await serving  # uvicorn stops on SIGINT/SIGTERM


class _Server(uvicorn.Server):
    """``uvicorn.Server`` that says when it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.ready.set()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 (the default): a free port")
    sys.exit(asyncio.run(main(parser.parse_args().port)))
