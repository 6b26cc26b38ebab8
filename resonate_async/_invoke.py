"""``Resonate.run`` and ``Resonate.rpc``, with or without options."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

import anyio
import anyio.lowlevel
import structlog

from resonate_async._checks import milliseconds, tags_problem
from resonate_async._context import Context, Handle
from resonate_async._errors import NotStartedError, RegistrationError, ResonateError
from resonate_async._handles import Drive, RootState
from resonate_async._status import expect_ok
from resonate_async.core._driver import HEAD
from resonate_async.core._registry import Function
from resonate_async.protocol import (
    TAG_BRANCH,
    TAG_ORIGIN,
    TAG_PARENT,
    TAG_SCOPE,
    TAG_TARGET,
    Action,
    PromiseCreate,
    TaskCreate,
    check_root_id,
)

if TYPE_CHECKING:
    from resonate_async._client import Resonate

log = structlog.get_logger("resonate_async.client")

P = ParamSpec("P")
T = TypeVar("T")


class Invoker:
    """``Resonate.run``/``rpc`` with options (``resonate.options(...)``)."""

    def __init__(self, client: Resonate, *, timeout: float | timedelta | None = None,
                 target: str | None = None, version: int | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.client = client
        self.timeout_ms = (client.timeout_ms if timeout is None
                           else milliseconds(timeout, "timeout"))
        self.target = target
        self.version = version
        problem = tags_problem(tags, reserved_ok=False)
        if problem:
            raise ValueError(problem)
        self.tags = dict(tags or {})

    def _function(self, fn: Any, *, local: bool) -> tuple[str, int, Any]:
        registry = self.client.registry
        if isinstance(fn, str):
            if local:
                found: Function = registry.get(fn, self.version)
                return found.name, found.version, found.returns
            found_remote = registry.lookup_name(fn, self.version)
            returns = found_remote.returns if found_remote is not None else Any
            return fn, self.version or 1, returns
        found_fn = registry.lookup(fn)
        if found_fn is None:
            name = getattr(fn, "__qualname__", repr(fn))
            raise RegistrationError(f"{name} is not registered: decorate it with "
                                    "@resonate.register (or pass its registered name)")
        return found_fn.name, self.version or found_fn.version, found_fn.returns

    def _create(self, id: str, name: str, version: int, args: tuple[Any, ...],
                kwargs: dict[str, Any], target: str) -> PromiseCreate:
        client = self.client
        param = client.codec.encode_invocation(name, args, kwargs, version)
        tags = {**self.tags, TAG_ORIGIN: id, TAG_BRANCH: id, TAG_PARENT: id,
                TAG_SCOPE: "global", TAG_TARGET: target}
        return PromiseCreate(id, client.clock.now_ms() + self.timeout_ms, param, tags)

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
    async def run(self, id: str, fn: str, /, *args: Any, **kwargs: Any) -> Handle[Any]: ...

    async def run(self, id: str, fn: Callable[..., Any] | str, /, *args: Any,
                  **kwargs: Any) -> Handle[Any]:
        """See ``Resonate.run``."""
        client = self.client
        tg = client._require_running("resonate.run")
        check_root_id(id)
        name, version, returns = self._function(fn, local=True)
        client.registry.get(name, version).check_call(args, kwargs)
        target = (client.target(self.target) if self.target is not None
                  else sys.intern(f"poll://any@{client.group}/{client.pid}"))  # one per root
        create = self._create(id, name, version, args, kwargs, target)
        drive: Drive | None = None
        response = await client.send(
            TaskCreate(client.pid, client.ttl_ms, Action("promise.create", HEAD, create)))
        if response.status == 200:
            claim = response.data
            client._on_settled(claim.promise)
            if claim.task.state == "acquired":
                if client._tg is not tg:  # stopped while task.create was in flight
                    raise NotStartedError(
                        f"the Resonate stopped while starting {id!r}: the execution exists and "
                        "resumes on another worker once this one's lease expires")
                log.info("execution_created", promise_id=id, function=name)
                drive = Drive(claim.promise.timeout_at)
                tg.start_soon(client._drive_local, claim, drive)
                # Let the drive take its first leg before the caller goes on: a caller
                # starting many executions in a row (an embedded engine answers without
                # yielding) would otherwise pile up one waiting task per execution. Not a
                # cancellation point: the execution exists and runs whatever the caller does.
                await anyio.lowlevel.cancel_shielded_checkpoint()
        elif response.status == 422:
            raise ResonateError(f"promise {id!r} already exists and is not an execution (it "
                                "was created with resonate.promises.create?); use another id")
        elif response.status != 409:  # 409: already running elsewhere; just await it
            expect_ok(response, "task.create")
        return Handle(id, RootState(client, returns, drive))

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
        """See ``Resonate.rpc``."""
        client = self.client
        client._require_running("resonate.rpc")
        check_root_id(id)
        name, version, returns = self._function(fn, local=False)
        found = client.registry.lookup_name(name, version)
        if found is not None:
            found.check_call(args, kwargs)
        create = self._create(id, name, version, args, kwargs, client.target(self.target))
        response = await client.send(create)
        expect_ok(response, "promise.create")
        client._on_settled(response.data.promise)
        return Handle(id, RootState(client, returns))
