"""The task driver: acquire -> execute -> fulfill / suspend / release, and heartbeats.

A platform failure (the engine unreachable, a malformed answer) releases the task and never
settles it; losing the lease (409) stops the execution without another write; completion
fulfils the task. ``300`` from ``task.suspend`` means a dependency already settled: the
function is replayed at once with the new preload.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import anyio
import structlog

from resonate_async._clock import Clock
from resonate_async._codec import Codec
from resonate_async._errors import EncodingError, ResonateError
from resonate_async._retry import RetryPolicy
from resonate_async._tracing import execution_span
from resonate_async.core._execution import Execution, LeaseLost, Outcome, PlatformFailure
from resonate_async.core._registry import Registry
from resonate_async.protocol import (
    PROTOCOL_VERSION,
    TAG_ORIGIN,
    TAG_TIMER,
    Action,
    ActionHead,
    Claim,
    Promise,
    PromiseRegisterCallback,
    PromiseSettle,
    Request,
    Response,
    SettleState,
    TaskAcquire,
    TaskFulfill,
    TaskHeartbeat,
    TaskRef,
    TaskRelease,
    TaskSuspend,
    origin_of,
)
from resonate_async.transport import Transport

log = structlog.get_logger("resonate_async.worker")

HEAD: Final = ActionHead("", PROTOCOL_VERSION)
# Settled children of suspended executions kept for their resumption in this process: a
# resumed replay then re-fences none of the remote calls it already saw settled (settled
# records never change, so a kept record is never stale). Bounded, least recently kept first.
KEPT_EXECUTIONS: Final = 1024


class Worker:
    """Runs the tasks this process claims, one ``Execution`` each."""

    def __init__(
        self,
        *,
        transport: Transport,
        codec: Codec,
        registry: Registry,
        clock: Clock,
        pid: str,
        group: str,
        ttl_ms: int,
        retry: RetryPolicy,
        concurrency: int,
        dependency: Callable[[type[Any]], Any],
        on_settled: Callable[[Promise], None] = lambda _: None,
    ) -> None:
        self.transport = transport
        self.codec = codec
        self.registry = registry
        self.clock = clock
        self.pid = pid
        self.group = group
        self.ttl_ms = ttl_ms
        self.retry = retry
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.dependency = dependency
        self.on_settled = on_settled
        self.held: dict[str, int] = {}
        self._kept: dict[str, dict[str, Promise]] = {}
        self._claimed: anyio.Event | None = None

    def target_address(self, target: str | None) -> str:
        """A group name becomes ``poll://any@group``; an address is used as it is."""
        if target is None:
            return f"poll://any@{self.group}"
        return target if "://" in target else f"poll://any@{target}"

    async def send(self, request: Request) -> Response:
        """Send a request for an execution; unreachable engine -> ``PlatformFailure``."""
        try:
            return await self.transport.send(request)
        except ResonateError as exc:
            raise PlatformFailure(f"{request.KIND}: {exc}") from exc
        except OSError as exc:
            raise PlatformFailure(f"{request.KIND}: {exc}") from exc

    # claiming ---------------------------------------------------------------------------------
    async def on_execute(self, task_id: str, version: int) -> None:
        """Handle an ``execute`` message: claim the task (within the concurrency cap), run it."""
        async with self.limiter:
            if task_id in self.held:
                return
            try:
                response = await self.send(TaskAcquire(task_id, version, self.pid, self.ttl_ms))
            except PlatformFailure as exc:
                log.warning("task_acquire_failed", task_id=task_id, error=str(exc))
                return
            if response.status != 200:
                log.debug("task_not_acquired", task_id=task_id, status=response.status)
                return
            await self.run_claim(response.data)

    async def run_claimed(self, claim: Claim) -> None:
        """Drive a task this process claimed itself (``task.create``), within the cap."""
        async with self.limiter:
            await self.run_claim(claim)

    async def run_claim(self, claim: Claim) -> None:
        """Drive one claimed task until it is fulfilled, suspended, released or lost."""
        task, root = claim.task, claim.promise
        if task.state != "acquired" or task.pid != self.pid:
            return
        if root.tags.get(TAG_TIMER) == "true":
            return  # a timer is never run as a function; its deadline settles it
        tid, version = task.id, task.version
        self.held[tid] = version
        if self._claimed is not None:
            self._claimed.set()
        tlog = log.bind(task_id=tid, promise_id=tid, attempt=version)
        try:
            execution = self._prepare(claim, tlog)
            if isinstance(execution, BaseException):
                await self._fulfill(tid, version, Outcome("failed", error=execution), tlog)
                return
            if task.version > 1:
                tlog.info("execution_resumed", function=execution.function.name,
                          cached=len(execution.cache))
            else:
                tlog.info("execution_started", function=execution.function.name)
            with execution_span(execution.function.name, tid, version) as span:
                span.set_attribute("resonate.outcome", "stopped")
                ended = await self._drive(execution, tid, version, tlog)
                span.set_attribute("resonate.outcome", ended)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if tid in self.held:
                    tlog.info("task_released", reason="worker stopping")
                    await self._release(tid, version)
            raise
        finally:
            self.held.pop(tid, None)

    async def _drive(self, execution: Execution, tid: str, version: int, tlog: Any) -> str:
        """Run and replay ``execution`` until it ends; returns how: ``completed``, ``failed``,
        ``suspended``, ``released`` or ``lost``."""
        while True:
            try:
                outcome = await execution.run_once()
            except LeaseLost:
                tlog.warning("task_lost")
                return "lost"
            except PlatformFailure as exc:
                tlog.warning("task_released", reason=str(exc))
                await self._release(tid, version)
                return "released"
            if outcome.kind != "waiting":
                await self._fulfill(tid, version, outcome, tlog)
                return "completed" if outcome.kind == "done" else "failed"
            response = await self._suspend(tid, version, outcome.waiting)
            if response is None:
                return "released"
            if response.status == 200:
                tlog.info("task_suspended", waiting_on=outcome.waiting)
                self._keep(tid, execution.cache)
                return "suspended"
            execution.absorb(response.data.preload)  # 300: replay at once
            tlog.info("execution_resumed", function=execution.function.name,
                      cached=len(execution.cache), reason="dependency_settled")

    def _prepare(self, claim: Claim, tlog: Any = None) -> Execution | BaseException:
        root = claim.promise
        try:
            invocation = self.codec.decode_invocation(root.param)
            function = self.registry.get(invocation.func, invocation.version)
            args, kwargs = function.convert_args(self.codec, invocation.args, invocation.kwargs)
        except ResonateError as exc:
            return exc
        return Execution(self, claim.task.id, claim.task.version, root, function, args, kwargs,
                         claim.preload, self._kept.pop(claim.task.id, None), tlog)

    def _keep(self, tid: str, cache: dict[str, Promise]) -> None:
        settled = {i: p for i, p in cache.items() if p.state != "pending"}
        if not settled:
            return
        kept = self._kept
        kept[tid] = settled
        if len(kept) > KEPT_EXECUTIONS:
            del kept[next(iter(kept))]

    # finishing --------------------------------------------------------------------------------
    async def _fulfill(self, tid: str, version: int, outcome: Outcome, tlog: Any) -> None:
        state: SettleState
        if outcome.kind == "done":
            try:
                value = self.codec.encode(outcome.value, what=f"result of {tid}")
                state = "resolved"
            except EncodingError as exc:
                value, state = self.codec.encode_error(exc), "rejected"
        else:
            assert outcome.error is not None
            value, state = self.codec.encode_error(outcome.error), "rejected"
        try:
            response = await self.send(TaskFulfill(
                tid, version, Action("promise.settle", HEAD, PromiseSettle(tid, state, value))))
        except PlatformFailure as exc:
            tlog.warning("task_released", reason=str(exc))
            await self._release(tid, version)
            return
        if response.status == 200:
            self.on_settled(response.data.promise)
            if state == "resolved":
                tlog.info("execution_completed")
            else:
                tlog.info("execution_failed", error=repr(outcome.error))
            self.held.pop(tid, None)
        elif response.status == 409:
            tlog.warning("task_lost", during="fulfill")
        else:
            tlog.warning("task_released", reason=f"fulfill answered {response.status}")
            await self._release(tid, version)

    async def _suspend(self, tid: str, version: int, ids: list[str]) -> Response | None:
        actions = [Action("promise.register_callback", HEAD, PromiseRegisterCallback(i, tid))
                   for i in ids]
        try:
            response = await self.send(TaskSuspend(tid, version, actions))
        except PlatformFailure as exc:
            log.warning("task_released", task_id=tid, reason=str(exc))
            await self._release(tid, version)
            return None
        if response.status in (200, 300):
            if response.status == 200:
                self.held.pop(tid, None)
            return response
        if response.status != 409:
            log.warning("task_released", task_id=tid,
                        reason=f"suspend answered {response.status}: {response.data}")
            await self._release(tid, version)
        return None

    async def _release(self, tid: str, version: int) -> None:
        self.held.pop(tid, None)
        try:
            await self.send(TaskRelease(tid, version))
        except PlatformFailure as exc:
            log.warning("task_release_failed", task_id=tid, error=str(exc))

    # heartbeats -------------------------------------------------------------------------------
    async def heartbeat_forever(self) -> None:
        """Extend the leases of held tasks every ttl/2, one request per origin."""
        while True:
            if not self.held:  # idle: no periodic wake-ups (they would stall a virtual clock)
                self._claimed = anyio.Event()
                await self._claimed.wait()
            await self.clock.sleep(self.ttl_ms / 2000)
            await self.heartbeat()

    async def heartbeat(self) -> None:
        by_origin: dict[str, list[TaskRef]] = {}
        for tid, version in list(self.held.items()):
            by_origin.setdefault(origin_of(tid), []).append(TaskRef(tid, version))
        for refs in by_origin.values():
            try:
                await self.send(TaskHeartbeat(self.pid, refs))
            except PlatformFailure as exc:
                log.warning("heartbeat_failed", error=str(exc))


__all__ = ["TAG_ORIGIN", "Worker"]
