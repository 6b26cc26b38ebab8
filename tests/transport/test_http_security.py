"""HttpTransport and security: no credential is ever printed, and a refused event stream is
an explicit, logged error (with its reason) while the transport keeps reconnecting."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from resonate_async.__main__ import main
from resonate_async._errors import NotStartedError, TransportError
from resonate_async.protocol import PromiseGet
from resonate_async.transport import HttpTransport

SECRET_URL = "http://alice:pa55w0rd@resonate.test:8001"
TOKEN = "jwt.t0ken.sig"


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """structlog's defaults (every level reaches capture_logs), restored after the test, as is
    stdlib logging (the CLI configures both)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog.reset_defaults()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def leaked(logs: list[dict[str, Any]], *texts: str) -> list[dict[str, Any]]:
    return [e for e in logs if any(t in str(e) for t in texts)]


def refusing(handler: Any) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def test_a_url_with_credentials_is_never_printed_by_requests() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}")

    transport = HttpTransport(SECRET_URL, token=TOKEN, transport=refusing(down),
                              retry_for=0.05, backoff=0.001, backoff_max=0.002)
    with capture_logs() as logs:
        async with transport:
            with pytest.raises(TransportError) as failed:
                await transport.send(PromiseGet("p1"))
    assert "http://***@resonate.test:8001" in str(failed.value)
    assert [e["url"] for e in logs if e["event"] == "request_retried"]
    assert {e["url"] for e in logs if e["event"] == "request_retried"} == {
        "http://***@resonate.test:8001"}
    assert leaked(logs, "pa55w0rd", "alice", TOKEN) == []
    assert "pa55w0rd" not in str(failed.value) and TOKEN not in str(failed.value)
    assert repr(transport) == "HttpTransport('http://***@resonate.test:8001')"


async def test_the_credentials_still_reach_the_server_as_basic_auth() -> None:
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        sent = json.loads(request.content)
        return httpx.Response(404, json={"kind": sent["kind"], "head": {
            "corrId": sent["head"]["corrId"], "status": 404, "version": "2026-04-01"},
            "data": "Promise not found"})

    async with HttpTransport(SECRET_URL, transport=refusing(server)) as transport:
        assert (await transport.send(PromiseGet("p1"))).status == 404
    assert seen[0].headers["authorization"].startswith("Basic ")


def test_a_bad_url_is_reported_without_its_credentials() -> None:
    with pytest.raises(ValueError, match="must start with http") as failed:
        HttpTransport("ftp://alice:pa55w0rd@resonate.test")
    assert "pa55w0rd" not in str(failed.value)
    assert "ftp://***@resonate.test" in str(failed.value)


async def test_a_closed_transport_names_its_server_without_credentials() -> None:
    transport = HttpTransport(SECRET_URL)
    with pytest.raises(NotStartedError) as failed:
        await transport.send(PromiseGet("p1"))
    assert "http://***@resonate.test:8001" in str(failed.value)
    assert "pa55w0rd" not in str(failed.value)


async def test_a_failing_stream_logs_its_url_without_credentials() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"All connection attempts failed for {request.url}")

    transport = HttpTransport(SECRET_URL, token=TOKEN, transport=refusing(down),
                              backoff=0.001, backoff_max=0.002)
    with capture_logs() as logs:
        async with transport:
            transport.subscribe("g", "p")
            with anyio.fail_after(5):
                while sum(e["event"] == "poll_failed" for e in logs) < 3:
                    await anyio.sleep(0.005)
    failures = [e for e in logs if e["event"] == "poll_failed"]
    assert failures[0]["url"] == "http://***@resonate.test:8001/poll/g/p"
    assert "http://***@resonate.test:8001" in failures[0]["reason"]
    assert leaked(logs, "pa55w0rd", TOKEN) == []


def test_the_cli_names_an_unreachable_server_without_credentials(
        capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["get", "p1", "--url", "http://alice:pa55w0rd@127.0.0.1:9"])
    err = capsys.readouterr().err
    assert status == 1
    assert "cannot reach the Resonate server at http://***@127.0.0.1:9" in err
    assert "pa55w0rd" not in err


