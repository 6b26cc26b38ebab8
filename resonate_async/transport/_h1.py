"""A lean HTTP/1.1 client for ``POST /``: anyio streams, one ``send()`` per request, keep-alive.

``HttpTransport`` sends its requests through this client; httpx still serves the event stream,
the CLI, and every configuration this client does not handle (see ``HttpTransport``). Each
request is written in one ``send()`` (head and body together) and the answer is read with a
small incremental parser of HTTP/1.1 responses (``Content-Length``, ``chunked``, or up to the
end of the connection), so a round trip costs a few system calls and no per-request objects
beyond the bytes themselves. On asyncio a connection is the event loop's own protocol and
transport: the loop feeds the parser from its read callback and completes the request's
future, one wake-up per answer (anyio's streams pause and resume reading around every
``receive``: two ``epoll_ctl`` and a task switch per read); on trio it is an anyio stream.
Idle connections are kept (last used first) and checked with one non-blocking peek before
reuse; a connection idle for longer than ``IDLE_REUSE`` seconds is closed rather than reused,
so a server's keep-alive timeout (uvicorn: 5 s) cannot close it while a request is on its
way.

Failures are classified the way the transport's retries need: ``NotDelivered`` when the
request certainly did not reach the server (no connection), ``Ambiguous`` once any byte of it
may have been sent (a reset, a timeout, an answer cut short or malformed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import select
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Final
from urllib.parse import SplitResult, unquote

import anyio
from anyio.abc import ByteStream, SocketAttribute

from resonate_async._redact import redact

# A connection idle for longer than this is closed instead of reused (seconds). Servers close
# idle keep-alive connections after a few seconds; a request written just as the server closes
# would be lost after it was sent, which is an ambiguous failure for kinds not safe to repeat.
IDLE_REUSE: Final = 2.0
_MAX_HEAD: Final = 64 * 1024  # the largest response head accepted (status line and headers)
_RECEIVE: Final = 65536


class Ambiguous(Exception):
    """The request may have reached the server, but no (understandable) answer came back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotDelivered(Exception):
    """The request certainly did not reach the server."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Response:
    """An incremental parser of HTTP/1.1 answers: ``feed`` bytes as they arrive; it returns
    ``(status, content, keep_alive)`` once an answer is complete (bytes past its end stay in
    ``buffer``, so the connection must not be used again). Raises ``Ambiguous`` for an answer
    that is not HTTP/1.x. ``eof`` ends an answer that ends with the connection."""

    __slots__ = ("buffer", "chunked", "keep_alive", "length", "parts", "scan", "state", "status")

    _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK, _TRAILERS, _UNTIL_EOF = range(6)

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.reset()

    def reset(self) -> None:
        """Expect a new answer (the buffer keeps what it holds)."""
        self.state = self._HEAD
        self.scan = 0  # where to look for the next separator
        self.status = 0
        self.length = 0
        self.keep_alive = False
        self.parts: list[bytes] = []

    def feed(self, data: bytes) -> tuple[int, bytes, bool] | None:
        buffer = self.buffer
        buffer += data
        while True:
            state = self.state
            if state == self._LENGTH:
                length = self.length
                if len(buffer) < length:
                    return None
                if len(buffer) == length:  # the usual case: one copy
                    content = bytes(buffer)
                    buffer.clear()
                else:
                    content = bytes(buffer[:length])
                    del buffer[:length]
                return self.status, content, self.keep_alive
            if state == self._HEAD:
                end = buffer.find(b"\r\n\r\n", self.scan)
                if end < 0:
                    if len(buffer) > _MAX_HEAD:
                        raise Ambiguous(f"the answer's head is longer than {_MAX_HEAD} bytes")
                    self.scan = max(0, len(buffer) - 3)
                    return None
                head = bytes(buffer[:end])
                del buffer[:end + 4]
                self.scan = 0
                done = self._head(head)
                if done is not None:
                    return done
            elif state == self._CHUNK_SIZE or state == self._TRAILERS:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > _MAX_HEAD:
                        raise Ambiguous("a malformed chunk size line in the answer"
                                        if state == self._CHUNK_SIZE
                                        else "malformed trailers in the answer")
                    return None
                line = bytes(buffer[:end])
                del buffer[:end + 2]
                if state == self._TRAILERS:
                    if not line:  # trailers end with an empty line
                        return self.status, b"".join(self.parts), self.keep_alive
                    continue
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise Ambiguous("a malformed chunk size in the answer "
                                    f"({size_text[:20]!r})") from None
                if size == 0:
                    self.state = self._TRAILERS
                else:
                    self.length = size
                    self.state = self._CHUNK
            elif state == self._CHUNK:
                size = self.length
                if len(buffer) < size + 2:
                    return None
                if buffer[size:size + 2] != b"\r\n":
                    raise Ambiguous("a chunk of the answer does not end where its size says")
                self.parts.append(bytes(buffer[:size]))
                del buffer[:size + 2]
                self.state = self._CHUNK_SIZE
            else:  # the content ends with the connection
                return None

    def _head(self, head: bytes) -> tuple[int, bytes, bool] | None:
        lines = head.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or \
                not status_line[1].isdigit() or len(status_line[1]) != 3:
            raise Ambiguous(f"the answer is not HTTP/1.1 ({lines[0][:80]!r})")
        status = int(status_line[1])
        length: int | None = None
        chunked = False
        keep_alive = status_line[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise Ambiguous(f"a malformed header line in the answer ({line[:80]!r})")
            name = name.strip().lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise Ambiguous(f"a malformed Content-Length in the answer ({value!r})")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
            elif name == b"connection":
                tokens = {token.strip() for token in value.lower().split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        if 100 <= status < 200:  # an interim answer (we never ask for one): the real one follows
            return None
        self.status, self.keep_alive = status, keep_alive
        if status in (204, 304):
            return status, b"", keep_alive
        if chunked:
            self.state = self._CHUNK_SIZE
        elif length is not None:
            self.length = length
            self.state = self._LENGTH
        else:
            self.state = self._UNTIL_EOF
        return None

    def eof(self) -> tuple[int, bytes, bool]:
        """The answer, when the connection ended (only an answer without a length or chunks
        may end so); raises ``anyio.EndOfStream`` otherwise."""
        if self.state != self._UNTIL_EOF:
            raise anyio.EndOfStream
        content = bytes(self.buffer)
        self.buffer.clear()
        return self.status, content, False


def _peek_idle(fd: int, poller: select.poll | None) -> bool:
    """Whether nothing waits to be read on the idle socket ``fd``: an end of stream, a TLS
    close or stray bytes all mean the connection must not be reused."""
    try:
        if poller is not None:
            return not poller.poll(0)
        return not select.select([fd], [], [], 0)[0]
    except (OSError, ValueError):
        return False


def _poller(fd: int | None) -> select.poll | None:
    if fd is None or not hasattr(select, "poll"):  # not on Windows: select() there
        return None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poller


class _Connection:
    """A connection on anyio streams (the trio backend, and asyncio where the other kind
    cannot be made)."""

    __slots__ = ("fd", "parser", "poll", "stream", "used_at")

    def __init__(self, stream: ByteStream, fd: int | None) -> None:
        self.stream = stream
        self.fd = fd
        self.parser = _Response()
        self.used_at = 0.0
        self.poll = _poller(fd)

    def reusable(self, now: float) -> bool:
        """Whether the server may still read a request from this idle connection: not idle
        for too long, and nothing to read."""
        if now - self.used_at > IDLE_REUSE or self.parser.buffer or self.fd is None:
            return False
        return _peek_idle(self.fd, self.poll)

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes, bool]:
        stream, parser = self.stream, self.parser
        parser.reset()
        with anyio.fail_after(timeout):
            await stream.send(request)
            while True:
                try:
                    data = await stream.receive(_RECEIVE)
                except anyio.EndOfStream:
                    return parser.eof()
                answer = parser.feed(data)
                if answer is not None:
                    return answer

    def leftover(self) -> bool:
        return bool(self.parser.buffer)

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)


class _AioProtocol(asyncio.Protocol):
    """One asyncio connection: the event loop reads the socket and feeds each answer's bytes
    to its parser, and the request's future is completed from ``data_received``, without a
    task switch or a re-registration of the socket per read (anyio's streams pause and
    resume reading around every ``receive``)."""

    def __init__(self) -> None:
        self.parser = _Response()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = False
        self.stray = False  # bytes arrived while no request waited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.stray = True
            return
        try:
            answer = self.parser.feed(data)
        except Ambiguous as exc:
            waiter.set_exception(exc)
            return
        if answer is not None:
            waiter.set_result(answer)

    def eof_received(self) -> bool | None:
        self.closed = True
        self._ended(None)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)

    def _ended(self, exc: BaseException | None) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if exc is not None:
            waiter.set_exception(exc)
            return
        try:
            waiter.set_result(self.parser.eof())
        except anyio.EndOfStream as end:
            waiter.set_exception(end)


class _AioConnection:
    """A connection made by the asyncio event loop (see ``_AioProtocol``)."""

    __slots__ = ("fd", "loop", "poll", "protocol", "transport", "used_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport,
                 protocol: _AioProtocol, fd: int | None) -> None:
        self.loop = loop
        self.transport = transport
        self.protocol = protocol
        self.fd = fd
        self.used_at = 0.0
        self.poll = _poller(fd)

    def reusable(self, now: float) -> bool:
        protocol = self.protocol
        if now - self.used_at > IDLE_REUSE or protocol.closed or protocol.stray or \
                protocol.parser.buffer or self.fd is None:
            return False
        return _peek_idle(self.fd, self.poll)

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes, bool]:
        protocol = self.protocol
        protocol.parser.reset()
        waiter: asyncio.Future[tuple[int, bytes, bool]] = self.loop.create_future()
        protocol.waiter = waiter
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            self.transport.write(request)
            return await waiter
        finally:
            timer.cancel()
            protocol.waiter = None

    def leftover(self) -> bool:
        return self.protocol.stray or bool(self.protocol.parser.buffer)

    async def aclose(self) -> None:
        self.transport.abort()


def _expire(waiter: asyncio.Future[tuple[int, bytes, bool]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class LeanPost:
    """``POST`` to one URL over HTTP/1.1 with a keep-alive pool of at most ``keep`` idle
    connections.

    ``url`` is the parsed target (``http`` or ``https``); ``headers`` are sent with every
    request (besides ``Host``, ``Content-Length`` and, for a URL with user info, basic
    authorization, which replaces any ``Authorization`` in ``headers`` as httpx does).
    ``timeout`` bounds one attempt from the first byte written to the last byte read;
    ``connect_timeout`` bounds opening a connection (TCP and TLS). ``ssl_context`` serves
    ``https``. ``socket_options`` are set on every new socket.

    On asyncio, connections are the event loop's own (a protocol and a transport: one
    ``send()`` per request, the answer parsed as it is read, no task switch per read); on
    trio, anyio streams.
    """

    def __init__(self, url: SplitResult, headers: dict[str, str], *, timeout: float,
                 connect_timeout: float, keep: int, ssl_context: ssl.SSLContext | None,
                 socket_options: Iterable[tuple[int, int, int]] = ()) -> None:
        host = url.hostname
        if not host:
            raise ValueError(f"no host in the Resonate server URL {url.scheme}://...")
        self._tls = url.scheme == "https"
        if self._tls and ssl_context is None:
            raise ValueError("an https URL needs an ssl_context")
        self._host = host
        self._port = url.port or (443 if self._tls else 80)
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._keep = keep
        self._socket_options = list(socket_options)
        self._idle: list[_Connection | _AioConnection] = []
        self._closed = False
        shown_host = f"[{host}]" if ":" in host else host
        if url.port is not None:
            shown_host = f"{shown_host}:{url.port}"
        fields = {"Host": shown_host, "Accept": "*/*", "User-Agent": "resonate-async",
                  **headers}
        if url.username is not None or url.password is not None:
            credentials = f"{unquote(url.username or '')}:{unquote(url.password or '')}"
            fields = {name: value for name, value in fields.items()
                      if name.lower() != "authorization"}
            fields["Authorization"] = "Basic " + base64.b64encode(
                credentials.encode()).decode("ascii")
        path = (url.path or "/").rstrip("/") + "/"
        if url.query:
            path = f"{path}?{url.query}"
        lines = [f"POST {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send ``body`` and return the answer's status and content.

        Raises ``NotDelivered`` when no connection could be opened and ``Ambiguous`` when the
        exchange failed after the request may have been written.
        """
        conn = await self._checkout() if self._idle else None
        if conn is None:
            conn = await self._connect()
        request = b"%s%d\r\n\r\n%s" % (self._head, len(body), body)
        done = keep_alive = False
        try:
            status, content, keep_alive = await conn.exchange(request, self._timeout)
            done = True
        except TimeoutError:
            raise Ambiguous(f"no answer within {self._timeout:g} s: ReadTimeout") from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise Ambiguous(_describe(exc)) from None  # a reset, a TLS failure (an OSError)
        except anyio.EndOfStream:
            raise Ambiguous("the server closed the connection without answering") from None
        finally:
            if not done or not keep_alive or conn.leftover() or self._closed or \
                    len(self._idle) >= self._keep:
                await conn.aclose()
            else:
                conn.used_at = _now()
                self._idle.append(conn)
        return status, content

    async def _checkout(self) -> _Connection | _AioConnection | None:
        idle = self._idle
        now = _now()
        while idle:
            conn = idle.pop()
            if conn.reusable(now):
                return conn
            await conn.aclose()
        return None

    async def _connect(self) -> _Connection | _AioConnection:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio
            return await self._connect_anyio()
        protocol = _AioProtocol()
        try:
            with anyio.fail_after(self._connect_timeout):
                if self._tls:
                    transport, _ = await loop.create_connection(
                        lambda: protocol, self._host, self._port, ssl=self._ssl_context,
                        server_hostname=self._host)
                else:
                    transport, _ = await loop.create_connection(
                        lambda: protocol, self._host, self._port)
        except TimeoutError:
            raise NotDelivered(f"no connection to {self._host}:{self._port} within "
                               f"{self._connect_timeout:g} s: ConnectTimeout") from None
        except OSError as exc:  # ssl.SSLError is an OSError
            raise NotDelivered(_describe(_root_cause(exc))) from None
        raw = transport.get_extra_info("socket")
        fd = None
        if raw is not None:
            fd = raw.fileno()
            self._set_options(raw)
        return _AioConnection(loop, transport, protocol, fd)

    async def _connect_anyio(self) -> _Connection:
        stream: ByteStream
        try:
            with anyio.fail_after(self._connect_timeout):
                if self._tls:
                    stream = await anyio.connect_tcp(
                        self._host, self._port, tls=True, ssl_context=self._ssl_context,
                        tls_hostname=self._host, tls_standard_compatible=False)
                else:
                    stream = await anyio.connect_tcp(self._host, self._port)
        except TimeoutError:
            raise NotDelivered(f"no connection to {self._host}:{self._port} within "
                               f"{self._connect_timeout:g} s: ConnectTimeout") from None
        except (OSError, anyio.BrokenResourceError) as exc:  # ssl.SSLError is an OSError
            raise NotDelivered(_describe(_root_cause(exc))) from None
        raw = stream.extra(SocketAttribute.raw_socket, None)
        if raw is None:  # pragma: no cover - anyio's TCP streams always have a socket
            return _Connection(stream, None)
        self._set_options(raw)
        return _Connection(stream, raw.fileno())

    def _set_options(self, raw: socket.socket) -> None:
        for level, option, value in self._socket_options:
            with contextlib.suppress(OSError):  # an option this platform refuses
                raw.setsockopt(level, option, value)

    async def aclose(self) -> None:
        """Close every idle connection (idempotent); connections in use close when done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


def _now() -> float:
    return time.monotonic()


def _root_cause(exc: BaseException) -> BaseException:
    """What anyio's "All connection attempts failed" wraps: the refusal itself."""
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    return cause if isinstance(cause, OSError) else exc


def _describe(exc: BaseException) -> str:
    text = redact(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
