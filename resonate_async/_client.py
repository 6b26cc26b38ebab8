"""``Resonate``: configuration, registration, invocation, and the worker it runs."""

from __future__ import annotations

import os
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any, Concatenate, Final, ParamSpec, TypedDict, TypeVar, overload

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from resonate_async._checks import milliseconds
from resonate_async._clock import Clock, SystemClock
from resonate_async._codec import Codec, Encryptor
from resonate_async._context import Context, Handle
from resonate_async._errors import (
    ContextError,
    NotFoundError,
    NotStartedError,
    ResonateError,
)
from resonate_async._handles import Drive, RootState, Waiter
from resonate_async._invoke import Invoker
from resonate_async._logging import quiet_by_default
from resonate_async._promises import Promises, Schedules
from resonate_async._retry import Exponential, RetryPolicy
from resonate_async._status import expect_ok
from resonate_async.core._driver import DEFAULT_SHUTDOWN_GRACE, Worker
from resonate_async.core._registry import Registry
from resonate_async.protocol import (
    Claim,
    Execute,
    Message,
    Promise,
    PromiseGet,
    PromiseRegisterListener,
    Request,
    Response,
)
from resonate_async.protocol._ids import check_id
from resonate_async.protocol._records import (
    CLIENT_GROUP_PREFIX,
    RESERVED_GROUP_PREFIX,
    TIMER_GROUP,
)
from resonate_async.transport import EmbeddedTransport, Transport
from resonate_async.transport._base import close_stream

log = structlog.get_logger("resonate_async.client")

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# Executions may sleep or wait for people for weeks; steps and children default to a day.
DEFAULT_TIMEOUT: Final = timedelta(days=365)


class _HttpOptions(TypedDict, total=False):
    timeout: float
    connect_timeout: float
    retry_for: float


def _http_options(request_timeout: float | timedelta | None, retry_for: float | timedelta | None,
                  http: bool) -> _HttpOptions:
    """``HttpTransport`` arguments from ``Resonate(request_timeout=, retry_for=)``, checked."""
    options: _HttpOptions = {}
    for name, value in (("request_timeout", request_timeout), ("retry_for", retry_for)):
        if value is None:
            continue
        if not http:
            raise ValueError(
                f"Resonate({name}=...) applies to a Resonate server (url=... or RESONATE_URL), "
                "and this instance uses an embedded engine or a transport of its own: drop "
                f"{name}=, or pass it to the transport (HttpTransport(url, {name}=...))"
                if name == "retry_for" else
                f"Resonate({name}=...) applies to a Resonate server (url=... or RESONATE_URL), "
                "and this instance uses an embedded engine or a transport of its own: drop "
                f"{name}=, or pass it to the transport (HttpTransport(url, timeout=...))")
        milliseconds(value, f"Resonate({name}=...)", allow_zero=name == "retry_for")
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
        if name == "retry_for":
            options["retry_for"] = seconds
        else:
            options["timeout"] = seconds
    if "timeout" in options:
        options["connect_timeout"] = min(5.0, options["timeout"])
    return options


