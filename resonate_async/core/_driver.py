"""The task driver: acquire -> execute -> fulfill / suspend / release, and heartbeats.

A platform failure (the engine unreachable, a malformed answer, a value this worker cannot
decrypt) releases the task and never settles it; this worker then backs off before taking that
task again (``_failures.TaskFailures``). Losing the lease (409) stops the execution without
another write; completion fulfils the task. A result the server refuses for good (too large,
400/422) ends the execution with a small ``EncodingError`` rejection instead. ``300`` from
``task.suspend`` means a dependency already settled: the function is replayed at once with the
new preload. Duplicate ``execute`` messages (already held, or already waiting for a slot) are
dropped before they queue, and the queue of waiting messages is bounded (the engine sends
unclaimed work again after its retry timeout).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import anyio
import structlog

from resonate_async._clock import Clock
from resonate_async._codec import Codec
from resonate_async._errors import (
    DecryptionError,
    EncodingError,
    RequestTooLargeError,
    ResonateError,
)
from resonate_async._retry import RetryPolicy
from resonate_async._slots import take
from resonate_async._tracing import execution_span
from resonate_async.core import _threads
from resonate_async.core._execution import (
    Execution,
    LeaseLost,
    Outcome,
    PlatformFailure,
    Refused,
    halt_unrun_task,
)
from resonate_async.core._failures import TaskFailures
from resonate_async.core._registry import Registry
from resonate_async.protocol import (
    PROTOCOL_VERSION,
    TAG_EXTERNAL,
    TAG_ORIGIN,
    TAG_TIMER,
    Action,
    ActionHead,
    Claim,
    Promise,
    PromiseCreate,
    PromiseGet,
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
    Value,
    origin_of,
)
from resonate_async.transport import Transport

log = structlog.get_logger("resonate_async.worker")

HEAD: Final = ActionHead("", PROTOCOL_VERSION)
# Settled children of suspended executions kept for their resumption in this process: a
# resumed replay then re-fences none of the remote calls it already saw settled (settled
# records never change, so a kept record is never stale). Bounded by count and by bytes (the
# values' sizes plus a per-record overhead), least recently kept first.
KEPT_EXECUTIONS: Final = 1024
KEPT_BYTES: Final = 32 * 2**20
# The server refuses these answers to task.fulfill for good: sending the same again cannot help.
REFUSED: Final = frozenset((400, 413, 422))
# Room for the request around a value (ids, tags, envelope) when checking a size limit.
ENVELOPE_BYTES: Final = 4096
DEFAULT_SHUTDOWN_GRACE: Final = 30.0

T = TypeVar("T")

# root reads in flight at once from one heartbeat (each a promise.get)
_WATCH_READS = 16


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
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        max_queued: int | None = None,
    ) -> None:
        self.transport = transport
        # The transport answers without yielding to the event loop (the embedded engine):
        # a request there cannot be interrupted by a cancellation halfway.
        self.inline_sends = getattr(transport, "sends_inline", False) is True
        # The engine takes ``promise.record`` (in-process engines): a local step is one write.
        self.records_steps = getattr(transport, "records_steps", False) is True
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
        self._watches: dict[int, Any] = {}  # runs whose own promise the heartbeat reads
        # local steps running without a promise (recorded in one write when they end):
        # step id -> (execution, its create, when it started, ms)
        self.unrecorded: dict[str, tuple[Any, PromiseCreate, int]] = {}
        self._kept: dict[str, tuple[dict[str, Promise], int]] = {}
        self._kept_bytes = 0
        self._claimed: anyio.Event | None = None
        self.failures = TaskFailures(clock)
        self.shutdown_grace = shutdown_grace
        self._stop_deadline: float | None = None  # anyio.current_time() when grace ends
        # execute messages waiting here (for a back-off or a slot) until their task is
        # acquired: task id -> newest version seen
        self._queued: dict[str, int] = {}
        self.max_queued = max_queued if max_queued is not None else max(256, 4 * concurrency)

    def target_address(self, target: str | None) -> str:
        """A group name becomes ``poll://any@group``; an address is used as it is."""
        if target is None:
            return f"poll://any@{self.group}"
        return target if "://" in target else f"poll://any@{target}"

    async def send(self, request: Request) -> Response:
        """Send a request for an execution; unreachable engine -> ``PlatformFailure``."""
        try:
            return await self.transport.send(request)
        except (ResonateError, OSError) as exc:
            text = str(exc)  # a ProtocolError names the request kind already
            raise PlatformFailure(
                text if text.startswith(request.KIND) else f"{request.KIND}: {text}") from exc

    # stopping ---------------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        """The owner is stopping: from now, steps running in threads get ``shutdown_grace``
        seconds (in all) to return before they are abandoned and their tasks released."""
        if self._stop_deadline is None:
            self._stop_deadline = anyio.current_time() + self.shutdown_grace

    @property
    def stopping(self) -> bool:
        return self._stop_deadline is not None

    def _grace_left(self) -> float:
        if self._stop_deadline is None:
            return 0.0  # not stopping (a step's own deadline): abandon at once
        return max(self._stop_deadline - anyio.current_time(), 0.0)

    async def run_sync(self, fn: Callable[[], T], *, what: str = "a sync step") -> T:
        """Run sync user code in a daemon thread; on cancellation wait at most what is left
        of the shutdown grace (nothing outside a shutdown), then abandon the thread."""
        def abandoned() -> None:
            log.warning("step_abandoned", what=what, stopping=self.stopping,
                        detail="its thread still runs and cannot be stopped; its result will "
                               "be ignored (the step runs again wherever the task resumes)")

        return await _threads.run_sync(fn, grace=self._grace_left, on_abandon=abandoned)

    # claiming ---------------------------------------------------------------------------------
    async def on_execute(self, task_id: str, version: int) -> None:
        """Handle an ``execute`` message: claim the task (within the concurrency cap), run it.

        A message for a task already held or already waiting here is dropped at once, as is
        one beyond ``max_queued`` waiting messages (the engine sends it again later). A task
        this worker recently gave back after a failure is taken again only after its back-off.
        """
        queued = self._queued
        if task_id in queued:
            queued[task_id] = max(queued[task_id], version)
            log.debug("execute_dropped", task_id=task_id, reason="already waiting here")
            return
        if self._holds_newer(task_id, version):
            log.debug("execute_dropped", task_id=task_id, reason="already held")
            return
        if len(queued) >= self.max_queued:
            log.debug("execute_dropped", task_id=task_id, reason="backlog",
                      waiting=len(queued))
            return
        queued[task_id] = version
        waiting = True
        try:
            wait = self.failures.wait_s(task_id)
            if wait > 0:
                log.debug("task_backing_off", task_id=task_id, seconds=wait)
                await self.clock.sleep(wait)
            async with self.limiter:
                version = queued[task_id]
                if self._holds_newer(task_id, version):
                    return
                try:
                    response = await self.send(
                        TaskAcquire(task_id, version, self.pid, self.ttl_ms))
                except PlatformFailure as exc:
                    log.warning("task_acquire_failed", task_id=task_id, error=str(exc))
                    return
                if response.status != 200:
                    log.debug("task_not_acquired", task_id=task_id, status=response.status)
                    return
                # Held from here (run_claim marks it before its first await): a message for
                # the task once it is released or suspended again must get through.
                del queued[task_id]
                waiting = False
                await self.run_claim(response.data)
        finally:
            if waiting:
                del queued[task_id]

    def _holds_newer(self, task_id: str, version: int) -> bool:
        """Whether this worker holds ``task_id`` at a version past ``version``: a message for
        an older version is a duplicate of the dispatch we acquired. (One for the held version
        itself may come from the engine before our own suspend's answer does: not dropped.)"""
        held = self.held.get(task_id)
        return held is not None and held > version

    def _unhold(self, tid: str, version: int) -> None:
        """Forget holding ``tid`` at ``version`` (not a newer claim of it made meanwhile)."""
        if self.held.get(tid) == version:
            del self.held[tid]

    async def run_claimed(self, claim: Claim) -> None:
        """Drive a task this process claimed itself (``task.create``), within the cap."""
        limiter = self.limiter
        await take(limiter)  # a free slot: taken without a loop turn
        try:
            await self.run_claim(claim)
        finally:
            limiter.release()

    async def run_claim(self, claim: Claim) -> None:
        """Drive one claimed task until it is fulfilled, suspended, released or lost."""
        task, root = claim.task, claim.promise
        if task.state != "acquired" or task.pid != self.pid:
            return
        if root.tags.get(TAG_TIMER) == "true" or root.tags.get(TAG_EXTERNAL) == "true":
            await self._park(task.id)  # never run as a function
            return
        tid, version = task.id, task.version
        self.held[tid] = version
        if self._claimed is not None:
            self._claimed.set()
        tlog: Any = None  # bound once, with the function's name when there is one
        try:
            try:
                execution = self._prepare(claim)
            except DecryptionError as exc:
                tlog = log.bind(task_id=tid, promise_id=tid, attempt=version)
                await self._cannot_decrypt(tid, version, exc, tlog)
                return
            if isinstance(execution, BaseException):
                tlog = log.bind(task_id=tid, promise_id=tid, attempt=version)
                await self._fulfill(tid, version, Outcome("failed", error=execution), tlog)
                return
            tlog = execution.log
            if task.version > 1:
                tlog.info("execution_resumed", cached=len(execution.cache))
            else:
                tlog.info("execution_started")
            with execution_span(execution.function.name, tid, version) as span:
                span.set_attribute("resonate.outcome", "stopped")
                ended = await self._drive(execution, tid, version, tlog)
                span.set_attribute("resonate.outcome", ended)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if self.held.get(tid) == version:
                    if tlog is None:
                        tlog = log.bind(task_id=tid, promise_id=tid, attempt=version)
                    tlog.info("task_released", reason="worker stopping")
                    await self._release(tid, version)
            raise
        finally:
            self._unhold(tid, version)

    async def _park(self, tid: str) -> None:
        """Put away the task of a timer or an external promise, which no worker runs.

        Ours are halted when created, but other SDKs (the official one) target their timers
        at the workers' group, so we may be sent one. Halting it makes the server send no
        more ``execute`` for it; merely dropping it would have the server dispatch it again
        each time the lease lapses. Its deadline or a settle still fulfils it.
        """
        log.debug("timer_task_halted", task_id=tid)
        await halt_unrun_task(self.send, tid)

    async def _drive(self, execution: Execution, tid: str, version: int, tlog: Any) -> str:
        """Run and replay ``execution`` until it ends; returns how: ``completed``, ``failed``,
        ``suspended``, ``released`` or ``lost``."""
        started = time.monotonic()
        while True:
            try:
                outcome = await execution.run_once()
            except LeaseLost:
                tlog.warning("task_lost")
                return "lost"
            except PlatformFailure as exc:
                tlog.warning("task_released", reason=str(exc))
                await self._release(tid, version, failure=str(exc), tlog=tlog)
                return "released"
            undecryptable = _decryption_error(outcome.error)
            if outcome.kind == "failed" and undecryptable is not None:
                await self._cannot_decrypt(tid, version, undecryptable, tlog)
                return "released"
            if outcome.kind != "waiting":
                await self._fulfill(tid, version, outcome, tlog, started=started)
                return "completed" if outcome.kind == "done" else "failed"
            response = await self._suspend(tid, version, outcome.waiting, tlog)
            if response is None:
                return "released"
            if response.status == 200:
                tlog.info("execution_suspended", waiting_on=outcome.waiting,
                          duration_ms=_ms_since(started))
                self.failures.succeeded(tid)
                self._keep(tid, execution)
                return "suspended"
            execution.absorb(response.data.preload)  # 300: replay at once
            tlog.info("execution_resumed", cached=len(execution.cache),
                      reason="dependency_settled")

    def _prepare(self, claim: Claim) -> Execution | BaseException:
        """The execution of a claim, or the error that fails it for good; raises
        ``DecryptionError`` when this worker cannot read the root's param (its key)."""
        root = claim.promise
        try:
            invocation = self.codec.decode_invocation(root.param)
            function = self.registry.get(invocation.func, invocation.version)
            args, kwargs = function.convert_args(self.codec, invocation.args, invocation.kwargs)
        except DecryptionError:
            raise
        except ResonateError as exc:
            return exc
        task = claim.task
        kept = self._take_kept(task.id)
        tlog = log.bind(task_id=task.id, promise_id=task.id, attempt=task.version,
                        function=function.name)
        execution = Execution(self, task.id, task.version, root, function, args,
                              kwargs, claim.preload, None if kept is None else kept[0], tlog)
        if kept is not None:
            execution.kept_counted = (len(kept[0]), kept[1])
        return execution

    def _keep(self, tid: str, execution: Execution) -> None:
        """Keep the settled records of a suspended execution for its resumption here.

        Its cache is kept itself, its pending records dropped: the execution is over. The
        records a resumption started with were counted when they were kept (settled records
        never change, and new ones are added after them), so only the newer ones are sized.
        """
        self._take_kept(tid)
        cache = execution.cache
        counted, size = execution.kept_counted
        pending = []
        for i, p in itertools.islice(cache.items(), counted, None):
            if p.state == "pending":
                pending.append(i)
            else:  # about what a kept record costs: its values plus ~500 bytes of objects
                size += 512 + len(i) + len(p.param.data or "") + len(p.value.data or "")
        for i in pending:
            del cache[i]
        if not cache or size * 4 > KEPT_BYTES:  # too large: the resumption's preload has it
            return
        kept = self._kept
        kept[tid] = (cache, size)
        self._kept_bytes += size
        while len(kept) > KEPT_EXECUTIONS or self._kept_bytes > KEPT_BYTES:
            self._take_kept(next(iter(kept)))

    def _take_kept(self, tid: str) -> tuple[dict[str, Promise], int] | None:
        entry = self._kept.pop(tid, None)
        if entry is not None:
            self._kept_bytes -= entry[1]
        return entry

    # finishing --------------------------------------------------------------------------------
    def _settlement(self, tid: str, outcome: Outcome) -> tuple[Value, SettleState]:
        """The value and state that settle the root, checked against the transport's request
        size limit when it has one (a value over it becomes a small ``EncodingError``)."""
        if outcome.kind == "done":
            try:
                value = self.codec.encode(outcome.value, what=f"result of {tid}")
            except EncodingError as exc:
                return self.codec.encode_error(exc), "rejected"
            too_large = self._too_large(value, f"result of {tid}")
            if too_large is None:
                return value, "resolved"
            return self.codec.encode_error(too_large), "rejected"
        assert outcome.error is not None
        value = self.codec.encode_error(outcome.error)
        too_large = self._too_large(value, f"the error {tid} failed with "
                                           f"({type(outcome.error).__name__})")
        return (value if too_large is None else self.codec.encode_error(too_large)), "rejected"

    def _too_large(self, value: Value, what: str) -> EncodingError | None:
        limit = getattr(self.transport, "max_request_bytes", None)
        if not isinstance(limit, int) or value.data is None:
            return None
        headers = value.headers or {}
        size = len(value.data) + sum(len(k) + len(v) for k, v in headers.items())
        if size + ENVELOPE_BYTES <= limit:
            return None
        return _too_large_error(what, size, limit)

    async def _fulfill(self, tid: str, version: int, outcome: Outcome, tlog: Any, *,
                       started: float | None = None) -> None:
        value, state = self._settlement(tid, outcome)
        error = outcome.error
        refused_once = False
        while True:
            refusal: str | None = None
            try:
                response = await self.send(TaskFulfill(
                    tid, version, Action("promise.settle", HEAD, PromiseSettle(tid, state, value))))
            except PlatformFailure as exc:
                if not isinstance(exc.__cause__, RequestTooLargeError):
                    tlog.warning("task_released", reason=str(exc))
                    await self._release(tid, version, failure=str(exc), tlog=tlog)
                    return
                refusal = str(exc.__cause__)
                error = _too_large_error(f"result of {tid}" if state == "resolved"
                                         else f"the error {tid} failed with",
                                         len(value.data or ""), None)
            else:
                if response.status == 200:
                    self.on_settled(response.data.promise)
                    # duration_ms: this worker's time on the execution since it claimed it
                    # (a resumed execution counts from its resumption)
                    took = {} if started is None else {"duration_ms": _ms_since(started)}
                    if state == "resolved":
                        tlog.info("execution_completed", **took)
                    else:
                        tlog.info("execution_failed", error=repr(error), **took)
                    self._unhold(tid, version)
                    self.failures.succeeded(tid)
                    return
                if response.status == 409:
                    tlog.warning("task_lost", during="fulfill")
                    return
                if response.status in REFUSED:
                    refusal = f"{response.status}: {str(response.data)[:300]}"
                    what = "result" if state == "resolved" else "error"
                    error = EncodingError(
                        f"the server refused to store the {what} of {tid} (task.fulfill "
                        f"answered {refusal}); return a value the server accepts (small, "
                        "JSON-like), or store it elsewhere and return a reference")
            if refusal is None or refused_once:
                reason = f"fulfill answered {refusal or response.status}"
                tlog.warning("task_released", reason=reason)
                await self._release(tid, version, failure=reason, tlog=tlog)
                return
            # Refused for good: sending it again cannot help, so the execution fails instead,
            # with a rejection small enough to be stored.
            tlog.error("result_refused", reason=refusal, error=str(error))
            refused_once = True
            assert error is not None
            value, state = self.codec.encode_error(error), "rejected"

    async def _suspend(self, tid: str, version: int, ids: list[str],
                       tlog: Any = None) -> Response | None:
        actions = [Action("promise.register_callback", HEAD, PromiseRegisterCallback(i, tid))
                   for i in ids]
        try:
            response = await self.send(TaskSuspend(tid, version, actions))
        except PlatformFailure as exc:
            log.warning("task_released", task_id=tid, reason=str(exc))
            await self._release(tid, version, failure=str(exc), tlog=tlog)
            return None
        if response.status in (200, 300):
            if response.status == 200:
                self._unhold(tid, version)
            return response
        if response.status != 409:
            reason = f"suspend answered {response.status}: {response.data}"
            log.warning("task_released", task_id=tid, reason=reason)
            await self._release(tid, version, failure=reason, tlog=tlog)
        return None

    async def _cannot_decrypt(self, tid: str, version: int, exc: DecryptionError,
                              tlog: Any) -> None:
        tlog.error("task_not_decryptable", error=str(exc),
                   detail="this worker's Encryptor cannot read the task's values, so it writes "
                          "nothing and gives the task back to other workers; give every "
                          "process of the application the same key")
        await self._release(tid, version, failure=f"cannot decrypt: {exc}", tlog=tlog)

    async def _release(self, tid: str, version: int, *, failure: str | None = None,
                       tlog: Any = None) -> None:
        """Give the task back; ``failure`` (a platform failure's text) makes this worker back
        off before taking the task again."""
        self._unhold(tid, version)
        if failure is not None:
            self.failures.failed(tid, failure, tlog)
        try:
            await self.send(TaskRelease(tid, version))
        except PlatformFailure as exc:
            log.warning("task_release_failed", task_id=tid, error=str(exc))

    # heartbeats -------------------------------------------------------------------------------
    async def heartbeat_forever(self) -> None:
        """Extend the leases of held tasks every ttl/2, one request per origin; then read the
        watched roots, in the background: slow reads never delay the next heartbeat."""
        reading = showing = False

        async def read_watched() -> None:
            nonlocal reading
            try:
                await self._check_watched()
            finally:
                reading = False

        async def show_running() -> None:
            nonlocal showing
            try:
                await self._show_running()
            finally:
                showing = False

        async with anyio.create_task_group() as tg:
            while True:
                if not self.held:  # idle: no periodic wake-ups (they would stall a virtual clock)
                    self._claimed = anyio.Event()
                    await self._claimed.wait()
                await self.clock.sleep(self.ttl_ms / 2000)
                await self.heartbeat(watched=False)
                if not reading and self._watches:
                    reading = True
                    tg.start_soon(read_watched)
                if not showing and self.unrecorded:
                    showing = True
                    tg.start_soon(show_running)

    async def _show_running(self) -> None:
        """Create, pending, the local steps that have run for half a lease or more without a
        promise (a step is recorded in one write when it ends): a long step shows in the
        tree and in searches, and a cancel reaches it, as if it had been created first."""
        old_enough = self.clock.now_ms() - self.ttl_ms // 2
        due = [(pid, entry) for pid, entry in self.unrecorded.items() if entry[2] <= old_enough]
        for pid, (execution, create, _) in due:
            if self.unrecorded.pop(pid, None) is None:  # it ended meanwhile
                continue
            try:
                await execution._create(create)
            except (LeaseLost, PlatformFailure, Refused) as exc:
                log.debug("running_step_not_shown", step_id=pid, error=str(exc))

    def watch(self, watch: Any) -> None:
        """Watch a run's own promise from the heartbeat loop (see ``_RootWatch``)."""
        self._watches[id(watch)] = watch

    def unwatch(self, watch: Any) -> None:
        self._watches.pop(id(watch), None)

    async def _check_watched(self) -> None:
        """Stop runs whose promise was settled elsewhere (only runs older than ttl/2); the
        reads go out together, at most ``_WATCH_READS`` at a time."""
        old_enough = self.clock.now_ms() - self.ttl_ms // 2
        due = [w for w in self._watches.values() if w.started <= old_enough and w.settled is None]
        if not due:
            return
        limit = anyio.CapacityLimiter(_WATCH_READS)

        async def read(watch: Any) -> None:
            async with limit:
                try:
                    response = await self.send(PromiseGet(watch.execution.id))
                except PlatformFailure as exc:
                    log.debug("root_not_read", task_id=watch.execution.id, error=str(exc))
                    return
            if response.status == 200 and response.data.promise.state != "pending":
                watch.settled_elsewhere(response.data.promise.state)

        async with anyio.create_task_group() as tg:
            for watch in due:
                tg.start_soon(read, watch)

    async def heartbeat(self, *, watched: bool = True) -> None:
        """Extend every held lease, then (``watched``) read the watched roots.

        Leases first and all at once (one request per origin, sent together): a worker holding
        many tasks on a slow server must not let a lease lapse while it waits for the answers
        of earlier heartbeats or of root reads (CI's chaos test lost every lease so, under load).
        """
        by_origin: dict[str, list[TaskRef]] = {}
        for tid, version in list(self.held.items()):
            by_origin.setdefault(origin_of(tid), []).append(TaskRef(tid, version))

        async def beat(refs: list[TaskRef]) -> None:
            try:
                await self.send(TaskHeartbeat(self.pid, refs))
            except PlatformFailure as exc:
                log.warning("heartbeat_failed", error=str(exc))

        if len(by_origin) == 1:
            await beat(next(iter(by_origin.values())))
        elif by_origin:
            async with anyio.create_task_group() as tg:
                for refs in by_origin.values():
                    tg.start_soon(beat, refs)
        if watched:
            await self._check_watched()


def _decryption_error(error: BaseException | None) -> DecryptionError | None:
    """The ``DecryptionError`` that made a run fail, if one did (directly, as the cause of the
    error, or inside an exception group)."""
    seen = 0
    while error is not None and seen < 16:
        if isinstance(error, DecryptionError):
            return error
        if isinstance(error, BaseExceptionGroup):
            group, _ = error.split(DecryptionError)
            found: BaseException | None = group
            while isinstance(found, BaseExceptionGroup):
                found = found.exceptions[0]
            return found if isinstance(found, DecryptionError) else None
        error = error.__cause__
        seen += 1
    return None


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def _too_large_error(what: str, size: int, limit: int | None) -> EncodingError:
    most = (f"the server accepts at most {_size(limit)} per request" if limit is not None
            else "the server refused it as too large")
    return EncodingError(f"{what} is {_size(size)} encoded; {most}; store large values "
                         "elsewhere and return a reference")


__all__ = ["DEFAULT_SHUTDOWN_GRACE", "TAG_ORIGIN", "Worker"]


def _ms_since(started: float) -> float:
    """Milliseconds of wall-clock (monotonic) time since ``started``, for log events."""
    return round((time.monotonic() - started) * 1000, 3)
