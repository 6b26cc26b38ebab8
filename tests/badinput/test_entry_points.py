"""Hostile and mistaken inputs at every public entry point, one table.

Each case must raise a clear error (a ``ResonateError`` subclass, or ``TypeError`` /
``ValueError`` for Python-level misuse) whose message names what was wrong, and must leave the
engine untouched: no promise appears for it, and a healthy workflow started alongside
completes. Mistakes inside a durable function fail that execution only, with the message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from resonate_async import (
    ApplicationError,
    Context,
    ContextError,
    EncodingError,
    InvalidIdError,
    NotFoundError,
    NotStartedError,
    RegistrationError,
    Resonate,
    ResonateError,
)
from resonate_async.engine import Engine
from resonate_async.protocol import PromiseSearch
from resonate_async.transport import EmbeddedTransport

pytestmark = pytest.mark.anyio


async def healthy(ctx: Context, n: int) -> int:
    return await ctx.run(double, n) + 1


async def double(n: int) -> int:
    return 2 * n


async def registered(ctx: Context, x: int) -> int:
    return x


def unregistered(ctx: Context) -> int:
    return 0


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` deep: ``[[[...]]]``."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Any], Any]  # Any: the calls are wrong on purpose
    error: type[BaseException] | tuple[type[BaseException], ...]
    says: tuple[str, ...]


def ctor(**kwargs: Any) -> Callable[[Resonate], Any]:
    return lambda _: Resonate(**kwargs)


CONSTRUCTOR = [
    Case("path and url", ctor(path="a.db", url="http://x"), ValueError, ("at most one of",)),
    Case("empty group", ctor(group=""), ValueError, ("group must be",)),
    Case("group with slash", ctor(group="a/b"), ValueError, ("without '/'",)),
    Case("group not a str", ctor(group=5), ValueError, ("group must be", "5")),
    Case("pid with slash", ctor(pid="w/1"), ValueError, ("pid must be", "'w/1'")),
    Case("pid with colon", ctor(pid="w:1"), ValueError, ("pid must be", "address")),
    Case("zero ttl", ctor(ttl=0), ValueError, ("ttl must be a positive",)),
    Case("negative ttl", ctor(ttl=timedelta(seconds=-1)), ValueError, ("ttl",)),
    Case("nan ttl", ctor(ttl=float("nan")), ValueError, ("ttl must be", "finite")),
    Case("infinite ttl", ctor(ttl=float("inf")), ValueError, ("ttl must be", "finite")),
    Case("infinite timeout", ctor(timeout=float("inf")), ValueError, ("timeout must be",)),
    Case("ttl as text", ctor(ttl="5"), ValueError, ("ttl must be", "'5'")),
    Case("zero concurrency", ctor(concurrency=0), ValueError, ("concurrency must be",)),
    Case("url without scheme", ctor(url="localhost:8001"), ValueError, ("http://",)),
]

REGISTRATION = [
    Case("register a number", lambda r: r.register(42), RegistrationError,
         ("register expects a function", "42")),
    Case("same name, other function", lambda r: r.register(name="registered")(double),
         RegistrationError, ("already registered as 'registered'", "another name")),
    Case("version zero", lambda r: r.register(name="v0", version=0)(double),
         RegistrationError, ("version must be an int >= 1",)),
    Case("name with colon", lambda r: r.register(name="a:b")(double), RegistrationError,
         ("invalid function name 'a:b'",)),
    Case("register_error with a non-class", lambda r: r.register_error(5), TypeError,
         ("expects an exception class",)),
]

OPTIONS = [
    Case("negative timeout", lambda r: r.options(timeout=-1), ValueError, ("timeout must be",)),
    Case("nan timeout", lambda r: r.options(timeout=float("nan")), ValueError, ("finite",)),
    Case("reserved tag", lambda r: r.options(tags={"resonate:target": "x"}), ValueError,
         ("reserved",)),
    Case("tag key not a str", lambda r: r.options(tags={1: "a"}), ValueError,
         ("tags must map str to str",)),
    Case("tag value not a str", lambda r: r.options(tags={"a": 1}), ValueError,
         ("tags must map str to str", "'a': 1")),
]


INVOCATION = [
    Case("empty id", lambda r: r.run("", registered, 1), InvalidIdError, ("empty",)),
    Case("id with colon", lambda r: r.run("a:b", registered, 1), InvalidIdError, ("':'",)),
    Case("id with NUL", lambda r: r.run("a\x00b", registered, 1), InvalidIdError, ("NUL",)),
    Case("id not a str", lambda r: r.run(7, registered, 1), InvalidIdError, ("must be a str",)),
    Case("unregistered function", lambda r: r.run("u1", unregistered), RegistrationError,
         ("is not registered", "@resonate.register")),
    Case("unknown name", lambda r: r.run("u2", "nope"), RegistrationError, ("nope",)),
    Case("missing argument", lambda r: r.run("u3", registered), TypeError, ("registered",)),
    Case("extra argument", lambda r: r.run("u4", registered, 1, 2), TypeError,
         ("too many",)),
    Case("unencodable argument", lambda r: r.run("u5", registered, object()), EncodingError,
         ("cannot encode", "object")),
    Case("unencodable rpc argument", lambda r: r.rpc("u6", "registered", object()),
         EncodingError, ("cannot encode",)),
    Case("bad rpc target", lambda r: r.options(target="poll://weird").rpc("u7", registered, 1),
         ResonateError, ("target",)),
    Case("get a missing id", lambda r: r.get("missing-id"), NotFoundError, ("missing-id",)),
    Case("resolve a missing promise", lambda r: r.promises.resolve("missing-p", 1),
         NotFoundError, ("missing-p",)),
    Case("resolve with an unencodable value", lambda r: r.promises.resolve("x", object()),
         EncodingError, ("cannot encode",)),
    Case("create with negative timeout", lambda r: r.promises.create("p1", timeout=-1),
         ValueError, ("timeout",)),
    Case("create with colon id", lambda r: r.promises.create("p:1", timeout=5),
         InvalidIdError, ("':'",)),
    Case("argument nested 10,000 deep", lambda r: r.run("u8", registered, nested(10_000)),
         EncodingError, ("arguments of 'registered'", "nested too deeply")),
    Case("rpc argument nested 10,000 deep",
         lambda r: r.rpc("u9", "registered", nested(10_000)), EncodingError,
         ("nested too deeply",)),
    Case("id with a lone surrogate", lambda r: r.run("a\udc80", registered, 1), InvalidIdError,
         ("lone surrogate", "UTF-8")),
    Case("rpc id with a lone surrogate", lambda r: r.rpc("b\udc80", "registered", 1),
         InvalidIdError, ("lone surrogate",)),
    Case("argument with a lone surrogate", lambda r: r.run("u10", registered, "x\udc80"),
         EncodingError, ("arguments of 'registered'", "lone surrogate")),
    Case("get an id with a lone surrogate", lambda r: r.get("c\udc80"), InvalidIdError,
         ("lone surrogate",)),
    Case("create a promise with a lone surrogate id",
         lambda r: r.promises.create("d\udc80", timeout=5), InvalidIdError,
         ("lone surrogate",)),
    Case("resolve with a lone surrogate value", lambda r: r.promises.resolve("x", "\udc80"),
         EncodingError, ("lone surrogate",)),
    Case("tag with a lone surrogate", lambda r: r.options(tags={"k": "\udc80"}), ValueError,
         ("lone surrogate",)),
]

CASES = CONSTRUCTOR + REGISTRATION + OPTIONS + INVOCATION


@pytest.fixture
def app() -> Resonate:
    resonate = Resonate(transport=EmbeddedTransport(Engine.memory(), close_engine=False))
    resonate.register(healthy)
    resonate.register(registered)
    return resonate


def _ids(app: Resonate) -> set[str]:
    engine = app.transport.engine  # type: ignore[attr-defined]
    page = engine.execute(PromiseSearch(None, None, 1000, None), 0)
    return {p.id for p in page.data.promises}


def _check(exc: BaseException, case: Case) -> None:
    assert isinstance(exc, case.error), f"{case.name}: {type(exc).__name__}: {exc}"
    assert isinstance(exc, ResonateError | TypeError | ValueError)
    for part in case.says:
        assert part in str(exc), f"{case.name}: {part!r} not in {str(exc)!r}"


async def _invoke(case: Case, app: Resonate) -> None:
    result = case.call(app)
    if isinstance(result, Awaitable):
        await result


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_input_is_refused_clearly_and_touches_nothing(app: Resonate,
                                                                case: Case) -> None:
    async with app:
        alongside = await app.run("healthy-1", healthy, 20)
        before = _ids(app)
        with pytest.raises(Exception) as caught:  # noqa: PT011 - checked by _check
            await _invoke(case, app)
        _check(caught.value, case)
        assert await alongside.result(timeout=5) == 41
        assert _ids(app) - before <= {"healthy-1:1"}


async def test_entry_points_need_a_running_resonate(app: Resonate) -> None:
    for call in (lambda: app.run("x", registered, 1), lambda: app.rpc("x", "registered", 1),
                 lambda: app.get("x")):
        with pytest.raises(NotStartedError, match="async with resonate"):
            await call()
    assert _ids(app) == set()


MISTAKES_INSIDE = [
    ("negative sleep", lambda ctx: ctx.sleep(-1), ContextError, "non-negative duration"),
    ("naive datetime sleep", lambda ctx: ctx.sleep(until=datetime(2030, 1, 1)), ContextError,
     "aware datetime"),
    ("sleep without a duration", lambda ctx: ctx.sleep(), ContextError, "duration or until"),
    ("call id with colon", lambda ctx: ctx.run(double, 1).options(id="a:b"), ContextError,
     "invalid call id"),
    ("rpc of an unregistered function", lambda ctx: ctx.rpc(unregistered), RegistrationError,
     "register it with @resonate.register"),
    ("unencodable step argument", lambda ctx: ctx.rpc(registered, object()), EncodingError,
     "cannot encode"),
    ("rpc argument nested 10,000 deep", lambda ctx: ctx.rpc(registered, nested(10_000)),
     EncodingError, "nested too deeply"),
    ("rpc argument with a lone surrogate", lambda ctx: ctx.rpc(registered, "\udc80"),
     EncodingError, "lone surrogate"),
    ("call id with a lone surrogate", lambda ctx: ctx.run(double, 1).options(id="a\udc80"),
     ContextError, "invalid call id"),
    ("call tag with a lone surrogate",
     lambda ctx: ctx.run(double, 1).options(tags={"k": "\udc80"}), ContextError,
     "lone surrogate"),
]


@pytest.mark.parametrize(("name", "mistake", "error", "says"), MISTAKES_INSIDE,
                         ids=[m[0] for m in MISTAKES_INSIDE])
async def test_mistakes_inside_a_durable_function_fail_that_execution_only(
        app: Resonate, name: str, mistake: Callable[[Context], Any],
        error: type[BaseException], says: str) -> None:
    @app.register(name=f"mistaken-{len(name)}-{abs(hash(name)) % 10_000}")
    async def mistaken(ctx: Context) -> str:
        call = mistake(ctx)
        await call
        return "unreachable"

    async with app:
        alongside = await app.run("healthy-2", healthy, 1)
        handle = await app.run("mistaken", mistaken)
        with pytest.raises(ResonateError, match=says) as caught:
            await handle.result(timeout=5)
        # the SDK's own error types cross the durable boundary by name
        got = caught.value
        assert isinstance(got, error) or (isinstance(got, ApplicationError)
                                          and got.type_name == error.__name__), repr(got)
        assert await alongside.result(timeout=5) == 3


async def test_unencodable_result_rejects_the_execution_with_the_reason(app: Resonate) -> None:
    @app.register
    async def returns_a_socket(ctx: Context) -> object:
        return anyio.Event()

    async with app:
        handle = await app.run("unencodable-result", returns_a_socket)
        with pytest.raises(ResonateError, match="cannot encode"):
            await handle.result(timeout=5)


async def test_a_file_that_is_not_an_engine_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_bytes(b"these are not the droids" * 100)
    with pytest.raises(ResonateError, match="cannot be used as an embedded engine file"):
        Resonate(path=bogus)


async def test_durable_functions_nest_by_ctx_run_up_to_a_documented_depth(
        app: Resonate) -> None:
    """ctx.run of a durable function runs on its caller's stack: 100 deep works, deeper is
    refused at the call with the limit and the way out, not stored as a RecursionError."""
    @app.register
    async def nest(ctx: Context, n: int) -> int:
        return 0 if n == 0 else 1 + await ctx.run(nest, n - 1)

    async with app:
        assert await (await app.run("nest-100", nest, 100)).result(timeout=30) == 100
        with pytest.raises(ContextError) as caught:
            await (await app.run("nest-101", nest, 101)).result(timeout=30)
        said = str(caught.value)
        assert "would nest durable functions 101 deep, over the limit of 100" in said
        assert "ctx.rpc" in said
        assert "RecursionError" not in said
        # the refused call created nothing: the deepest step is the 100th
        assert "nest-101" + ":1" + ".1" * 99 in _ids(app)
        assert "nest-101" + ":1" + ".1" * 100 not in _ids(app)


async def test_a_lone_surrogate_in_a_step_result_fails_that_step_clearly(
        app: Resonate) -> None:
    @app.register
    def read_name() -> str:
        return b"caf\xe9".decode("utf-8", "surrogateescape")

    @app.register
    async def greeting(ctx: Context) -> str:
        try:
            return await ctx.run(read_name)
        except EncodingError as exc:
            return str(exc)

    async with app:
        said = await (await app.run("surrogate-result", greeting)).result(timeout=10)
        assert said.startswith("result of ctx.run(read_name) [surrogate-result:1]"), said
        assert "lone surrogate '\\udce9'" in said
