"""Serving ``DevApp`` over HTTP with uvicorn (asyncio only: uvicorn needs it)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog

from resonate_async._clock import Clock, SystemClock
from resonate_async._errors import ResonateError
from resonate_async._redact import redact
from resonate_async._token import token_problem
from resonate_async.engine import DEFAULT_RETRY_TIMEOUT, Engine
from resonate_async.server._app import DevApp

if TYPE_CHECKING:
    import uvicorn

    from resonate_async.transport._postgres import PostgresTransport

log = structlog.get_logger("resonate_async.server")


class ServerError(ResonateError):
    """The development server could not start (missing extra, port in use, locked db ...)."""


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise ServerError(
            "the development server needs uvicorn: pip install \"resonate-async[server]\""
        ) from None
    return uvicorn


class DevServer:
    """The embedded engine behind the Resonate HTTP API, on ``host:port``.

    ``db`` is a SQLite file that keeps the state across restarts (``None``: in memory). When an
    existing file is reopened, the tasks its previous run had leased out are released, so work
    held by workers that are gone is dispatched again. A ``postgresql://`` URL (extra
    ``postgres``) serves the engine in that database instead: several dev servers may serve one
    database at once (behind a load balancer), next to processes that use it directly
    (``Resonate(url="postgresql://...")``); no lease is released at start (other processes hold
    live ones), and ``retry_timeout`` should be the same in every process on it. ``port=0``
    picks a free port; ``url`` tells which once ``serve`` has bound it. ``retry_timeout``
    (seconds) is how long a pending task waits for an acquire before its ``execute`` is sent
    again (the Resonate server's ``tasks.retry_timeout``). ``token``: a secret every request and
    event stream must carry (``401`` otherwise; see ``DevApp``); without one, anyone who reaches
    the port can read and settle every promise, so binding an address other than loopback
    without a token logs a warning (``unprotected`` tells). ``extensions=False``: behave as the
    Resonate server where the dev server otherwise helps clients (see ``DevApp``). For
    development and tests only: production deployments use the Resonate server.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 8001, db: str | None = None,
                 clock: Clock | None = None, log_level: str = "warning",
                 retry_timeout: float = DEFAULT_RETRY_TIMEOUT / 1000,
                 token: str | None = None, extensions: bool = True) -> None:
        if not retry_timeout > 0:
            raise ValueError(f"retry_timeout must be a positive number of seconds, "
                             f"got {retry_timeout!r}")
        problem = token_problem(token) if token is not None else None
        if problem is not None:
            raise ValueError(f"DevServer(token=...): {problem}")
        self.token = token
        self.extensions = extensions
        self.unprotected = False
        self.host = host
        self.port = port
        self.db = db
        self.shown_db = redact(db) if db is not None else ":memory:"
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.log_level = log_level
        self.retry_timeout_ms = max(1, round(retry_timeout * 1000))
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._app: DevApp | None = None
        self._stop_requested = False

    async def serve(self, ready: Callable[[str], object] | None = None) -> None:
        """Serve until ``stop()`` is called (or the task is cancelled).

        ``ready(url)`` is called once the server accepts connections. Raises ``ServerError``
        when it cannot start.
        """
        uvicorn_mod = _uvicorn()
        sock = self._bind()
        try:
            bound_host, bound_port = sock.getsockname()[:2]
            self.port = bound_port
            shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
            self.url = f"http://{shown}:{bound_port}"
            self.unprotected = self.token is None and not _is_loopback(str(bound_host))
            if self.unprotected:
                log.warning("dev_server_unprotected", url=self.url, detail=UNPROTECTED)
            engine, shared = self._open_engine()
            try:
                await self._run(uvicorn_mod, sock, engine, shared, ready)
            finally:
                engine.close()
        finally:
            sock.close()

    def stop(self) -> None:
        """Ask the server to stop: poll streams end, then uvicorn shuts down."""
        self._stop_requested = True
        if self._app is not None:
            self._app.close()
        if self._server is not None:
            self._server.should_exit = True

    def _bind(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ServerError(f"cannot resolve {self.host!r}: {exc}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(2048)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ServerError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                "choose another --port (0 picks a free one) or stop the process using it"
            ) from None
        return sock

    def _open_engine(self) -> tuple[Engine, PostgresTransport | None]:
        if self.db is None:
            return Engine.memory(server_url=self.url, retry_timeout=self.retry_timeout_ms), None
        if self.db.startswith(("postgresql://", "postgres://")):
            return self._open_postgres(self.db)
        try:
            engine = Engine.sqlite(self.db, server_url=self.url,
                                   retry_timeout=self.retry_timeout_ms)
        except ResonateError as exc:
            raise ServerError(str(exc)) from None
        released = engine.release_leases(self.clock.now_ms())
        if released:
            log.info("leases_released", db=self.db, count=released)
        return engine, None

    def _open_postgres(self, dsn: str) -> tuple[Engine, PostgresTransport]:
        """A transport for the requests, event streams and timers, and an engine of its own
        connection for the web view (both create or upgrade the schema if needed)."""
        try:
            from resonate_async.engine._postgres import PostgresStorage
            from resonate_async.transport._postgres import PostgresTransport

            shared = PostgresTransport(dsn, clock=self.clock,
                                       retry_timeout=self.retry_timeout_ms)
            engine = Engine(PostgresStorage(dsn), server_url=self.url,
                            retry_timeout=self.retry_timeout_ms)
        except ResonateError as exc:  # the extra is missing, the database cannot be reached
            raise ServerError(str(exc)) from None
        return engine, shared

    async def _run(self, uvicorn_mod: Any, sock: socket.socket, engine: Engine,
                   shared: PostgresTransport | None,
                   ready: Callable[[str], object] | None) -> None:
        app = DevApp(engine, clock=self.clock, token=self.token, extensions=self.extensions,
                     shared=shared)
        config = uvicorn_mod.Config(
            app, lifespan="on", log_level=self.log_level, access_log=False,
            timeout_graceful_shutdown=3, server_header=False, proxy_headers=False,
            http=_http_protocol(app),
        )
        server = _server_class()(config)
        self._app, self._server = app, server
        started_or_done = anyio.Event()
        server.on_startup = started_or_done.set

        async def run_server() -> None:
            try:
                await server.serve([sock])
            finally:
                started_or_done.set()

        async with app, anyio.create_task_group() as tg:
            tg.start_soon(run_server)
            await started_or_done.wait()
            if server.started:
                log.info("dev_server_listening", url=self.url, db=self.shown_db)
                if ready is not None:
                    ready(self.url)
                if self._stop_requested:
                    self.stop()
        if not server.started and not self._stop_requested:
            raise ServerError(f"the development server on {self.url} failed to start")


UNPROTECTED = ("listening beyond this machine without a token: anyone who reaches the port "
               "can read every argument and result and settle any promise; pass --token "
               "(or set RESONATE_TOKEN) and give the same token to every worker and client")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


class _CoalescingTransport:
    """The transport of one connection, as uvicorn's protocol sees it: what is written in
    one step of the event loop goes out in one ``send()``. uvicorn writes an answer's head
    and its content separately; sent apart they cost the server two system calls and the
    client a wake-up for each part. Writes are held until the answer is complete (uvicorn
    says so, see ``_http_protocol``) or the event loop's next turn, whichever comes first."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        held = self._held
        if held:
            self._held = []
            if not self._transport.is_closing():
                self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_whole(self, data: bytes) -> None:
        """Write a whole answer now (after anything held): nothing to wait for."""
        self.flush()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading ...
        return getattr(self._transport, name)


def _http_protocol(app: DevApp) -> Any:
    """uvicorn's httptools protocol with two changes: each answer goes out in one ``send()``
    (see ``_CoalescingTransport``), and a ``POST /`` with a ``Content-Length`` is answered
    from the parser's callbacks (``DevApp.answer_now``) instead of through a task and the
    ASGI messages of its own: the same status, headers and envelope, a fraction of the work.
    Everything else, and every request on a connection with an answer still in progress,
    takes uvicorn's ASGI path. uvicorn's own choice where httptools is missing."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - the server extra brings httptools
        return "auto"

    class Protocol(HttpToolsProtocol):
        _fast: list[bytes] | None = None  # the body of a POST / on the fast path
        _fast_keep_alive = True

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_CoalescingTransport(transport))  # type: ignore[arg-type]

        def on_headers_complete(self) -> None:
            cycle = self.cycle
            if app.answers_now and (cycle is None or cycle.response_complete) and \
                    (self.url == b"/" or self.url.startswith(b"/?")) and \
                    self.parser.get_method() == b"POST" and not self.expect_100_continue:
                length = _content_length(self.headers)
                if length is not None and length <= app.max_body:
                    self._fast = []
                    self._fast_keep_alive = self.parser.get_http_version() != "1.0" and \
                        self.parser.should_keep_alive()
                    return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if self._fast is not None:
                self._fast.append(body)
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            fast = self._fast
            if fast is None:
                super().on_message_complete()
                return
            self._fast = None
            body = fast[0] if len(fast) == 1 else b"".join(fast)
            try:
                status, answer = app.answer_now(self.headers, body)
                content_type = b"application/json"
            except Exception:
                log.exception("request_failed", path="/", method="POST")
                status, answer, content_type = 500, b"Internal Server Error", _PLAIN
            head = [_status_line(status)]
            head.extend(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers)
            head.append(b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type,
                                                                         len(answer)))
            if not self._fast_keep_alive:
                head.append(b"connection: close\r\n")
            head.append(b"\r\n")
            head.append(answer)
            transport = self.transport
            if isinstance(transport, _CoalescingTransport):
                transport.write_whole(b"".join(head))
            else:  # pragma: no cover - connection_made always wraps it
                transport.write(b"".join(head))
            if not self._fast_keep_alive:
                self.transport.close()
            self.on_response_complete()

        def on_response_complete(self) -> None:
            held = self.transport
            if isinstance(held, _CoalescingTransport):
                held.flush()
            super().on_response_complete()

    return Protocol


_PLAIN: Final = b"text/plain; charset=utf-8"


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """A request's one well-formed ``Content-Length`` (no ``Transfer-Encoding``), or None."""
    length = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            return None
    return length


@functools.cache
def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def _server_class() -> Any:
    uvicorn_mod = _uvicorn()

    class Server(uvicorn_mod.Server):  # type: ignore[misc, name-defined]
        """uvicorn's server, leaving signal handling to its owner."""

        on_startup: Callable[[], object] = staticmethod(lambda: None)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                await super().startup(sockets)
            finally:
                self.on_startup()

    return Server
