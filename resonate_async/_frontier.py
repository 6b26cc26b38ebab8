"""What a run did compared with its history: where it stands (``Frontier``, for ``ctx.log``)
and the calls it made and dropped without running them (``report_dropped``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from resonate_async.protocol import TAG_SCOPE, Promise


class Frontier:
    """Where one run of an execution stands against its history, for ``ctx.log``.

    A run with a history replays (re-runs code an earlier run already ran) until it goes
    past the point where the earlier run stopped: it makes a local step the history does not
    hold as settled (the history holds every local step of the execution), or an await
    returns a remote promise settled after everything the history holds was written, i.e.
    one an earlier run was waiting for when it suspended. Once live, live until the run
    ends. Costs a dict lookup per local step; the bound is computed at most once per run.
    After a crash (no suspension) events between the crash point and the next new local
    step are not logged again.
    """

    __slots__ = ("_bound", "_cache", "live")

    def __init__(self, cache: Mapping[str, Promise], root_id: str) -> None:
        self._cache = cache
        self._bound: int | None = None
        self.live = all(k == root_id for k in cache)  # no history: the first run

    def started(self, pid: str) -> None:
        """Local step ``pid`` is being awaited or spawned."""
        if self.live:
            return
        p = self._cache.get(pid)
        if p is None or p.state == "pending":
            self.live = True

    def awaited(self, pid: str) -> None:
        """Promise ``pid`` was awaited (its handle, or the call itself)."""
        if self.live:
            return
        p = self._cache.get(pid)
        if p is not None:
            self.awaited_record(p)

    def awaited_record(self, p: Promise) -> None:
        """``awaited`` for the record the caller holds already (the replay of a call)."""
        if self.live or p.state == "pending" or p.tags.get(TAG_SCOPE) == "local":
            return
        if self._bound is None:
            # Everything earlier runs wrote happened before the last of them stopped.
            self._bound = max((q.settled_at if q.tags.get(TAG_SCOPE) == "local"
                               and q.settled_at is not None else q.created_at
                               for q in self._cache.values()), default=0)
        if p.settled_at is None or p.settled_at > self._bound:
            self.live = True


Dropped = tuple[str, str, tuple[str, int]]
"""A call never awaited nor spawned: what it was, its id, and (file, line) where it was made."""


def report_dropped(dropped: list[Dropped]) -> Warning | None:
    """Warn, like an un-awaited coroutine, about calls a finished run made and dropped.

    Each is a ``RuntimeWarning`` pointing at the line that made the call. Returns the first
    warning raised as an error (``-W error``), for the run to fail with, else ``None``.
    """
    raised: Warning | None = None
    for what, pid, (filename, lineno) in dropped:
        try:
            warnings.warn_explicit(
                f"{what} [{pid}] was never awaited, so it never ran: write `await {what}`, or "
                f"`await {what}.spawn()` to start it in the background", RuntimeWarning,
                filename, lineno)
        except Warning as exc:
            raised = raised or exc
    dropped.clear()
    return raised
