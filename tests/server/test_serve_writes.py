"""The dev server over real sockets: each answer goes out in one ``send()`` (uvicorn's protocol
writes an answer's head and content separately; ``_CoalescingTransport`` joins what one
event-loop step wrote), and ``POST /`` is answered from the parser's callbacks with the same
status, headers and envelope as the ASGI route gives."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx

from resonate_async.engine import Engine
from resonate_async.server import DevApp
from resonate_async.server._serve import _CoalescingTransport, _content_length
from tests._devserver import dev_server

VERSION = "2026-04-01"


class _Recorder:
    """The socket's transport as the coalescing one sees it: records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8001) if name == "sockname" else default


def test_writes_of_one_step_go_out_as_one_and_the_next_turn_flushes() -> None:
    async def main() -> tuple[list[bytes], list[bytes], Any]:
        inner = _Recorder()
        outer = _CoalescingTransport(inner)  # type: ignore[arg-type]
        outer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        outer.write(b"{}")
        before = list(inner.writes)
        await asyncio.sleep(0)  # the event loop's next turn
        return before, inner.writes, outer.get_extra_info("sockname")

    before, after, sockname = asyncio.run(main())
    assert before == []
    assert after == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert sockname == ("127.0.0.1", 8001)  # everything else is the socket's transport


def test_an_explicit_flush_a_whole_answer_close_and_abort() -> None:
    async def main() -> None:
        inner = _Recorder()
        outer = _CoalescingTransport(inner)  # type: ignore[arg-type]
        outer.write(b"a")
        outer.flush()  # uvicorn's end of an answer
        assert inner.writes == [b"a"]
        outer.write(b"b")
        outer.write_whole(b"c")  # a whole answer: after what is held, at once
        assert inner.writes == [b"a", b"b", b"c"]
        outer.write(b"d")
        outer.close()  # held bytes go out before the close
        assert inner.writes == [b"a", b"b", b"c", b"d"] and inner.closed
        aborted = _Recorder()
        dropped = _CoalescingTransport(aborted)  # type: ignore[arg-type]
        dropped.write(b"c")
        dropped.abort()
        await asyncio.sleep(0)
        assert aborted.writes == [] and aborted.aborted

    asyncio.run(main())


def test_the_dev_server_answers_post_and_streams_events_through_it() -> None:
    request = (b'{"kind":"promise.get","head":{"corrId":"c1","version":"2026-04-01"},'
               b'"data":{"id":"missing"}}')
    with dev_server() as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for _ in range(2):  # keep-alive: the second answer on the same connection
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(request), request))
                answer = b""
                while b"Promise not found" not in answer:
                    chunk = sock.recv(65536)
                    assert chunk, f"the server closed the connection: {answer!r}"
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 404 ")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /poll/g1/p1 HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                assert chunk, f"the server closed the event stream: {head!r}"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200 ") and b"text/event-stream" in head


def _post(body: bytes, *extra: bytes) -> bytes:
    return b"".join([b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
                     *(line + b"\r\n" for line in extra),
                     b"Content-Length: %d\r\n\r\n" % len(body), body])


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` answers with a Content-Length: status, headers, content."""
    buffer, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after {answers!r}"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection in the middle of an answer"
            buffer += chunk
        answers.append((int(lines[0].split()[1]), headers, buffer[:length]))
        buffer = buffer[length:]
    return answers


def _envelope(kind: str, data: Any, corr_id: str) -> bytes:
    return json.dumps({"kind": kind, "head": {"corrId": corr_id, "version": VERSION},
                       "data": data}).encode()


FAR = 4_102_444_800_000
REQUESTS = [
    ("promise.create", {"id": "p1", "timeoutAt": FAR, "param": {}, "tags": {}}),
    ("promise.create", {"id": "p1", "timeoutAt": FAR, "param": {}, "tags": {}}),
    ("promise.get", {"id": "p1"}),
    ("promise.get", {"id": "missing"}),
    ("promise.settle", {"id": "p1", "state": "resolved", "value": {}}),
    ("no.such.kind", {}),
]


async def test_post_on_the_fast_path_answers_as_the_asgi_route_does() -> None:
    bodies = [_envelope(kind, data, f"c{i}") for i, (kind, data) in enumerate(REQUESTS)]
    bodies.append(b"{not json")
    async with DevApp(Engine.memory()) as app, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dev") as client:
        expected = []
        for body in bodies:
            answer = await client.post("/", content=body)
            expected.append((answer.status_code, answer.headers["content-type"],
                             _without_times(answer.content)))
    with dev_server() as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"".join(_post(body) for body in bodies))  # pipelined, in order
            got = _read_answers(sock, len(bodies))
    assert [(status, headers["content-type"], _without_times(content))
            for status, headers, content in got] == expected
    assert all(set(headers) == {"date", "content-type", "content-length"}
               for _, headers, _ in got)


def _without_times(content: bytes) -> Any:
    """An answer with its clock readings (createdAt, settledAt) left out."""
    try:
        decoded = json.loads(content)
    except ValueError:
        return content

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("createdAt", "settledAt")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(decoded)


def test_an_http_1_0_post_is_answered_then_its_connection_closed() -> None:
    body = _envelope("promise.get", {"id": "missing"}, "c1")
    with dev_server() as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(_post(body).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
            [(status, headers, content)] = _read_answers(sock, 1)
            assert (status, headers.get("connection")) == (404, "close")
            assert json.loads(content)["head"]["corrId"] == "c1"
            assert sock.recv(65536) == b""  # closed after the answer


def test_only_a_single_well_formed_content_length_takes_the_fast_path() -> None:
    assert _content_length([(b"host", b"x"), (b"content-length", b"12")]) == 12
    assert _content_length([(b"host", b"x")]) is None
    assert _content_length([(b"content-length", b"1"), (b"content-length", b"1")]) is None
    assert _content_length([(b"content-length", b"-1")]) is None
    assert _content_length([(b"content-length", b"5"),
                            (b"transfer-encoding", b"chunked")]) is None
