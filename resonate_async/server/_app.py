"""The Resonate HTTP API (protocol.md §1) over the embedded engine, as a raw ASGI app.

Routes: ``POST /`` (the RPC endpoint; HTTP status = ``head.status``), ``GET /`` and
``/ui/...`` (the web view: a page and its JSON endpoints, ``_ui``), ``GET /poll/{group}/{id}``
(Server-Sent Events; the query string is ignored, as by the Resonate server), ``GET /health``,
``GET /ready`` and ``410 Gone`` for the removed legacy REST paths. The engine's timers run in
a background task while the app is entered (``async with app:``); push messages are delivered
after every request and every tick.

With a ``token``, ``POST /`` and the event streams need it, where the Resonate server reads
it: ``head.auth`` of the envelope for ``POST /``, ``Authorization: Bearer`` for ``/poll``.
Anything else gets ``401 Unauthorized``; ``/health`` and ``/ready`` stay open, as there, and
so do the web view's page and script (they hold no data; its JSON endpoints need the token).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from resonate_async._clock import Clock, SystemClock
from resonate_async._token import token_problem
from resonate_async.engine import Engine
from resonate_async.engine._timers import EngineTimers
from resonate_async.protocol import (
    Envelope,
    Message,
    Response,
    encode,
    encode_response,
    parse_envelope,
)
from resonate_async.server._compat import handle_split, split_heartbeat
from resonate_async.server._hub import MAX_CONNECTIONS, Connection, Hub
from resonate_async.server._ui import WebView

if TYPE_CHECKING:
    from resonate_async.transport._postgres import PostgresTransport

log = structlog.get_logger("resonate_async.server")

Scope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]

MAX_BODY: Final = 2 * 1024 * 1024
_LEGACY: Final = ("promises", "tasks", "schedules")
_GONE: Final = (b'{"error":"This endpoint is no longer supported. '
                b'Please update to the latest SDK."}')
_JSON: Final = [(b"content-type", b"application/json")]
_TEXT: Final = [(b"content-type", b"text/plain; charset=utf-8")]
_SSE: Final = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


class _Head(msgspec.Struct):
    status: int


class _Answer(msgspec.Struct):
    head: _Head


_answer_decoder = msgspec.json.Decoder(_Answer)


class DevApp:
    """An ASGI application serving ``engine`` with the Resonate HTTP API.

    Enter it (``async with app:``) to run the engine's timers; ``close()`` ends every open
    poll stream (call it before stopping the HTTP server, which waits for open responses).
    ``token``: when given, every ``POST /`` and every event stream must carry it (see the
    module docstring); it is compared in constant time. ``extensions=False`` turns off what
    the Resonate server does not do (docs/remote.md): the preload-omit header is ignored
    (every ``task.fence`` answer carries the full preload) and a heartbeat spanning several
    origins is refused (``400``) instead of split; tests run clients against it so that
    reliance on an extension fails.

    ``shared``: a ``PostgresTransport`` whose database other processes share (other dev
    servers, Postgres-mode workers and clients). Then ``POST /`` runs on its pool of engines
    (in worker threads), each event stream is a subscription of it (its group's anycast work
    is shared with every other process on the database, its unicast messages come to it
    wherever they were written), and its timers run the clock work; ``engine`` (on the same
    database) serves only the web view and ``/ready``. The app enters and leaves ``shared``.
    """

    def __init__(self, engine: Engine, *, clock: Clock | None = None,
                 max_body: int = MAX_BODY, max_connections: int = MAX_CONNECTIONS,
                 token: str | None = None, extensions: bool = True,
                 shared: PostgresTransport | None = None) -> None:
        problem = token_problem(token) if token is not None else None
        if problem is not None:
            raise ValueError(f"DevApp(token=...): {problem}")
        self._token = token.encode() if token is not None else None
        self.engine = engine
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.max_body = max_body
        self.hub = Hub(max_connections)
        self._tg: TaskGroup | None = None
        self._shared = shared
        self._stack = AsyncExitStack()
        self._timers = EngineTimers(engine, self.clock, self.hub.deliver, raw=True)
        self._closed = False
        self.extensions = extensions
        self.ui = WebView(engine, self.clock, read_body=self._read_body,
                          after_write=self._after_write,
                          authorized=lambda scope: self._holds_token(_bearer(scope)))

    async def __aenter__(self) -> DevApp:
        if self._shared is not None:
            await self._stack.enter_async_context(self._shared)  # its timers run the clock
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if self._shared is None:
            self._tg.start_soon(self._timers.run)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        await self._stack.aclose()

    def close(self) -> None:
        """End every poll stream and refuse new ones (idempotent)."""
        self._closed = True
        self.hub.close_all()

    # ASGI -------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        parts = scope["path"].strip("/").split("/")
        if parts[0] in _LEGACY:
            await _respond(send, 410, _GONE, _JSON)
        elif parts == [""]:
            if method == "POST":
                await self._rpc(scope, receive, send)
            elif method in ("GET", "HEAD"):
                await self.ui.page(send)
            else:
                await _respond(send, 405, b"Method Not Allowed", _TEXT)
        elif parts[0] == "ui":
            await self.ui.handle(scope, receive, send, [unquote(p) for p in parts[1:]])
        elif parts[0] == "poll" and len(parts) == 3 and parts[1] and parts[2]:
            if method == "GET":
                await self._poll(scope, receive, send, unquote(parts[1]), unquote(parts[2]))
            else:
                await _respond(send, 405, b"Method Not Allowed", _TEXT)
        elif parts == ["health"] and method in ("GET", "HEAD"):
            await _respond(send, 200, b"", _TEXT)
        elif parts == ["ready"] and method in ("GET", "HEAD"):
            await _respond(send, 200 if self._storage_ok() else 503, b"", _TEXT)
        else:
            await _respond(send, 404, b"Not Found", _TEXT)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # POST / -----------------------------------------------------------------------------------
    async def _rpc(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._read_body(scope, receive)
        if body is None:
            await _respond(send, 413, b"Payload Too Large", _TEXT)
            return
        if self._shared is not None:
            if self._token is not None:
                refusal = self._unauthorized(body)
                if refusal is not None:
                    await _respond(send, 401, refusal, _JSON)
                    return
            answer = await self._shared_handle(self._shared, scope, body)
            await _respond(send, _status(answer), answer, _JSON)
            return
        status, answer = self.answer_now(scope["headers"], body)
        await _respond(send, status, answer, _JSON)

    @property
    def answers_now(self) -> bool:
        """Whether ``POST /`` is answered without waiting (``answer_now``): true unless the
        engine is a shared database's (``shared=``), whose requests run in worker threads."""
        return self._shared is None

    def answer_now(self, headers: Iterable[tuple[bytes, bytes]],
                   body: bytes) -> tuple[int, bytes]:
        """The HTTP status and the answer envelope to a ``POST /`` with ``body`` (at most
        ``max_body`` bytes) and request ``headers`` (lower-case names), on this process's
        engine (not with ``shared=``; see ``answers_now``). The server's fast path for
        ``POST /`` calls it directly; the ASGI route does the same."""
        if self._token is not None:
            refusal = self._unauthorized(body)
            if refusal is not None:
                return 401, refusal
        now = self.clock.now_ms()
        parts = split_heartbeat(body) if self.extensions else None
        if parts is None:
            answer = self.engine.handle(
                body, now, fence_preload=not self.extensions or _wants_fence_preload(headers))
        else:
            answer = handle_split(parts, lambda part: self.engine.handle(part, now))
        self._after_write()
        return _status(answer), answer

    async def _shared_handle(self, shared: PostgresTransport, scope: Scope,
                             body: bytes) -> bytes:
        clock, extensions = self.clock, self.extensions
        preload = not extensions or _wants_fence_preload(scope["headers"])
        parts = split_heartbeat(body) if extensions else None

        def handle(engine: Engine) -> bytes:
            now = clock.now_ms()
            if parts is None:
                return engine.handle(body, now, fence_preload=preload)
            return handle_split(parts, lambda part: engine.handle(part, now))

        return await shared.call(handle)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        return None
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    # authentication ---------------------------------------------------------------------------
    def _unauthorized(self, body: bytes) -> bytes | None:
        """The 401 envelope for a ``POST /`` body without the token, or ``None`` if it may go
        on. A malformed envelope goes on: the engine answers it 400 without running anything,
        and so does the Resonate server, whose envelope checks come before authentication."""
        env = parse_envelope(body)
        if not isinstance(env, Envelope):
            return None
        auth = env.auth
        if auth is not None and self._holds_token(auth.encode("utf-8", "surrogatepass")):
            return None
        log.warning("request_unauthorized", kind=env.kind, corr_id=env.corr_id,
                    reason="no token" if not auth else "wrong token")
        return encode_response(env.kind, env.corr_id, Response(401, "Unauthorized"))

    def _holds_token(self, given: bytes | None) -> bool:
        """Whether ``given`` is the server's token (always true on a server without one)."""
        token = self._token
        return token is None or (given is not None and hmac.compare_digest(given, token))

    def _after_write(self) -> None:
        if self._shared is not None:
            return  # the shared transport claims what was written (it was notified)
        self.hub.deliver(self.engine.drain())
        self._timers.poke()

    def _storage_ok(self) -> bool:
        try:
            self.engine.next_due()
        except Exception:
            log.warning("storage_ping_failed", exc_info=True)
            return False
        return True

    # GET /poll/{group}/{id} -------------------------------------------------------------------
    async def _poll(self, scope: Scope, receive: Receive, send: Send,
                    group: str, conn_id: str) -> None:
        # Like the Resonate server, the query string (``?work=0`` of older clients) is ignored:
        # every stream of a group may be sent the group's anycast work.
        if self._token is not None and not self._holds_token(_bearer(scope)):
            log.warning("poll_unauthorized", group=group, conn_id=conn_id)
            await _respond(send, 401, b"Unauthorized", _TEXT)
            return
        conn = None if self._closed else self.hub.register(group, conn_id)
        if conn is None:
            await _respond(send, 503, b"Poll registration at capacity", _TEXT)
            return
        shared = self._shared
        if shared is None:
            # Messages queued while nobody listened (e.g. work released at start-up) go now.
            self.hub.deliver(self.engine.drain())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                if shared is not None:  # rows waiting for it are claimed at once
                    tg.start_soon(_forward, shared.subscribe(group, conn_id), conn)
                await _stream(conn, send)
                tg.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.hub.deregister(conn)
            if shared is not None and not self.hub.holds(group, conn_id):
                shared.unsubscribe(group, conn_id)  # not replaced by a newer stream



