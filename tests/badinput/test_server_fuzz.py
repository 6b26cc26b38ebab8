"""A server that answers nonsense: fuzzed with hypothesis behind ``HttpTransport``.

Every answer yields a ``Response`` or a ``ProtocolError``/``TransportError``, never another
exception type; and a worker whose server sometimes answers garbage never settles anything
with a wrong value (it releases the task instead).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resonate_async import Context, ProtocolError, Resonate, ResonateError, TransportError
from resonate_async.engine import Engine
from resonate_async.protocol import (
    FenceCreate,
    PromiseCreate,
    PromiseGet,
    PromiseSearch,
    PromiseSettle,
    Request,
    Response,
    TaskAcquire,
    TaskFence,
    TaskHeartbeat,
    TaskRef,
    TaskRelease,
    Value,
)
from resonate_async.transport import HttpTransport

NOW = 1_767_225_600_000

REQUESTS: list[Request] = [
    PromiseGet("p1"),
    PromiseCreate("p2", NOW + 60_000, Value(), {"a": "b"}),
    PromiseSettle("p1", "resolved", Value(data="MQ==")),
    PromiseSearch("pending", None, 10, None),
    TaskAcquire("t1", 0, "w", 1000),
    TaskFence("t1", 1, FenceCreate(data=PromiseCreate("t1:1", NOW + 1, Value(), {}))),
    TaskHeartbeat("w", [TaskRef("t1", 1)]),
    TaskRelease("t1", 1),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=8,
)
statuses = st.sampled_from([200, 201, 300, 400, 401, 403, 404, 409, 413, 422, 429, 500, 502,
                            503, 504]) | st.integers(100, 599)


@st.composite
def answers(draw: st.DrawFn) -> tuple[int, str, Any]:
    """(HTTP status, how to corrupt the real answer, with what)."""
    how = draw(st.sampled_from(["real", "bytes", "json", "replace", "truncate", "status"]))
    what: Any = None
    if how == "bytes":
        what = draw(st.binary(max_size=64))
    elif how == "json":
        what = draw(json_values)
    elif how == "replace":
        what = (draw(st.lists(st.sampled_from(["head", "data", "kind", "status", "corrId",
                                               "version", "promise", "task", "state", "id",
                                               "value", "action", "preload"]), min_size=1,
                              max_size=3)), draw(json_values))
    elif how == "truncate":
        what = draw(st.integers(0, 200))
    return draw(statuses), how, what


def _replace(doc: Any, path: list[str], value: Any) -> Any:
    """Replace (or add) the value at the first matching key along ``path``."""
    node = doc
    for key in path[:-1]:
        if isinstance(node, dict) and isinstance(node.get(key), dict):
            node = node[key]
    if isinstance(node, dict):
        node[path[-1]] = value
    return doc


def corrupt(real: bytes, how: str, what: Any) -> bytes:
    if how in ("real", "status"):
        return real
    if how == "bytes":
        return bytes(what)
    if how == "json":
        return json.dumps(what).encode()
    if how == "truncate":
        return real[: int(what)]
    path, value = what
    return json.dumps(_replace(json.loads(real), list(path), value)).encode()


def _engine_answer(engine: Engine, body: bytes) -> bytes:
    return engine.handle(body, NOW)


def _transport(handler: Any) -> HttpTransport:
    return HttpTransport("http://fuzz.invalid", transport=httpx.MockTransport(handler),
                         retry_for=0.01, backoff=0.001, backoff_max=0.002)


@pytest.mark.slow  # hypothesis fuzzing
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=st.sampled_from(REQUESTS), answer=answers())
def test_every_server_answer_is_a_response_or_a_resonate_error(
        request: Request, answer: tuple[int, str, Any]) -> None:
    status, how, what = answer
    engine = Engine.memory()

    def handler(http: httpx.Request) -> httpx.Response:
        real = _engine_answer(engine, http.content)
        code = status if how != "real" else 200
        return httpx.Response(code, content=corrupt(real, how, what))

    async def main() -> None:
        async with _transport(handler) as transport:
            try:
                response = await transport.send(request)
            except (ProtocolError, TransportError):
                return
            assert isinstance(response, Response)

    anyio.run(main)


@pytest.mark.slow  # hypothesis fuzzing of real servers
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(st.one_of(st.none(), answers()), min_size=1, max_size=12),
       executed=st.lists(st.booleans(), min_size=12, max_size=12))
def test_a_worker_never_settles_anything_wrongly_on_garbage_answers(
        plan: list[tuple[int, str, Any] | None], executed: list[bool]) -> None:
    engine = Engine.memory()
    seen = {"n": 0}

    def handler(http: httpx.Request) -> httpx.Response:
        if http.method == "GET":  # the message stream: an empty one (the worker reconnects)
            return httpx.Response(200, headers={"content-type": "text/event-stream"})
        i = seen["n"]
        seen["n"] += 1
        step = plan[i] if i < len(plan) else None
        if step is None or step[1] in ("real", "replace"):
            # "replace" can make a well-formed answer that lies; trust is not fuzzed here
            return httpx.Response(200, content=_engine_answer(engine, http.content))
        status, how, what = step
        real = _engine_answer(engine, http.content) if executed[i % 12] else b""
        body = corrupt(real, how, what) if real else bytes(str(what), "utf8")
        return httpx.Response(status if status != 200 else 500, content=body)

    async def main() -> None:
        app = Resonate(transport=_transport(handler), ttl=1)
        app.connect_wait = 0.05

        async def double(n: int) -> int:
            return 2 * n

        @app.register
        async def flow(ctx: Context, n: int) -> int:
            return await ctx.run(double, n) + 1

        async with app:
            with anyio.move_on_after(0.5):
                try:
                    handle = await app.run("fuzzed", flow, 21)
                    await handle
                except ResonateError:
                    pass

    anyio.run(main)
    page = engine.execute(PromiseSearch(None, None, 100, None), NOW)
    for p in page.data.promises:
        if p.state == "pending":
            continue
        assert p.state == "resolved", p
        value = msgspec.json.decode(msgspec.convert(p.value.data, bytes)) if p.value.data else None
        assert value == {"fuzzed": 43, "fuzzed:1": 42}[p.id], p

