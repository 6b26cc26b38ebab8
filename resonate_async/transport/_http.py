"""The HTTP transport: a Resonate server (or ``python -m resonate_async dev``) over HTTP.

Requests go to ``POST /`` as protocol envelopes, through a lean HTTP/1.1 client (``_h1``) or,
where it cannot serve the configuration, httpx; push messages arrive on one Server-Sent-Events
stream per subscription, ``GET /poll/{group}/{pid}`` (httpx). The transport hides the network's
unreliability the way protocol.md §11 recommends:

* A connection failure *before* the request reached the server (refused, DNS, connect
  timeout) is retried for every kind, with exponential backoff, for at most ``retry_for``
  seconds; then ``TransportError``.
* A failure *after* the request may have reached the server (reset, read timeout, a proxy's
  502/503/504) is retried only for kinds that are safe to repeat. ``task.fulfill`` is repeated
  too, and a ``409`` after such a repeat is checked with ``promise.get``: if the promise is
  settled the way we asked, our first attempt won and the answer is ``200``. The other kinds
  (``task.acquire``, ``task.suspend``, ``task.release``, ``task.create``, ``task.continue``)
  raise ``TransportError``: their outcome is unknown, and the lease (if it was taken) lapses.
* A ``500`` answer is retried for the kinds that are safe to repeat; other answers, whatever
  their status, are returned to the caller (``head.status`` decides, never the HTTP status).

Subscriptions reconnect forever with exponential backoff (reset after a successful connect);
delivery is at-most-once, as on the server: messages sent while disconnected are lost.
"""

from __future__ import annotations

import itertools
import math
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final
from urllib.parse import quote, urlsplit

import anyio
import anyio.lowlevel
import certifi
import httpx
import msgspec
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from resonate_async._errors import (
    NotStartedError,
    ProtocolError,
    RequestTooLargeError,
    TransportError,
)
from resonate_async._redact import redact
from resonate_async._slots import take
from resonate_async._token import token_problem
from resonate_async.protocol import (
    Empty,
    Execute,
    Message,
    PromiseGet,
    PromiseResult,
    Request,
    Response,
    TaskFulfill,
    decode_message,
    decode_response,
    encode_request,
    new_corr_id,
)
from resonate_async.transport._h1 import Ambiguous as _Ambiguous
from resonate_async.transport._h1 import LeanPost
from resonate_async.transport._h1 import NotDelivered as _NotDelivered

log = structlog.get_logger("resonate_async.transport")

# protocol.md §11 item 3: a repeat after an unseen success returns the same answer.
SAFE_TO_REPEAT: Final = frozenset({
    "promise.get", "promise.create", "promise.settle", "promise.register_callback",
    "promise.register_listener", "promise.search", "task.get", "task.fence", "task.heartbeat",
    "task.halt", "task.search", "schedule.create", "schedule.get", "schedule.search",
    "schedule.delete",
})
# Repeated after an ambiguous failure, with the outcome confirmed (see ``_confirm``).
_CONFIRMED: Final = frozenset({"task.fulfill"})
# The request body limit of the Resonate server (its web framework's default) and of ours.
MAX_REQUEST_BYTES: Final = 2 * 1024 * 1024
_PROXY_STATUSES: Final = frozenset({502, 503, 504})
# The server sends nothing on an idle stream: TCP keep-alive notices a peer that vanished
# without closing the connection (a crashed host, a dropped NAT entry).
_KEEPALIVE: Final = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *((socket.IPPROTO_TCP, option, value) for option, value in (
        (getattr(socket, "TCP_KEEPIDLE", None), 60),
        (getattr(socket, "TCP_KEEPINTVL", None), 15),
        (getattr(socket, "TCP_KEEPCNT", None), 4),
    ) if option is not None),
]


@dataclass
class _Subscription:
    group: str
    pid: str
    accepts_work: bool
    stream: MemoryObjectSendStream[Message]
    on_connect: Callable[[], None] | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    connected: anyio.Event = field(default_factory=anyio.Event)
    # Why the server last refused this stream (cleared on connect): see ``stream_problem``.
    refusal: str | None = None
    ended: anyio.Event = field(default_factory=anyio.Event)  # its connection is closed


