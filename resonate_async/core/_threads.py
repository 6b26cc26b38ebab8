"""Sync user code runs in daemon threads of our own, so a step that never returns can be
abandoned: it holds neither the worker's shutdown nor the interpreter's exit.

anyio's worker threads are not daemon threads, and ``anyio.to_thread.run_sync`` cannot be
cancelled while the function runs: a ``time.sleep(600)`` in a step would hold ``serve()`` and
then the process for ten minutes. Here the awaiting side can stop waiting (after a grace
period, or at once); the thread then runs on unobserved and its late result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import anyio

T = TypeVar("T")
IDLE_SECONDS: Final = 10.0  # an idle pool thread exits after this long without work


class _Pool:
    """Daemon threads that take jobs from one queue; a job finds an idle thread or starts
    one, and threads idle for ``IDLE_SECONDS`` exit. An abandoned job keeps its thread until
    it returns; the thread then serves other jobs."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job and not yet promised one

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.put(job)
            if self._idle > 0:
                self._idle -= 1
                return
        threading.Thread(target=self._serve, name="resonate-step", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if not self._jobs.empty():
                        continue  # a job came in as the wait ran out: take it
                    self._idle -= 1
                    return
            job()
            with self._lock:
                self._idle += 1


_pool = _Pool()


class _Result:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


def _waker(event: anyio.Event) -> Callable[[], None]:
    """A function any thread may call to set ``event`` on the current event loop; it does
    nothing once that loop has finished (the awaiting side abandoned the thread)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: the trio backend
        import trio

        token = trio.lowlevel.current_trio_token()

        def wake_trio() -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

        return wake_trio

    def wake_asyncio() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(event.set)

    return wake_asyncio


async def run_sync(fn: Callable[[], T], *, grace: Callable[[], float],
                   on_abandon: Callable[[], None]) -> T:
    """Run ``fn()`` in a daemon thread and return its result (or raise its exception).

    Threads that run at once are bounded by anyio's default thread limiter, as with
    ``anyio.to_thread.run_sync``. When the awaiting task is cancelled, it waits up to
    ``grace()`` more seconds (shielded) for the thread to return; if it still runs, the thread
    is abandoned (``on_abandon()`` is called, its limiter slot is freed) and the cancellation
    goes on; if it returned meanwhile, its outcome is returned (the cancellation then reaches
    the caller at its next checkpoint). The thread runs in a copy of the caller's context
    (contextvars: log bindings, tracing spans).
    """
    event = anyio.Event()
    wake = _waker(event)
    result = _Result()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            result.value = context.run(fn)
        except BaseException as exc:  # handed to the awaiting side, which decides
            result.error = exc
        finally:
            result.done = True
            wake()

    limiter = anyio.to_thread.current_default_thread_limiter()
    borrower = object()  # not the task: it may hold a token of this limiter already
    await limiter.acquire_on_behalf_of(borrower)
    try:
        _pool.submit(target)
        try:
            await event.wait()
        except anyio.get_cancelled_exc_class():
            seconds = grace()
            if seconds > 0 and not result.done:
                with anyio.CancelScope(shield=True), anyio.move_on_after(seconds):
                    await event.wait()
            if not result.done:
                on_abandon()
                raise
            # It returned within the grace: its outcome stands (the step's side effect is
            # done and must be recorded, not run again); the cancellation is delivered again
            # at the caller's next checkpoint, as anyio does for a cancelled scope.
    finally:
        limiter.release_on_behalf_of(borrower)
    if result.error is not None:
        error, result.error = result.error, None
        raise error
    value: T = result.value
    return value


__all__ = ["run_sync"]