# -- a refused event stream -------------------------------------------------------------------

class Refuser:
    """Refuses the first ``times`` stream requests with ``status``/``text``, then serves an
    idle stream."""

    def __init__(self, status: int, text: str, times: int) -> None:
        self.status, self.text, self.times = status, text, times
        self.requests = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests <= self.times:
            return httpx.Response(self.status, text=self.text)
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=_idle())


async def _idle() -> AsyncIterator[bytes]:
    await anyio.sleep_forever()
    yield b""  # pragma: no cover


@pytest.mark.parametrize(("status", "text", "hint"), [
    (503, "Poll registration at capacity", "at its limit of open event streams"),
    (429, "Too Many Requests", "at its limit of open event streams"),
    (401, "Unauthorized", "RESONATE_TOKEN"),
    (503, "<html>Service Unavailable</html>", "or a proxy in front of it, is not available"),
    (418, "", "Check the server's log"),
])
async def test_a_refused_stream_is_an_explicit_error_and_keeps_reconnecting(
        status: int, text: str, hint: str) -> None:
    server = Refuser(status, text, times=4)
    transport = HttpTransport("http://resonate.test", transport=httpx.MockTransport(server),
                              backoff=0.001, backoff_max=0.004)
    with capture_logs() as logs:
        async with transport:
            transport.subscribe("g", "worker-1")
            with anyio.fail_after(10):
                await transport.wait_subscribed("g", "worker-1")
            problem_after = transport.stream_problem("g", "worker-1")
    refusals = [e for e in logs if e["event"] == "poll_refused"]
    assert server.requests == 5  # four refusals, each retried, then connected
    assert [e["log_level"] for e in refusals] == ["error", "info", "info", "info"]
    first = refusals[0]
    said = text or "no reason given"
    assert (first["status"], first["reason"], first["group"], first["pid"]) == (
        status, said, "g", "worker-1")
    assert first["detail"].startswith(
        f"the Resonate server at http://resonate.test refused the event stream of g/worker-1 "
        f"with HTTP {status} ({said}); no work and no results reach this process")
    assert hint in first["detail"]
    assert first["detail"].endswith("Retrying with backoff")
    assert [e["retry_in_s"] for e in refusals] == sorted(e["retry_in_s"] for e in refusals)
    assert problem_after is None  # cleared once connected


async def test_the_refusal_reason_is_readable_while_it_lasts() -> None:
    server = Refuser(503, "Poll registration at capacity", times=10**9)
    async with HttpTransport("http://resonate.test", transport=httpx.MockTransport(server),
                             backoff=0.001, backoff_max=0.002) as transport:
        assert transport.stream_problem("g", "w") is None
        transport.subscribe("g", "w")
        with anyio.fail_after(5):
            while transport.stream_problem("g", "w") is None:
                await anyio.sleep(0.001)
        problem = transport.stream_problem("g", "w")
    assert problem is not None
    assert "HTTP 503 (Poll registration at capacity)" in problem


async def test_a_change_of_refusal_reason_is_an_error_again() -> None:
    answers = iter([(503, "Poll registration at capacity"), (503, "Poll registration at capacity"),
                    (401, "Unauthorized")])

    async def server(request: httpx.Request) -> httpx.Response:
        try:
            status, text = next(answers)
        except StopIteration:
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=_idle())
        return httpx.Response(status, text=text)

    with capture_logs() as logs:
        async with HttpTransport("http://resonate.test", transport=httpx.MockTransport(server),
                                 backoff=0.001, backoff_max=0.002) as transport:
            transport.subscribe("g", "w")
            with anyio.fail_after(5):
                await transport.wait_subscribed("g", "w")
    levels = [(e["status"], e["log_level"]) for e in logs if e["event"] == "poll_refused"]
    assert levels == [(503, "error"), (503, "info"), (401, "error")]
