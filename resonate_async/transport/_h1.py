"""A lean HTTP/1.1 client for ``POST /``: anyio streams, one ``send()`` per request, keep-alive.

``HttpTransport`` sends its requests through this client; httpx still serves the event stream,
the CLI, and every configuration this client does not handle (see ``HttpTransport``). Each
request is written in one ``send()`` (head and body together) and the answer is read with a
small parser of HTTP/1.1 responses (``Content-Length``, ``chunked``, or up to the end of the
connection), so a round trip costs a few system calls and no per-request objects beyond the
bytes themselves. Idle connections are kept (last used first) and checked with one
non-blocking peek before reuse; a connection idle for longer than ``IDLE_REUSE`` seconds is
closed rather than reused, so a server's keep-alive timeout (uvicorn: 5 s) cannot close it
while a request is on its way.

Failures are classified the way the transport's retries need: ``NotDelivered`` when the
request certainly did not reach the server (no connection), ``Ambiguous`` once any byte of it
may have been sent (a reset, a timeout, an answer cut short or malformed).
"""

from __future__ import annotations

import base64
import contextlib
import select
import ssl
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


class _Connection:
    __slots__ = ("buffer", "fd", "poll", "stream", "used_at")

    def __init__(self, stream: ByteStream, fd: int | None) -> None:
        self.stream = stream
        self.fd = fd
        self.buffer = bytearray()
        self.used_at = 0.0
        self.poll: select.poll | None = None
        if fd is not None and hasattr(select, "poll"):  # not on Windows: select() there
            self.poll = select.poll()
            self.poll.register(fd, select.POLLIN)

    def reusable(self, now: float) -> bool:
        """Whether the server may still read a request from this idle connection: not idle
        for too long, and nothing to read (an end of stream, a TLS close or stray bytes all
        mean it must not be used)."""
        if now - self.used_at > IDLE_REUSE or self.buffer or self.fd is None:
            return False
        try:
            if self.poll is not None:
                return not self.poll.poll(0)
            return not select.select([self.fd], [], [], 0)[0]
        except (OSError, ValueError):
            return False


class LeanPost:
    """``POST`` to one URL over HTTP/1.1 with a keep-alive pool of at most ``keep`` idle
    connections.

    ``url`` is the parsed target (``http`` or ``https``); ``headers`` are sent with every
    request (besides ``Host``, ``Content-Length`` and, for a URL with user info, basic
    authorization, which replaces any ``Authorization`` in ``headers`` as httpx does).
    ``timeout`` bounds one attempt from the first byte written to the last byte read;
    ``connect_timeout`` bounds opening a connection (TCP and TLS). ``ssl_context`` serves
    ``https``. ``socket_options`` are set on every new socket.
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
        self._idle: list[_Connection] = []
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
            with anyio.fail_after(self._timeout):
                await conn.stream.send(request)
                status, content, keep_alive = await _read_response(conn)
            done = True
        except TimeoutError:
            raise Ambiguous(f"no answer within {self._timeout:g} s: ReadTimeout") from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise Ambiguous(_describe(exc)) from None  # a reset, a TLS failure (an OSError)
        except anyio.EndOfStream:
            raise Ambiguous("the server closed the connection without answering") from None
        finally:
            if not done or not keep_alive or conn.buffer or self._closed or \
                    len(self._idle) >= self._keep:
                await anyio.aclose_forcefully(conn.stream)
            else:
                conn.used_at = anyio.current_time()
                self._idle.append(conn)
        return status, content

    async def _checkout(self) -> _Connection | None:
        idle = self._idle
        now = anyio.current_time()
        while idle:
            conn = idle.pop()
            if conn.reusable(now):
                return conn
            await anyio.aclose_forcefully(conn.stream)
        return None

    async def _connect(self) -> _Connection:
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
        for level, option, value in self._socket_options:
            with contextlib.suppress(OSError):  # an option this platform refuses
                raw.setsockopt(level, option, value)
        return _Connection(stream, raw.fileno())

    async def aclose(self) -> None:
        """Close every idle connection (idempotent); connections in use close when done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await anyio.aclose_forcefully(conn.stream)


async def _read_response(conn: _Connection) -> tuple[int, bytes, bool]:
    """Read one answer from ``conn``: its status, content, and whether the connection may be
    used again. Raises ``Ambiguous`` for an answer that is not HTTP/1.x."""
    stream, buffer = conn.stream, conn.buffer
    while True:
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > _MAX_HEAD:
                raise Ambiguous(f"the answer's head is longer than {_MAX_HEAD} bytes")
            searched = max(0, len(buffer) - 3)
            buffer += await stream.receive(_RECEIVE)
            end = buffer.find(b"\r\n\r\n", searched)
        head = bytes(buffer[:end])
        del buffer[:end + 4]
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
            continue
        if status in (204, 304):
            return status, b"", keep_alive
        if chunked:
            return status, await _read_chunked(stream, buffer), keep_alive
        if length is not None:
            return status, await _read_exactly(stream, buffer, length), keep_alive
        while True:  # neither length nor chunks: the content ends with the connection
            try:
                buffer += await stream.receive(_RECEIVE)
            except anyio.EndOfStream:
                content = bytes(buffer)
                buffer.clear()
                return status, content, False


async def _read_exactly(stream: ByteStream, buffer: bytearray, length: int) -> bytes:
    """``length`` bytes: those in ``buffer`` first (the rest stays there), then the stream's.
    A large answer (a full preload) is gathered in parts and joined once: one copy."""
    if len(buffer) >= length:
        content = bytes(buffer[:length])
        del buffer[:length]
        return content
    parts = [bytes(buffer)]
    have = len(buffer)
    buffer.clear()
    while have < length:
        part = await stream.receive(max(_RECEIVE, length - have))
        parts.append(part)
        have += len(part)
    content = b"".join(parts)
    if have > length:
        buffer += content[length:]
        content = content[:length]
    return content


async def _read_chunked(stream: ByteStream, buffer: bytearray) -> bytes:
    parts: list[bytes] = []
    while True:
        end = buffer.find(b"\r\n")
        while end < 0:
            if len(buffer) > _MAX_HEAD:
                raise Ambiguous("a malformed chunk size line in the answer")
            buffer += await stream.receive(_RECEIVE)
            end = buffer.find(b"\r\n")
        size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise Ambiguous(f"a malformed chunk size in the answer ({size_text[:20]!r})") from None
        del buffer[:end + 2]
        if size == 0:
            while True:  # trailers, up to an empty line
                end = buffer.find(b"\r\n")
                while end < 0:
                    if len(buffer) > _MAX_HEAD:
                        raise Ambiguous("malformed trailers in the answer")
                    buffer += await stream.receive(_RECEIVE)
                    end = buffer.find(b"\r\n")
                line = bytes(buffer[:end])
                del buffer[:end + 2]
                if not line:
                    return b"".join(parts)
        while len(buffer) < size + 2:
            buffer += await stream.receive(max(_RECEIVE, size + 2 - len(buffer)))
        if buffer[size:size + 2] != b"\r\n":
            raise Ambiguous("a chunk of the answer does not end where its size says")
        parts.append(bytes(buffer[:size]))
        del buffer[:size + 2]


def _root_cause(exc: BaseException) -> BaseException:
    """What anyio's "All connection attempts failed" wraps: the refusal itself."""
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    return cause if isinstance(cause, OSError) else exc


def _describe(exc: BaseException) -> str:
    text = redact(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