class HttpTransport:
    """A ``Transport`` to a Resonate server at ``url`` (e.g. ``"http://localhost:8001"``).

    Arguments:
        token: a JWT sent with every request, in ``head.auth`` and as ``Authorization: Bearer``.
        retry_for: how long (seconds) ``send`` keeps retrying a failing connection before it
            raises ``TransportError``.
        backoff / backoff_max: the first and the largest pause between attempts (seconds);
            also used for reconnecting subscriptions.
        timeout: seconds to wait for an answer to one ``POST /`` attempt (streams never time
            out while idle).
        connect_timeout: seconds to wait for a TCP connection.
        max_connections: size of the connection pool (idle connections kept).
        max_in_flight: how many ``POST /`` requests may be under way at once (the rest wait);
            also how many connections ``POST /`` opens at most. Many roots at once go faster
            with more (the server answers a burst of requests in fewer turns of its loop):
            64 by default.
        max_request_bytes: the largest request body the server accepts (the Resonate server
            and the dev server: 2 MiB, answering 413 above it); the SDK checks results against
            it before sending and fails the step or execution with a clear ``EncodingError``.
            ``None``: no check here (the server's 413 still ends the work the same way).
        ssl_context: the TLS settings for an ``https`` URL (default: verify the server against
            certifi's CA bundle, as httpx does), e.g. ``ssl.create_default_context(cafile=...)``
            for a server with a private CA.
        proxy: the URL of an HTTP(S) or SOCKS proxy to reach the server through (the
            environment's ``HTTP_PROXY``/``HTTPS_PROXY`` are not read).
        transport: an ``httpx.AsyncBaseTransport`` to use instead of the network (tests).

    ``POST /`` goes through a lean HTTP/1.1 client on anyio streams (one ``send()`` per
    request, a keep-alive pool of at most ``max_in_flight`` connections in use), over TLS for
    ``https``. With ``proxy=`` or ``transport=`` it goes through httpx instead, as the event
    streams always do; requests then behave the same (timeouts, token, retries), only slower.

    Nothing happens at construction; ``async with`` opens the connection pool and the task
    group that owns the subscriptions. It may be entered by several owners; the last to
    leave closes it.
    """

    delivers_all = False  # SSE is at-most-once: unblock messages can be lost
    records_steps = False  # the Resonate server has no promise.record: a step is two fences

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        retry_for: float = 30.0,
        backoff: float = 0.05,
        backoff_max: float = 2.0,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_connections: int = 256,
        max_in_flight: int = 64,
        max_request_bytes: int | None = MAX_REQUEST_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"Resonate server URL must start with http:// or https://: {redact(url)!r}")
        problem = token_problem(token) if token is not None else None
        if problem is not None:
            raise ValueError(f"HttpTransport(token=...): {problem}")
        if max_request_bytes is not None and (
                isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int)
                or max_request_bytes <= 0):
            raise ValueError("HttpTransport(max_request_bytes=...) must be a positive int "
                             f"(bytes) or None, got {max_request_bytes!r}")
        self.max_request_bytes = max_request_bytes
        self.url = url.rstrip("/")
        self._shown_url = redact(self.url)  # what logs and messages show: no credentials
        self.token = token
        self.retry_for = retry_for
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._stream_timeout = httpx.Timeout(None, connect=connect_timeout)
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)
        self._mock = transport
        self._proxy = proxy
        self._ssl_context = ssl_context  # for https without one: certifi's, made on entry
        self._timeouts = (timeout, connect_timeout)
        self._max_connections = max_connections
        self._lean: LeanPost | None = None
        # We keep our own cache and never read task.fence's preload: servers that honour this
        # hint (our development server) leave it out; the Resonate server ignores it.
        self._headers = {"Content-Type": "application/json", "Resonate-Fence-Preload": "omit"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._client: httpx.AsyncClient | None = None
        # A fan-out of thousands of steps queues here (O(1) per request), a few connections at
        # a time; httpcore's pool, used with proxy= or transport=, does work quadratic in the
        # number of requests waiting inside it.
        self._in_flight = anyio.CapacityLimiter(max_in_flight)
        self._tg: TaskGroup | None = None
        self._owners = 0
        self._subscriptions: dict[tuple[str, str], _Subscription] = {}
        # Each request's corrId: a random prefix per transport and a serial number (unique
        # without a random draw, a system call, per request).
        self._corr_prefix = new_corr_id() + "-"
        self._corr_serial = itertools.count(1)

    # lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> HttpTransport:
        self._owners += 1
        if self._owners == 1:
            if self._ssl_context is None and self.url.startswith("https://"):
                self._ssl_context = ssl.create_default_context(cafile=certifi.where())
            transport = self._mock if self._mock is not None else httpx.AsyncHTTPTransport(
                limits=self._limits, socket_options=_KEEPALIVE, trust_env=False,
                verify=self._ssl_context or True, proxy=self._proxy)
            if self._mock is None and self._proxy is None:
                self._lean = LeanPost(
                    urlsplit(self.url), self._headers, timeout=self._timeouts[0],
                    connect_timeout=self._timeouts[1],
                    keep=min(self._max_connections, int(self._in_flight.total_tokens)),
                    ssl_context=self._ssl_context, socket_options=_KEEPALIVE)
            self._client = httpx.AsyncClient(
                follow_redirects=False, timeout=self._timeout, transport=transport,
                headers=self._headers, trust_env=False,
            )
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._owners -= 1
        if self._owners <= 0:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop every subscription and close the connection pool (idempotent)."""
        self._owners = 0
        for sub in self._subscriptions.values():
            sub.stream.close()
        self._subscriptions.clear()
        tg, self._tg = self._tg, None
        client, self._client = self._client, None
        lean, self._lean = self._lean, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                if lean is not None:
                    await lean.aclose()
                if client is not None:
                    await client.aclose()

    def _open_client(self, what: str) -> httpx.AsyncClient:
        if self._client is None:
            raise NotStartedError(
                f"{what}: the HttpTransport to {self._shown_url} is not open; "
                "enter it first with `async with transport:`"
            )
        return self._client

    # requests ---------------------------------------------------------------------------------
    async def send(self, request: Request) -> Response:
        """Send one request and return the server's answer (see the module docstring)."""
        kind = request.KIND
        client = self._open_client(kind)
        corr_id = f"{self._corr_prefix}{next(self._corr_serial)}"
        body = encode_request(request, corr_id=corr_id, auth=self.token)
        deadline = anyio.current_time() + self.retry_for
        delay = self.backoff
        attempt = 0
        maybe_delivered = False
        while True:
            attempt += 1
            if self._client is not client:
                raise NotStartedError(f"{kind}: the HttpTransport to {self._shown_url} was closed")
            try:
                lean = self._lean
                if lean is not None:
                    limiter = self._in_flight
                    # As ``async with limiter`` would: nothing is sent from a cancelled scope;
                    # but a free slot is taken without a pass through the event loop.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    await take(limiter)
                    try:
                        answer = await lean.post(body)
                    finally:
                        limiter.release()
                else:
                    answer = await self._post(client, body)
                self._check(kind, body, *answer)
            except _NotDelivered as exc:
                reason = exc.reason
            except _Ambiguous as exc:
                reason = exc.reason
                maybe_delivered = True
                if kind not in SAFE_TO_REPEAT and kind not in _CONFIRMED:
                    raise TransportError(
                        f"{kind} to {self._shown_url}: the connection failed after the request was "
                        f"sent ({reason}), so it may or may not have taken effect, and {kind} is "
                        "not safe to repeat; treat the task as lost (its lease, if taken, "
                        "lapses and the server dispatches it again)"
                    ) from None
            else:
                status_code, content = answer
                if status_code == 500 and kind in SAFE_TO_REPEAT and \
                        anyio.current_time() + delay < deadline:
                    log.warning("request_retried", kind=kind, url=self._shown_url, status=500,
                                attempt=attempt)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                response = self._decode(kind, corr_id, status_code, content)
                if maybe_delivered:
                    response = await self._after_repeat(request, response)
                return response
            if anyio.current_time() + delay >= deadline:
                raise TransportError(
                    f"{kind}: cannot reach the Resonate server at {self._shown_url} ({reason}; "
                    f"tried {attempt} times for {self.retry_for:g} s). Check that the server "
                    "is running and that the URL is right (start a local one with "
                    "`python -m resonate_async dev`), or allow longer with Resonate(retry_for=...)"
                ) from None
            log.info("request_retried", kind=kind, url=self._shown_url, reason=reason,
                     attempt=attempt)
            await anyio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _post(self, client: httpx.AsyncClient, body: bytes) -> tuple[int, bytes]:
        """``POST /`` through httpx (a proxy, or a transport given for tests)."""
        try:
            async with self._in_flight:
                answer = await client.post(self.url + "/", content=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                httpx.UnsupportedProtocol) as exc:
            raise _NotDelivered(_describe(exc)) from None
        except httpx.TransportError as exc:  # reset, read timeout, broken protocol ...
            raise _Ambiguous(_describe(exc)) from None
        return answer.status_code, answer.content

    @staticmethod
    def _check(kind: str, body: bytes, status_code: int, content: bytes) -> None:
        """Refuse the answers that are not the server's: a proxy's error page, a 413."""
        if status_code in _PROXY_STATUSES and not _looks_like_envelope(content):
            raise _Ambiguous(f"HTTP {status_code} from an intermediary")
        if status_code == 413:
            raise RequestTooLargeError(
                f"the server refused a request body of {len(body)} bytes as too large "
                "(HTTP 413); keep arguments and results well under 2 MiB", kind=kind)

    def _decode(self, kind: str, corr_id: str, status_code: int, content: bytes) -> Response:
        try:
            response = decode_response(kind, corr_id, content, fence_preload=False)
        except ProtocolError:
            if status_code != 500:
                raise
        else:
            # Success is 200 or 201 depending on the server (protocol.md, our decision 7);
            # callers see one success status.
            return Response(200, response.data) if response.status == 201 else response
        # A server that failed before it could read the request answers corrId "0".
        response = decode_response(kind, None, content)
        if response.status != 500:
            raise ProtocolError(
                f"the server answered HTTP 500 with status {response.status}", kind=kind)
        return response

    async def _after_repeat(self, request: Request, response: Response) -> Response:
        """Interpret the answer to a request that an earlier, lost attempt may have done."""
        if isinstance(request, TaskFulfill) and response.status == 409:
            check = await self.send(PromiseGet(request.id))
            if check.status == 200 and isinstance(check.data, PromiseResult):
                promise, wanted = check.data.promise, request.action.data
                if promise.state == wanted.state and promise.value.data == wanted.value.data:
                    log.info("fulfill_confirmed", task_id=request.id)
                    return Response(200, check.data)
        if request.KIND == "schedule.delete" and response.status == 404:
            return Response(200, Empty())
        return response

    # subscriptions ----------------------------------------------------------------------------
    def subscribe(self, group: str, pid: str, *, accepts_work: bool = True,
                  on_connect: Callable[[], None] | None = None,
                  ) -> MemoryObjectReceiveStream[Message]:
        """Open the SSE stream of process ``pid`` in ``group`` and return its messages.

        The stream connects (and reconnects) in the background; ``await
        wait_subscribed(group, pid)`` to know when messages can arrive. With
        ``accepts_work=False`` only unicast messages (``poll://uni@group/pid``) are wanted.
        A server cannot be told so (the Resonate server sends a group's anycast work to any
        of its streams), so subscribe such a process in a group of its own (as ``Resonate``
        does for ``worker=False``); an ``execute`` that arrives anyway is dropped here.
        Subscribing again with the same group and pid replaces the earlier subscription.
        ``on_connect`` is called after each successful (re)connection.
        """
        self._open_client(f"subscribe({group!r}, {pid!r})")
        tg = self._tg
        if tg is None:  # pragma: no cover - the client and the task group live together
            raise NotStartedError(f"the HttpTransport to {self._shown_url} is not open")
        self.unsubscribe(group, pid)
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        sub = _Subscription(group, pid, accepts_work, send, on_connect)
        self._subscriptions[(group, pid)] = sub
        tg.start_soon(self._poll, sub)
        return receive

    def unsubscribe(self, group: str, pid: str) -> None:
        """Close the SSE stream of ``pid`` in ``group`` (nothing if none is open)."""
        sub = self._subscriptions.pop((group, pid), None)
        if sub is not None:
            sub.scope.cancel()
            sub.stream.close()

    async def close_stream(self, group: str, pid: str, *, wait: float = 2.0) -> None:
        """Close the SSE stream of ``pid`` in ``group`` and wait (at most ``wait`` seconds)
        until its connection is closed, so that the server stops routing work to it.

        A worker that stops calls this before it releases its tasks: the server re-dispatches
        a released task to a random open stream of the group, and one that went to this
        stream would wait for the server's retry timeout."""
        sub = self._subscriptions.get((group, pid))
        self.unsubscribe(group, pid)
        if sub is not None:
            with anyio.move_on_after(wait):
                await sub.ended.wait()

    async def background(self) -> None:
        """Nothing to run in the owner's task group: subscriptions live in the transport's
        own task group, entered and left with it."""
        await anyio.sleep_forever()

    async def wait_subscribed(self, group: str, pid: str) -> None:
        """Wait until the subscription of ``pid`` in ``group`` is connected to the server."""
        while True:
            sub = self._subscriptions.get((group, pid))
            if sub is None:
                raise NotStartedError(
                    f"no subscription for {group}/{pid}: call subscribe({group!r}, {pid!r}) first")
            await sub.connected.wait()
            if self._subscriptions.get((group, pid)) is sub and sub.connected.is_set():
                return

    def poll_url(self, group: str, pid: str) -> str:
        """The URL of the event stream of ``pid`` in ``group``."""
        return f"{self.url}/poll/{quote(group, safe='')}/{quote(pid, safe='')}"

    def stream_problem(self, group: str, pid: str) -> str | None:
        """Why the server refuses the event stream of ``pid`` in ``group`` (it keeps being
        retried), or ``None`` when it is connected or has not been refused."""
        sub = self._subscriptions.get((group, pid))
        return sub.refusal if sub is not None else None

    async def _poll(self, sub: _Subscription) -> None:
        url = self.poll_url(sub.group, sub.pid)
        shown = redact(url)
        delay = self.backoff
        try:
            await self._poll_until_cancelled(sub, url, shown, delay)
        finally:
            sub.ended.set()

    async def _poll_until_cancelled(self, sub: _Subscription, url: str, shown: str,
                                    delay: float) -> None:
        with sub.scope:
            while True:
                client = self._client
                if client is None:
                    return
                try:
                    async with client.stream("GET", url, timeout=self._stream_timeout,
                                             headers={"Accept": "text/event-stream"}) as answer:
                        if answer.status_code != 200:
                            text = (await answer.aread())[:200].decode(errors="replace")
                            self._refused(sub, shown, answer.status_code, text, delay)
                        else:
                            log.info("poll_connected", url=shown)
                            sub.refusal = None
                            delay = self.backoff
                            sub.connected.set()
                            if sub.on_connect is not None:
                                sub.on_connect()
                            await self._read_events(sub, answer.aiter_lines())
                            log.info("poll_closed", url=shown)
                except httpx.HTTPError as exc:
                    log.info("poll_failed", url=shown, reason=_describe(exc))
                finally:
                    if sub.connected.is_set():
                        sub.connected = anyio.Event()
                await anyio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)

    def _refused(self, sub: _Subscription, shown: str, status: int, text: str,
                 delay: float) -> None:
        """Log, as an error that says why, that the server turned the event stream down.

        Until the stream connects no work and no results reach this process, so the first
        refusal (and any change of reason) is an error; identical repeats are logged at info.
        """
        said = " ".join(redact(text).split()) or "no reason given"
        if status in (401, 403):
            hint = ("The server wants a valid token: give every process the server's token "
                    "(Resonate(token=...) or RESONATE_TOKEN)")
        elif status == 429 or (status == 503 and "capacity" in said.lower()):
            hint = ("The server is at its limit of open event streams (idle clients count "
                    "too): stop idle clients or raise the server's limit")
        elif status in _PROXY_STATUSES:
            hint = "The server, or a proxy in front of it, is not available right now"
        else:
            hint = "Check the server's log"
        problem = (f"the Resonate server at {self._shown_url} refused the event stream of "
                   f"{sub.group}/{sub.pid} with HTTP {status} ({said}); no work and no "
                   f"results reach this process until it connects. {hint}. "
                   "Retrying with backoff")
        event = log.error if problem != sub.refusal else log.info
        event("poll_refused", url=shown, group=sub.group, pid=sub.pid, status=status,
              reason=said, retry_in_s=round(delay, 3), detail=problem)
        sub.refusal = problem

    async def _read_events(self, sub: _Subscription, lines: AsyncIterator[str]) -> None:
        data: list[str] = []
        async for line in lines:
            if line:
                if line.startswith("data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(" ") else value)
                continue  # comments, event:, id:, retry: carry nothing for us
            if not data:
                continue
            payload, data = "\n".join(data), []
            try:
                message = decode_message(payload.encode())
            except (ProtocolError, ValueError) as exc:
                log.warning("poll_event_malformed", group=sub.group, pid=sub.pid,
                            error=str(exc), payload=payload[:200])
                continue
            if not sub.accepts_work and isinstance(message, Execute):
                log.debug("execute_ignored", group=sub.group, pid=sub.pid,
                          task_id=message.task_id)
                continue
            try:
                sub.stream.send_nowait(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("poll_consumer_gone", group=sub.group, pid=sub.pid)
                self.unsubscribe(sub.group, sub.pid)
                return

    def __repr__(self) -> str:
        return f"HttpTransport({self._shown_url!r})"


def _describe(exc: BaseException) -> str:
    text = redact(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _looks_like_envelope(content: bytes) -> bool:
    try:
        msgspec.json.decode(content, type=_HeadOnly)
    except msgspec.DecodeError:
        return False
    return True


class _StatusHead(msgspec.Struct):
    status: int


class _HeadOnly(msgspec.Struct):
    head: _StatusHead

