"""``simulate``: a deterministic, seeded fault simulation of an application's workflows.

One seed drives everything that could vary: the virtual clock (only the simulator moves it),
the order in which push messages are delivered, and a fault schedule. The application runs as
several simulated worker processes (``Resonate`` instances) over one embedded engine kept in a
SQLite file, so the engine itself can restart. Between the workers and the engine sits a
network the simulator controls: it drops, duplicates, delays and reorders push messages, makes
requests fail before or after they reach the engine, stalls workers (their leases expire),
loses heartbeats, crashes workers (no release, like a SIGKILL) at random points (between a
step's execution and its settle included) and restarts them, and restarts the engine. It also
sends ``execute`` storms (one message delivered dozens of times), fails every write for one
task for a while (a task outage), can refuse requests over a size limit (like an HTTP 413),
can run workers with few concurrency slots, and can run one worker with the wrong
``Encryptor``.

After (and during) every run it checks the promises of durable execution:

* every root settles, with the outcome of a run without faults;
* a settled promise never changes (across engine restarts too);
* a step settled once never executes again (steps count executions with ``side_effect``);
* the engine never accepts lease-bound writes from two holders of one task claim, nor from a
  holder whose claim was superseded;
* nothing waits forever: every task is fulfilled before the simulated deadline;
* no worker process dies of what user code raises (``SystemExit``, ``KeyboardInterrupt``, a
  stray cancellation): only the simulator stops workers;
* no tight release/re-acquire loop: a worker takes back a task it gave back within a second
  at most ``QUICK_REACQUIRES`` times in a row (its back-off);
* waiting claims stay bounded: a worker has at most ``CLAIMS_PER_TASK`` ``execute`` message
  of one task waiting (for a slot or a back-off) at once, and at most its queue bound in all;
* a step settled as timed out was settled at or after its deadline, never before;
* a worker with the wrong key never writes to a task (no fence, suspend or fulfil accepted);
* a root cancelled from outside (``Workflow.cancel_after``) ends canceled with every pending
  descendant, nothing of it runs or is created after the cancel returned, and its detached
  work keeps running (see ``_simulation_cancel``).

Scheduling: one event loop runs everything, and the simulator acts only when every other task
is blocked, so a seed replays the same way on one backend (trio shuffles its run queue, so on
trio a seed reproduces the faults, not the exact interleaving). The invariants compare
outcomes, never interleavings.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import random
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup

from resonate_async._client import Resonate
from resonate_async._codec import Encryptor
from resonate_async._context import Context
from resonate_async._errors import ResonateError
from resonate_async.engine import Engine
from resonate_async.protocol import (
    TAG_EXTERNAL,
    Promise,
    PromiseSettle,
)
from resonate_async.testing._clock import VirtualClock, settle
from resonate_async.testing._simulation_cancel import RootCancels
from resonate_async.testing._simulation_checks import Checks
from resonate_async.testing._simulation_model import (
    SKIP_TAG,
    Faults,
    SimulationError,
    SimulationReport,
    Workflow,
)
from resonate_async.testing._simulation_network import InFlight, Network, Port, Process

log = structlog.get_logger("resonate_async.testing")

# side effects ---------------------------------------------------------------------------------
_CURRENT: contextvars.ContextVar[_Simulator | None] = contextvars.ContextVar(
    "resonate_async_simulation", default=None)


def side_effect(ctx: Context) -> None:
    """Count one execution of the step ``ctx.id`` (call it first thing in a durable function
    run as a step with ``ctx.run``). Under ``simulate``, a step that executes again after it
    was settled is reported; elsewhere this does nothing."""
    sim = _CURRENT.get()
    if sim is not None:
        sim.checks.executed(ctx.id)
        sim.cancels.executed(ctx.id)


async def busy(seconds: float, ctx: Context | None = None) -> None:
    """Stand for work that takes ``seconds``: under ``simulate`` it takes simulated time (the
    worker's heartbeats run meanwhile, and can be lost); elsewhere it sleeps for real.

    With the ``ctx`` of the step doing the work, ``simulate`` also checks that work of a root
    cancelled from outside does not finish later than a lease after the cancel returned (the
    worker running it must notice and stop it), wherever no fault kept it from noticing."""
    sim = _CURRENT.get()
    if sim is not None:
        await sim.clock.sleep(seconds)
        if ctx is not None:
            sim.cancels.worked(ctx.id)
    else:
        await anyio.sleep(seconds)


# the simulator --------------------------------------------------------------------------------


class _Simulator:
    def __init__(self, app: Resonate, workflows: Sequence[Workflow], seed: int, *,
                 workers: int, faults: Faults, ttl: float, fault_window: float,
                 deadline: float, path: Path, retry_timeout: float,
                 concurrency: int | None = None, max_request_bytes: int | None = None,
                 declare_limit: bool = True, miskeyed: Encryptor | None = None) -> None:
        self.app = app
        self.workers = workers
        self.concurrency = concurrency
        self.max_request_bytes = max_request_bytes
        self.declare_limit = declare_limit
        self.miskeyed = miskeyed
        self.events: Counter[str] = Counter()
        self.outage_until: dict[str, int] = {}
        self.ending = False
        self.workflows = list(workflows)
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults
        self.ttl = ttl
        self.path = path
        self.retry_ms = int(retry_timeout * 1000)
        self.clock = VirtualClock(auto_advance=False)
        self.start = self.clock.now_ms()
        self.fault_end = self.start + int(fault_window * 1000)
        self.deadline = self.fault_end + int(deadline * 1000)
        self.network = Network(Engine.sqlite(str(path), retry_timeout=self.retry_ms),
                                self.clock, self)
        self.inflight: list[InFlight] = []
        self.slots: list[Process] = [self.process(i, 0) for i in range(workers)]
        self.incarnations = [0] * workers
        self.restart_at: dict[int, int] = {}
        self.engine_down = False
        self.engine_up_at = 0
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.seq = 0
        self.start_at = {w.id: self.start + self.rng.randint(0, int(fault_window * 500))
                         for w in self.workflows}
        self.started: set[str] = set()
        self.starting: set[str] = set()
        self.resolve_at: dict[str, int] = {}
        self.steps = 0
        self.tg: TaskGroup | None = None
        self.checks = Checks(self)
        self.cancels = RootCancels(self)

    # randomness ------------------------------------------------------------------------------
    def faulty(self) -> bool:
        return self.clock.now_ms() < self.fault_end

    def roll(self, rate: str, kind: str | None = None) -> bool:
        p: float = getattr(self.faults, rate)
        if p > 0 and self.rng.random() < p:
            self.counts[kind or rate] += 1
            return True
        return False

    # processes -------------------------------------------------------------------------------
    def alive(self) -> list[Process]:
        return [p for p in self.slots if p.alive]

    def process(self, slot: int, incarnation: int) -> Process:
        proc = Process(slot, incarnation)
        # the last slot runs with the wrong key (while others remain to do the work)
        proc.miskeyed = self.miskeyed is not None and slot == self.workers - 1
        return proc

    async def run_process(self, proc: Process,
                          *, task_status: anyio.abc.TaskStatus[None]) -> None:
        port = Port(self, proc)
        app = self.app._derive(transport=port, clock=self.clock, pid=proc.pid)
        app.ttl_ms = app.worker.ttl_ms = int(self.ttl * 1000)
        if self.concurrency is not None:
            app.worker.limiter = anyio.CapacityLimiter(self.concurrency)
        if proc.miskeyed:
            codec = copy.copy(self.app.codec)
            codec.encryptor = self.miskeyed
            app.codec = app.worker.codec = codec
        self.checks.watch_claims(proc, app)
        proc.port, proc.app = port, app
        started = False
        with anyio.CancelScope() as scope:
            proc.scope = scope
            try:
                async with app:
                    proc.alive = started = True
                    task_status.started()
                    await anyio.sleep_forever()
            except BaseException as exc:
                if self.ending or not proc.alive or isinstance(
                        exc, anyio.get_cancelled_exc_class()):
                    raise  # stopped by the simulator (or the run's end)
                self.violations.append(
                    f"worker process {proc.pid} died of {type(exc).__name__}: {exc!r} "
                    "(what user code raises must fail its step, never the worker)")
                self.restart_at[proc.slot] = self.clock.now_ms() + 1000
            finally:
                proc.alive = False
                if not started:
                    task_status.started()

    def crash(self, proc: Process) -> None:
        """Kill ``proc`` at once: nothing it holds is released (its port is dead)."""
        if proc.port is not None:
            proc.port.kill()
        proc.alive = False
        if proc.scope is not None:
            proc.scope.cancel()
        self.restart_at[proc.slot] = self.clock.now_ms() + self.rng.randint(
            100, int(self.ttl * 3000))

    def stop(self, proc: Process) -> None:
        """Stop ``proc`` gracefully: it releases what it holds."""
        proc.alive = False
        if proc.scope is not None:
            proc.scope.cancel()
        self.restart_at[proc.slot] = self.clock.now_ms() + self.rng.randint(
            100, int(self.ttl * 2000))

    async def restart(self, slot: int) -> None:
        assert self.tg is not None
        self.restart_at.pop(slot, None)
        self.incarnations[slot] += 1
        proc = self.process(slot, self.incarnations[slot])
        self.slots[slot] = proc
        await self.tg.start(self.run_process, proc)

    def restart_engine(self) -> None:
        self.engine_down = True
        self.network.engine.close()
        self.inflight.clear()  # what the engine had queued or in flight is lost with it
        self.engine_up_at = self.clock.now_ms() + self.rng.randint(100, 5000)

    def reopen_engine(self) -> None:
        self.network.engine = Engine.sqlite(str(self.path), retry_timeout=self.retry_ms)
        self.engine_down = False
        self.checks.check_settled()

    # roots and external promises --------------------------------------------------------------
    async def start_root(self, wf: Workflow) -> None:
        self.starting.add(wf.id)
        try:
            alive = [p for p in self.alive() if not p.miskeyed]  # a wrong key cannot start
            if not alive:
                return
            app = self.rng.choice(alive).app
            if app is None:
                return
            try:
                if wf.via == "rpc":
                    await app.rpc(wf.id, wf.fn, *wf.args)
                else:
                    await app.run(wf.id, wf.fn, *wf.args)
            except ResonateError:
                self.start_at[wf.id] = self.clock.now_ms() + 1000
                return
            self.started.add(wf.id)
            self.cancels.started(wf.id, wf.cancel_after)
        finally:
            self.starting.discard(wf.id)

    def resolve_externals(self) -> None:
        now = self.clock.now_ms()
        engine = self.network.engine
        for p in engine.storage.search_promises("pending", {TAG_EXTERNAL: "true"}, None,
                                                1 << 30):
            if p.tags.get(SKIP_TAG) == "ignore":
                continue
            at = self.resolve_at.setdefault(p.id, now + self.rng.randint(200, 30_000))
            if at <= now:
                value = self.app.codec.encode(f"approved {p.id}", what=p.id)
                self.network.engine.execute(PromiseSettle(p.id, "resolved", value), now)
                self.network._deliver(engine.drain_messages())

    # delivery ---------------------------------------------------------------------------------
    def route(self, address: str) -> Process | None:
        mode, _, rest = address.removeprefix("poll://").partition("@")
        _, _, pid = rest.partition("/")
        alive = self.alive()
        chosen = next((p for p in alive if p.pid == pid), None) if pid else None
        if chosen is not None or mode == "uni" or not alive:
            return chosen
        return self.rng.choice(alive)

    def deliver_one(self) -> bool:
        now = self.clock.now_ms()
        ready = [i for i, m in enumerate(self.inflight) if m.not_before <= now]
        if not ready:
            return False
        i = self.rng.choice(ready)
        item = self.inflight[i]
        faulty = self.faulty()
        if faulty and item.not_before == 0 and self.roll("delay"):
            item.not_before = now + self.rng.randint(50, int(self.ttl * 2000))
            return True
        del self.inflight[i]
        if faulty and self.roll("drop"):
            return True
        if faulty and self.roll("duplicate"):
            self.inflight.append(InFlight(item.address, item.message, now + 1))
        elif faulty and not item.copy and self.roll("duplicate_burst"):
            for _ in range(self.rng.randint(10, 60)):  # an execute storm, all at once
                self.inflight.append(InFlight(item.address, item.message, now + 1, copy=True))
        proc = self.route(item.address)
        if proc is not None and proc.stream is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                proc.stream.send_nowait(item.message)
        return True

    # the loop ---------------------------------------------------------------------------------
    def next_event(self) -> int:
        candidates = [self.deadline]
        timer = self.clock._next()
        if timer is not None:
            candidates.append(timer.at)
        if not self.engine_down:
            due = self.network.engine.next_due()
            if due is not None:
                candidates.append(due)
        else:
            candidates.append(self.engine_up_at)
        candidates += [m.not_before for m in self.inflight if m.not_before > 0]
        candidates += [at for wid, at in self.start_at.items()
                       if wid not in self.started and wid not in self.starting]
        candidates += list(self.resolve_at.values())
        candidates += self.cancels.next_times()
        candidates += list(self.restart_at.values())
        candidates += [p.port.stalled_until for p in self.slots
                       if p.port is not None and p.port.stalled_until > 0]
        if self.clock.now_ms() < self.fault_end:
            candidates.append(self.fault_end)
        now = self.clock.now_ms()
        later = [c for c in candidates if c > now]
        return min(later) if later else now + 1000

    def inject_step_faults(self) -> None:
        faults = self.faults
        alive = self.alive()
        if alive and self.roll("crash"):
            self.crash(self.rng.choice(alive))
        elif alive and self.roll("stop"):
            self.stop(self.rng.choice(alive))
        elif alive and self.roll("stall"):
            proc = self.rng.choice(alive)
            if proc.port is not None:
                proc.port.stalled_until = self.clock.now_ms() + self.rng.randint(
                    int(self.ttl * 500), int(self.ttl * 3000))
        elif not self.engine_down and faults.engine_restart and self.roll("engine_restart"):
            self.restart_engine()
        elif not self.engine_down and faults.task_outage and self.roll("task_outage"):
            self.start_outage()

    def start_outage(self) -> None:
        """Fail every write for one task (held or waiting) for 10 to 90 simulated seconds."""
        storage = self.network.engine.storage
        rows = storage.search_tasks("acquired", None, 100) + storage.search_tasks(
            "pending", None, 100)
        rows = [r for r in rows if r.id not in self.outage_until]
        if not rows:
            return
        row = self.rng.choice(sorted(rows, key=lambda r: r.id))
        now = self.clock.now_ms()
        self.outage_until[row.id] = min(now + self.rng.randint(10_000, 90_000), self.fault_end)

    def done(self) -> bool:
        if self.engine_down or len(self.started) < len(self.workflows):
            return False
        storage = self.network.engine.storage
        for wf in self.workflows:
            p = storage.get_promise(wf.id)
            if p is None or p.state == "pending":
                return False
        return not storage.search_tasks("pending", None, 1) and not storage.search_tasks(
            "acquired", None, 1) and not storage.search_tasks("suspended", None, 1)

    async def loop(self) -> None:
        clock = self.clock
        while True:
            self.steps += 1
            await settle()
            now = clock.now_ms()
            if self.engine_down and now >= self.engine_up_at:
                self.reopen_engine()
            for slot, at in list(self.restart_at.items()):
                if at <= now or now >= self.fault_end:
                    await self.restart(slot)
            if now >= self.fault_end:
                for proc in self.slots:
                    if proc.port is not None:
                        proc.port.stalled_until = 0
            if self.engine_down:
                await clock.advance((self.engine_up_at - now) / 1000)
                continue
            self.checks.check_settled()
            self.checks.check_claims()
            if self.done() or now >= self.deadline:
                return
            assert self.tg is not None
            for wf in self.workflows:
                if (wf.id not in self.started and wf.id not in self.starting
                        and self.start_at[wf.id] <= now):
                    self.tg.start_soon(self.start_root, wf)
            self.cancels.send_due()
            self.resolve_externals()
            self.network.tick()
            if self.faulty():
                self.inject_step_faults()
            if self.deliver_one():
                if self.rng.random() < 0.1:
                    await clock.advance(self.rng.randint(1, 500) / 1000)
                continue
            await settle()  # what the steps above set in motion may bring events forward
            if any(m.not_before <= now for m in self.inflight):
                continue
            await clock.advance((self.next_event() - now) / 1000)

    async def run(self) -> SimulationReport:
        token = _CURRENT.set(self)
        random.seed(self.seed)
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                for proc in self.slots:
                    await tg.start(self.run_process, proc)
                try:
                    await self.loop()
                finally:
                    self.ending = True
                    for proc in self.slots:  # the end: every process stops at once
                        if proc.port is not None:
                            proc.port.kill()
                    tg.cancel_scope.cancel()
        finally:
            _CURRENT.reset(token)
        if self.engine_down:
            self.reopen_engine()
        self.checks.check_settled()
        self.checks.liveness()
        self.cancels.finish()
        storage = self.network.engine.storage
        outcomes = {}
        for wf in self.workflows:
            p = storage.get_promise(wf.id)
            outcomes[wf.id] = _outcome(p)
        self.network.engine.close()
        return SimulationReport(
            self.seed, outcomes, self.counts, self.violations, self.steps,
            (self.clock.now_ms() - self.start) / 1000,
            sum(len(v) for v in self.checks.executions.values()), self.events,
            self.checks.peak_claims)


def _outcome(p: Promise | None) -> str:
    if p is None:
        return "missing"
    return f"{p.state} {p.value.data or ''}".rstrip()


async def simulate(
    app: Resonate,
    workflows: Sequence[Workflow],
    *,
    seed: int,
    workers: int = 3,
    faults: Faults | None = None,
    ttl: float = 5.0,
    fault_window: float = 120.0,
    deadline: float = 900.0,
    retry_timeout: float = 10.0,
    concurrency: int | None = None,
    max_request_bytes: int | None = None,
    declare_limit: bool = True,
    miskeyed: Encryptor | None = None,
    expected: dict[str, str] | None = None,
    check: bool = True,
    directory: str | Path | None = None,
) -> SimulationReport:
    """Run ``workflows`` with ``app``'s functions under the faults of ``seed``; check them.

    ``workers`` simulated processes (copies of ``app`` on one embedded engine in a SQLite
    file in ``directory``, a temporary one by default) run the workflows, started at seeded
    times in the first half of the ``fault_window`` (simulated seconds); faults are injected
    during that window only, then every worker restarts and the run has ``deadline`` more
    simulated seconds to finish everything. ``ttl`` is the workers' lease, ``retry_timeout``
    the engine's re-dispatch delay. ``concurrency`` overrides the workers' slots (few slots
    make ``execute`` storms queue). ``max_request_bytes``: the engine refuses larger requests
    as an HTTP server answers 413; with ``declare_limit`` the workers' transport also declares
    it (so the SDK checks before sending), else they learn it only from the refusals. With
    ``miskeyed``, the last worker slot runs with this ``Encryptor`` instead of ``app``'s: it
    must never write to a task while the others do the work (roots start on the others).

    Each root's outcome is compared with ``expected`` (by default: a run of the same seed
    without faults). Returns a ``SimulationReport``; with ``check`` (the default) raises
    ``SimulationError``, naming the seed, if an invariant broke.
    """
    faults = Faults() if faults is None else faults
    if len({w.id for w in workflows}) != len(workflows):
        raise ValueError("simulate: workflow ids must be unique")
    if miskeyed is not None and workers < 2:
        raise ValueError(f"simulate: miskeyed needs workers >= 2 (one runs with the wrong key, "
                         f"the others do the work), got workers={workers}")
    for w in workflows:
        after = w.cancel_after
        if after is not None and (isinstance(after, bool) or not isinstance(after, int | float)
                                  or not after >= 0):
            raise ValueError(f"simulate: workflow {w.id!r} has cancel_after={after!r}; give "
                             "the simulated seconds after its start as a number >= 0, or None")
    if concurrency is not None and (isinstance(concurrency, bool)
                                    or not isinstance(concurrency, int) or concurrency < 1):
        raise ValueError(f"simulate: concurrency must be an int >= 1, got {concurrency!r}")

    async def one(kind: Faults, where: Path) -> SimulationReport:
        sim = _Simulator(app, workflows, seed, workers=workers, faults=kind, ttl=ttl,
                         fault_window=fault_window, deadline=deadline, path=where,
                         retry_timeout=retry_timeout, concurrency=concurrency,
                         max_request_bytes=max_request_bytes, declare_limit=declare_limit,
                         miskeyed=miskeyed)
        return await sim.run()

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        if expected is None:
            reference = await one(Faults.none(), Path(tmp) / "reference.db")
            if reference.violations:
                reference.violations.insert(0, "the run without faults already fails:")
                if check:
                    reference.check()
                return reference
            expected = reference.outcomes
        report = await one(faults, Path(tmp) / "simulation.db")
    for wid, want in expected.items():
        got = report.outcomes.get(wid)
        if got is not None and got != want and not got.startswith("pending"):
            report.violations.append(f"root {wid} settled differently than without faults: "
                                     f"expected {want!r}, got {got!r}")
    if check:
        report.check()
    return report


__all__ = ["SKIP_TAG", "Faults", "SimulationError", "SimulationReport", "Workflow", "busy",
           "side_effect", "simulate"]