def _bearer(scope: Scope) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (as the Resonate server reads
    it: that exact scheme spelling), or ``None``."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            return token if scheme == b"Bearer" and token else None
    return None


async def _forward(messages: MemoryObjectReceiveStream[Message], conn: Connection) -> None:
    """Hand a shared transport's messages for one stream to it (dropped when its buffer is
    full, as the hub drops them: the retry timeout and re-registered listeners cover it)."""
    async with messages:
        async for message in messages:
            try:
                conn.send.send_nowait(encode(message))
            except anyio.WouldBlock:
                log.warning("message_dropped", reason="buffer_full", group=conn.group,
                            conn_id=conn.id)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return


def _status(answer: bytes) -> int:
    """The HTTP status of an answer envelope (its ``head.status``)."""
    try:
        return _answer_decoder.decode(answer).head.status
    except msgspec.DecodeError:  # the engine always answers an envelope; be safe anyway
        return 500


async def _stream(conn: Connection, send: Send) -> None:
    async for body in conn.receive:
        await send({"type": "http.response.body", "body": b"data: " + body + b"\n\n",
                    "more_body": True})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


FENCE_PRELOAD_HEADER = b"resonate-fence-preload"


def _wants_fence_preload(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Every ``task.fence`` answer carries the branch's whole preload (protocol.md §6), which
    makes a long execution quadratic over HTTP. A client that keeps its own cache (ours) sends
    ``Resonate-Fence-Preload: omit`` and gets ``preload: []`` instead; any other client, and
    the Resonate server (which ignores the header), keep the protocol's behaviour."""
    for name, value in headers:
        if name == FENCE_PRELOAD_HEADER:
            return bool(value.strip().lower() != b"omit")
    return True