class Resonate:
    """A Resonate application: its functions, its engine connection and its worker.

    * ``Resonate()``: an embedded engine in memory (zero infrastructure);
    * ``Resonate(path="app.db")``: an embedded engine in a SQLite file that survives restarts
      (one live process holds the file);
    * ``Resonate(url="http://localhost:8001")``: a Resonate server (``RESONATE_URL`` and
      ``RESONATE_TOKEN`` in the environment are honoured when no argument chooses);
    * ``Resonate(url="postgresql://user@host/db")``: every process on that PostgreSQL database
      shares one engine (extra ``postgres``; the schema is created or migrated at start:
      for a deployment that forbids DDL then, run ``python -m resonate_async db migrate``
      and pass ``transport=PostgresTransport(url, migrate=False)``). See docs/postgres.md.

    Construction needs no event loop. ``async with resonate:`` starts everything it owns (the
    transport, the message loop, the worker, heartbeats) and stops it on exit, releasing any
    task still held. ``await resonate.serve()`` runs it as a worker until cancelled.

    Options: ``group`` (this worker's group; ``rpc`` targets one), ``pid`` (this process's id),
    ``ttl`` (task lease, renewed every ttl/2), ``concurrency`` (executions at once),
    ``retry`` (default policy of local steps), ``timeout`` (deadline of executions started
    here), ``worker=False`` (a client that takes no work), ``clock`` (e.g. a test kit
    ``VirtualClock``), ``transport`` (share one engine between instances), ``encryptor``
    (encrypt every value before it is stored: an ``Encryptor``), ``shutdown_grace``
    (seconds, default 30: how long stopping waits for sync steps still running in threads;
    see ``serve``).

    With a server (``url=`` or ``RESONATE_URL``): ``request_timeout`` (seconds or timedelta,
    default 60: the longest wait for the answer to one request; a TCP connect waits at most
    5 s of it) and ``retry_for`` (seconds or timedelta, default 30; 0 tries once: how long a
    request that cannot reach the server is retried, with backoff, before it raises
    ``TransportError``). A web handler that must answer fast while the server is down wants
    a small ``retry_for``. For another transport, set these on the transport itself.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        group: str = "default",
        pid: str | None = None,
        ttl: float | timedelta = 60.0,
        concurrency: int = 64,
        retry: RetryPolicy | None = None,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        worker: bool = True,
        listen_interval: float = 60.0,
        clock: Clock | None = None,
        transport: Transport | None = None,
        encryptor: Encryptor | None = None,
        shutdown_grace: float | timedelta = DEFAULT_SHUTDOWN_GRACE,
        request_timeout: float | timedelta | None = None,
        retry_for: float | timedelta | None = None,
    ) -> None:
        quiet_by_default()
        if sum(x is not None for x in (path, url, transport)) > 1:
            raise ValueError("give at most one of path=, url= and transport=")
        if path is None and url is None and transport is None:
            url = os.environ.get("RESONATE_URL") or None
        if token is None:
            token = os.environ.get("RESONATE_TOKEN") or None
        if not isinstance(group, str) or not group or any(c in group for c in "/@: "):
            raise ValueError(f"group must be a non-empty name without '/', '@', ':' or spaces, "
                             f"got {group!r}")
        if group.startswith(RESERVED_GROUP_PREFIX):
            raise ValueError(
                f"group {group!r} is reserved: names starting with {RESERVED_GROUP_PREFIX!r} "
                f"belong to the SDK ({TIMER_GROUP!r} holds the tasks of timers, which no "
                f"process may run; {CLIENT_GROUP_PREFIX!r}<pid> is the private stream of a "
                "client that takes no work); choose another group name")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.group = group
        if pid is not None and (not isinstance(pid, str)
                                or any(c in pid for c in "/@: \x00")):
            raise ValueError(f"pid must be a name without '/', '@', ':' or spaces (it is part "
                             f"of this process's address), got {pid!r}")
        self.pid = pid or uuid.uuid4().hex
        self.url = url
        self.token = token
        self.accepts_work = worker
        # The group of this process's event stream. A server sends a group's anycast work to
        # any of its streams (the Resonate server ignores ``?work=0``), so a client that takes
        # no work streams in a private group: it is never a candidate for work.
        self.stream_group = group if worker else CLIENT_GROUP_PREFIX + self.pid
        self.ttl_ms = milliseconds(ttl, "ttl")
        self.timeout_ms = milliseconds(timeout, "timeout")
        self.listen_interval = listen_interval
        self.shutdown_grace = milliseconds(shutdown_grace, "shutdown_grace", allow_zero=True) / 1000
        self.connect_wait = 10.0
        self.codec = Codec(encryptor)
        self.registry = Registry(on_module=self.codec.trust_module)
        self._dependencies: dict[type[Any], Any] = {}
        postgres = url is not None and url.startswith(("postgresql://", "postgres://"))
        http_options = _http_options(request_timeout, retry_for, url is not None and not postgres)
        if transport is not None:
            self.transport: Transport = transport
        elif url is not None and postgres:
            from resonate_async.transport._postgres import PostgresTransport

            self.transport = PostgresTransport(url, clock=self.clock)
        elif url is not None:
            from resonate_async.transport import HttpTransport

            self.transport = HttpTransport(url, token=token, **http_options)
        elif path is not None:
            from resonate_async.engine import Engine

            try:
                engine = Engine.sqlite(os.fspath(path))
            except sqlite3.DatabaseError as exc:
                raise ResonateError(
                    f"{os.fspath(path)} cannot be used as an embedded engine file ({exc}): give "
                    "the path of a file made by resonate_async, or of one that does not exist yet"
                ) from None
            self.transport = EmbeddedTransport(engine, clock=self.clock, close_engine=True)
        else:
            self.transport = EmbeddedTransport(clock=self.clock)
        self.worker = Worker(
            transport=self.transport, codec=self.codec, registry=self.registry,
            clock=self.clock, pid=self.pid, group=group, ttl_ms=self.ttl_ms,
            retry=retry or Exponential(), concurrency=concurrency,
            dependency=self._dependency, on_settled=self._on_settled,
            shutdown_grace=self.shutdown_grace,
        )
        self.promises = Promises(self)
        self.schedules = Schedules(self)
        self._waiters: dict[str, Waiter] = {}
        self._drives: dict[str, Drive] = {}
        self._listening: anyio.Event | None = None
        self._relisten_now: anyio.Event | None = None
        self._connects = 0
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

    def _derive(self, *, transport: Transport, clock: Clock, pid: str | None = None) -> Resonate:
        """Another Resonate with this one's functions, errors and dependencies, on another
        transport and clock (the test kit runs copies of an application against throw-away
        engines)."""
        other = Resonate(transport=transport, clock=clock, group=self.group, pid=pid,
                         ttl=self.ttl_ms / 1000, timeout=self.timeout_ms / 1000,
                         retry=self.worker.retry, worker=self.accepts_work,
                         shutdown_grace=self.shutdown_grace)
        other.registry = other.worker.registry = self.registry
        other.codec = other.worker.codec = self.codec
        other._dependencies = self._dependencies
        return other

    # registration -----------------------------------------------------------------------------
    @overload
    def register(self, fn: F, /) -> F: ...

    @overload
    def register(self, fn: None = None, /, *, name: str | None = None,
                 version: int = 1, retry: RetryPolicy | None = None) -> Callable[[F], F]: ...

    def register(self, fn: F | None = None, /, *, name: str | None = None,
                 version: int = 1, retry: RetryPolicy | None = None) -> F | Callable[[F], F]:
        """Register a function so it can be invoked durably, by (name, version).

        Use as ``@resonate.register`` or ``@resonate.register(name="charge", version=2)``.
        The function is returned unchanged. A durable function takes a ``Context`` first.
        ``retry`` (leaf functions only) is the function's own retry policy wherever it runs:
        as a ``ctx.run`` step (a call's ``.options(retry=...)`` still overrides it), as an
        rpc target and as a root; without one, the instance's ``Resonate(retry=...)`` applies.
        """
        def add(f: F) -> F:
            self.registry.add(f, name, version, retry)
            return f

        return add(fn) if fn is not None else add

    def register_error(self, cls: type[BaseException]) -> None:
        """Rebuild errors of type ``cls`` when they cross a durable boundary (else they come
        back as ``ApplicationError`` naming the original type)."""
        self.codec.register_error(cls)

    def set_dependency(self, obj: Any, type_: type[Any] | None = None) -> None:
        """Make ``obj`` available to durable functions as ``ctx.get_dependency(type_)``
        (``type_`` defaults to ``type(obj)``)."""
        self._dependencies[type_ if type_ is not None else type(obj)] = obj

    def _dependency(self, type_: type[Any]) -> Any:
        found = self._dependencies.get(type_)
        if found is None:
            for registered, obj in self._dependencies.items():
                if isinstance(registered, type) and issubclass(registered, type_):
                    return obj
            raise ContextError(f"no dependency of type {getattr(type_, '__name__', type_)}: "
                               "provide one with resonate.set_dependency(obj)")
        return found

    # lifecycle --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether ``async with resonate:`` (or ``serve()``) is active."""
        return self._tg is not None

    async def __aenter__(self) -> Resonate:
        if self._stack is not None:
            raise ResonateError("this Resonate is already running; enter it only once")
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self.transport)
            stream = self.transport.subscribe(self.stream_group, self.pid,
                                              accepts_work=self.accepts_work,
                                              on_connect=self._reconnected)
            tg = anyio.create_task_group()
            await tg.__aenter__()
        except BaseException:
            await stack.aclose()
            raise
        tg.start_soon(self.transport.background)
        tg.start_soon(self.clock.background)
        tg.start_soon(self._receive, stream, tg)
        tg.start_soon(self.worker.heartbeat_forever)
        tg.start_soon(self._relisten_forever)
        self._stack, self._tg = stack, tg
        # Work dispatched before the stream is connected would be dropped by a server: wait
        # (bounded) for it; if the server is down the transport keeps reconnecting.
        with anyio.move_on_after(self.connect_wait) as waited:
            await self.transport.wait_subscribed(self.stream_group, self.pid)
        if waited.cancelled_caught:
            log.warning("resonate_not_connected", pid=self.pid, waited_s=self.connect_wait,
                        detail="the message stream is not connected yet; it keeps retrying "
                               "in the background")
        log.info("resonate_started", pid=self.pid, group=self.group,
                 transport=type(self.transport).__name__)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        stack, self._stack = self._stack, None
        tg, self._tg = self._tg, None
        for waiter in self._waiters.values():
            waiter.event.set()  # wake waiters: they see that the client stopped
        try:
            if stack is not None:
                # Take no more work, and wait until the server routes none here: a task we
                # release below goes to a random open stream of the group, and if that were
                # ours the handover would wait for the server's retry timeout.
                with anyio.CancelScope(shield=True):
                    await close_stream(self.transport, self.stream_group, self.pid)
            if tg is not None:
                # Stop everything we own: executions still running release their tasks.
                # Async code stops at once; a sync step in a thread cannot be stopped, so it
                # gets shutdown_grace seconds to return before it is abandoned (its thread
                # is a daemon: it does not hold the interpreter's exit either).
                self.worker.begin_shutdown()
                # The body's own exception is not handed to the task group, so it reaches
                # the caller as it was raised (not wrapped in an exception group).
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            if stack is not None:
                await stack.aclose()
            log.info("resonate_stopped", pid=self.pid)

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run this Resonate for the lifetime of a web application.

        ``FastAPI(lifespan=resonate.lifespan)`` (or any ASGI framework taking a lifespan
        context factory) starts it with the app and stops it with the app; the app's
        endpoints then use ``resonate.run``/``rpc``/``get``/``promises``. Whether this
        process also executes work is the constructor's ``worker=`` choice.
        """
        async with self:
            yield

    async def serve(self) -> None:
        """Run as a worker until cancelled (or SIGINT/SIGTERM, when run in the main thread).

        On stop it takes no more work, stops the executions it runs and releases their tasks
        (another worker picks them up and replays them), then returns. Async code stops at
        once; a sync step blocking in a thread cannot be interrupted, so stopping waits at
        most ``shutdown_grace`` seconds (a constructor option, default 30) for it, then
        abandons it (its late result is ignored; its daemon thread does not keep the process
        alive), releases the task and returns.
        """
        if self.running:
            await self._wait_for_stop_signal()
            return
        async with self:
            await self._wait_for_stop_signal()

    async def _wait_for_stop_signal(self) -> None:
        try:
            receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
            with receiver as signals:
                async for signum in signals:
                    log.info("resonate_stopping", signal=signal.Signals(signum).name)
                    return
        except (ValueError, RuntimeError, NotImplementedError):
            # not the main thread (or no signal support): wait for cancellation only
            await anyio.sleep_forever()

    def _require_running(self, what: str) -> TaskGroup:
        if self._tg is None:
            raise NotStartedError(
                f"{what} needs a running Resonate: use it inside `async with resonate:` (or "
                "while `await resonate.serve()` runs)"
            )
        return self._tg

    # the message loop -------------------------------------------------------------------------
    async def _receive(self, stream: MemoryObjectReceiveStream[Message], tg: TaskGroup) -> None:
        async with stream:
            async for message in stream:
                if isinstance(message, Execute):
                    tg.start_soon(self.worker.on_execute, message.task_id, message.version)
                else:
                    self._on_settled(message.promise)

    async def _drive_local(self, claim: Claim, drive: Drive) -> None:
        task_id = claim.task.id
        self._drives[task_id] = drive
        try:
            await self.worker.run_claimed(claim)
        finally:
            if self._drives.get(task_id) is drive:
                del self._drives[task_id]
            drive.finish()

    def _on_settled(self, promise: Promise) -> None:
        if promise.state == "pending":
            return
        drive = self._drives.get(promise.id)
        if drive is not None:
            drive.promise = promise
        waiter = self._waiters.pop(promise.id, None)
        if waiter is not None:
            waiter.promise = promise
            waiter.event.set()

    async def _relisten_forever(self) -> None:
        """Unblock messages can be lost: re-register listeners of unsettled handles."""
        if getattr(self.transport, "delivers_all", False):  # older transports lack it
            return  # nothing to make up for
        while True:
            if not self._waiters:  # idle: no periodic wake-ups (they would stall a virtual clock)
                self._listening = anyio.Event()
                await self._listening.wait()
            # every listen_interval, or at once when the stream came back after a break
            self._relisten_now = anyio.Event()
            await self.clock.wait(self._relisten_now, self.listen_interval)
            for pid, waiter in list(self._waiters.items()):
                if waiter.listening and waiter.promise is None:
                    try:
                        await self._listen(pid)
                    except ResonateError as exc:
                        log.warning("listener_refresh_failed", promise_id=pid, error=str(exc))

    def _reconnected(self) -> None:
        self._connects += 1
        if self._connects > 1 and self._relisten_now is not None:
            self._relisten_now.set()  # unblock messages sent while we were away are lost

    async def send(self, request: Request) -> Response:
        """Send one protocol request through the transport (low level)."""
        return await self.transport.send(request)

    def address(self) -> str:
        """This process's unicast address (where its listeners' unblock messages go)."""
        return f"poll://uni@{self.stream_group}/{self.pid}"

    def target(self, target: str | None = None) -> str:
        """The address for a target: a group name ``g`` becomes ``poll://any@g``."""
        return self.worker.target_address(target)

    async def _listen(self, promise_id: str) -> None:
        response = await self.send(PromiseRegisterListener(promise_id, self.address()))
        if response.status == 404:
            raise NotFoundError(f"no promise with id {promise_id!r}")
        if response.status != 200:
            raise ResonateError(f"cannot await promise {promise_id!r}: {response.data}")
        self._on_settled(response.data.promise)

    async def _settled_promise(self, promise_id: str) -> Promise:
        self._require_running(f"awaiting {promise_id}")
        waiter = self._waiters.get(promise_id)
        if waiter is None:
            waiter = self._waiters[promise_id] = Waiter()
            if self._listening is not None:
                self._listening.set()
        if not waiter.listening:
            waiter.listening = True
            try:
                await self._listen(promise_id)
            except BaseException:
                waiter.listening = False
                raise
        await waiter.event.wait()
        if waiter.promise is None:
            raise NotStartedError(f"the Resonate stopped while awaiting {promise_id}")
        return waiter.promise

    async def _is_settled(self, promise_id: str) -> bool:
        waiter = self._waiters.get(promise_id)
        if waiter is not None and waiter.promise is not None:
            return True
        response = await self.send(PromiseGet(promise_id))
        if response.status == 404:
            raise NotFoundError(f"no promise with id {promise_id!r}")
        expect_ok(response, "promise.get")
        return bool(response.data.promise.state != "pending")

    # invocation -------------------------------------------------------------------------------
    def options(self, *, timeout: float | timedelta | None = None, target: str | None = None,
                version: int | None = None, tags: dict[str, str] | None = None) -> Invoker:
        """``resonate.options(timeout=..., target=..., version=..., tags=...).run(...)``."""
        return Invoker(self, timeout=timeout, target=target, version=version, tags=tags)

    @overload
    async def run(self, id: str, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, T]],
                  /, *args: P.args, **kwargs: P.kwargs) -> Handle[T]: ...

    @overload
    async def run(self, id: str, fn: Callable[P, Coroutine[Any, Any, T]], /,
                  *args: P.args, **kwargs: P.kwargs) -> Handle[T]: ...

    @overload
    async def run(self, id: str, fn: Callable[P, T], /,
                  *args: P.args, **kwargs: P.kwargs) -> Handle[T]: ...

    @overload
    async def run(self, id: str, fn: str, /, *args: Any,
                  **kwargs: Any) -> Handle[Any]: ...

    async def run(self, id: str, fn: Callable[..., Any] | str, /, *args: Any,
                  **kwargs: Any) -> Handle[Any]:
        """Start ``fn(*args, **kwargs)`` as execution ``id`` in this process.

        ``fn`` is a registered function (or its registered name). The id is the idempotency
        key: running an id again returns a handle on the first run's outcome, whatever the
        new arguments; an unfinished execution of that id (from a crashed process) resumes.
        """
        return await Invoker(self).run(id, fn, *args, **kwargs)

    @overload
    async def rpc(self, id: str, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, T]],
                  /, *args: P.args, **kwargs: P.kwargs) -> Handle[T]: ...

    @overload
    async def rpc(self, id: str, fn: Callable[P, Coroutine[Any, Any, T]], /,
                  *args: P.args, **kwargs: P.kwargs) -> Handle[T]: ...

    @overload
    async def rpc(self, id: str, fn: Callable[P, T], /,
                  *args: P.args, **kwargs: P.kwargs) -> Handle[T]: ...

    @overload
    async def rpc(self, id: str, fn: str, /, *args: Any, **kwargs: Any) -> Handle[Any]: ...

    async def rpc(self, id: str, fn: Callable[..., Any] | str, /, *args: Any,
                  **kwargs: Any) -> Handle[Any]:
        """Start ``fn(*args, **kwargs)`` as execution ``id`` on any worker of the target
        group (by default this one's). ``fn`` is a function name or a registered function."""
        return await Invoker(self).rpc(id, fn, *args, **kwargs)

    async def get(self, id: str) -> Handle[Any]:
        """A handle on the existing promise ``id``; raises ``NotFoundError`` if there is none."""
        self._require_running("resonate.get")
        check_id(id)
        response = await self.send(PromiseGet(id))
        if response.status == 404:
            raise NotFoundError(f"no promise with id {id!r}")
        expect_ok(response, "promise.get")
        p: Promise = response.data.promise
        self._on_settled(p)
        type_: Any = Any
        try:
            invocation = self.codec.decode_invocation(p.param)
            found = self.registry.lookup_name(invocation.func, invocation.version)
            if found is not None:
                type_ = found.returns
        except ResonateError:
            pass
        return Handle(id, RootState(self, type_))
