"""HttpTransport's own HTTP/1.1 client for ``POST /``, against real sockets.

A small server on 127.0.0.1 answers each request the way a test tells it to: an envelope,
a proxy's error page, a reset after reading the request, silence, a close after answering.
The transport must classify each failure as the retries need (not sent: retry any kind; maybe
sent: retry only the kinds safe to repeat), reuse connections only while the server can still
read them, and never hand one request the answer meant for another.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme

from resonate_async._errors import ProtocolError, RequestTooLargeError, TransportError
from resonate_async.protocol import PromiseCreate, PromiseGet, TaskAcquire
from resonate_async.transport import HttpTransport, _h1

FAR = 4_102_444_800_000
TOKEN = "jwt.t0ken.sig"


@dataclass
class Seen:
    """One request as the server read it."""

    connection: int
    line: str
    headers: dict[str, str]
    body: dict[str, Any]


class Reset(Exception):
    """Raised by a reply: reset the connection (RST) without answering."""


class Close(Exception):
    """Raised by a reply: close the connection (FIN) without answering."""


Reply = Callable[[Seen], Awaitable[bytes]]


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    close_after_answer: bool = False
    closed: anyio.Event = field(default_factory=anyio.Event)  # set when it closes one


def envelope(seen: Seen, status: int, data: Any) -> bytes:
    return json.dumps({"kind": seen.body["kind"],
                       "head": {"corrId": seen.body["head"]["corrId"], "status": status,
                                "version": "2026-04-01"},
                       "data": data}).encode()


def http(status: int, content: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(content)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + content


async def not_found(seen: Seen) -> bytes:
    return http(404, envelope(seen, 404, "Promise not found"))


def record(pid: str) -> dict[str, Any]:
    return {"id": pid, "state": "pending", "param": {}, "value": {}, "tags": {},
            "timeoutAt": FAR, "createdAt": 1}


async def _read_request(stream: anyio.abc.ByteStream,
                        buffer: bytearray) -> tuple[str, dict[str, str], bytes] | None:
    while b"\r\n\r\n" not in buffer:
        try:
            buffer += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    buffer[:] = rest
    while len(buffer) < length:
        buffer += await stream.receive()
    body = bytes(buffer[:length])
    del buffer[:length]
    return lines[0], headers, body


def _reset(stream: anyio.abc.ByteStream) -> None:
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@asynccontextmanager
async def serving(reply: Reply = not_found, *, tls: ssl.SSLContext | None = None,
                  userinfo: str = "") -> AsyncIterator[Server]:
    listener: anyio.abc.Listener[Any] = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    scheme = "https" if tls is not None else "http"
    server = Server(f"{scheme}://{userinfo}127.0.0.1:{port}")
    if tls is not None:
        from anyio.streams.tls import TLSListener

        listener = TLSListener(listener, tls, standard_compatible=False)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        server.connections += 1
        number = server.connections
        server.open_now += 1
        server.most_open = max(server.most_open, server.open_now)
        buffer = bytearray()
        try:
            async with stream:
                while (request := await _read_request(stream, buffer)) is not None:
                    line, headers, body = request
                    seen = Seen(number, line, headers, json.loads(body))
                    server.seen.append(seen)
                    try:
                        await stream.send(await reply(seen))
                    except Reset:
                        _reset(stream)
                        return
                    except Close:
                        return
                    if server.close_after_answer:
                        return
        except (anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError, OSError):
            pass
        finally:
            server.open_now -= 1
            server.closed.set()
            server.closed = anyio.Event()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield server
        tg.cancel_scope.cancel()


def transport(url: str, **options: Any) -> HttpTransport:
    options = {"backoff": 0.001, "backoff_max": 0.01, "retry_for": 5.0, **options}
    return HttpTransport(url, **options)


# -- the happy path ------------------------------------------------------------------------------


async def test_requests_reuse_one_connection_and_carry_the_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_h1, "IDLE_REUSE", 3600.0)
    async with serving() as server, transport(server.url, token=TOKEN) as t:
        for _ in range(10):
            assert (await t.send(PromiseGet("p1"))).status == 404
    assert server.connections == 1
    assert [s.body["head"]["auth"] for s in server.seen] == [TOKEN] * 10
    first = server.seen[0]
    assert first.line == "POST / HTTP/1.1"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["host"] == server.url.removeprefix("http://")
    assert first.headers["resonate-fence-preload"] == "omit"


async def test_credentials_in_the_url_travel_as_basic_auth() -> None:
    async with serving(userinfo="alice:pa55w0rd@") as server, transport(server.url) as t:
        await t.send(PromiseGet("p1"))
    assert server.seen[0].headers["authorization"] == "Basic YWxpY2U6cGE1NXcwcmQ="


async def test_a_url_path_is_kept_in_the_request_line() -> None:
    async with serving() as server, transport(server.url + "/resonate/") as t:
        await t.send(PromiseGet("p1"))
    assert server.seen[0].line == "POST /resonate/ HTTP/1.1"


async def test_a_connection_idle_for_too_long_is_not_reused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_h1, "IDLE_REUSE", -1.0)  # every connection is too old to reuse
    async with serving() as server, transport(server.url) as t:
        for _ in range(3):
            await t.send(TaskAcquire("t1", 0, "pid", 60_000))
    assert server.connections == 3


async def test_concurrent_requests_each_get_their_own_answer_within_the_in_flight_limit(
        ) -> None:
    async def slow(seen: Seen) -> bytes:
        await anyio.sleep(0.01)
        return http(200, envelope(seen, 200, {"promise": record(seen.body["data"]["id"])}))

    got: dict[str, str] = {}
    async with serving(slow) as server, transport(server.url, max_in_flight=4) as t:
        async def one(i: int) -> None:
            answer = await t.send(PromiseGet(f"p{i}"))
            got[f"p{i}"] = answer.data.promise.id  # type: ignore[union-attr]

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(one, i)
    assert got == {f"p{i}": f"p{i}" for i in range(32)}
    assert server.most_open <= 4


async def test_a_cancelled_request_does_not_leave_its_answer_to_the_next_one() -> None:
    calls = 0

    async def first_is_slow(seen: Seen) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep(0.2)
        return http(200, envelope(seen, 200, {"promise": record(seen.body["data"]["id"])}))

    async with serving(first_is_slow) as server, transport(server.url) as t:
        with anyio.move_on_after(0.05):
            await t.send(PromiseGet("first"))
        answer = await t.send(PromiseGet("second"))
    assert answer.data.promise.id == "second"  # type: ignore[union-attr]
    assert server.connections == 2


async def test_nothing_is_sent_from_a_cancelled_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_h1, "IDLE_REUSE", 3600.0)
    async with serving() as server, transport(server.url) as t:
        assert (await t.send(PromiseGet("p1"))).status == 404  # a connection is open, idle
        with anyio.CancelScope() as scope:
            scope.cancel()
            await t.send(TaskAcquire("t1", 0, "pid", 60_000))
        assert (await t.send(PromiseGet("p2"))).status == 404
    assert [s.body["kind"] for s in server.seen] == ["promise.get", "promise.get"]


# -- answers in every shape HTTP/1.1 allows ----------------------------------------------------


async def test_a_chunked_answer_is_read() -> None:
    async def chunked(seen: Seen) -> bytes:
        body = envelope(seen, 404, "Promise not found")
        parts = [body[:10], body[10:]]
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
        return (b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunks + b"0\r\nX-Trailer: 1\r\n\r\n")

    async with serving(chunked) as server, transport(server.url) as t:
        for _ in range(2):
            assert (await t.send(PromiseGet("p1"))).data == "Promise not found"
    assert server.connections == 1


async def test_an_answer_that_ends_with_the_connection_is_read_and_not_reused() -> None:
    async def until_close(seen: Seen) -> bytes:
        return b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n" + envelope(
            seen, 404, "Promise not found")

    async with serving(until_close) as server, transport(server.url) as t:
        server.close_after_answer = True
        for _ in range(2):
            assert (await t.send(TaskAcquire("t1", 0, "pid", 60_000))).status == 404
    assert server.connections == 2


async def test_a_server_closing_its_keep_alive_connection_does_not_lose_the_next_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_h1, "IDLE_REUSE", 3600.0)
    async with serving() as server, transport(server.url) as t:
        server.close_after_answer = True  # closes after answering, without saying so
        for _ in range(3):
            closed = server.closed
            assert (await t.send(TaskAcquire("t1", 0, "pid", 60_000))).status == 404
            await closed.wait()
    assert server.connections == 3
    assert len(server.seen) == 3  # a task.acquire, not safe to repeat: never sent twice


async def test_a_large_answer_is_read_whole() -> None:
    big = "x" * 3_000_000

    async def large(seen: Seen) -> bytes:
        return http(404, envelope(seen, 404, big))

    async with serving(large) as server, transport(server.url) as t:
        assert (await t.send(PromiseGet("p1"))).data == big


async def test_bytes_after_an_answer_keep_its_connection_from_being_reused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_h1, "IDLE_REUSE", 3600.0)

    async def with_stray_bytes(seen: Seen) -> bytes:  # an answer, then the start of another
        return http(200, envelope(seen, 200, {"promise": record(seen.body["data"]["id"])})) + \
            b"HTTP/1.1 200 OK\r\n"

    async with serving(with_stray_bytes) as server, transport(server.url) as t:
        for pid in ("p1", "p2", "p3"):
            answer = await t.send(PromiseGet(pid))
            assert answer.data.promise.id == pid  # type: ignore[union-attr]
    assert server.connections == 3
    assert len(server.seen) == 3  # each sent once: no answer was read from the stray bytes


_SHAPES = {
    "content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", True),
    "chunked, with an extension and trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-T: 1\r\n\r\n", b"hello", True),
    "an interim 100 first": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        b"no", True),
    "no content (204), HTTP/1.0 without keep-alive": (
        b"HTTP/1.0 204 No Content\r\n\r\n", b"", False),
}


@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_an_answer_arriving_one_byte_at_a_time_is_parsed_whole(shape: str) -> None:
    raw, content, keep_alive = _SHAPES[shape]
    parser = _h1._Response()
    answers = [answer for i in range(len(raw)) if (answer := parser.feed(raw[i:i + 1]))]
    assert answers == [(int(raw.rsplit(b"HTTP/1.", 1)[1][2:5]), content, keep_alive)]
    assert not parser.buffer


def test_an_answer_without_length_ends_with_the_connection_only() -> None:
    parser = _h1._Response()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart 1, ") is None
    assert parser.feed(b"part 2") is None
    assert parser.eof() == (200, b"part 1, part 2", False)
    cut_short = _h1._Response()
    assert cut_short.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf") is None
    with pytest.raises(anyio.EndOfStream):
        cut_short.eof()


# -- failures, classified ------------------------------------------------------------------------


async def test_a_refused_connection_is_retried_even_for_an_unsafe_kind_then_reported() -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with transport(f"http://127.0.0.1:{port}", retry_for=0.1) as t:
        with pytest.raises(TransportError, match="cannot reach the Resonate server") as info:
            await t.send(TaskAcquire("t1", 0, "pid", 60_000))
    assert "not safe to repeat" not in str(info.value)
    assert "refused" in str(info.value).lower()


async def test_a_reset_after_the_request_was_read_is_retried_only_when_safe() -> None:
    async def reset_first(seen: Seen) -> bytes:
        if len(server.seen) == 1:
            raise Reset
        return http(200, envelope(seen, 200, {"promise": record("p1")}))

    async with serving(reset_first) as server, transport(server.url) as t:
        assert (await t.send(PromiseCreate("p1", FAR))).status == 200
    assert len(server.seen) == 2

    async with serving(reset_first) as server, transport(server.url) as t:
        with pytest.raises(TransportError, match="not safe to repeat"):
            await t.send(TaskAcquire("t1", 0, "pid", 60_000))
    assert len(server.seen) == 1


async def test_a_close_without_an_answer_is_ambiguous() -> None:
    async def close(seen: Seen) -> bytes:
        raise Close

    async with serving(close) as server, transport(server.url) as t:
        with pytest.raises(TransportError, match="closed the connection without answering"):
            await t.send(TaskAcquire("t1", 0, "pid", 60_000))
    assert len(server.seen) == 1


async def test_a_server_that_does_not_answer_in_time_is_a_timeout() -> None:
    async def never(seen: Seen) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async with serving(never) as server, \
            transport(server.url, timeout=0.05, retry_for=0.3) as t:
        with pytest.raises(TransportError, match=r"ReadTimeout.*not safe to repeat"):
            await t.send(TaskAcquire("t1", 0, "pid", 60_000))
        with pytest.raises(TransportError, match=r"no answer within 0\.05 s: ReadTimeout"):
            await t.send(PromiseGet("p1"))  # safe: retried until retry_for, then reported
    assert len(server.seen) > 2


async def test_a_413_is_a_request_too_large_error() -> None:
    async def too_large(seen: Seen) -> bytes:
        return http(413, b"Payload Too Large")

    async with serving(too_large) as server, transport(server.url) as t:
        with pytest.raises(RequestTooLargeError, match="413"):
            await t.send(PromiseCreate("p1", FAR))
    assert len(server.seen) == 1


async def test_a_proxy_error_page_is_retried_for_a_safe_kind() -> None:
    async def gateway_first(seen: Seen) -> bytes:
        if len(server.seen) == 1:
            return http(502, b"<html>Bad Gateway</html>")
        return http(200, envelope(seen, 200, {"promise": record("p1")}))

    async with serving(gateway_first) as server, transport(server.url) as t:
        assert (await t.send(PromiseCreate("p1", FAR))).status == 200
    assert len(server.seen) == 2


async def test_an_answer_that_is_not_an_envelope_is_a_protocol_error() -> None:
    async def html(seen: Seen) -> bytes:
        return http(200, b"<html>hello</html>")

    async with serving(html) as server, transport(server.url) as t:
        with pytest.raises(ProtocolError, match="not a response envelope"):
            await t.send(PromiseGet("p1"))


@pytest.mark.parametrize("garbage", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 2xx OK\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"])
async def test_an_answer_that_is_not_http_is_ambiguous(garbage: bytes) -> None:
    async def reply(seen: Seen) -> bytes:
        return garbage

    async with serving(reply) as server, transport(server.url) as t:
        with pytest.raises(TransportError, match="not safe to repeat"):
            await t.send(TaskAcquire("t1", 0, "pid", 60_000))


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_https_works_with_a_trusted_certificate(ca: trustme.CA) -> None:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with serving(tls=server_tls(ca)) as server, \
            transport(server.url, ssl_context=client) as t:
        for _ in range(3):
            assert (await t.send(TaskAcquire("t1", 0, "pid", 60_000))).status == 404
    assert server.connections == 1


async def test_https_refuses_a_certificate_it_does_not_trust(ca: trustme.CA) -> None:
    async with serving(tls=server_tls(ca)) as server, transport(server.url, retry_for=0.1) as t:
        with pytest.raises(TransportError, match=r"cannot reach.*CERTIFICATE_VERIFY_FAILED"):
            await t.send(PromiseGet("p1"))
    assert server.seen == []


# -- the fallback to httpx ----------------------------------------------------------------------


async def test_a_proxy_carries_the_requests_through_httpx() -> None:
    async with serving() as proxy:
        target = "http://resonate.test:8001"
        async with transport(target, proxy=proxy.url, token=TOKEN) as t:
            assert (await t.send(PromiseGet("p1"))).status == 404
    assert proxy.seen[0].line == f"POST {target}/ HTTP/1.1"  # the absolute form of a proxy
    assert proxy.seen[0].headers["authorization"] == f"Bearer {TOKEN}"
