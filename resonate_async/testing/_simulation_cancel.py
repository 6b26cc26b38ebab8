"""Root cancellation under ``simulate``: a workflow with ``cancel_after`` is cancelled from
outside, ``resonate.promises.cancel(root_id)`` sent by a worker's client over the faulty
network, and what durable cancellation promises is checked:

* the root ends ``rejected_canceled`` and, once the cancel has returned, none of its
  descendants (rpc children, their children, sleeps, promises) is still pending;
* nothing of the root runs after the cancel returned: no step of it executes (``side_effect``)
  and no promise is created under it;
* its detached work is not a descendant: it keeps running, and is never cancelled with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resonate_async._errors import ResonateError
from resonate_async.core._execution import in_detached
from resonate_async.protocol import TAG_ORIGIN, Promise, extends
from resonate_async.testing._simulation_model import Faults

if TYPE_CHECKING:
    from resonate_async.testing._simulation import _Simulator

RETRY_MS = 1000  # a cancel that failed (a fault) is sent again this much later


@dataclass
class _Acked:
    """What the engine held when a root's cancel returned."""

    state: str  # the root's state, as the cancel returned it
    ids: frozenset[str]  # every promise under the root (detached work aside) at that moment
    at: int  # when (simulated ms)


class RootCancels:
    """Cancels the roots of workflows with ``cancel_after`` and checks what follows."""

    def __init__(self, sim: _Simulator) -> None:
        self.sim = sim
        self.due: dict[str, int] = {}  # root id -> when to send its cancel (simulated ms)
        self.sending: set[str] = set()
        self.acked: dict[str, _Acked] = {}

    def started(self, root_id: str, after: float | None) -> None:
        """The root ``root_id`` has started: plan its cancel ``after`` seconds from now."""
        if after is not None:
            self.due[root_id] = self.sim.clock.now_ms() + int(after * 1000)

    def next_times(self) -> list[int]:
        return [at for rid, at in self.due.items() if rid not in self.sending]

    def send_due(self) -> None:
        """Start the cancel of every root whose time has come (one at a time per root)."""
        sim = self.sim
        assert sim.tg is not None
        now = sim.clock.now_ms()
        for rid, at in list(self.due.items()):
            if at <= now and rid not in self.sending:
                self.sending.add(rid)
                sim.tg.start_soon(self.cancel, rid)

    async def cancel(self, root_id: str) -> None:
        sim = self.sim
        try:
            alive = [p for p in sim.alive() if not p.miskeyed and p.app is not None]
            if not alive:
                self.due[root_id] = sim.clock.now_ms() + RETRY_MS
                return
            app = sim.rng.choice(alive).app
            assert app is not None
            try:
                record = await app.promises.cancel(root_id)
            except ResonateError:  # a fault on the way: the cancel is sent again, as a user would
                sim.events["cancels_sent_again"] += 1
                self.due[root_id] = sim.clock.now_ms() + RETRY_MS
                return
            del self.due[root_id]
            self.acknowledged(root_id, record.state)
        finally:
            self.sending.discard(root_id)

    def _tree(self, root_id: str) -> dict[str, Promise]:
        """Every promise under ``root_id`` (itself included), detached work aside."""
        storage = self.sim.network.engine.storage
        return {p.id: p for p in storage.search_promises(None, {TAG_ORIGIN: root_id}, None, 1 << 30)
                if extends(p.id, root_id) and not in_detached(p.id, root_id)}

    def acknowledged(self, root_id: str, state: str) -> None:
        """The cancel of ``root_id`` returned: from now on nothing of it may run."""
        sim = self.sim
        sim.events["roots_canceled"] += 1
        tree = {} if sim.engine_down else self._tree(root_id)
        self.acked[root_id] = _Acked(state, frozenset(tree) | {root_id}, sim.clock.now_ms())
        if state != "rejected_canceled":
            return  # it had settled first: cancelling it changes nothing
        for pid, p in sorted(tree.items()):
            if p.state == "pending":
                sim.checks.violation(("cancel_pending", pid), (
                    f"{pid} is still pending after the cancel of its root {root_id} returned "
                    "(cancelling an execution cancels its pending descendants)"))

    def executed(self, step_id: str) -> None:
        """A step started executing: never one of a root whose cancel has returned."""
        for root_id, acked in self.acked.items():
            if (acked.state == "rejected_canceled" and extends(step_id, root_id)
                    and not in_detached(step_id, root_id)):
                self.sim.checks.violation(("cancel_ran", step_id), (
                    f"step {step_id} executed after the cancel of its root {root_id} had "
                    "returned (nothing of a cancelled execution may run after the cancel)"))

    def worked(self, step_id: str) -> None:
        """A step's work (``busy``) finished: not a lease after its root's cancel returned,
        unless faults could keep its worker from noticing (they end with the fault window)."""
        sim = self.sim
        for root_id, acked in self.acked.items():
            if (acked.state != "rejected_canceled" or not extends(step_id, root_id)
                    or in_detached(step_id, root_id)):
                continue
            late = sim.clock.now_ms() - acked.at
            if late <= sim.ttl * 1000:
                sim.events["work_finished_soon_after_cancel"] += 1
            elif acked.at < sim.fault_end and sim.faults != Faults.none():
                sim.events["work_finished_late_under_faults"] += 1
            else:
                sim.checks.violation(("cancel_worked", step_id), (
                    f"step {step_id} finished its work {late / 1000:g} s after the cancel of its "
                    f"root {root_id} had returned, over a lease ({sim.ttl:g} s): the worker "
                    "running it must notice the cancel and stop it"))

    def finish(self) -> None:
        """At the end: the cancelled roots' trees hold nothing new, nothing pending, and
        their detached work was not cancelled."""
        sim = self.sim
        storage = sim.network.engine.storage
        for root_id, acked in self.acked.items():
            root = storage.get_promise(root_id)
            if acked.state == "rejected_canceled" and (root is None
                                                      or root.state != "rejected_canceled"):
                sim.checks.violation(("cancel_root", root_id), (
                    f"root {root_id} was cancelled, yet ends "
                    f"{'missing' if root is None else root.state}"))
            if acked.state != "rejected_canceled":
                continue
            for pid, p in sorted(self._tree(root_id).items()):
                if pid not in acked.ids:
                    sim.checks.violation(("cancel_created", pid), (
                        f"{pid} was created under {root_id} after the cancel of that root had "
                        "returned (a cancelled execution must write nothing more)"))
                elif p.state == "pending":
                    sim.checks.violation(("cancel_pending", pid), (
                        f"{pid} is still pending at the end, though its root {root_id} was "
                        "cancelled"))
            for p in storage.search_promises(None, {TAG_ORIGIN: root_id}, None, 1 << 30):
                if in_detached(p.id, root_id) and p.state == "rejected_canceled":
                    sim.checks.violation(("cancel_detached", p.id), (
                        f"detached work {p.id} was cancelled with its root {root_id} "
                        "(detached work is not a descendant: it must keep running)"))
